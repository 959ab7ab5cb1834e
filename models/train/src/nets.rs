//! The three networks: the on-device [`Perturber`], the cloud [`Recognizer`], and the
//! [`Recognizer`] family reused as adversary and attacker.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;
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
            other => Err(crate::Error::Input(format!(
                "unknown perturber layout {other:?}; use dense, separable, depthwise or input-independent"
            ))),
        }
    }
}

impl PerturberConfig {
    /// Checks the perturber's options for images of side `size`.
    ///
    /// # Errors
    /// [`crate::Error::Input`] naming the command-line flag.
    pub fn validate(&self, size: usize) -> crate::Result<()> {
        let bad = |msg: String| Err(crate::Error::Input(msg));
        if !(self.head_bias.is_finite()) {
            return bad("--sigma-init must be in (0, 1)".into());
        }
        if !(self.shift_max >= 0.0 && self.shift_max <= 1.0) {
            return bad(format!("--shift-max must be in [0, 1], got {}", self.shift_max));
        }
        if !(self.sigma_max > 0.0 && self.sigma_max.is_finite()) {
            return bad(format!("--sigma-max must be positive, got {}", self.sigma_max));
        }
        if self.channels == 0 {
            return bad("--perturber-channels must be at least 1".into());
        }
        if self.downsample == 0 || !size.is_multiple_of(self.downsample) {
            return bad(format!(
                "--downsample must divide --size ({size}), got {}",
                self.downsample
            ));
        }
        Ok(())
    }
}

/// How the perturber's convolutions are laid out: [`PerturberLayout`] without the baseline,
/// whose map has no network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Dense 3×3 convolutions and 3×3 heads.
    Dense,
    /// Patch stem, depthwise 3×3 convolutions, 1×1 heads.
    Separable,
    /// Per-channel patch stem, depthwise 3×3 convolutions and depthwise 3×3 heads.
    Depthwise,
}

/// The device's constants of the grey and tone transforms: training uses the same.
pub use scrim_core::noise::{LUMA, STANDARD_EPS, STANDARD_STD};

/// The perturber: `[N, 3, H, W]` in `[0,1]` → σ `[N, 3, H, W]` in `(0, σ_max)`, and optionally
/// a shift μ and a keep fraction k (see [`PerturberConfig`]).
#[derive(Module, Debug)]
pub struct Perturber {
    /// Hidden 3×3 convs with ReLU.
    pub hidden: Vec<Conv2d>,
    /// The σ head (3×3 conv to 3 channels).
    pub head: Conv2d,
    /// The shift head (3×3 conv to 3 channels), when `shift_max > 0`.
    pub shift: Option<Conv2d>,
    /// The input-independent σ logits `[1, 3, S, S]` (Cloak-style baseline).
    pub map: Option<Param<Tensor<4>>>,
    /// σ_max.
    pub sigma_max: f64,
    /// Bound of the learned shift.
    pub shift_max: f64,
    /// Suppression on.
    pub suppress: bool,
    /// Grey conversion on.
    pub gray: bool,
    /// Tone standardisation on (see [`PerturberConfig::standardize`]).
    pub standardize: bool,
    /// Fill value of suppressed pixels.
    pub fill: f64,
    /// σ-map resolution divisor (see [`PerturberConfig::downsample`]).
    pub downsample: usize,
}

/// The perturber's outputs for one batch.
#[derive(Debug, Clone)]
pub struct PerturberOut {
    /// σ(x), `[N, 3, H, W]`.
    pub sigma: Tensor<4>,
    /// log σ(x), computed stably from the head's logits.
    pub log_sigma: Tensor<4>,
    /// μ(x), the deterministic offset (grey conversion and/or the learned shift).
    pub shift: Option<Tensor<4>>,
    /// k(x), the kept fraction of each pixel (suppression).
    pub keep: Option<Tensor<4>>,
    /// What suppressed pixels fade to.
    pub fill: f64,
}

/// A 3×3 convolution with padding 1 (the shape keeps its side).
pub fn conv3(cin: usize, cout: usize, device: &Device) -> Conv2d {
    conv3_strided(cin, cout, 1, device)
}

