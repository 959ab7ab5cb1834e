//! # scrim-seal
//!
//! The service provider's model protection, kept out of the phone library: nothing here runs on
//! a device, so `scrim-mobile` links neither AES-GCM nor the ONNX rewriting. Built on scrim-core
//! (manifests, keys, block-wise transforms) and used by the `scrim` CLI (`scrim-models`) to
//! protect models and by `scrim-cloud` to restore them.
//!
//! - [`selective`]: selective weight encryption with hierarchical service levels: an encrypted
//!   ONNX model, a sealed restoration bundle and one key per level.
//! - [`sealed`]: the cryptography and file formats of those bundles and [`LevelKey`]s
//!   (HKDF-SHA256 hash chain, AES-256-GCM).
//! - [`model_crypt`]: encrypting a patch-embedding model's stem with a secret key, exactly, so it
//!   classifies images under scrim-core's `patch` block-wise transform.
//!
//! Errors are scrim-core's [`Error`], re-exported with its [`Result`].
//!
//! ```no_run
//! use scrim_seal::{LevelKey, selective};
//! # fn main() -> scrim_seal::Result<()> {
//! let encrypted = std::fs::read("protected/encrypted.onnx").unwrap_or_default();
//! let bundle = std::fs::read("protected/bundle.scrimlv").unwrap_or_default();
//! let key = LevelKey::load("protected/level-2.key".as_ref())?;
//! let level2_onnx = selective::restore(&encrypted, &bundle, &key)?;
//! println!("level {} of {}: {} bytes of ONNX", key.level(), key.levels(), level2_onnx.len());
//! # Ok(()) }
//! ```

mod error;
pub mod model_crypt;
mod proto;
pub mod sealed;
pub mod selective;

pub use error::{Error, Result};
pub use sealed::LevelKey;
