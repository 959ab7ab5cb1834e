//! The model-protection table (`scrim protect eval`): accuracy of an unprotected recognizer, of
//! recognizers trained behind block-wise transforms (shuffle, negative/positive, FFX) with the
//! correct key, a wrong key and plain images, of a ConvMixer encrypted after training (same
//! columns), and of the key-estimation attack on shuffle and negative/positive.
//!
//! The block-wise models train on `keyed::apply(x)`, the same ops as `scrim train --block-key`.
//! The ConvMixer is exported to ONNX, encrypted by scrim-seal and run in tract on images that
//! scrim-core's transform encrypted: the path a deployment takes.

mod attack;
mod config;
mod fit;
mod run;
mod table;

pub use attack::{AttackResult, key_estimation_attack};
pub use config::EvalConfig;
pub use fit::{Classify, Fit, accuracy, fit};
pub use run::run;
pub use table::{EvalReport, Row, markdown, save};