fn conv3_strided(cin: usize, cout: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// The separable and depthwise layouts' stem: non-overlapping `d`×`d` patches (3×3, padded,
/// at `d` = 1), in `groups` groups.
fn patch_stem(cout: usize, d: usize, groups: usize, device: &Device) -> Conv2d {
    let config = if d <= 1 {
        Conv2dConfig::new([3, cout], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
    } else {
        Conv2dConfig::new([3, cout], [d, d])
            .with_stride([d, d])
            .with_padding(PaddingConfig2d::Valid)
    };
    config.with_groups(groups).init(device)
}

/// Re-draws a convolution's weights and bias uniformly in `[0, 2/k²]` (`k²` = the kernel's
/// fan-in per group), so it starts as a noisy local mean.
fn positive_init(conv: Conv2d, device: &Device) -> Conv2d {
    let dims = conv.weight.dims();
    let fan_in = (dims[1] * dims[2] * dims[3]) as f64;
    let dist = burn::tensor::Distribution::Uniform(0.0, 2.0 / fan_in);
    let bias = conv
        .bias
        .as_ref()
        .map(|b| Param::from_tensor(Tensor::random(b.dims(), dist, device)));
    Conv2d {
        weight: Param::from_tensor(Tensor::random(dims, dist, device)),
        bias,
        ..conv
    }
}

/// Depthwise 3×3 convolution over `c` channels.
fn depthwise3(c: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c, c], [3, 3])
        .with_groups(c)
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A head: 3 output maps from `cin` features (1×1 in the separable layout, depthwise 3×3 in the
/// depthwise one, else 3×3).
fn head_conv(cin: usize, stride: usize, layout: Layout, zeros: bool, device: &Device) -> Conv2d {
    let (k, pad) = if layout == Layout::Separable {
        (1, PaddingConfig2d::Valid)
    } else {
        (3, PaddingConfig2d::Explicit(1, 1, 1, 1))
    };
    let groups = if layout == Layout::Depthwise { 3 } else { 1 };
    let config = Conv2dConfig::new([cin, 3], [k, k])
        .with_stride([stride, stride])
        .with_padding(pad)
        .with_groups(groups);
    if zeros {
        config.with_initializer(Initializer::Zeros).init(device)
    } else {
        config.init(device)
    }
}

/// Nearest-neighbour upsampling by an integer factor: `[N, C, H, W]` → `[N, C, H·f, W·f]`.
pub fn upsample_nearest(x: Tensor<4>, factor: usize) -> Tensor<4> {
    if factor <= 1 {
        return x;
    }
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, factor, w, factor])
        .reshape([n, c, h * factor, w * factor])
}

impl PerturberConfig {
    fn layout(&self) -> Layout {
        match self.layout {
            PerturberLayout::Dense | PerturberLayout::InputIndependent => Layout::Dense,
            PerturberLayout::Separable => Layout::Separable,
            PerturberLayout::Depthwise => Layout::Depthwise,
        }
    }

