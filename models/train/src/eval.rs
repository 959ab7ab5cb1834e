//! Evaluation: perturbing datasets exactly as a phone does, measuring recognizer accuracy through
//! tract, and training fresh attackers (classifiers) from scratch with early stopping.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use scrim_core::{ImageTensor, Model, Perturber};
use serde::{Deserialize, Serialize};

use crate::batch::{self, Inputs};
use crate::data::Dataset;
use crate::nets::{Recognizer, RecognizerConfig};
use crate::{Error, Result};

/// Perturbs every image of `ds` through scrim-core's [`Perturber`] (tract σ network, CSPRNG
/// noise, 8-bit quantisation): the same path as the SDK.
///
/// # Errors
/// Model errors from the perturber.
pub fn perturb_dataset(perturber: &Perturber, ds: &Dataset, progress: bool) -> Result<Dataset> {
    let n = ds.len();
    let bar = crate::report::bar(n as u64, "perturbing", progress);
    let threads = std::thread::available_parallelism()
        .map_or(2, |t| t.get())
        .min(n.max(1));
    let chunk = n.div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .collect::<Vec<_>>()
            .chunks(chunk)
            .map(|idx| {
                let idx = idx.to_vec();
                let bar = &bar;
                scope.spawn(move || -> Result<Vec<u8>> {
                    let mut out = Vec::with_capacity(idx.len() * ds.image_len());
                    for i in idx {
                        let x = ds.image_tensor(i)?;
                        let y = perturber.perturb_tensor(&x)?;
                        out.extend(y.data().iter().map(|&v| scrim_core::imaging::quantize(v)));
                        bar.inc(1);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Internal("a perturbation thread panicked".into()))
                })
            })
            .collect()
    });
    bar.finish();
    let mut images = Vec::with_capacity(n * ds.image_len());
    for p in parts {
        images.extend(p?);
    }
    Ok(Dataset {
        images,
        ..ds.clone()
    })
}

/// Accuracy and balanced accuracy (mean per-class recall) of predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Mean recall over the classes present.
    pub balanced: f64,
    /// Images scored.
    pub n: usize,
}

impl Accuracy {
    /// Scores predictions against labels (`classes` classes).
    pub fn score(pred: &[usize], labels: &[u16], classes: usize) -> Self {
        let mut hit = vec![0usize; classes];
        let mut tot = vec![0usize; classes];
        for (&p, &l) in pred.iter().zip(labels) {
            tot[l as usize] += 1;
            hit[l as usize] += usize::from(p == l as usize);
        }
        let present: Vec<f64> = hit
            .iter()
            .zip(&tot)
            .filter(|(_, t)| **t > 0)
            .map(|(h, t)| *h as f64 / *t as f64)
            .collect();
        Self {
            accuracy: hit.iter().sum::<usize>() as f64 / pred.len().max(1) as f64,
            balanced: present.iter().sum::<f64>() / present.len().max(1) as f64,
            n: pred.len(),
        }
    }

    /// Half-width of the 95% Wilson interval of the accuracy.
    pub fn ci95(&self) -> f64 {
        let n = self.n.max(1) as f64;
        let p = self.accuracy;
        let z: f64 = 1.96;
        let denom = 1.0 + z * z / n;
        z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom
    }
}

/// Accuracy of an ONNX recognizer (tract) on attribute `attr` of `ds`.
///
/// # Errors
/// Model errors; [`Error::UnknownLabel`] for an unknown attribute.
pub fn onnx_accuracy(model: &Model, ds: &Dataset, attr: &str) -> Result<Accuracy> {
    onnx_accuracy_keyed(model, ds, attr, None)
}

