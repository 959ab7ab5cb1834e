//! Training the evaluation's networks (plain, or behind a block-wise key) and measuring them in
//! burn.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scrim_core::BlockTransform;
use scrim_train::data::Dataset;
use scrim_train::nets::Recognizer;
use scrim_train::{batch, keyed};

use crate::convmixer::ConvMixer;

/// A network the evaluation trains.
pub trait Classify: Module {
    /// Logits `[N, classes]` of images `[N, 3, H, W]`.
    fn logits(&self, x: Tensor<4>) -> Tensor<2>;
}
impl Classify for Recognizer {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}
impl Classify for ConvMixer {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}

/// Training settings shared by every model of the evaluation.
#[derive(Debug, Clone)]
pub struct Fit<'a> {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Seed.
    pub seed: u64,
    /// Index of the label attribute.
    pub attr: usize,
    /// Progress bar label, `None` for no bar.
    pub progress: Option<&'a str>,
}

/// Trains `model` (initialised on the autodiff `device`) on `ds`, every batch passed through `t`,
/// with random horizontal flips of the plain images. Returns the model in inference mode.
pub fn fit<M: Classify>(
    mut model: M,
    ds: &Dataset,
    t: Option<&BlockTransform>,
    f: &Fit<'_>,
    device: &Device,
) -> M {
    device.seed(f.seed);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut order: Vec<usize> = (0..ds.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(f.seed);
    let bar = scrim_train::report::bar(
        (f.epochs * ds.len()) as u64,
        f.progress.unwrap_or(""),
        f.progress.is_some(),
    );
    for epoch in 0..f.epochs {
        let tt = epoch as f64 / f.epochs.max(2).saturating_sub(1) as f64;
        let min = f.learning_rate * 0.1;
        let lr = min + 0.5 * (f.learning_rate - min) * (1.0 + (std::f64::consts::PI * tt).cos());
        order.shuffle(&mut rng);
        for idx in batch::chunks(&order, f.batch_size) {
            let mut x = batch::images(ds, idx, device);
            if rng.random_bool(0.5) {
                x = x.flip([3]);
            }
            let x = keyed::maybe_apply(t, x);
            let y = batch::labels(ds, f.attr, idx, device);
            let loss = loss_fn.forward(model.logits(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            bar.inc(idx.len() as u64);
        }
    }
    bar.finish();
    model.valid()
}

/// Test accuracy of a burn model on `ds` passed through `t`.
pub fn accuracy<M: Classify>(
    model: &M,
    ds: &Dataset,
    attr: usize,
    t: Option<&BlockTransform>,
    device: &Device,
) -> f64 {
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut hits = 0usize;
    for idx in all.chunks(500) {
        let x = keyed::maybe_apply(t, batch::images(ds, idx, device));
        let pred = batch::predictions(model.logits(x));
        hits += pred
            .iter()
            .zip(idx)
            .filter(|(p, i)| **p == ds.attributes[attr].labels[**i] as usize)
            .count();
    }
    hits as f64 / ds.len().max(1) as f64
}
