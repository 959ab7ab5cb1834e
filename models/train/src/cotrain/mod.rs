//! Co-training of the perturber and the recognizer (and, in adversarial mode, an adversary),
//! written as a hand loop in the style of burn's GAN example: several models, one optimiser each.
//!
//! Schedule:
//! 1. **Warm-up** (`warmup_epochs`): the recognizer alone on clean images (after the perturber's
//!    fixed grey or tone transform, when it has one), so the perturber's first gradients come
//!    from a recognizer that already knows the task.
//! 2. **Co-training**: `x' = q(clip(x + σ(x) ⊙ ε, 0, 1))` with reparameterised noise and 8-bit
//!    quantisation through a straight-through estimator, and the loss
//!    `CE(C(x'), y) − λ · mean(log σ(x))`, λ ramping linearly over `lambda_ramp_epochs`.
//! 3. **Adversarial mode**: per batch, first the adversary learns the sensitive label from the
//!    detached `x'`; then perturber and recognizer add `w · CE(prior, A(x'))`, which is smallest
//!    when the adversary's prediction equals the class prior (not merely when it is wrong).
//!
//! 4. **Utility-constrained mode** (`target_accuracy`): λ is adapted by dual ascent on the
//!    constraint "accuracy on perturbed validation images ≥ target", so the perturber adds as
//!    much noise as a stated utility budget allows (see [`Dual`]). λ first ramps to its
//!    starting value as usual; the control starts at full λ.
//!
//! 5. **Distillation** (`distill`): the recognizer as warm-up left it becomes a frozen teacher
//!    that sees each image without noise; the recognizer is also pulled toward its soft labels.
//!
//! 6. **The attacker-free term** (`hsic`): the perturber also minimises the dependence of the
//!    expected release (the upload before its noise, what an attacker who averages many
//!    uploads sees) on the sensitive label within each desired class, measured by normalised
//!    HSIC with a Gaussian kernel. No adversary is trained, so there is none to overfit.
//!
//! 7. **Fine-tuning** (`finetune_epochs`): the closing epochs train the recognizer alone on
//!    images from the frozen perturber, so the cloud model ends adapted to the perturbation it
//!    will be served instead of one that moved under it every batch.
//!
//! Every epoch ends by setting the recognizer's batch-norm statistics to their average over a
//! sample of that epoch's inputs ([`Trainer::recalibrate`]) and is validated; the checkpoint with
//! the lowest validation objective among the epochs at full λ is kept as `best`, and `last` allows
//! `--resume`. With `select_attacker` the kept epoch is instead the one where a freshly trained
//! validation attacker reads the least of the sensitive label among the epochs within
//! `select_tolerance` of the best validation accuracy ([`select`]); the adversaries of co-training
//! never judge themselves. With `adversary_steps` above 1 every adversary takes that many steps per
//! batch, each on a fresh noise draw.

mod dual;
mod hsic;
mod ops;
mod pool;
mod rollback;
mod select;
mod step;
mod targets;
mod validate;

use std::time::Instant;

use burn::module::Module;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

pub use ops::{perturb, quantize_ste};
pub use pool::{AdversaryKind, blur, noise_level};
pub use step::{Phase, StepStats, Trainer};

use crate::batch;
use crate::config::{CONTROL_EVERY, TrainConfig};
use crate::data::{Dataset, Split};
use crate::nets::Nets;
use crate::run::{Checkpoint, RunDir};
use crate::{Error, Result};
use dual::{Dual, constrained_objective};

/// Options that do not change what is trained.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Continue from the run's last checkpoint.
    pub resume: bool,
    /// Report progress.
    pub progress: bool,
}