/// Accuracy of an ONNX recognizer on `ds`, every image passed through the key-based transform
/// `keyed` first (scrim-core's, as on the device).
///
/// # Errors
/// As [`onnx_accuracy`].
pub fn onnx_accuracy_keyed(
    model: &Model,
    ds: &Dataset,
    attr: &str,
    keyed: Option<&scrim_core::BlockTransform>,
) -> Result<Accuracy> {
    let a = ds.attribute(attr)?;
    let (logits, k) = onnx_logits(model, ds, keyed)?;
    let pred: Vec<usize> = logits.chunks(k).map(argmax).collect();
    Ok(Accuracy::score(&pred, &a.labels, a.classes.len()))
}

/// tract logits of `model` on every image of `ds` (in batches of 256, each image through
/// `keyed` first), flattened image by image, and the number of classes.
///
/// # Errors
/// Model errors.
pub fn onnx_logits(
    model: &Model,
    ds: &Dataset,
    keyed: Option<&scrim_core::BlockTransform>,
) -> Result<(Vec<f32>, usize)> {
    let s = ds.size;
    let mut logits = Vec::new();
    let mut k = 1;
    let all: Vec<usize> = (0..ds.len()).collect();
    for idx in all.chunks(256) {
        let mut data = Vec::with_capacity(idx.len() * ds.image_len());
        for &i in idx {
            data.extend(ds.unit_pixels(i));
        }
        let mut x = ImageTensor::new([idx.len(), 3, s, s], data)?;
        if let Some(t) = keyed {
            x = t.apply(&x)?;
        }
        let out = model.run(&x)?;
        k = out[0].shape.get(1).copied().unwrap_or(1).max(1);
        logits.extend_from_slice(&out[0].data);
    }
    Ok((logits, k))
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (j, &v)| if v > b.1 { (j, v) } else { b })
        .0
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

/// A trained classifier and its validation history.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The network in inference mode (best validation epoch).
    pub model: Recognizer,
    /// Validation accuracy per epoch.
    pub val_history: Vec<f64>,
}

/// Trains a fresh classifier for `attr` on `train`, early-stopping on `val`.
/// `init` starts from given weights instead (for fine-tuning). The inputs are images (a
/// [`Dataset`]) or any other [`Inputs`]; the network's first block takes their channels.
///
/// # Errors
/// [`Error::UnknownLabel`] for an unknown attribute.
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
    let attr_idx = train.dataset().attribute_index(attr)?;
    let a = &train.dataset().attributes[attr_idx];
    let train_device = device.clone().autodiff();
    train_device.seed(cfg.seed);
    let mut model = match init {
        Some(m) => m.clone().fork(&train_device).train(),
        None => RecognizerConfig::new(a.classes.len())
            .with_widths(cfg.widths.clone())
            .init_with_channels(train.channels(), &train_device),
    };
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let mut best: Option<(f64, Recognizer)> = None;
    let mut history = Vec::new();
    let mut since_best = 0;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let bar = crate::report::bar((cfg.epochs * train.len()) as u64, label, progress);
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            cfg.seed.wrapping_add(epoch as u64),
        ));
        for idx in batch::chunks(&order, cfg.batch_size) {
            let x = train.batch(idx, &train_device);
            let y = batch::labels(train.dataset(), attr_idx, idx, &train_device);
            let loss = loss_fn.forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.learning_rate, model, grads);
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
    Ok(Trained {
        model,
        val_history: history,
    })
}

/// Accuracy of a burn classifier on attribute `attr` of `ds` (images or other [`Inputs`]).
///
/// # Errors
/// [`Error::UnknownLabel`] for an unknown attribute.
pub fn burn_accuracy<I: Inputs + ?Sized>(
    model: &Recognizer,
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
/// Mean and RMS σ of a perturber over a dataset.
pub fn sigma_stats(p: &Perturber, ds: &Dataset) -> Result<(f64, f64)> {
    let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0usize);
    for i in 0..ds.len() {
        let x = ds.image_tensor(i)?;
        for &v in p.maps(&x)?.sigma.data() {
            sum += f64::from(v);
            sq += f64::from(v) * f64::from(v);
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    Ok((sum / n, (sq / n).sqrt()))
}
