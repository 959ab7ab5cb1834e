//! The attackers of the audit, and the image-quality scores of the reconstruction attack.

use std::collections::HashMap;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Attack, AttackResult, AuditRequest};
use scrim_train::Result;
use scrim_train::batch::{self, Inputs};
use scrim_train::data::Dataset;
use scrim_train::eval::{self, Accuracy, ClassifierConfig};
use scrim_train::nets::Recognizer;

/// Reconstruction quality on the test split (means over images).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reconstruction {
    /// PSNR of the decoder's output against the clean image, dB.
    pub psnr: f64,
    /// SSIM of the decoder's output against the clean image.
    pub ssim: f64,
    /// PSNR of the perturbed image itself (what the decoder starts from).
    pub input_psnr: f64,
    /// SSIM of the perturbed image itself.
    pub input_ssim: f64,
}

/// State shared by the schemes of one audit: the clean splits, and what is trained on clean
/// images once (the clean attackers used by `finetune` and `reconstruct`, and the clean
/// desired-task recognizer).
pub(super) struct Context<'a> {
    pub train: &'a Dataset,
    pub val: &'a Dataset,
    pub test: &'a Dataset,
    pub req: &'a AuditRequest,
    pub device: Device,
    clean_attackers: HashMap<String, Recognizer>,
    clean_desired: Option<(Recognizer, Accuracy)>,
    /// What the ARDEN schemes of this audit share (its client's frozen block, ...).
    pub arden: Option<super::arden::Shared<'a>>,
}

impl<'a> Context<'a> {
    pub fn new(
        train: &'a Dataset,
        val: &'a Dataset,
        test: &'a Dataset,
        req: &'a AuditRequest,
        device: Device,
    ) -> Self {
        Self {
            train,
            val,
            test,
            req,
            device,
            clean_attackers: HashMap::new(),
            clean_desired: None,
            arden: None,
        }
    }

    /// Desired accuracy of a recognizer trained and tested on clean images.
    pub fn clean_desired(&mut self) -> Result<Accuracy> {
        Ok(self.clean_recognizer()?.1)
    }

    /// The recognizer trained on clean images for the desired label (trained once per audit),
    /// and its clean test accuracy.
    pub fn clean_recognizer(&mut self) -> Result<(Recognizer, Accuracy)> {
        if let Some((m, a)) = &self.clean_desired {
            return Ok((m.clone(), *a));
        }
        let m = eval::train_classifier(
            self.train,
            self.val,
            &self.req.desired,
            &self.req.attacker,
            None,
            &self.device,
            "clean recognizer",
            self.req.progress,
        )?
        .model;
        let a = eval::burn_accuracy(&m, self.test, &self.req.desired, &self.device)?;
        self.clean_desired = Some((m.clone(), a));
        Ok((m, a))
    }

    /// The attacker for `attr` trained on clean images (trained once per audit).
    fn clean_attacker(&mut self, attr: &str) -> Result<Recognizer> {
        if let Some(m) = self.clean_attackers.get(attr) {
            return Ok(m.clone());
        }
        let m = eval::train_classifier(
            self.train,
            self.val,
            attr,
            &self.req.attacker,
            None,
            &self.device,
            &format!("clean attacker ({attr})"),
            self.req.progress,
        )?
        .model;
        self.clean_attackers.insert(attr.to_string(), m.clone());
        Ok(m)
    }

    /// Runs every requested attacker on every sensitive attribute.
    pub fn attack_all(
        &mut self,
        name: &str,
        identity: bool,
        ptrain: &Dataset,
        pval: &Dataset,
        ptest: &Dataset,
    ) -> Result<(Vec<AttackResult>, Option<Reconstruction>)> {
        let req = self.req;
        let mut results = Vec::new();
        let mut reconstruction = None;
        // The decoder does not depend on the attribute: train it once per scheme.
        let decoded = if req.attacks.contains(&Attack::Reconstruct) {
            let dec = train_decoder(ptrain, self.train, pval, self.val, req, &self.device, name)?;
            let out = decode(&dec, ptest, &self.device);
            reconstruction = Some(Reconstruction {
                psnr: mean_score(&out, self.test, psnr),
                ssim: mean_score(&out, self.test, ssim),
                input_psnr: mean_score(ptest, self.test, psnr),
                input_ssim: mean_score(ptest, self.test, ssim),
            });
            Some(out)
        } else {
            None
        };
        let blurred = req
            .attacks
            .contains(&Attack::Blur)
            .then(|| (blur(ptrain), blur(pval), blur(ptest)));
        for attr in &req.sensitive {
            let majority = majority(self.test, attr)?;
            for &attack in &req.attacks {
                let label = format!("{name}: {attr} {attack:?} attacker").to_lowercase();
                let device = self.device.clone();
                let score =
                    |m: &Recognizer, ds: &Dataset| eval::burn_accuracy(m, ds, attr, &device);
                let (accuracy, seeds) = match attack {
                    // Without perturbation the from-scratch attacker is the clean attacker.
                    Attack::Cnn if identity => {
                        (score(&self.clean_attacker(attr)?, ptest)?, Vec::new())
                    }
                    Attack::Cnn => self.over_seeds(|cfg| {
                        score(
                            &self.train_attacker(ptrain, pval, attr, None, cfg, &label)?,
                            ptest,
                        )
                    })?,
                    Attack::Blur => {
                        let Some((btrain, bval, btest)) = &blurred else {
                            continue;
                        };
                        self.over_seeds(|cfg| {
                            score(
                                &self.train_attacker(btrain, bval, attr, None, cfg, &label)?,
                                btest,
                            )
                        })?
                    }
                    Attack::Finetune => {
                        let clean = self.clean_attacker(attr)?;
                        self.over_seeds(|cfg| {
                            score(
                                &self.train_attacker(
                                    ptrain,
                                    pval,
                                    attr,
                                    Some(&clean),
                                    cfg,
                                    &label,
                                )?,
                                ptest,
                            )
                        })?
                    }
                    Attack::Reconstruct => {
                        let clean = self.clean_attacker(attr)?;
                        match &decoded {
                            Some(d) => (score(&clean, d)?, Vec::new()),
                            None => continue,
                        }
                    }
                };
                results.push(AttackResult::new(attr, attack, accuracy, majority).with_seeds(seeds));
            }
        }
        Ok((results, reconstruction))
    }

