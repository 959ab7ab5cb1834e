//! The three networks: the on-device [`Perturber`], the cloud [`Recognizer`], and the
//! [`Recognizer`] family reused as adversary and attacker.

mod attacker;
mod config;
mod encoder;
mod erase;
mod fast_conv;
mod global;
mod layers;
mod perturber;
mod recognizer;
mod tone;

pub use attacker::{LinearProbe, ResBlock, ResidualConfig, ResidualNet};
pub use config::{
    GLOBAL_ENCODER_WIDTHS, PerturberConfig, PerturberLayout, SIGMA_INIT, head_bias_for,
};
pub use encoder::BoundedEncoder;
pub use erase::{ConceptErasure, fit as fit_erasure};
pub use fast_conv::{
    FastConv2d, FastConvBackend, FastPoolBackend, conv2d, max_pool2d, use_burn_generic,
};
pub use global::{GLOBAL_MAP_DIVISOR, GlobalView};
pub use layers::{conv3, upsample_nearest};
pub use perturber::{
    LUMA, Perturber, PerturberOut, STANDARD_EPS, STANDARD_STD, gray_shift, standardize_shift,
};
pub use recognizer::{Block, Recognizer, RecognizerConfig};

/// The three networks under training.
#[derive(Debug, Clone)]
pub struct Nets {
    /// The perturber.
    pub perturber: Perturber,
    /// The recognizer.
    pub recognizer: Recognizer,
    /// The adversary, in adversarial mode.
    pub adversary: Option<Recognizer>,
    /// The frozen distillation teacher (with `distill` > 0, once warm-up is over).
    pub teacher: Option<Recognizer>,
}
