//! The cloud recognizer, also the adversary's and the attackers' network: blocks of 3×3 conv →
//! BatchNorm → ReLU → 2×2 max-pool, global average pooling, a linear head.

use burn::module::Module;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation;

use super::fast_conv::FastConv2d;
use super::layers::conv3;

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
    pub conv: FastConv2d,
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
        super::fast_conv::max_pool2d(
            &self.pool,
            activation::relu(super::fast_conv::batch_norm(&self.bn, self.conv.forward(x))),
        )
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

    /// Sets every batch norm's running-statistics momentum (`1/k` at the `k`-th batch makes
    /// the running statistics the plain average of the batches seen).
    pub fn set_bn_momentum(&mut self, momentum: f64) {
        for b in &mut self.blocks {
            b.bn.momentum = momentum;
        }
    }
}
