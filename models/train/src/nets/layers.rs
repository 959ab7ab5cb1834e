//! Convolution builders shared by the networks, and nearest-neighbour upsampling.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;

use super::fast_conv::FastConv2d;

/// A 3×3 convolution with padding 1 (the shape keeps its side).
pub fn conv3(cin: usize, cout: usize, device: &Device) -> FastConv2d {
    conv3_strided(cin, cout, 1, device)
}

pub(super) fn conv3_strided(cin: usize, cout: usize, stride: usize, device: &Device) -> FastConv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
        .into()
}

/// The separable and depthwise layouts' stem: non-overlapping `d`×`d` patches (3×3, padded,
/// at `d` = 1), in `groups` groups.
pub(super) fn patch_stem(cout: usize, d: usize, groups: usize, device: &Device) -> FastConv2d {
    let config = if d <= 1 {
        Conv2dConfig::new([3, cout], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
    } else {
        Conv2dConfig::new([3, cout], [d, d])
            .with_stride([d, d])
            .with_padding(PaddingConfig2d::Valid)
    };
    config.with_groups(groups).init(device).into()
}

/// Re-draws a convolution's weights and bias uniformly in `[0, 2/k²]` (`k²` = the kernel's
/// fan-in per group), so it starts as a noisy local mean.
pub(super) fn positive_init(conv: FastConv2d, device: &Device) -> FastConv2d {
    let dims = conv.weight.dims();
    let fan_in = (dims[1] * dims[2] * dims[3]) as f64;
    let dist = burn::tensor::Distribution::Uniform(0.0, 2.0 / fan_in);
    let bias = conv
        .bias
        .as_ref()
        .map(|b| Param::from_tensor(Tensor::random(b.dims(), dist, device)));
    FastConv2d {
        weight: Param::from_tensor(Tensor::random(dims, dist, device)),
        bias,
        ..conv
    }
}

/// Depthwise 3×3 convolution over `c` channels.
pub(super) fn depthwise3(c: usize, device: &Device) -> FastConv2d {
    Conv2dConfig::new([c, c], [3, 3])
        .with_groups(c)
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
        .into()
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
