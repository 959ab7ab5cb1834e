//! # scrim-train
//!
//! Co-training for Scrim in burn 0.22: the [`nets`] (perturber, recognizer, adversary), the
//! [`data`] loaders (UTKFace, ImageFolder, CSV, synthetic), the training [`config`], the
//! co-training loop in [`train`], the run folder with its checkpoints in [`run`], ONNX [`export`]
//! through scrim-core's writer, [`eval`]uation with fresh classifiers, block-wise key transforms
//! on batches in [`keyed`], and the workflows behind `scrim train | perturb | classify | demo` in
//! [`workflow`].
//!
//! ```no_run
//! use scrim_train::workflow::{TrainRequest, train_run};
//! # fn main() -> scrim_train::Result<()> {
//! let req = TrainRequest::new("synthetic".parse()?, "shape", "runs/demo".into());
//! let summary = train_run(&req)?;
//! println!("test accuracy on perturbed images: {:.3}", summary.test_perturbed.accuracy);
//! # Ok(()) }
//! ```
//!
//! The training crates (this one, scrim-audit, scrim-protect, scrim-bench) are the only ones
//! that depend on burn; what they hand to the runtime is ONNX plus a manifest.

pub mod allocator;
pub mod backend;
pub mod batch;
pub mod config;
pub mod cotrain;
pub mod data;
mod error;
pub mod eval;
pub mod export;
pub mod figures;
pub mod keyed;
pub mod nets;
pub mod report;
pub mod run;
pub mod workflow;

pub use error::{Error, Result};
