//! Subcommand groups of the `scrim` binary that live outside `main.rs`.

pub mod levels;
pub mod protect;