/// Trains a run from scratch or resumes it, writing everything into `run`.
///
/// # Errors
/// [`Error::UnknownLabel`], [`Error::BadRecord`] for an incompatible resume state, [`Error::Io`] for files.
pub fn train(
    cfg: &TrainConfig,
    ds: &Dataset,
    split: &Split,
    run: &RunDir,
    opts: &TrainOptions,
) -> Result<Nets> {
    let device = cfg.backend.train_device()?;
    let eval_device = cfg.backend.device()?;
    device.seed(cfg.seed);
    let mut tr = Trainer::new(cfg, ds, &split.train, &device)?;
    let mut have_teacher = false;
    let mut state = Checkpoint::default();
    if opts.resume {
        if let Some(saved) = restore_last(run, &mut tr, cfg, &device)? {
            state = saved;
            run.truncate_metrics(state.epochs_done)?;
            have_teacher = tr.nets.teacher.is_some();
            tr.slow_perturber(rollback::SLOWDOWN.powi(state.rollbacks as i32));
            tracing::info!("resuming after epoch {}", state.epochs_done);
        } else {
            tracing::warn!(
                "--resume: no checkpoint in {}, starting from scratch",
                run.path().display()
            );
            // A crash between an epoch's metrics line and its first checkpoint leaves that line
            // behind: starting over must not keep it.
            run.reset_metrics()?;
        }
    } else {
        run.reset_metrics()?;
    }
    run.save_config(cfg)?;
    run.save_split(split)?;

    let mut dual = cfg.target_accuracy.map(|target| Dual {
        target,
        rate: cfg.dual_rate,
        lambda: state.lambda.unwrap_or(cfg.lambda),
        accuracy: None,
        next: 0,
    });
    let majority = ds.attributes[tr.targets.desired].majority_rate(&split.train);
    let mut warned_stuck = false;
    let mut warned_collapse = false;
    let mut epoch = state.epochs_done;
    while epoch < cfg.epochs {
        let started = Instant::now();
        let cotrain_epoch = epoch.checked_sub(cfg.warmup_epochs);
        if let Some(k) = cotrain_epoch
            && cfg.adversary_reset_epochs > 0
            && k > 0
            && k % cfg.adversary_reset_epochs == 0
        {
            device.seed(cfg.seed.wrapping_add(0xad00 + epoch as u64));
            tr.reset_adversary();
        }
        if let Some(k) = cotrain_epoch {
            device.seed(cfg.seed.wrapping_add(0xb00 + epoch as u64));
            tr.reset_pool(k, cfg.adversary_reset_epochs);
        }
        // A repeat after a collapse (`rollback`) draws other noise than the epoch it repeats.
        device.seed(
            cfg.seed
                .wrapping_add(1 + epoch as u64)
                .wrapping_add((state.rollbacks as u64) << 32),
        );
        let lr = cfg.lr_at(epoch);
        let phase = if epoch < cfg.warmup_epochs {
            Phase::Warmup
        } else if cfg.is_finetune(epoch) {
            Phase::Finetune
        } else {
            Phase::Cotrain
        };
        if cfg.distill > 0.0 && phase != Phase::Warmup && !have_teacher {
            // A snapshot, not a clone: clones share BatchNorm's running statistics, which
            // the recognizer's training steps keep updating.
            tr.nets.teacher = Some(tr.nets.recognizer.valid());
            have_teacher = true;
        }
        // The dual controller takes over once the ramp has brought λ to its starting value: in
        // the ramp epochs the recognizer is still adapting to the perturbation (validation
        // accuracy dips), and controlling on that dip drove λ to its floor on UTKFace.
        let controlling = phase == Phase::Cotrain && cfg.is_full_lambda(epoch);
        let mut lambda = match &dual {
            Some(d) if controlling || phase == Phase::Finetune => d.lambda,
            _ => cfg.lambda_at(epoch),
        };
        let mut order = split.train.clone();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (epoch as u64).wrapping_mul(0x9e37),
        ));
        let bar = crate::report::bar(
            order.len() as u64,
            &format!("epoch {}/{}", epoch + 1, cfg.epochs),
            opts.progress,
        );
        let (mut loss_sum, mut correct, mut seen, mut sigma_sum) = (0.0f64, 0usize, 0usize, 0.0f64);
        // The last quarter of the epoch's batches, on their own: an epoch that collapses
        // midway still averages well above the majority rate over all of them.
        let tail_from = order.len() - order.len() / 4;
        let (mut tail_correct, mut tail_seen) = (0usize, 0usize);
        for idx in batch::chunks(&order, cfg.batch_size) {
            let s = tr.step(ds, idx, phase, lambda, cfg.hsic_at(epoch), lr);
            if let Some(d) = dual.as_mut().filter(|_| controlling)
                && (seen / cfg.batch_size.max(1)).is_multiple_of(CONTROL_EVERY)
            {
                lambda = d.step(
                    &tr.nets,
                    ds,
                    &split.val,
                    cfg.batch_size,
                    &tr.targets,
                    cfg.noise,
                    &eval_device,
                );
            }
            loss_sum += s.loss * idx.len() as f64;
            correct += s.correct;
            if seen >= tail_from {
                tail_correct += s.correct;
                tail_seen += idx.len();
            }
            seen += idx.len();
            sigma_sum += s.sigma_mean * idx.len() as f64;
            bar.inc(idx.len() as u64);
            bar.set_status(&format!(
                "loss {:.3} acc {:.3} σ {:.3}",
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
                sigma_sum / seen as f64
            ));
            if !s.loss.is_finite() {
                return Err(Error::Diverged { epoch: epoch + 1 });
            }
        }
        bar.finish();
        tr.recalibrate(ds, &order, phase);
        let train_secs = started.elapsed().as_secs_f64();
        let mut m = validate::validate(
            &tr.nets,
            cfg,
            ds,
            &split.val,
            &tr.targets,
            cfg.noise,
            &eval_device,
        )?;
        m.epoch = epoch;
        m.phase = phase.name().into();
        m.lambda = lambda;
        if let Some(d) = &dual {
            m.val_objective = constrained_objective(&m, d.target);
            state.lambda = Some(d.lambda);
        }
        m.lr = lr;
        m.train_loss = loss_sum / seen.max(1) as f64;
        m.train_acc = correct as f64 / seen.max(1) as f64;
        m.train_acc_tail = (tail_seen > 0).then(|| tail_correct as f64 / tail_seen as f64);
        m.seconds = started.elapsed().as_secs_f64();
        m.images_per_sec = seen as f64 / train_secs.max(1e-9);
        // A bounded release has no λ, and its recognizer never sees photos: no clean accuracy.
        let bounded = cfg.perturber.layout == crate::nets::PerturberLayout::Bounded;
        let setting = if bounded {
            format!("σ {:.3}", m.mean_sigma)
        } else {
            format!("λ {lambda:.3}")
        };
        let val = if bounded {
            format!("val acc {:.3}", m.val_acc_perturbed)
        } else {
            format!(
                "val acc clean {:.3} perturbed {:.3} σ {:.3}",
                m.val_acc_clean, m.val_acc_perturbed, m.mean_sigma
            )
        };
        let eligible = match phase {
            Phase::Warmup => false,
            Phase::Finetune => true,
            Phase::Cotrain => cfg.is_full_lambda(epoch),
        };
        if let (Some(kind), true) = (cfg.select_attacker, eligible) {
            m.val_attack_acc = Some(select::attacker_accuracy(
                &tr.nets,
                cfg,
                ds,
                &split.train,
                &split.val,
                &tr.targets,
                kind,
                &eval_device,
            )?);
            run.save_nets(&select::prefix(epoch), &tr.nets)?;
        }
        crate::report::note(&format!(
            "epoch {:>3}/{} {:<7} {setting} | train loss {:.3} acc {:.3} | {val}{}{} | {:.0} img/s",
            epoch + 1,
            cfg.epochs,
            m.phase,
            m.train_loss,
            m.train_acc,
            m.adversary_val_acc
                .map(|a| format!(" adv {a:.3}"))
                .unwrap_or_default(),
            m.val_attack_acc
                .map(|a| format!(" fresh attacker {a:.3}"))
                .unwrap_or_default(),
            m.images_per_sec
        ));
        // A fallen epoch is never kept as the best, even once the repeats are spent: its
        // objective (CE at chance, σ at its maximum) can undercut the first epochs at full λ.
        let fall = if phase == Phase::Cotrain {
            rollback::fall(&m, &run.metrics()?, majority)
        } else {
            rollback::Fall::None
        };
        if fall == rollback::Fall::Collapsed && !warned_collapse {
            let redo = state.rollbacks < rollback::MAX_ROLLBACKS;
            let factor = rollback::SLOWDOWN.powi(state.rollbacks as i32 + i32::from(redo));
            tracing::warn!("{}", rollback::message(&m, majority, factor, redo));
            // Once the repeats are spent, said once.
            warned_collapse = !redo;
            if redo {
                let rollbacks = state.rollbacks + 1;
                state = restore_last(run, &mut tr, cfg, &device)?.ok_or_else(|| {
                    Error::Internal("the checkpoint to go back to is missing".into())
                })?;
                state.rollbacks = rollbacks;
                have_teacher = tr.nets.teacher.is_some();
                if let (Some(d), Some(l)) = (dual.as_mut(), state.lambda) {
                    d.lambda = l;
                }
                tr.slow_perturber(rollback::SLOWDOWN);
                continue;
            }
        }
        if !warned_stuck && phase != Phase::Warmup && m.train_acc < majority + STUCK_MARGIN {
            warned_stuck = true;
            tracing::warn!("{}", stuck_advice(cfg, epoch, m.train_acc, majority));
        }
        run.append_metrics(&m)?;
        run.write_curves();
        state.epochs_done = epoch + 1;
        let best = eligible
            && fall == rollback::Fall::None
            && state.best_objective.is_none_or(|b| m.val_objective < b);
        if best {
            state.best_objective = Some(m.val_objective);
            state.best_epoch = Some(epoch);
        }
        run.save_last(
            &tr.nets,
            best.then_some(&tr.nets),
            &state,
            [&tr.opt_p, &tr.opt_c, &tr.opt_a],
        )?;
        epoch += 1;
    }
    if cfg.select_attacker.is_some()
        && let Some(epoch) = select::choose(&run.metrics()?, cfg.select_tolerance)
    {
        let chosen = run.load_nets(&select::prefix(epoch), &tr.nets, &device)?;
        state.best_epoch = Some(epoch);
        state.best_objective = None;
        run.save_last(
            &tr.nets,
            Some(&chosen),
            &state,
            [&tr.opt_p, &tr.opt_c, &tr.opt_a],
        )?;
        crate::report::note(&format!(
            "kept epoch {}: the least read by a fresh attacker within {:.1} points of the best \
             validation accuracy",
            epoch + 1,
            100.0 * cfg.select_tolerance
        ));
    }
    if state.best_epoch.is_none() {
        // Only warm-up epochs ran (epochs ≤ warmup), or every epoch at full λ collapsed: the
        // last state is all there is.
        run.save_best(&tr.nets)?;
    }
    run.load_best(&tr.nets, &device)
}

