//! Evaluation: perturbing datasets exactly as a phone does, measuring recognizer accuracy through
//! tract, and training fresh attackers (classifiers) from scratch with early stopping ([`fit`]).

mod fit;

pub use fit::{
    Classifier, ClassifierConfig, FitConfig, Fitted, Patience, Trained, burn_accuracy, fit,
    train_classifier,
};

use scrim_core::{ImageTensor, Model, Perturber};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
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

/// Mean and RMS σ of a perturber over a dataset (a bounded release's σ is its fixed one).
pub fn sigma_stats(p: &Perturber, ds: &Dataset) -> Result<(f64, f64)> {
    let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0usize);
    for i in 0..ds.len() {
        let (s, q, k) = p.upload_base(&ds.image_tensor(i)?)?.sigma_sums();
        sum += s;
        sq += q;
        n += k;
    }
    let n = n.max(1) as f64;
    Ok((sum / n, (sq / n).sqrt()))
}
