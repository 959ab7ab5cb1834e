//! Training a classifier (an attacker, a probe, a recognizer of features) with early stopping on
//! validation accuracy. [`fit`] takes any [`Classifier`] and any [`Inputs`] (images, feature maps,
//! or uploads drawn afresh every epoch); [`train_classifier`] is the audit's original recipe on a
//! [`Recognizer`].

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::Accuracy;
use crate::Result;
use crate::batch::{self, Inputs};
use crate::config::cosine_lr;
use crate::nets::{Recognizer, RecognizerConfig};

/// A network that maps a batch of inputs to class logits.
pub trait Classifier: Module {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, classes]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<2>;
}

impl Classifier for Recognizer {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        Recognizer::forward(self, x)
    }
}

/// How attackers (and other supervised classifiers) are trained.
#[derive(Config, Debug)]
pub struct ClassifierConfig {
    /// Network widths.
    #[config(default = "vec![32, 64, 128]")]
    pub widths: Vec<usize>,
    /// Maximum epochs.
    #[config(default = 15)]
    pub epochs: usize,
    /// Stop after this many epochs without validation improvement.
    #[config(default = 3)]
    pub patience: usize,
    /// Batch size.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Learning rate (Adam).
    #[config(default = 2e-3)]
    pub learning_rate: f64,
    /// Seed.
    #[config(default = 7)]
    pub seed: u64,
}

impl ClassifierConfig {
    /// The optimisation part of this configuration (constant learning rate, no weight decay).
    pub fn fit(&self) -> FitConfig {
        FitConfig::new()
            .with_epochs(self.epochs)
            .with_patience(self.patience)
            .with_batch_size(self.batch_size)
            .with_learning_rate(self.learning_rate)
            .with_seed(self.seed)
    }
}

/// How [`fit`] optimises: Adam, early stopping on validation accuracy.
#[derive(Config, Debug, PartialEq)]
pub struct FitConfig {
    /// Maximum epochs.
    #[config(default = 15)]
    pub epochs: usize,
    /// Stop after this many epochs without validation improvement.
    #[config(default = 3)]
    pub patience: usize,
    /// Batch size.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Peak learning rate (Adam).
    #[config(default = 2e-3)]
    pub learning_rate: f64,
    /// Decay the learning rate along a cosine over `epochs` (else constant).
    #[config(default = false)]
    pub cosine: bool,
    /// L2 penalty on the weights (Adam's weight decay; 0 = off).
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Seed (initialisation and shuffling).
    #[config(default = 7)]
    pub seed: u64,
}

/// A trained classifier and its validation history.
#[derive(Debug, Clone)]
pub struct Fitted<M> {
    /// The network in inference mode (best validation epoch).
    pub model: M,
    /// Validation accuracy per epoch.
    pub val_history: Vec<f64>,
}

/// A trained [`Recognizer`] and its validation history.
pub type Trained = Fitted<Recognizer>;

/// Trains the classifier `init` builds (on the training device it is given, seeded with
/// `cfg.seed`) for `attr` on `train`, early-stopping on `val`. Before each epoch `train` is told
/// its number ([`Inputs::set_epoch`]), so inputs that are drawn afresh every epoch can redraw.
///
/// # Errors
/// [`crate::Error::UnknownLabel`] for an unknown attribute.
// Eight arguments: every caller passes all of them, and a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn fit<M, T, V>(
    init: impl FnOnce(&Device) -> M,
    train: &T,
    val: &V,
    attr: &str,
    cfg: &FitConfig,
    device: &Device,
    label: &str,
    progress: bool,
) -> Result<Fitted<M>>
where
    M: Classifier,
    T: Inputs + ?Sized,
    V: Inputs + ?Sized,
{
    let attr_idx = train.dataset().attribute_index(attr)?;
    let train_device = device.clone().autodiff();
    train_device.seed(cfg.seed);
    let mut model = init(&train_device);
    let mut adam = AdamConfig::new();
    if cfg.weight_decay > 0.0 {
        adam = adam.with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay as f32)));
    }
    let mut optim = adam.init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let mut best: Option<(f64, M)> = None;
    let mut history = Vec::new();
    let mut since_best = 0;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let bar = crate::report::bar((cfg.epochs * train.len()) as u64, label, progress);
    for epoch in 0..cfg.epochs {
        train.set_epoch(epoch);
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            cfg.seed.wrapping_add(epoch as u64),
        ));
        let lr = if cfg.cosine {
            cosine_lr(cfg.learning_rate, epoch, cfg.epochs)
        } else {
            cfg.learning_rate
        };
        for idx in batch::chunks(&order, cfg.batch_size) {
            let x = train.batch(idx, &train_device);
            let y = batch::labels(train.dataset(), attr_idx, idx, &train_device);
            let loss = loss_fn.forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            bar.inc(idx.len() as u64);
        }
        let acc = burn_accuracy(&model.valid(), val, attr, device)?.accuracy;
        history.push(acc);
        bar.set_status(&format!("val acc {acc:.3}"));
        if best.as_ref().is_none_or(|(b, _)| acc > *b) {
            best = Some((acc, model.valid()));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                break;
            }
        }
    }
    bar.finish();
    let model = best.map(|(_, m)| m).unwrap_or_else(|| model.valid());
    Ok(Fitted {
        model,
        val_history: history,
    })
}

/// Trains a fresh [`Recognizer`] for `attr` on `train`, early-stopping on `val`.
/// `init` starts from given weights instead (for fine-tuning). The inputs are images (a
/// [`crate::data::Dataset`]) or any other [`Inputs`]; the network's first block takes their
/// channels.
///
/// # Errors
/// [`crate::Error::UnknownLabel`] for an unknown attribute.
// Eight arguments: every caller passes all of them, and a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier<I: Inputs + ?Sized>(
    train: &I,
    val: &I,
    attr: &str,
    cfg: &ClassifierConfig,
    init: Option<&Recognizer>,
    device: &Device,
    label: &str,
    progress: bool,
) -> Result<Trained> {
    let classes = train.dataset().attribute(attr)?.classes.len();
    let channels = train.channels();
    fit(
        |d| match init {
            Some(m) => m.clone().fork(d).train(),
            None => RecognizerConfig::new(classes)
                .with_widths(cfg.widths.clone())
                .init_with_channels(channels, d),
        },
        train,
        val,
        attr,
        &cfg.fit(),
        device,
        label,
        progress,
    )
}

/// Accuracy of a burn classifier on attribute `attr` of `ds` (images or other [`Inputs`]).
///
/// # Errors
/// [`crate::Error::UnknownLabel`] for an unknown attribute.
pub fn burn_accuracy<M: Classifier, I: Inputs + ?Sized>(
    model: &M,
    ds: &I,
    attr: &str,
    device: &Device,
) -> Result<Accuracy> {
    let a = ds.dataset().attribute(attr)?;
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut pred = Vec::with_capacity(ds.len());
    for idx in all.chunks(256) {
        pred.extend(batch::predictions(model.forward(ds.batch(idx, device))));
    }
    Ok(Accuracy::score(&pred, &a.labels, a.classes.len()))
}