    /// Builds a freshly initialised perturber.
    pub fn init(&self, device: &Device) -> Perturber {
        let mut hidden = Vec::new();
        let mut cin = 3;
        let layers = if self.layout == PerturberLayout::InputIndependent {
            0
        } else {
            self.hidden_layers
        };
        // The first convolution carries the stride of a reduced-resolution σ map.
        let stride = if self.layout == PerturberLayout::InputIndependent {
            1
        } else {
            self.downsample.max(1)
        };
        let layout = self.layout();
        match layout {
            Layout::Separable | Layout::Depthwise => {
                let (width, groups) = if layout == Layout::Depthwise {
                    (3, 3)
                } else {
                    (self.channels, 1)
                };
                let mut stem = patch_stem(width, stride, groups, device);
                cin = width;
                let mut convs: Vec<Conv2d> = (0..layers).map(|_| depthwise3(cin, device)).collect();
                if layout == Layout::Depthwise {
                    // Three channels leave no spare ones: a signed random start can zero a
                    // channel after a ReLU for every input, and then it never learns. Positive
                    // weights start each layer as a local mean, alive for every image.
                    stem = positive_init(stem, device);
                    convs = convs
                        .into_iter()
                        .map(|c| positive_init(c, device))
                        .collect();
                }
                hidden.push(stem);
                hidden.extend(convs);
            }
            Layout::Dense => {
                for k in 0..layers {
                    let s = if k == 0 { stride } else { 1 };
                    hidden.push(conv3_strided(cin, self.channels, s, device));
                    cin = self.channels;
                }
            }
        }
        let head_stride = if hidden.is_empty() { stride } else { 1 };
        let mut head = head_conv(cin, head_stride, layout, false, device);
        // A fresh trainable parameter: mapping the initialised one would yield a constant.
        head.bias = Some(Param::from_tensor(Tensor::full(
            [3],
            self.head_bias,
            device,
        )));
        // The shift head starts at μ = 0 exactly (zero weights still get gradients).
        let shift = (self.shift_max > 0.0 && !(self.layout == PerturberLayout::InputIndependent))
            .then(|| head_conv(cin, head_stride, layout, true, device));
        let map = (self.layout == PerturberLayout::InputIndependent).then(|| {
            Param::from_tensor(Tensor::full(
                [1, 3, self.map_size, self.map_size],
                self.head_bias,
                device,
            ))
        });
        Perturber {
            hidden,
            head,
            shift,
            map,
            sigma_max: self.sigma_max,
            shift_max: self.shift_max,
            suppress: self.suppress,
            gray: self.gray,
            standardize: self.standardize,
            fill: self.fill,
            downsample: stride,
        }
    }
}

impl Perturber {
    /// # Shapes
    /// `x: [N, 3, H, W]` → σ and log σ `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> PerturberOut {
        let [n, c, h, w] = x.dims();
        let (z, learned_shift) = match &self.map {
            Some(map) => (map.val().expand([n, c, h, w]), None),
            None => {
                let mut f = x.clone();
                for conv in &self.hidden {
                    f = activation::relu(conv.forward(f));
                }
                let d = self.downsample;
                let shift = self.shift.as_ref().map(|s| {
                    upsample_nearest(activation::tanh(s.forward(f.clone())), d)
                        .mul_scalar(self.shift_max)
                });
                (upsample_nearest(self.head.forward(f), d), shift)
            }
        };
        let gray = if self.standardize {
            Some(standardize_shift(x, self.fill))
        } else {
            self.gray.then(|| gray_shift(x))
        };
        let shift = match (gray, learned_shift) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        let keep = self.suppress.then(|| activation::sigmoid(z.clone().neg()));
        let log_sigma = activation::log_sigmoid(z.clone()).add_scalar(self.sigma_max.ln());
        let sigma = activation::sigmoid(z).mul_scalar(self.sigma_max);
        PerturberOut {
            sigma,
            log_sigma,
            shift,
            keep,
            fill: self.fill,
        }
    }
}

/// `luma(x) − x` per channel: the offset that turns an RGB image grey.
///
/// # Shapes
/// `[N, 3, H, W]` → `[N, 3, H, W]`.
pub fn gray_shift(x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let weights = Tensor::<1>::from_floats(LUMA, &device).reshape([1, 3, 1, 1]);
    let y = x.clone().mul(weights).sum_dim(1);
    let [n, c, h, w] = x.dims();
    y.expand([n, c, h, w]) - x
}

/// `t(x) − x` per channel, where `t` is the image's luma standardised to mean `fill` and
/// standard deviation [`STANDARD_STD`] (over its pixels), the same in every channel.
///
/// # Shapes
/// `[N, 3, H, W]` → `[N, 3, H, W]`.
pub fn standardize_shift(x: Tensor<4>, fill: f64) -> Tensor<4> {
    let device = x.device();
    let weights = Tensor::<1>::from_floats(LUMA, &device).reshape([1, 3, 1, 1]);
    let y = x.clone().mul(weights).sum_dim(1);
    let mean = y.clone().mean_dim(2).mean_dim(3);
    let d = y - mean;
    let var = d.clone().powi_scalar(2).mean_dim(2).mean_dim(3);
    let t = d
        .div(var.add_scalar(STANDARD_EPS).sqrt())
        .mul_scalar(STANDARD_STD)
        .add_scalar(fill);
    let [n, c, h, w] = x.dims();
    t.expand([n, c, h, w]) - x
}

