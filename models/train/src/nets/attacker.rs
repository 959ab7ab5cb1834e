//! The audit's stronger attackers: a residual CNN and a linear probe. Both are [`Classifier`]s,
//! trained by [`crate::eval::fit`].

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::fast_conv::{FastConv2d, batch_norm};
use super::layers::{conv3, conv3_strided};
use crate::eval::Classifier;

/// A residual CNN: a 3×3 stem with 2×2 max-pooling, then one residual block per width (the first
/// at the pooled resolution, each later one halving it), global average pooling and a linear
/// head. At `[32, 64, 128]` on 32×32 images it costs about 1.25× the recognizer's
/// multiply-adds, with twice its depth.
#[derive(Config, Debug)]
pub struct ResidualConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Channels of the stem and of each residual block.
    #[config(default = "vec![32, 64, 128]")]
    pub widths: Vec<usize>,
}

/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + proj(x))`.
#[derive(Module, Debug)]
pub struct ResBlock {
    conv1: FastConv2d,
    bn1: BatchNorm,
    conv2: FastConv2d,
    bn2: BatchNorm,
    /// A strided 1×1 convolution where the block changes width or resolution.
    proj: Option<FastConv2d>,
}

/// See [`ResidualConfig`].
#[derive(Module, Debug)]
pub struct ResidualNet {
    stem: FastConv2d,
    stem_bn: BatchNorm,
    pool: MaxPool2d,
    blocks: Vec<ResBlock>,
    fc: Linear,
}

impl ResidualConfig {
    /// A fresh network for inputs of `channels` channels, on `device`.
    pub fn init(&self, channels: usize, device: &Device) -> ResidualNet {
        let first = self.widths.first().copied().unwrap_or(32);
        let mut blocks = Vec::new();
        let mut cin = first;
        for (i, &w) in self.widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let proj = (cin != w || stride != 1).then(|| {
                Conv2dConfig::new([cin, w], [1, 1])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Valid)
                    .init(device)
                    .into()
            });
            blocks.push(ResBlock {
                conv1: conv3_strided(cin, w, stride, device),
                bn1: BatchNormConfig::new(w).init(device),
                conv2: conv3(w, w, device),
                bn2: BatchNormConfig::new(w).init(device),
                proj,
            });
            cin = w;
        }
        ResidualNet {
            stem: conv3(channels, first, device),
            stem_bn: BatchNormConfig::new(first).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            blocks,
            fc: LinearConfig::new(cin, self.num_classes).init(device),
        }
    }
}

impl ResBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = relu(batch_norm(&self.bn1, self.conv1.forward(x.clone())));
        let h = batch_norm(&self.bn2, self.conv2.forward(h));
        let skip = match &self.proj {
            Some(p) => p.forward(x),
            None => x,
        };
        relu(h + skip)
    }
}

impl Classifier for ResidualNet {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = super::fast_conv::max_pool2d(
            &self.pool,
            relu(batch_norm(&self.stem_bn, self.stem.forward(x))),
        );
        for b in &self.blocks {
            h = b.forward(h);
        }
        let [n, c, _, _] = h.dims();
        self.fc.forward(h.mean_dims(&[2, 3]).reshape([n, c]))
    }
}

/// Logistic regression on the flattened input (centred on 0.5, the middle of the pixel range):
/// the cheapest attacker, with another inductive bias than a CNN.
#[derive(Module, Debug)]
pub struct LinearProbe {
    fc: Linear,
}

impl LinearProbe {
    /// A probe of inputs `[channels, height, width]` into `classes` classes.
    pub fn new(shape: [usize; 3], classes: usize, device: &Device) -> Self {
        Self {
            fc: LinearConfig::new(shape.iter().product(), classes).init(device),
        }
    }
}

impl Classifier for LinearProbe {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, c, h, w] = x.dims();
        self.fc.forward((x - 0.5).reshape([n, c * h * w]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_the_attackers() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([2, 3, 32, 32], &device);
        let r = ResidualConfig::new(5).init(3, &device);
        assert_eq!(r.forward(x.clone()).dims(), [2, 5]);
        let small = ResidualConfig::new(2)
            .with_widths(vec![8, 16])
            .init(3, &device);
        let v = Tensor::<4>::zeros([2, 3, 16, 16], &device);
        assert_eq!(small.forward(v).dims(), [2, 2]);
        let p = LinearProbe::new([3, 32, 32], 4, &device);
        assert_eq!(p.forward(x).dims(), [2, 4]);
    }
}
