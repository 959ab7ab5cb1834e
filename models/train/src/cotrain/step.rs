//! One co-training step: the unit that `scrim train` repeats and `scrim bench` times, so the
//! benchmark measures exactly what training runs.

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::hsic::conditional_cka;
use super::ops::{
    distillation, expected_release, fixed_part, perturb, prior_cross_entropy, scalar,
};
use super::pool::Pool;
use super::targets::{Targets, targets};
use crate::Result;
use crate::batch;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::nets::{Nets, Perturber, RecognizerConfig};

/// What a step trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The recognizer alone, on the image after the perturber's fixed transform (no noise).
    Warmup,
    /// Perturber and recognizer (and the adversary, in adversarial mode) on uploads.
    Cotrain,
    /// The recognizer alone, on uploads of the frozen perturber.
    Finetune,
}

impl Phase {
    /// The name written in `metrics.jsonl`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::Cotrain => "cotrain",
            Phase::Finetune => "finetune",
        }
    }
}

/// What one step measured on its batch.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// The training loss.
    pub loss: f64,
    /// Images of the batch the recognizer classified right (on what it trained on).
    pub correct: usize,
    /// Mean σ of the batch (0 in warm-up).
    pub sigma_mean: f64,
}

/// The networks, their optimisers and what they train toward.
pub struct Trainer {
    /// The networks under training.
    pub nets: Nets,
    pub(crate) opt_p: ModuleOptimizer,
    pub(crate) opt_c: ModuleOptimizer,
    pub(crate) opt_a: ModuleOptimizer,
    pub(crate) targets: Targets,
    pub(crate) adversary_cfg: Option<RecognizerConfig>,
    /// The pool of adversaries (`adversary_pool`), not saved with checkpoints.
    pool: Option<Pool>,
    cfg: TrainConfig,
    loss_fn: CrossEntropyLoss,
    device: Device,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("nets", &self.nets)
            .finish_non_exhaustive()
    }
}

/// Fits the concept erasure of the sensitive label on the training images after the
/// perturber's grey or tone transform (`perturber` has no erasure yet).
fn fit_erasure(
    cfg: &TrainConfig,
    perturber: &Perturber,
    ds: &Dataset,
    targets: &Targets,
    train: &[usize],
    device: &Device,
) -> Result<crate::nets::ConceptErasure> {
    let Some(sensitive) = targets.sensitive else {
        return Err(crate::Error::option(
            "--erase",
            "needs --sensitive, the label to erase",
        ));
    };
    let start = std::time::Instant::now();
    let fixed = |x: Tensor<4>| match perturber.fixed_shift(x.clone()) {
        Some(t) => x + t,
        None => x,
    };
    let channels = cfg.perturber.erase_channels();
    let e = crate::nets::fit_erasure(ds, sensitive, train, channels, fixed, device)?;
    let [values, rank] = e.down.val().dims();
    crate::report::note(&format!(
        "concept erasure of {}: rank {rank} over {values} values per image, fitted on {} \
         training images in {:.1} s",
        e.label,
        train.len(),
        start.elapsed().as_secs_f64()
    ));
    Ok(e)
}