    /// Scores [`AuditRequest::attacker_seeds`] attackers that differ only in their seed
    /// (initialisation and shuffling): the mean accuracy, and each seed's accuracy when there
    /// is more than one. `attack` trains and scores one attacker with the configuration given.
    pub fn over_seeds(
        &self,
        mut attack: impl FnMut(&ClassifierConfig) -> Result<Accuracy>,
    ) -> Result<(Accuracy, Vec<f64>)> {
        let k = self.req.attacker_seeds.max(1);
        let mut runs = Vec::with_capacity(k);
        for i in 0..k as u64 {
            let cfg = self
                .req
                .attacker
                .clone()
                .with_seed(self.req.attacker.seed.wrapping_add(i * SEED_STRIDE));
            runs.push(attack(&cfg)?);
        }
        let mean = |f: fn(&Accuracy) -> f64| runs.iter().map(f).sum::<f64>() / k as f64;
        let accuracy = Accuracy {
            accuracy: mean(|a| a.accuracy),
            balanced: mean(|a| a.balanced),
            n: runs[0].n,
        };
        let seeds = if k > 1 {
            runs.iter().map(|a| a.accuracy).collect()
        } else {
            Vec::new()
        };
        Ok((accuracy, seeds))
    }

    /// A fresh attacker for `attr` (or `init` fine-tuned) on `train`, early-stopping on `val`,
    /// trained with `cfg` (the audit's attacker configuration, possibly another seed).
    pub fn train_attacker<I: Inputs + ?Sized>(
        &self,
        train: &I,
        val: &I,
        attr: &str,
        init: Option<&Recognizer>,
        cfg: &ClassifierConfig,
        label: &str,
    ) -> Result<Recognizer> {
        Ok(eval::train_classifier(
            train,
            val,
            attr,
            cfg,
            init,
            &self.device,
            label,
            self.req.progress,
        )?
        .model)
    }
}

/// Seeds of successive attackers in [`Context::over_seeds`] are this far apart.
const SEED_STRIDE: u64 = 7919;

impl AttackResult {
    /// A result with its Wilson half-width.
    pub(super) fn new(attr: &str, attacker: Attack, accuracy: Accuracy, majority: f64) -> Self {
        Self {
            attribute: attr.to_string(),
            attacker,
            ci95: accuracy.ci95(),
            accuracy,
            majority,
            seeds: Vec::new(),
        }
    }

    /// The same result with the per-seed accuracies it is the mean of.
    pub(super) fn with_seeds(mut self, seeds: Vec<f64>) -> Self {
        self.seeds = seeds;
        self
    }

    /// The strongest of the seeds (the accuracy itself for a single attacker).
    pub fn best_seed(&self) -> f64 {
        self.seeds
            .iter()
            .copied()
            .fold(self.accuracy.accuracy, f64::max)
    }
}

/// The majority-class rate of `attr` over all of `ds`.
pub(super) fn majority(ds: &Dataset, attr: &str) -> Result<f64> {
    let all: Vec<usize> = (0..ds.len()).collect();
    Ok(ds.attribute(attr)?.majority_rate(&all))
}

