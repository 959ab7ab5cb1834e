//! Selective weight encryption with hierarchical service levels (PSS + DPRM, Tian et al.,
//! CVPR 2021) for ONNX recognizers: ranking kernels ([`importance`], [`rank_layers`]),
//! protecting a model ([`select`]), restoring a level ([`decrypt`]) and the accuracy-per-level
//! experiment ([`eval`]). The cryptography and the ONNX rewriting live in `scrim_seal::selective`.

pub mod eval;
pub mod importance;
pub mod net;
mod rank;
mod select;

pub use importance::{Importance, PssConfig};
pub use rank::{RankedLayer, protected_layers, rank_layers, selections};
pub use select::{
    BUNDLE, ENCRYPTED_ONNX, LayerReport, SelectReport, SelectRequest, decrypt, key_file, select,
};
