//! The three networks: the on-device [`Perturber`], the cloud [`Recognizer`], and the
//! [`Recognizer`] family reused as adversary and attacker.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;

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
    /// Initial bias of the σ head; −2 starts at σ ≈ 0.12·σ_max, a mild noise the recognizer can
    /// adapt to before λ pushes it up.
    #[config(default = -2.0)]
    pub head_bias: f64,
}

/// The perturber: `[N, 3, H, W]` in `[0,1]` → σ `[N, 3, H, W]` in `(0, σ_max)`.
#[derive(Module, Debug)]
pub struct Perturber {
    /// Hidden 3×3 convs with ReLU.
    pub hidden: Vec<Conv2d>,
    /// The σ head (3×3 conv to 3 channels).
    pub head: Conv2d,
    /// σ_max.
    pub sigma_max: f64,
}

/// The perturber's outputs for one batch.
#[derive(Debug, Clone)]
pub struct PerturberOut {
    /// σ(x), `[N, 3, H, W]`.
    pub sigma: Tensor<4>,
    /// log σ(x), computed stably from the head's logits.
    pub log_sigma: Tensor<4>,
}

fn conv3(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl PerturberConfig {
    /// Builds a freshly initialised perturber.
    pub fn init(&self, device: &Device) -> Perturber {
        let mut hidden = Vec::new();
        let mut cin = 3;
        for _ in 0..self.hidden_layers {
            hidden.push(conv3(cin, self.channels, device));
            cin = self.channels;
        }
        let mut head = conv3(cin, 3, device);
        // A fresh trainable parameter: mapping the initialised one would yield a constant.
        head.bias = Some(Param::from_tensor(Tensor::full(
            [3],
            self.head_bias,
            device,
        )));
        Perturber {
            hidden,
            head,
            sigma_max: self.sigma_max,
        }
    }
}

impl Perturber {
    /// # Shapes
    /// `x: [N, 3, H, W]` → σ and log σ `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> PerturberOut {
        let mut h = x;
        for conv in &self.hidden {
            h = activation::relu(conv.forward(h));
        }
        let z = self.head.forward(h);
        let log_sigma = activation::log_sigmoid(z.clone()).add_scalar(self.sigma_max.ln());
        let sigma = activation::sigmoid(z).mul_scalar(self.sigma_max);
        PerturberOut { sigma, log_sigma }
    }
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
    /// Builds a freshly initialised recognizer.
    pub fn init(&self, device: &Device) -> Recognizer {
        let mut blocks = Vec::new();
        let mut cin = 3;
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

impl Recognizer {
    /// # Shapes
    /// `x: [N, 3, H, W]` (H, W divisible by 2^depth) → `[N, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for b in &self.blocks {
            h = b
                .pool
                .forward(activation::relu(b.bn.forward(b.conv.forward(h))));
        }
        let [n, c, _, _] = h.dims();
        self.fc.forward(h.mean_dims(&[2, 3]).reshape([n, c]))
    }
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
}