impl Trainer {
    /// Fresh networks and optimisers for `cfg` on `device` (an autodiff device); the
    /// adversary's class prior is counted over the `train` indices of `ds`.
    ///
    /// # Errors
    /// Unknown labels, `--adversarial` without `--sensitive`, an unreadable key file.
    pub fn new(cfg: &TrainConfig, ds: &Dataset, train: &[usize], device: &Device) -> Result<Self> {
        let targets = targets(cfg, ds, train)?;
        let n_sensitive = targets.sensitive.map(|s| ds.attributes[s].classes.len());
        let adversary_cfg = cfg.adversarial.then(|| {
            cfg.adversary
                .clone()
                .unwrap_or_else(|| RecognizerConfig::new(n_sensitive.unwrap_or(2)))
        });
        let mut perturber = cfg.perturber.init_for(cfg.size, device);
        if cfg.perturber.erase {
            perturber.erase = Some(fit_erasure(cfg, &perturber, ds, &targets, train, device)?);
        }
        if cfg.perturber.release_probe > 0.0 {
            let p = &cfg.perturber;
            let cells = p.release_channels * p.release_side * p.release_side;
            let classes = ds.attributes[targets.desired].classes.len();
            perturber.bounded = perturber
                .bounded
                .map(|b| b.with_probe(cells, classes, device));
        }
        let nets = Nets {
            perturber,
            recognizer: cfg.recognizer.init(device),
            adversary: adversary_cfg.as_ref().map(|c| c.init(device)),
            // A template, so `--resume` can load a saved teacher; replaced after warm-up.
            teacher: (cfg.distill > 0.0).then(|| cfg.recognizer.init(device)),
        };
        let pool = match (cfg.adversary_pool.is_empty(), n_sensitive) {
            (false, Some(classes)) => Some(Pool::new(
                &cfg.adversary_pool,
                &cfg.adversary_widths,
                classes,
                cfg.size,
                &cfg.optimizer,
                device,
            )),
            _ => None,
        };
        Ok(Self {
            pool,
            nets,
            opt_p: cfg.optimizer.init(),
            opt_c: cfg.optimizer.init(),
            opt_a: cfg.optimizer.init(),
            targets,
            adversary_cfg,
            cfg: cfg.clone(),
            loss_fn: CrossEntropyLossConfig::new().init(device),
            device: device.clone(),
        })
    }

    /// Multiplies the perturber's learning rate by `factor` for the rest of the run.
    pub(super) fn slow_perturber(&mut self, factor: f64) {
        self.cfg.perturber_lr_scale *= factor;
    }

    /// A fresh adversary and optimiser (the staggered restarts of `adversary_reset_epochs`).
    pub fn reset_adversary(&mut self) {
        if let Some(c) = &self.adversary_cfg {
            self.nets.adversary = Some(c.init(&self.device));
            self.opt_a = self.cfg.optimizer.init();
        }
    }

    /// Restarts the pool's members whose turn it is at co-training epoch `k` (0-based) in a
    /// period of `period` epochs (0: never).
    pub fn reset_pool(&mut self, k: usize, period: usize) {
        if let Some(p) = &mut self.pool {
            p.maybe_reset(k, period, &self.device);
        }
    }

