//! The encoder of a bounded-capacity release: image → an R×R map of bounded amplitude, seen by
//! the device as the release's only output (see `scrim_core::release`).

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;

use super::config::PerturberConfig;
use super::fast_conv::FastConv2d;
use super::layers::conv3_strided;

/// `[N, 3, S, S]` → `fill + A·tanh(head(f(x)))`, `[N, C, R, R]`: 3×3 stride-2 convolutions with
/// ReLU down to R, 3×3 convolutions with ReLU at R (with R = 4 and two of them, every cell sees
/// the whole 32×32 face), then a 1×1 head.
#[derive(Module, Debug)]
pub struct BoundedEncoder {
    /// The convolutions, stride 2 then stride 1.
    pub convs: Vec<FastConv2d>,
    /// 1×1 convolution to the map's channels.
    pub head: FastConv2d,
    /// Bound A of the map around `fill`.
    pub amplitude: f64,
    /// Centre of the map's range.
    pub fill: f64,
    /// The release's noise σ.
    pub sigma: f64,
    /// The training-only probe of the desired label on the flattened map
    /// ([`PerturberConfig::release_probe`]); never exported.
    pub probe: Option<Linear>,
}

/// The encoder's 3×3 convolutions for images of side `size`: one per width in
/// `encoder_widths`, stride 2 while halving down to `release_side`, then stride 1.
pub(crate) fn encoder_convs(
    cfg: &PerturberConfig,
    size: usize,
    device: &Device,
) -> Vec<FastConv2d> {
    let halvings = cfg.release_halvings(size).unwrap_or(0);
    let mut cin = 3;
    let mut convs = Vec::new();
    for (i, &w) in cfg.encoder_widths.iter().enumerate() {
        let stride = if i < halvings { 2 } else { 1 };
        convs.push(conv3_strided(cin, w, stride, device));
        cin = w;
    }
    convs
}

impl BoundedEncoder {
    /// A fresh encoder for images of side `size` (the configuration validated).
    pub fn new(cfg: &PerturberConfig, size: usize, device: &Device) -> Self {
        let convs = encoder_convs(cfg, size, device);
        let cin = cfg.encoder_widths.last().copied().unwrap_or(3);
        // Zero weights and bias: the map starts at `fill`, where tanh has its full slope. A
        // random head can start saturated (the map pinned to fill ± A, no gradient), which
        // froze the synthetic task at chance.
        let head = Conv2dConfig::new([cin, cfg.release_channels], [1, 1])
            .with_padding(PaddingConfig2d::Valid)
            .with_initializer(Initializer::Zeros)
            .init(device)
            .into();
        Self {
            convs,
            head,
            amplitude: cfg.release_amplitude,
            fill: cfg.fill,
            sigma: cfg.release_sigma,
            probe: None,
        }
    }

    /// Adds the training-only probe of a desired label with `classes` classes, for maps of
    /// `cells` values.
    pub fn with_probe(mut self, cells: usize, classes: usize, device: &Device) -> Self {
        self.probe = Some(LinearConfig::new(cells, classes).init(device));
        self
    }

    /// The probe's logits on `map` (`None` without a probe).
    pub fn probe_logits(&self, map: Tensor<4>) -> Option<Tensor<2>> {
        let [n, c, h, w] = map.dims();
        self.probe
            .as_ref()
            .map(|p| p.forward(map.sub_scalar(self.fill).reshape([n, c * h * w])))
    }

    /// # Shapes
    /// `[N, 3, S, S]` → `[N, C, R, R]`, values in `fill ± amplitude`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x;
        for c in &self.convs {
            h = activation::relu(c.forward(h));
        }
        activation::tanh(self.head.forward(h))
            .mul_scalar(self.amplitude)
            .add_scalar(self.fill)
    }
}