/// Configuration of a recognizer (also used for adversaries and attackers): blocks of
/// 3×3 conv → BatchNorm → ReLU → 2×2 max-pool, then global average pooling and a linear head.
#[derive(Config, Debug)]
pub struct RecognizerConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Channels of each block; the depth is the length.
    #[config(default = "vec![32, 64, 128]")]
    pub widths: Vec<usize>,
}

/// One conv block.
#[derive(Module, Debug)]
pub struct Block {
    /// 3×3 convolution.
    pub conv: Conv2d,
    /// Batch normalisation.
    pub bn: BatchNorm,
    /// 2×2 max-pool.
    pub pool: MaxPool2d,
}

/// A small CNN classifier: `[N, 3, H, W]` → logits `[N, classes]`.
#[derive(Module, Debug)]
pub struct Recognizer {
    /// Conv blocks.
    pub blocks: Vec<Block>,
    /// Linear head.
    pub fc: Linear,
}

impl RecognizerConfig {
    /// Builds a freshly initialised recognizer of RGB images.
    pub fn init(&self, device: &Device) -> Recognizer {
        self.init_with_channels(3, device)
    }

    /// Builds a freshly initialised recognizer of `channels`-channel inputs (feature maps, for
    /// the ARDEN baseline). The input width is not a config field: saved configs stay readable.
    pub fn init_with_channels(&self, channels: usize, device: &Device) -> Recognizer {
        let mut blocks = Vec::new();
        let mut cin = channels;
        for &w in &self.widths {
            blocks.push(Block {
                conv: conv3(cin, w, device),
                bn: BatchNormConfig::new(w).init(device),
                pool: MaxPool2dConfig::new([2, 2]).init(),
            });
            cin = w;
        }
        Recognizer {
            blocks,
            fc: LinearConfig::new(cin, self.num_classes).init(device),
        }
    }
}

impl Block {
    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, C_out, H/2, W/2]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(activation::relu(self.bn.forward(self.conv.forward(x))))
    }
}