    /// One optimiser step on the images `idx` of `ds` at noise reward `lambda` and learning
    /// rate `lr`.
    pub fn step(
        &mut self,
        ds: &Dataset,
        idx: &[usize],
        phase: Phase,
        lambda: f64,
        hsic: f64,
        lr: f64,
    ) -> StepStats {
        let (cfg, t, device) = (&self.cfg, &self.targets, &self.device);
        let nets = &mut self.nets;
        let x = batch::images(ds, idx, device);
        let y = batch::labels(ds, t.desired, idx, device);
        let (loss, logits, sigma_mean) = if phase == Phase::Warmup {
            let logits = nets.recognizer.forward(crate::keyed::maybe_apply(
                t.keyed.as_ref(),
                fixed_part(&nets.perturber, x),
            ));
            (self.loss_fn.forward(logits.clone(), y), logits, 0.0)
        } else {
            let finetune = phase == Phase::Finetune;
            // Fine-tuning freezes the perturber: no graph through it, only the recognizer
            // learns.
            let frozen;
            let perturber = if finetune {
                frozen = nets.perturber.clone().no_grad();
                &frozen
            } else {
                &nets.perturber
            };
            let out = perturber.forward(x.clone());
            let xp =
                crate::keyed::maybe_apply(t.keyed.as_ref(), perturb(x.clone(), &out, cfg.noise));
            let logits = nets.recognizer.forward(xp.clone());
            let mut loss = self.loss_fn.forward(logits.clone(), y.clone());
            if !finetune
                && let (Some(b), Some(map)) = (&perturber.bounded, &out.map)
                && let Some(probe) = b.probe_logits(map.clone())
            {
                let aux = self.loss_fn.forward(probe, y);
                loss = loss + aux.mul_scalar(cfg.perturber.release_probe);
            }
            if !finetune
                && hsic > 0.0
                && let Some(s) = t.sensitive
            {
                let column = |a: usize| -> Vec<u32> {
                    idx.iter()
                        .map(|&i| u32::from(ds.attributes[a].labels[i]))
                        .collect()
                };
                let release = expected_release(x.clone(), &out);
                let desired = column(t.desired);
                for a in std::iter::once(s).chain(t.also_hide.iter().copied()) {
                    let dependence = conditional_cka(
                        release.clone(),
                        &desired,
                        &column(a),
                        ds.attributes[a].classes.len(),
                    );
                    loss = loss + dependence.mul_scalar(hsic);
                }
            }
            if let Some(teacher) = &nets.teacher {
                loss =
                    loss + distillation(teacher, &nets.perturber, x.clone(), logits.clone(), cfg);
            }
            if !finetune {
                loss = loss + out.log_sigma.clone().mean().mul_scalar(-lambda);
            }
            // The adversaries' extra steps see fresh noise draws of the same images.
            let adversaries = self.pool.is_some() || nets.adversary.is_some();
            let draws: Vec<Tensor<4>> = if !finetune && adversaries {
                (1..cfg.adversary_steps)
                    .map(|_| {
                        crate::keyed::maybe_apply(
                            t.keyed.as_ref(),
                            perturb(x.clone(), &out, cfg.noise),
                        )
                        .detach()
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if !finetune && let (Some(pool), Some(s)) = (&mut self.pool, t.sensitive) {
                let ys = batch::labels(ds, s, idx, device);
                let worst = pool.step(xp.clone(), &draws, ys, &t.prior, &self.loss_fn, lr);
                loss = loss + worst.mul_scalar(cfg.adversary_weight);
            }
            // Not in fine-tuning: the adversary stays as co-training left it.
            if !finetune && let (Some(mut adv), Some(s)) = (nets.adversary.take(), t.sensitive) {
                let ys = batch::labels(ds, s, idx, device);
                for input in std::iter::once(xp.clone().detach()).chain(draws.iter().cloned()) {
                    let a_loss = self.loss_fn.forward(adv.forward(input), ys.clone());
                    let mut g = a_loss.backward();
                    let ga = GradientsParams::from_module(&mut g, &adv);
                    adv = self.opt_a.step(lr, adv, ga);
                }
                let reward = prior_cross_entropy(adv.forward(xp), &t.prior);
                loss = loss + reward.mul_scalar(cfg.adversary_weight);
                nets.adversary = Some(adv);
            }
            let s = scalar(out.sigma.mean());
            (loss, logits, s)
        };
        let mut grads = loss.backward();
        if phase == Phase::Cotrain {
            let gp = GradientsParams::from_module(&mut grads, &nets.perturber);
            nets.perturber =
                self.opt_p
                    .step(lr * cfg.perturber_lr_scale, nets.perturber.clone(), gp);
        }
        let gc = GradientsParams::from_module(&mut grads, &nets.recognizer);
        nets.recognizer = self.opt_c.step(lr, nets.recognizer.clone(), gc);
        let labels = &ds.attributes[t.desired].labels;
        let correct = batch::predictions(logits)
            .iter()
            .zip(idx)
            .filter(|(p, i)| **p == labels[**i] as usize)
            .count();
        StepStats {
            loss: scalar(loss),
            correct,
            sigma_mean,
        }
    }

    /// Precise batch-norm statistics: the recognizer's running means and variances become the
    /// averages of its batch statistics over `idx` (whole batches of the training batch size,
    /// at most [`RECALIBRATE_IMAGES`] images), on the inputs `phase` trains it on. Momentum
    /// averaging lags a recognizer whose inputs moved during the epoch (the perturber
    /// learns, its σ can triple within one), so before this pass validation scored a
    /// recognizer at chance that read 91% of the same epoch's training batches. No weight
    /// changes.
    pub fn recalibrate(&mut self, ds: &Dataset, idx: &[usize], phase: Phase) {
        let (cfg, t, device) = (&self.cfg, &self.targets, &self.device);
        let batches = idx
            .chunks_exact(cfg.batch_size.max(1))
            .take((RECALIBRATE_IMAGES / cfg.batch_size.max(1)).max(1));
        // A copy shares the original's running statistics (burn's `RunningState` is shared
        // between clones); only the copy's momentum changes. No `no_grad()` copies: on a
        // network that no optimiser has stepped yet (the perturber after warm-up) the copy
        // shares the lazily initialised parameters, and `no_grad()` froze the original.
        let mut recognizer = self.nets.recognizer.clone();
        let perturber = &self.nets.perturber;
        for (k, b) in batches.enumerate() {
            recognizer.set_bn_momentum(1.0 / (k + 1) as f64);
            let x = batch::images(ds, b, device);
            let input = if phase == Phase::Warmup {
                fixed_part(perturber, x)
            } else {
                let out = perturber.forward(x.clone());
                perturb(x, &out, cfg.noise)
            };
            let input = crate::keyed::maybe_apply(t.keyed.as_ref(), input).detach();
            let _ = recognizer.forward(input);
        }
    }
}

/// Training images in [`Trainer::recalibrate`]'s pass (16 batches of 64), forward only: half as
/// many images as an epoch of the 2,100-image demo set trains on, 8% of UTKFace's 13,314.
pub const RECALIBRATE_IMAGES: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::data::{DataSpec, LoadOptions, SyntheticConfig};

    fn channel_stats(h: Tensor<4>) -> (Vec<f32>, Vec<f32>) {
        let [n, c, hh, ww] = h.dims();
        let v = h.swap_dims(0, 1).reshape([c, n * hh * ww]);
        let mean = v.clone().mean_dim(1);
        let var = (v - mean.clone()).powi_scalar(2).mean_dim(1);
        (batch::to_vec(mean), batch::to_vec(var))
    }

    #[test]
    fn recalibration_sets_running_statistics_to_the_batch_average() {
        let spec = DataSpec::Synthetic(SyntheticConfig {
            count: 256,
            seed: 1,
        });
        let options = LoadOptions {
            size: 16,
            cache: false,
            progress: false,
        };
        let ds = crate::data::load(&spec, &options).expect("synthetic data");
        let mut cfg = TrainConfig::for_data(&spec, "shape");
        cfg.size = 16;
        cfg.batch_size = 64;
        cfg.recognizer.num_classes = 2;
        // The demo's perturber.
        cfg.perturber.layout = crate::nets::PerturberLayout::Global;
        cfg.perturber.encoder_widths = crate::nets::GLOBAL_ENCODER_WIDTHS.to_vec();
        cfg.perturber.suppress = true;
        let device = Backend::Flex.train_device().expect("device");
        let all: Vec<usize> = (0..ds.len()).collect();
        let mut tr = Trainer::new(&cfg, &ds, &all, &device).expect("trainer");
        // One ordinary step leaves momentum-averaged statistics of a single batch.
        tr.step(&ds, &all[..64], Phase::Warmup, 0.0, 0.0, 1e-3);
        tr.recalibrate(&ds, &all, Phase::Warmup);
        // The first block's input does not depend on any batch norm: its expected statistics
        // are the plain averages of the four batches' own.
        let block = &tr.nets.recognizer.blocks[0];
        let (mut mean, mut var) = (vec![0f32; 32], vec![0f32; 32]);
        for b in all.chunks(64) {
            let x = fixed_part(&tr.nets.perturber, batch::images(&ds, b, &device));
            let (m, v) = channel_stats(block.conv.forward(x));
            for ch in 0..32 {
                mean[ch] += m[ch] / 4.0;
                var[ch] += v[ch] / 4.0;
            }
        }
        let got = |s: &burn::module::RunningState<Tensor<1>>| batch::to_vec(s.value_sync());
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
        };
        assert!(close(&got(&block.bn.running_mean), &mean), "running mean");
        assert!(close(&got(&block.bn.running_var), &var), "running variance");
        // The network keeps its own momentum for training.
        assert_eq!(block.bn.momentum, 0.1);
        // And the perturber, never stepped in warm-up, still has every parameter trainable.
        struct Trainable(usize, usize);
        impl burn::module::ModuleVisitor for Trainable {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                self.0 += 1;
                self.1 += usize::from(p.val().is_require_grad());
            }
        }
        let mut count = Trainable(0, 0);
        tr.nets.perturber.visit(&mut count);
        assert!(count.0 > 0);
        assert_eq!(count.1, count.0, "frozen perturber parameters");
    }
}
