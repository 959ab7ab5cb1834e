//! The reconstruction attacker: a decoder trained on perturbed → clean pairs, scored by the
//! quality of its output and (in `images.rs`) by the clean attacker's accuracy on it.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use scrim_train::batch;
use scrim_train::data::Dataset;
use scrim_train::nets::FastConv2d;

use crate::context::Context;
use crate::error::Result;
use crate::quality::{Reconstruction, mean_score, mse, psnr, ssim};
use crate::request::AuditRequest;

/// Trains the decoder of scheme `name` on its perturbed training images, and returns its
/// reconstruction of the perturbed test images with the quality scores of that reconstruction.
pub(crate) fn reconstruct(
    ctx: &Context<'_>,
    name: &str,
    ptrain: &Dataset,
    pval: &Dataset,
    ptest: &Dataset,
) -> Result<(Dataset, Reconstruction)> {
    let dec = train_decoder(ptrain, ctx.train, pval, ctx.val, ctx.req, &ctx.device, name)?;
    let out = decode(&dec, ptest, &ctx.device);
    let quality = Reconstruction {
        psnr: mean_score(&out, ctx.test, psnr),
        ssim: mean_score(&out, ctx.test, ssim),
        input_psnr: mean_score(ptest, ctx.test, psnr),
        input_ssim: mean_score(ptest, ctx.test, ssim),
    };
    Ok((out, quality))
}

/// A small fully convolutional decoder x' → x with a residual connection (it predicts the
/// correction to x').
#[derive(Module, Debug)]
pub(crate) struct Decoder {
    convs: Vec<FastConv2d>,
}

impl Decoder {
    fn new(width: usize, device: &Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
                .into()
        };
        Self {
            convs: vec![
                conv(3, width),
                conv(width, width),
                conv(width, width),
                conv(width, 3),
            ],
        }
    }

    /// # Shapes
    /// `[N, 3, H, W]` → `[N, 3, H, W]` in `[0, 1]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            h = c.forward(h);
            if i < last {
                h = activation::relu(h);
            }
        }
        (x + h).clamp(0.0, 1.0)
    }
}

/// Trains the decoder on perturbed→clean training pairs with MSE, early-stopping on validation
/// MSE.
fn train_decoder(
    ptrain: &Dataset,
    train: &Dataset,
    pval: &Dataset,
    val: &Dataset,
    req: &AuditRequest,
    device: &Device,
    name: &str,
) -> Result<Decoder> {
    let cfg = &req.attacker;
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut model = Decoder::new(16, &ad);
    let mut optim = AdamConfig::new().init();
    let mut order: Vec<usize> = (0..ptrain.len()).collect();
    let mut best: Option<(f64, Decoder)> = None;
    let mut since_best = 0;
    let bar = scrim_train::report::bar(
        (cfg.epochs * ptrain.len()) as u64,
        &format!("{name}: decoder"),
        req.progress,
    );
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed + epoch as u64));
        for idx in batch::chunks(&order, cfg.batch_size) {
            let x = batch::images(ptrain, idx, &ad);
            let y = batch::images(train, idx, &ad);
            let loss = (model.forward(x) - y).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.learning_rate, model, grads);
            bar.inc(idx.len() as u64);
        }
        let valid = model.valid();
        let out = decode(&valid, pval, device);
        let mse = mean_score(&out, val, mse);
        if best.as_ref().is_none_or(|(b, _)| mse < *b) {
            best = Some((mse, valid));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                break;
            }
        }
    }
    bar.finish();
    Ok(best.map(|(_, m)| m).unwrap_or_else(|| model.valid()))
}

/// Runs the decoder over a dataset, returning 8-bit images.
fn decode(model: &Decoder, ds: &Dataset, device: &Device) -> Dataset {
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut images = Vec::with_capacity(ds.images.len());
    for idx in all.chunks(256) {
        let out = batch::to_vec(model.forward(batch::images(ds, idx, device)));
        images.extend(out.iter().map(|&v| scrim_core::imaging::quantize(v)));
    }
    Dataset {
        images,
        ..ds.clone()
    }
}