impl Recognizer {
    /// # Shapes
    /// `x: [N, C, H, W]` (C = 3 for images; H, W divisible by 2^depth) → `[N, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for b in &self.blocks {
            h = b.forward(h);
        }
        let [n, c, _, _] = h.dims();
        self.fc.forward(h.mean_dims(&[2, 3]).reshape([n, c]))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::GradientsParams;

    #[test]
    fn every_parameter_is_trainable_and_shapes_hold() {
        let device = Device::flex().autodiff();
        let p = PerturberConfig::new().init(&device);
        let x = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let out = p.forward(x.clone());
        assert_eq!(out.sigma.dims(), [2, 3, 8, 8]);
        // σ starts at σ_max·sigmoid(head_bias) on average (weights are small around it).
        let grads = GradientsParams::from_grads(out.log_sigma.mean().backward(), &p);
        // 2 hidden convs and the head, each with weight and bias: a frozen parameter (e.g. a
        // bias rebuilt from an initialised one) would be missing here.
        assert_eq!(grads.len(), 6);
        let c = RecognizerConfig::new(3)
            .with_widths(vec![4, 8])
            .init(&device);
        let logits = c.forward(x);
        assert_eq!(logits.dims(), [2, 3]);
        let grads = GradientsParams::from_grads(logits.mean().backward(), &c);
        // conv w+b and BN γ+β per block, and the linear head's w+b.
        assert_eq!(grads.len(), 2 * 4 + 2);
    }

    #[test]
    fn standardised_luma_has_the_fixed_mean_and_contrast_whatever_the_brightness() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        // The same image darkened and with less contrast standardises to the same upload.
        let dark = x.clone().mul_scalar(0.4).add_scalar(0.05);
        let t = |x: Tensor<4>| crate::batch::to_vec(x.clone() + standardize_shift(x, 0.5));
        let (a, b) = (t(x), t(dark));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 5e-3, "{u} vs {v}"); // the ε under the root
        }
        // Per image: mean 0.5, standard deviation STANDARD_STD, equal channels.
        for img in a.chunks(3 * 64) {
            let y = &img[..64];
            let mean = y.iter().sum::<f32>() / 64.0;
            let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 64.0).sqrt();
            assert!((mean - 0.5).abs() < 1e-4, "mean {mean}");
            assert!((sd - STANDARD_STD).abs() < 1e-3, "sd {sd}");
            // Equal channels up to rounding (x + (t − x) per channel).
            for (r, g) in img[..64].iter().zip(&img[64..128]) {
                assert!((r - g).abs() < 1e-6, "{r} vs {g}");
            }
        }
    }

    #[test]
    fn separable_layout_has_a_patch_stem_depthwise_convs_and_pointwise_heads() {
        let device = Device::flex().autodiff();
        let p = PerturberConfig::new()
            .with_downsample(4)
            .with_channels(8)
            .with_layout(PerturberLayout::Separable)
            .with_shift_max(0.1)
            .init(&device);
        assert_eq!(p.hidden[0].weight.dims(), [8, 3, 4, 4]);
        assert_eq!(p.hidden[0].stride, [4, 4]);
        for dw in &p.hidden[1..] {
            assert_eq!(dw.weight.dims(), [8, 1, 3, 3]);
            assert_eq!(dw.groups, 8);
        }
        assert_eq!(p.hidden.len(), 3);
        assert_eq!(p.head.weight.dims(), [3, 8, 1, 1]);
        let x = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Default, &device);
        let out = p.forward(x);
        assert_eq!(out.sigma.dims(), [2, 3, 16, 16]);
        let grads = GradientsParams::from_grads(out.log_sigma.mean().backward(), &p);
        // Stem, two depthwise convs and the σ head, weight and bias each (the shift head has
        // no path to log σ).
        assert_eq!(grads.len(), 8);
        // Each 4×4 patch shares one σ.
        let v = crate::batch::to_vec(out.sigma);
        assert_eq!(v[0], v[3]);
        assert_eq!(v[0], v[16 * 3 + 3]);
        assert_ne!(v[0], v[4]);
    }

    #[test]
    fn depthwise_layout_keeps_every_colour_channel_apart() {
        let device = Device::flex().autodiff();
        let p = PerturberConfig::new()
            .with_downsample(4)
            .with_layout(PerturberLayout::Depthwise)
            .with_shift_max(0.1)
            .init(&device);
        assert_eq!(p.hidden.len(), 3);
        assert_eq!(p.hidden[0].weight.dims(), [3, 1, 4, 4]);
        assert_eq!(p.hidden[0].stride, [4, 4]);
        for conv in p
            .hidden
            .iter()
            .chain([&p.head, p.shift.as_ref().expect("shift")])
        {
            assert_eq!(conv.groups, 3);
            assert_eq!(conv.weight.dims()[..2], [3, 1]);
        }
        assert_eq!(p.head.weight.dims(), [3, 1, 3, 3]);
        // Perturbing one channel of the input moves σ in that channel only.
        let x = Tensor::<4>::random([1, 3, 16, 16], burn::tensor::Distribution::Default, &device);
        let bump = Tensor::<4>::zeros([1, 3, 16, 16], &device).slice_assign(
            [0..1, 1..2, 0..16, 0..16],
            Tensor::ones([1, 1, 16, 16], &device),
        );
        let a = crate::batch::to_vec(p.forward(x.clone()).sigma);
        let b = crate::batch::to_vec(p.forward(x + bump).sigma);
        let moved = |c: usize| {
            (c * 256..(c + 1) * 256)
                .map(|i| (a[i] - b[i]).abs())
                .fold(0.0f32, f32::max)
        };
        assert_eq!(moved(0), 0.0);
        assert_eq!(moved(2), 0.0);
        assert!(moved(1) > 0.0, "σ of the bumped channel did not move");
    }

    #[test]
    fn half_resolution_sigma_keeps_the_input_shape() {
        let device = Device::flex().autodiff();
        let p = PerturberConfig::new().with_downsample(2).init(&device);
        let x = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let out = p.forward(x);
        assert_eq!(out.sigma.dims(), [2, 3, 8, 8]);
        let grads = GradientsParams::from_grads(out.log_sigma.mean().backward(), &p);
        assert_eq!(grads.len(), 6);
        // Nearest upsampling: each 2×2 block of σ is one value.
        let v = crate::batch::to_vec(out.sigma);
        assert_eq!(v[0], v[1]);
        assert_eq!(v[0], v[8]);
    }
}
