//! # scrim-models
//!
//! Co-training for Scrim in burn 0.22: the [`nets`] (perturber, recognizer, adversary), the
//! [`data`] loaders (UTKFace, ImageFolder, CSV, synthetic), the co-training loop in [`train`],
//! ONNX [`export`] through scrim-core's writer, [`eval`]uation with fresh attackers, and the
//! workflows behind the `scrim` command in [`workflow`]; the privacy [`audit`]; selective weight
//! encryption with service levels in [`protect`]; model access control with secret keys: the
//! [`convmixer`] recognizer, block-wise transforms on batches in [`keyed`], and [`keyprotect`].
//!
//! ```no_run
//! use scrim_models::workflow::{TrainRequest, train_run};
//! # fn main() -> scrim_models::Result<()> {
//! let req = TrainRequest::new("synthetic".parse()?, "shape", "runs/demo".into());
//! let summary = train_run(&req)?;
//! println!("test accuracy on perturbed images: {:.3}", summary.test_perturbed.accuracy);
//! # Ok(()) }
//! ```
//!
//! Only this crate depends on burn; what it hands to the runtime is ONNX plus a manifest.

pub mod audit;
pub mod backend;
pub mod batch;
pub mod bench;
pub mod config;
pub mod convmixer;
pub mod data;
mod error;
pub mod eval;
pub mod export;
pub mod keyed;
pub mod keyprotect;
pub mod nets;
pub mod progress;
pub mod protect;
pub mod run;
pub mod train;
pub mod workflow;

pub use error::{Error, Result};