/// Loads the run's `last` checkpoint (networks and optimisers) into `tr` and returns its
/// progress; `None` if the run has none. For `--resume` and for going back after a collapse.
fn restore_last(
    run: &RunDir,
    tr: &mut Trainer,
    cfg: &TrainConfig,
    device: &burn::prelude::Device,
) -> Result<Option<Checkpoint>> {
    let Some((nets, state)) = run.load_last(&tr.nets, device)? else {
        return Ok(None);
    };
    tr.nets = nets;
    (tr.opt_p, tr.opt_c, tr.opt_a) = run.load_optimizers(
        cfg.optimizer.init(),
        cfg.optimizer.init(),
        cfg.optimizer.init(),
    )?;
    Ok(Some(state))
}

/// How close to the majority rate a co-training epoch's training accuracy must be for the run
/// to count as stuck.
const STUCK_MARGIN: f64 = 0.02;

/// What to tell a user whose co-training epoch learned nothing of the desired label.
fn stuck_advice(cfg: &TrainConfig, epoch: usize, acc: f64, majority: f64) -> String {
    let hint = if cfg.hsic > 0.0 && cfg.hsic_ramp_epochs == 0 {
        "the attacker-free term applied in full from the first step can hold the release at a \
         map that carries nothing; try --hsic-ramp 3 (or a smaller --hsic)"
    } else {
        "try a lower --lr, a smaller --lambda or adversary weight, or more --warmup epochs"
    };
    format!(
        "epoch {}: the recognizer reads {} at {:.1}%, no better than the majority rate \
         ({:.1}%): the run is not learning; {hint}",
        epoch + 1,
        cfg.desired,
        100.0 * acc,
        100.0 * majority
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::{PerturberConfig, RecognizerConfig};
    use burn::optim::AdamConfig;

    #[test]
    fn a_stuck_run_is_told_what_to_change() {
        let cfg = TrainConfig::new(
            "synthetic".into(),
            "gender".into(),
            PerturberConfig::new(),
            RecognizerConfig::new(2),
            AdamConfig::new(),
        )
        .with_hsic(1.0);
        let msg = stuck_advice(&cfg, 2, 0.51, 0.52);
        assert!(
            msg.starts_with("epoch 3: the recognizer reads gender at 51.0%"),
            "{msg}"
        );
        assert!(msg.contains("--hsic-ramp 3"), "{msg}");
        let msg = stuck_advice(&cfg.with_hsic_ramp_epochs(3), 2, 0.51, 0.52);
        assert!(
            msg.contains("--lr") && !msg.contains("--hsic-ramp"),
            "{msg}"
        );
    }
}
