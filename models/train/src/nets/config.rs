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
    /// Linear concept erasure of the sensitive label (`scrim_core::erasure`, LEACE): a fixed
    /// correction of rank classes − 1, fitted on the training split after the grey or tone
    /// transform, that leaves every class of the label with the same mean image. Applied on
    /// the device before suppression and noise; the perturber's network still reads the photo.
    #[config(default = false)]
    pub erase: bool,
    /// The value suppressed pixels fade to.
    #[config(default = 0.5)]
    pub fill: f64,
    /// Computes σ (and μ, k) at `1/downsample` of the input resolution: the first convolution
    /// has this stride and the head's outputs are upsampled (nearest) back to the input size,
    /// so the network costs about `1/downsample²` as much on the phone. 1 (the default) keeps
    /// full resolution; image sides must be divisible by it.
    #[config(default = 1)]
    pub downsample: usize,
    /// The bounded release's map side R (layout `bounded`): the upload is rendered from an
    /// R×R map, nearest-upsampled to the input size.
    #[config(default = 4)]
    pub release_side: usize,
    /// The bounded release's map channels: 1 (grey) or 3.
    #[config(default = 1)]
    pub release_channels: usize,
    /// The bounded release's amplitude A: the map lies in `fill ± A`.
    #[config(default = 0.5)]
    pub release_amplitude: f64,
    /// The bounded release's noise σ, the same for every image and pixel. 0.25 is the audited
    /// UTKFace point (docs/RESULTS.md): 0.2 kept less gender (87.8% against 88.5%) and let the
    /// strongest attacker read more race (49.2% against 47.0%).
    #[config(default = 0.25)]
    pub release_sigma: f64,
    /// Widths of the bounded release's encoder: one 3×3 stride-2 convolution per halving from
    /// the input size to the map side, then 3×3 convolutions at the map side (each map cell
    /// then sees the whole face).
    #[config(default = "vec![16, 32, 48, 48]")]
    pub encoder_widths: Vec<usize>,
    /// Weight of the bounded release's probe: a linear classifier of the desired label on the
    /// noiseless map, trained with the encoder, whose cross-entropy gives the encoder a direct
    /// reason to draw the desired label into the map (0 = off). Training only: the probe is
    /// never exported.
    #[config(default = 0.0)]
    pub release_probe: f64,
}

