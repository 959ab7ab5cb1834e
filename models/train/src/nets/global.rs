//! The global-view perturber's features: an encoder down to an R×R bottleneck, where every cell
//! sees the whole face, and back up to half resolution through a skip connection, so the maps
//! σ(x), k(x) and μ(x) can depend on where the hair, the jaw and the skin are.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use burn::tensor::activation;

use super::config::PerturberConfig;
use super::encoder::encoder_convs;
use super::fast_conv::FastConv2d;
use super::layers::upsample_nearest;

/// `[N, 3, S, S]` → features `[N, W, S/2, S/2]`: 3×3 convolutions with ReLU (stride 2 down to
/// the bottleneck side R, then stride 1 at R, each of these reading its input plus the input's
/// mean over the map, so every cell sees the whole face whatever R and the depth), the
/// bottleneck upsampled (nearest) to S/2 and
/// added to a 1×1 projection of the first convolution's features (the skip), then ReLU. `W` is
/// the last encoder width. The perturber's 1×1 heads read these features; the device expands
/// the half-resolution maps.
#[derive(Module, Debug)]
pub struct GlobalView {
    /// The encoder's convolutions, stride 2 then stride 1.
    pub convs: Vec<FastConv2d>,
    /// 1×1 projection of the first convolution's features to the bottleneck's width.
    pub skip: FastConv2d,
    /// Upsampling from the bottleneck side to half the input side.
    pub factor: usize,
}

/// The resolution divisor of the global view's features (and of the maps it yields).
pub const GLOBAL_MAP_DIVISOR: usize = 2;

impl GlobalView {
    /// A fresh global view for images of side `size` (the configuration validated: at least
    /// one halving, and a width per stride-2 convolution plus one).
    pub fn new(cfg: &PerturberConfig, size: usize, device: &Device) -> Self {
        let convs = encoder_convs(cfg, size, device);
        let cin = cfg.encoder_widths.last().copied().unwrap_or(3);
        let first = cfg.encoder_widths[0];
        let skip = Conv2dConfig::new([first, cin], [1, 1])
            .with_padding(PaddingConfig2d::Valid)
            .init(device)
            .into();
        let side = cfg.release_side.max(1);
        Self {
            convs,
            skip,
            factor: (size / GLOBAL_MAP_DIVISOR / side).max(1),
        }
    }

    /// The features' channels (the heads' input).
    pub fn width(&self) -> usize {
        self.skip.weight.dims()[0]
    }

    /// # Shapes
    /// `[N, 3, S, S]` → `[N, W, S/2, S/2]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut convs = self.convs.iter();
        let first = convs.next().expect("a global view has convolutions");
        let f1 = activation::relu(first.forward(x));
        let mut h = f1.clone();
        for c in convs {
            if c.stride[0] == 1 {
                h = with_global_mean(h);
            }
            h = activation::relu(c.forward(h));
        }
        activation::relu(upsample_nearest(h, self.factor) + self.skip.forward(f1))
    }
}

/// `h + mean(h)` over each map: the global context a bottleneck convolution reads.
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, H, W]`.
pub fn with_global_mean(h: Tensor<4>) -> Tensor<4> {
    let dims = h.dims();
    let mean = h.clone().mean_dim(3).mean_dim(2);
    h + mean.expand(dims)
}
