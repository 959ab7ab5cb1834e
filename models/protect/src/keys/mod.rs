//! Model access control with secret keys (DESIGN §1.3, §1.4), as library functions behind
//! `scrim keygen` and `scrim protect transform | encrypt-model | eval`.
//!
//! - [`keygen`]: a fresh key file.
//! - [`transform_files`]: block-wise transforms of image files (and their inverse).
//! - [`encrypt_model_file`]: encrypt a patch-embedding ONNX model with a key.
//! - [`eval`]: the CIFAR-10 protection table, with the key-estimation attack.

mod encrypt;
pub mod eval;
mod keygen;
mod transform;

pub use encrypt::encrypt_model_file;
pub use keygen::keygen;
pub use transform::{TransformRequest, transform_files};