/// The global view's default encoder widths: narrower than the bounded release's, so the
/// encoder, the skip and the heads together stay under 10% of the default recognizer's
/// multiply-adds at 32×32 (0.85 M against 10.32 M).
pub const GLOBAL_ENCODER_WIDTHS: [usize; 4] = [16, 32, 32, 32];

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
    /// small fully-convolutional network. The default, except for faces
    /// ([`crate::config::TrainConfig::for_data`]).
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
    /// A bounded-capacity release (`scrim_core::release`): an encoder renders an R×R map of
    /// bounded amplitude from the whole image, and the upload is that map, upsampled, plus
    /// Gaussian noise of a fixed σ. Nothing else of the photo reaches the upload, and one
    /// upload carries at most `R²·C·½·log2(1 + f²A²/σ²)` bits. The default for UTKFace, the
    /// one layout that keeps gender and hides race from attackers who hold the perturber.
    Bounded,
    /// A perturber with a global view ([`crate::nets::GlobalView`]): an encoder down to an R×R
    /// bottleneck (R = `release_side`, widths `encoder_widths`) and back up to half resolution
    /// through a skip connection, then 1×1 heads. σ, the keep fraction k and the shift μ can
    /// then depend on the whole face; the upload is still the photo, perturbed (no bound on
    /// what it carries).
    Global,
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
            "bounded" => Ok(Self::Bounded),
            "global" => Ok(Self::Global),
            other => Err(crate::Error::UnknownName {
                what: "perturber layout",
                given: other.into(),
                expected: "dense, separable, depthwise, input-independent, bounded or global",
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
        if self.erase {
            if self.layout == PerturberLayout::Bounded {
                return Err(Error::option(
                    "--erase",
                    "does not apply to a bounded release, whose upload is rendered from a map",
                ));
            }
            let values = self.erase_channels() * size * size;
            if values > scrim_core::erasure::MAX_ERASURE_VALUES {
                return Err(Error::option(
                    "--erase",
                    format!(
                        "reads {values} values per image at --size {size}, at most {} (grey \
                         64×64 with --standardize or --gray, colour 36×36)",
                        scrim_core::erasure::MAX_ERASURE_VALUES
                    ),
                ));
            }
        }
        match self.layout {
            PerturberLayout::Bounded => self.validate_bounded(size)?,
            PerturberLayout::Global => self.validate_global(size)?,
            _ => {}
        }
        Ok(())
    }

    /// The channels an erasure reads: the grey plane of a grey or tone-standardised upload, else
    /// the three colours.
    pub fn erase_channels(&self) -> usize {
        if self.gray || self.standardize { 1 } else { 3 }
    }

    /// The halvings from the input size to the map side of a bounded release (`None` when the
    /// side is not the size divided by a power of two).
    pub fn release_halvings(&self, size: usize) -> Option<usize> {
        let side = self.release_side;
        (side > 0 && size.is_multiple_of(side) && (size / side).is_power_of_two())
            .then(|| (size / side).trailing_zeros() as usize)
    }

    /// Checks the encoder of a bounded release or a global view: the side R and a width per
    /// stride-2 convolution plus at least one at R.
    fn validate_encoder(&self, size: usize) -> crate::Result<usize> {
        use crate::Error;
        let Some(halvings) = self.release_halvings(size) else {
            return Err(Error::option(
                "--release-side",
                format!(
                    "must be --size ({size}) divided by a power of two, got {}",
                    self.release_side
                ),
            ));
        };
        if self.encoder_widths.len() <= halvings || self.encoder_widths.contains(&0) {
            return Err(Error::option(
                "--encoder-widths",
                format!(
                    "needs {halvings} widths for the stride-2 convolutions from {size} to {} \
                     and at least one more at {}, all positive; got {:?}",
                    self.release_side, self.release_side, self.encoder_widths
                ),
            ));
        }
        Ok(halvings)
    }

    fn validate_global(&self, size: usize) -> crate::Result<()> {
        use crate::Error;
        if self.validate_encoder(size)? == 0 {
            return Err(Error::option(
                "--release-side",
                format!("a global view needs a bottleneck below --size ({size})"),
            ));
        }
        if self.downsample > 1 {
            return Err(Error::option(
                "--downsample",
                "does not apply to a global view, whose maps are at half resolution",
            ));
        }
        Ok(())
    }

    fn validate_bounded(&self, size: usize) -> crate::Result<()> {
        use crate::Error;
        self.validate_encoder(size)?;
        if self.release_channels != 1 && self.release_channels != 3 {
            return Err(Error::option(
                "--release-channels",
                format!("must be 1 (grey) or 3, got {}", self.release_channels),
            ));
        }
        let (a, f) = (self.release_amplitude, self.fill);
        if !(a > 0.0 && f - a >= 0.0 && f + a <= 1.0) {
            return Err(Error::option(
                "--release-amplitude",
                format!(
                    "must be in (0, {}] around the fill {f}, got {a}",
                    f.min(1.0 - f)
                ),
            ));
        }
        if !(self.release_probe >= 0.0 && self.release_probe.is_finite()) {
            return Err(Error::option(
                "--release-probe",
                format!("must be ≥ 0, got {}", self.release_probe),
            ));
        }
        if !(self.release_sigma > 0.0 && self.release_sigma <= 10.0) {
            return Err(Error::option(
                "--release-sigma",
                format!("must be in (0, 10], got {}", self.release_sigma),
            ));
        }
        for (on, flag) in [
            (self.suppress, "--suppress"),
            (self.gray || self.standardize, "--gray/--standardize"),
            (self.shift_max > 0.0, "--shift-max"),
            (self.downsample > 1, "--downsample"),
        ] {
            if on {
                return Err(Error::option(
                    flag,
                    "does not apply to a bounded release, which renders its own upload",
                ));
            }
        }
        Ok(())
    }

    /// The bounded release this configuration renders on images of side `size`, if any.
    pub fn bounded_release(&self, size: usize) -> Option<scrim_core::release::BoundedRelease> {
        (self.layout == PerturberLayout::Bounded).then(|| {
            scrim_core::release::BoundedRelease::new(
                self.release_side,
                self.release_channels,
                self.release_amplitude as f32,
                self.release_sigma as f32,
                size,
            )
        })
    }
}
