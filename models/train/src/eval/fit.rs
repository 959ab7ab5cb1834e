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
    /// Smallest validation gain that resets the patience ([`FitConfig::min_delta`]; `None` = any
    /// gain).
    #[config(default = "None")]
    pub min_delta: Option<f64>,
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
            .with_min_delta(self.min_delta)
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
    /// Smallest gain in validation accuracy over the last epoch that reset the patience for an
    /// epoch to reset it again (`None` or 0 = any gain). A slow climb still resets it once its
    /// gains add up; an attacker whose accuracy only wanders within the validation noise stops
    /// after `patience` epochs. The best epoch is kept either way.
    #[config(default = "None")]
    pub min_delta: Option<f64>,
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
    let mut stop = Patience::new(cfg.patience, cfg.min_delta.unwrap_or(0.0));
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
        }
        if stop.should_stop(acc) {
            break;
        }
    }
    bar.finish();
    let model = best.map(|(_, m)| m).unwrap_or_else(|| model.valid());
    Ok(Fitted {
        model,
        val_history: history,
    })
}

/// Early stopping: counts the epochs since the validation accuracy last rose by more than
/// `min_delta` above the accuracy of the epoch that last reset the count.
#[derive(Debug, Clone)]
pub struct Patience {
    patience: usize,
    min_delta: f64,
    reference: Option<f64>,
    since: usize,
}

impl Patience {
    /// Stops after `patience` epochs without a gain larger than `min_delta`.
    pub fn new(patience: usize, min_delta: f64) -> Self {
        Self {
            patience,
            min_delta: min_delta.max(0.0),
            reference: None,
            since: 0,
        }
    }

    /// Records one epoch's validation accuracy; true when training should stop.
    pub fn should_stop(&mut self, acc: f64) -> bool {
        if self.reference.is_none_or(|r| acc > r + self.min_delta) {
            self.reference = Some(acc);
            self.since = 0;
            false
        } else {
            self.since += 1;
            self.since >= self.patience
        }
    }
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

#[cfg(test)]
mod tests {
    use super::Patience;

    /// The epoch at which `p` stops on `accs` (None: it never stops).
    fn stops_at(mut p: Patience, accs: &[f64]) -> Option<usize> {
        accs.iter().position(|&a| p.should_stop(a)).map(|i| i + 1)
    }

    #[test]
    fn without_min_delta_any_gain_resets_the_patience() {
        let wander = [
            0.435, 0.436, 0.434, 0.437, 0.435, 0.435, 0.438, 0.43, 0.43, 0.43, 0.43,
        ];
        assert_eq!(stops_at(Patience::new(4, 0.0), &wander), Some(11));
        assert_eq!(stops_at(Patience::new(4, 0.0), &wander[..10]), None);
    }

    #[test]
    fn min_delta_stops_a_wandering_attacker_and_follows_a_slow_climb() {
        let wander = [
            0.435, 0.436, 0.434, 0.437, 0.435, 0.435, 0.438, 0.43, 0.43, 0.43, 0.43,
        ];
        assert_eq!(stops_at(Patience::new(4, 0.005), &wander), Some(5));
        // Gains of 0.2 points an epoch add up past 0.5 within the patience.
        let climb: Vec<f64> = (0..20).map(|i| 0.45 + 0.002 * f64::from(i)).collect();
        assert_eq!(stops_at(Patience::new(4, 0.005), &climb), None);
        // A fall after the climb stops it `patience` epochs after its last reset.
        let fall = [0.5, 0.52, 0.54, 0.53, 0.53, 0.53, 0.53];
        assert_eq!(stops_at(Patience::new(4, 0.005), &fall), Some(7));
    }
}
