//! # scrim-protect
//!
//! The provider's model protection, trained and evaluated in burn:
//!
//! - [`levels`]: selective weight encryption with hierarchical service levels (PSS kernel
//!   importance, DPRM encryption, level keys), behind `scrim protect select | decrypt |
//!   eval-levels`;
//! - [`keys`]: model access control with secret keys: block-wise image transforms, the
//!   patch-embedding model encryption, and the CIFAR-10 protection table, behind `scrim keygen`
//!   and `scrim protect transform | encrypt-model | eval`;
//! - [`convmixer`]: the ConvMixer recognizer whose patch stem the model encryption permutes.
//!
//! Every fallible function returns this crate's [`Error`]. Key files (the secret key of
//! `keygen`, the level keys of `select`) are written owner-only and atomically, and never
//! replace an existing key unless the request says so ([`Existing`]).
//!
//! ```no_run
//! use scrim_protect::levels::{Importance, SelectRequest, select};
//! # fn main() -> scrim_protect::Result<()> {
//! let mut req = SelectRequest::new("runs/demo/recognizer.onnx".into(), "protected".into());
//! req.importance = Importance::Mean;
//! let report = select(&req)?;
//! println!("{} kernels encrypted, {} level keys", report.selected, report.levels);
//! # Ok(()) }
//! ```

pub mod convmixer;
mod dataset;
mod error;
mod files;
pub mod keys;
pub mod levels;
mod secret_file;

pub use error::{Error, Result};
pub use secret_file::Existing;
