//! ConvMixer (Trockman & Kolter, 2022): a patch-embedding recognizer whose stem is a convolution
//! with kernel = stride = `p`, so it can be encrypted with a secret key after training without
//! changing its outputs (scrim-seal's [`scrim_seal::model_crypt`]).
//!
//! `stem: conv(3→d, k=s=p) → GELU → BN`, then `depth` blocks of
//! `x + BN(GELU(depthwise conv k×k))` → `BN(GELU(pointwise conv))`, global average pooling and a
//! linear head.

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;
use scrim_core::InputSpec;
use scrim_core::onnx::{Conv, GraphBuilder, Value};

use scrim_train::batch;
use scrim_train::nets::FastConv2d;

/// Configuration of a ConvMixer.
#[derive(Config, Debug)]
pub struct ConvMixerConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Hidden width `d`.
    #[config(default = 64)]
    pub dim: usize,
    /// Number of mixer blocks.
    #[config(default = 4)]
    pub depth: usize,
    /// Patch size `p` (stem kernel = stride).
    #[config(default = 4)]
    pub patch: usize,
    /// Depthwise kernel size (odd).
    #[config(default = 5)]
    pub kernel: usize,
}

/// One mixer block.
#[derive(Module, Debug)]
pub struct MixerBlock {
    /// Depthwise `k×k` convolution (groups = dim), same padding.
    pub depthwise: FastConv2d,
    /// BatchNorm after the depthwise GELU.
    pub bn1: BatchNorm,
    /// Pointwise 1×1 convolution.
    pub pointwise: FastConv2d,
    /// BatchNorm after the pointwise GELU.
    pub bn2: BatchNorm,
}

/// A ConvMixer classifier: `[N, 3, H, W]` → logits `[N, classes]`.
#[derive(Module, Debug)]
pub struct ConvMixer {
    /// Patch embedding, kernel = stride = p.
    pub stem: FastConv2d,
    /// BatchNorm after the stem's GELU.
    pub stem_bn: BatchNorm,
    /// Mixer blocks.
    pub blocks: Vec<MixerBlock>,
    /// Linear head.
    pub fc: Linear,
}

impl ConvMixerConfig {
    /// Builds a freshly initialised ConvMixer.
    pub fn init(&self, device: &Device) -> ConvMixer {
        let (d, p, k) = (self.dim, self.patch, self.kernel);
        let pad = k / 2;
        ConvMixer {
            stem: Conv2dConfig::new([3, d], [p, p])
                .with_stride([p, p])
                .init(device)
                .into(),
            stem_bn: BatchNormConfig::new(d).init(device),
            blocks: (0..self.depth)
                .map(|_| MixerBlock {
                    depthwise: Conv2dConfig::new([d, d], [k, k])
                        .with_groups(d)
                        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                        .init(device)
                        .into(),
                    bn1: BatchNormConfig::new(d).init(device),
                    pointwise: Conv2dConfig::new([d, d], [1, 1]).init(device).into(),
                    bn2: BatchNormConfig::new(d).init(device),
                })
                .collect(),
            fc: LinearConfig::new(d, self.num_classes).init(device),
        }
    }
}

impl ConvMixer {
    /// # Shapes
    /// `x: [N, 3, H, W]` (H, W divisible by the patch size) → `[N, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = self.stem_bn.forward(activation::gelu(self.stem.forward(x)));
        for b in &self.blocks {
            h = h.clone() + b.bn1.forward(activation::gelu(b.depthwise.forward(h)));
            h = b.bn2.forward(activation::gelu(b.pointwise.forward(h)));
        }
        let [n, c, _, _] = h.dims();
        self.fc.forward(h.mean_dims(&[2, 3]).reshape([n, c]))
    }

    /// The patch size.
    pub fn patch(&self) -> usize {
        self.stem.stride[0]
    }
}

fn emit_conv(g: &mut GraphBuilder, x: &Value, conv: &FastConv2d, pad: usize) -> Value {
    let weight = conv.weight.val();
    let shape = weight.dims();
    let w = batch::to_vec(weight);
    let b = conv.bias.as_ref().map(|b| batch::to_vec(b.val()));
    let mut c = Conv::new(&w, shape)
        .stride(conv.stride[0])
        .pad(pad)
        .groups(conv.groups);
    if let Some(b) = &b {
        c = c.bias(b);
    }
    g.conv(x, c)
}

fn emit_bn(g: &mut GraphBuilder, x: &Value, bn: &BatchNorm) -> Value {
    g.batch_norm(
        x,
        &batch::to_vec(bn.gamma.val()),
        &batch::to_vec(bn.beta.val()),
        &batch::to_vec(bn.running_mean.value()),
        &batch::to_vec(bn.running_var.value()),
        bn.epsilon as f32,
    )
}

/// The ConvMixer (in inference mode) as ONNX: input `image [N,3,H,W]`, output `logits [N,K]`.
pub fn convmixer_onnx(m: &ConvMixer, input: InputSpec) -> Vec<u8> {
    let mut g = GraphBuilder::new("scrim_convmixer");
    g.doc("Scrim ConvMixer recognizer: image in [0,1] -> class logits");
    let x = g.image_input("image", 3, input.height, input.width);
    let h = emit_conv(&mut g, &x, &m.stem, 0);
    let h = g.gelu(&h);
    let mut h = emit_bn(&mut g, &h, &m.stem_bn);
    for b in &m.blocks {
        let k = b.depthwise.weight.dims()[2];
        let r = emit_conv(&mut g, &h, &b.depthwise, k / 2);
        let r = g.gelu(&r);
        let r = emit_bn(&mut g, &r, &b.bn1);
        h = g.add(&h, &r);
        let p = emit_conv(&mut g, &h, &b.pointwise, 0);
        let p = g.gelu(&p);
        h = emit_bn(&mut g, &p, &b.bn2);
    }
    let pooled = g.global_avg_pool(&h);
    let flat = g.flatten(&pooled);
    let w = m.fc.weight.val();
    let shape = w.dims();
    let bias = m.fc.bias.as_ref().map(|b| batch::to_vec(b.val()));
    let logits = g.linear(&flat, &batch::to_vec(w), shape, bias.as_deref());
    g.output(&logits, "logits");
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scrim_core::manifest::Manifest;
    use scrim_core::{BatchMode, Model};

    #[test]
    fn onnx_export_matches_burn() {
        let device = Device::flex();
        device.seed(3);
        let cfg = ConvMixerConfig::new(4)
            .with_dim(8)
            .with_depth(2)
            .with_patch(2);
        let m = cfg.init(&device).valid();
        let x = Tensor::<4>::random([3, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let want = batch::to_vec(m.forward(x.clone()));
        let onnx = convmixer_onnx(&m, InputSpec::rgb(8, 8));
        let labels = (0..4).map(|i| i.to_string()).collect();
        let manifest = Manifest::recognizer("cm", InputSpec::rgb(8, 8), "t", labels);
        let model = Model::load(&onnx, manifest, BatchMode::Dynamic).expect("load");
        let got = &model.run(&batch::to_image_tensor(x)).expect("run")[0].data;
        let diff = want
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{diff}");
    }
}
