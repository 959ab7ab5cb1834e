//! The perturber's configuration: its layout, the device transforms it asks for, and their
//! checks.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Configuration of the perturber: a small fully convolutional net, image → σ map.
#[derive(Config, Debug)]
pub struct PerturberConfig {
    /// Channels of the hidden 3×3 convolutions.
    #[config(default = 16)]
    pub channels: usize,
    /// Hidden 3×3 convolutions before the σ head (the head is one more 3×3 conv).
    #[config(default = 2)]
    pub hidden_layers: usize,
    /// Upper bound of σ: the head is `σ_max · sigmoid(z)`.
    #[config(default = 1.0)]
    pub sigma_max: f64,
    /// Initial bias of the σ head, `logit(σ_init)`: the default starts at σ = [`SIGMA_INIT`]·σ_max,
    /// a mild noise the recognizer can adapt to before λ pushes it up.
    #[config(default = "head_bias_for(SIGMA_INIT)")]
    pub head_bias: f64,
    /// How the perturber computes its maps (see [`PerturberLayout`]).
    #[config(default = "PerturberLayout::Dense")]
    pub layout: PerturberLayout,
    /// Side of the input-independent σ map.
    #[config(default = 32)]
    pub map_size: usize,
    /// Adds a learned deterministic offset `μ(x) = shift_max · tanh(z)` before the noise
    /// (0 disables it). Only the adversarial term gives it a reason to move.
    #[config(default = 0.0)]
    pub shift_max: f64,
    /// Suppression: each pixel keeps the fraction `k = 1 − σ/σ_max` of itself and fades to
    /// `fill` where σ saturates, so zero-mean noise no longer leaves the pixel's mean behind.
    #[config(default = false)]
    pub suppress: bool,
    /// Uploads luma only: a fixed grey conversion (ITU-R BT.601 weights) before the noise.
    #[config(default = false)]
    pub gray: bool,
    /// Tone standardisation (implies `gray`): the luma of each image is shifted and scaled to
    /// mean `fill` and standard deviation [`STANDARD_STD`] before the noise. It removes the
    /// image's overall brightness and contrast (skin tone, lighting), a low-frequency signal
    /// that zero-mean noise cannot hide, and costs shape-based tasks little.
    #[config(default = false)]
    pub standardize: bool,
    /// The value suppressed pixels fade to.
    #[config(default = 0.5)]
    pub fill: f64,
    /// Computes σ (and μ, k) at `1/downsample` of the input resolution: the first convolution
    /// has this stride and the head's outputs are upsampled (nearest) back to the input size,
    /// so the network costs about `1/downsample²` as much on the phone. 1 (the default) keeps
    /// full resolution; image sides must be divisible by it.
    #[config(default = 1)]
    pub downsample: usize,
}

/// The initial σ as a fraction of σ_max (`scrim train --sigma-init`).
pub const SIGMA_INIT: f64 = 0.12;

/// The σ head's bias that starts σ at `sigma_init`·σ_max: `ln(s / (1 − s))`.
pub fn head_bias_for(sigma_init: f64) -> f64 {
    (sigma_init / (1.0 - sigma_init)).ln()
}

/// The perturber's architecture: one choice, saved with the run as a kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PerturberLayout {
    /// Dense 3×3 convolutions (`hidden_layers` of `channels` each) and 3×3 heads: the paper's
    /// small fully-convolutional network. The default.
    #[default]
    Dense,
    /// Depthwise-separable, built for fast on-device inference: a patch stem (a
    /// `downsample`×`downsample` convolution with that stride and no padding, so the graph never
    /// pads or re-reads the full-resolution image; 3×3 with padding at `downsample` 1), then
    /// `hidden_layers` depthwise 3×3 convolutions with ReLU, then 1×1 heads. `channels` is the
    /// stem's width.
    Separable,
    /// Fully depthwise, the fastest in tract (about as fast as onnxruntime): every convolution
    /// works on each colour channel alone, 3 channels throughout. A `downsample`×`downsample`
    /// patch stem with that stride and no padding, `hidden_layers` depthwise 3×3 convolutions
    /// with ReLU, and depthwise 3×3 heads; `channels` is not used. The σ of a channel depends
    /// on that channel's neighbourhood only.
    Depthwise,
    /// The Cloak-style baseline (Mireshghallah et al., WWW 2021): σ is one learned map shared
    /// by every image, not a function of the image. Needs `map_size` = the input size.
    InputIndependent,
}

impl PerturberLayout {
    /// Whether σ depends on the image.
    pub fn is_input_dependent(self) -> bool {
        self != PerturberLayout::InputIndependent
    }
}

impl std::str::FromStr for PerturberLayout {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "dense" => Ok(Self::Dense),
            "separable" => Ok(Self::Separable),
            "depthwise" => Ok(Self::Depthwise),
            "input-independent" => Ok(Self::InputIndependent),
            other => Err(crate::Error::UnknownName {
                what: "perturber layout",
                given: other.into(),
                expected: "dense, separable, depthwise or input-independent",
            }),
        }
    }
}

impl PerturberConfig {
    /// Checks the perturber's options for images of side `size`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidOption`] naming the command-line flag.
    pub fn validate(&self, size: usize) -> crate::Result<()> {
        use crate::Error;
        if !self.head_bias.is_finite() {
            return Err(Error::option("--sigma-init", "must be in (0, 1)"));
        }
        if !(self.shift_max >= 0.0 && self.shift_max <= 1.0) {
            return Err(Error::option(
                "--shift-max",
                format!("must be in [0, 1], got {}", self.shift_max),
            ));
        }
        if !(self.sigma_max > 0.0 && self.sigma_max.is_finite()) {
            return Err(Error::option(
                "--sigma-max",
                format!("must be positive, got {}", self.sigma_max),
            ));
        }
        if self.channels == 0 {
            return Err(Error::option("--perturber-channels", "must be at least 1"));
        }
        if self.downsample == 0 || !size.is_multiple_of(self.downsample) {
            return Err(Error::option(
                "--downsample",
                format!("must divide --size ({size}), got {}", self.downsample),
            ));
        }
        Ok(())
    }
}
