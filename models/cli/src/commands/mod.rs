//! One file per subcommand: its flags (`Args`) and `run`, which turns them into a library
//! request, calls the library and prints the outcome.

pub mod audit;
pub mod bench;
pub mod classify;
pub mod demo;
pub mod keygen;
pub mod levels;
pub mod perturb;
pub mod protect;
pub mod results;
pub mod sweep;
pub mod train;

/// The command line as a user would type it (`scrim ...`, not the binary's path).
pub fn command_line() -> String {
    std::iter::once("scrim".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The end of a command over many files: an error counting the files that failed (each was
/// reported as it failed), so that the exit status is non-zero.
///
/// # Errors
/// When `failed > 0`.
pub fn fail_on_failures(failed: usize, total: usize, done: &str) -> anyhow::Result<()> {
    if failed == 0 {
        return Ok(());
    }
    anyhow::bail!(
        "{failed} of {total} files could not be {done} (each is named above); the other {} were",
        total - failed
    )
}