/// A 3×3 binomial blur (`[1 2 1]/4` in each direction, edges replicated): removes much of
/// per-pixel noise while keeping the low frequencies an attacker wants.
pub fn blur(ds: &Dataset) -> Dataset {
    let s = ds.size;
    let mut images = ds.images.clone();
    for img in images.chunks_mut(3 * s * s) {
        for plane in img.chunks_mut(s * s) {
            let src: Vec<f32> = plane.iter().map(|&v| f32::from(v)).collect();
            let at = |y: isize, x: isize| {
                let y = y.clamp(0, s as isize - 1) as usize;
                let x = x.clamp(0, s as isize - 1) as usize;
                src[y * s + x]
            };
            for y in 0..s as isize {
                for x in 0..s as isize {
                    let mut acc = 0.0;
                    for (dy, wy) in [(-1, 1.0), (0, 2.0), (1, 1.0)] {
                        for (dx, wx) in [(-1, 1.0), (0, 2.0), (1, 1.0)] {
                            acc += wy * wx * at(y + dy, x + dx);
                        }
                    }
                    plane[y as usize * s + x as usize] =
                        (acc / 16.0).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    Dataset {
        images,
        ..ds.clone()
    }
}

/// The reconstruction attacker: a small fully convolutional decoder x' → x with a residual
/// connection (it predicts the correction to x').
#[derive(Module, Debug)]
pub struct Decoder {
    convs: Vec<Conv2d>,
}

impl Decoder {
    fn new(width: usize, device: &Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
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
        let mse = mean_score(&out, val, |a, b| {
            a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64
        });
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

/// Mean of `score(a_i, b_i)` over images, both in `[0, 1]` CHW.
fn mean_score(a: &Dataset, b: &Dataset, score: impl Fn(&[f64], &[f64]) -> f64) -> f64 {
    let to = |v: &[u8]| v.iter().map(|&x| f64::from(x) / 255.0).collect::<Vec<_>>();
    let n = a.len().max(1) as f64;
    (0..a.len())
        .map(|i| score(&to(a.image(i)), &to(b.image(i))))
        .sum::<f64>()
        / n
}

/// PSNR in dB of two images with values in `[0, 1]` (capped at 100 dB for identical images).
pub fn psnr(a: &[f64], b: &[f64]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len().max(1) as f64;
    if mse <= 1e-10 {
        100.0
    } else {
        -10.0 * mse.log10()
    }
}

/// SSIM (Wang et al. 2004) of two square 3-channel CHW images in `[0, 1]`: 7×7 uniform windows
/// over every valid position, `C1 = 0.01²`, `C2 = 0.03²`, averaged over windows and channels.
pub fn ssim(a: &[f64], b: &[f64]) -> f64 {
    let plane = a.len() / 3;
    let s = (plane as f64).sqrt() as usize;
    let win = 7.min(s);
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mut total = 0.0;
    let mut count = 0usize;
    for c in 0..3 {
        let (pa, pb) = (
            &a[c * plane..(c + 1) * plane],
            &b[c * plane..(c + 1) * plane],
        );
        for y in 0..=s - win {
            for x in 0..=s - win {
                let (mut ma, mut mb, mut va, mut vb, mut cov) = (0.0, 0.0, 0.0, 0.0, 0.0);
                let n = (win * win) as f64;
                for dy in 0..win {
                    for dx in 0..win {
                        let i = (y + dy) * s + x + dx;
                        ma += pa[i];
                        mb += pb[i];
                    }
                }
                ma /= n;
                mb /= n;
                for dy in 0..win {
                    for dx in 0..win {
                        let i = (y + dy) * s + x + dx;
                        va += (pa[i] - ma).powi(2);
                        vb += (pb[i] - mb).powi(2);
                        cov += (pa[i] - ma) * (pb[i] - mb);
                    }
                }
                // Sample (co)variances, as in the reference implementation.
                let d = n - 1.0;
                let (va, vb, cov) = (va / d, vb / d, cov / d);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                count += 1;
            }
        }
    }
    total / count.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..3 * 16 * 16)
            .map(|_| rand::Rng::random::<f64>(&mut rng))
            .collect()
    }

    #[test]
    fn quality_scores() {
        let a = image(1);
        assert_eq!(psnr(&a, &a), 100.0);
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-12);
        // A uniform offset of 0.1 has MSE 0.01: exactly 20 dB.
        let b: Vec<f64> = a.iter().map(|v| v + 0.1).collect();
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-9);
        // Independent noise images are nearly uncorrelated: SSIM near 0, far below a copy.
        let c = image(2);
        assert!(ssim(&a, &c).abs() < 0.2, "{}", ssim(&a, &c));
        // Inverting contrast gives a negative structure term.
        let inv: Vec<f64> = a.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&a, &inv) < -0.5);
    }

    #[test]
    fn blur_keeps_flat_images_and_smooths_noise() {
        let s = 8;
        let flat = Dataset {
            size: s,
            images: vec![100; 3 * s * s],
            names: vec!["a".into()],
            attributes: vec![],
        };
        assert_eq!(blur(&flat).images, flat.images);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noisy = Dataset {
            images: (0..3 * s * s)
                .map(|_| rand::Rng::random::<u8>(&mut rng))
                .collect(),
            ..flat
        };
        let var = |v: &[u8]| {
            let m = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
            v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / v.len() as f64
        };
        // A 3×3 binomial filter keeps (6/16)² ≈ 14% of white-noise variance in the interior.
        assert!(var(&blur(&noisy).images) < 0.35 * var(&noisy.images));
    }
}
