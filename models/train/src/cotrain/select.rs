//! Checkpoint selection on a freshly trained validation attacker (`--select-attacker`).
//!
//! An adversary trained alongside the perturber is a poor judge of it: the perturber learns to
//! fool *that* adversary, and fresh attackers read what it missed. So at the end of every
//! eligible epoch a new attacker, never seen by the perturber, learns the sensitive label from
//! uploads of a sample of the training images (two noise draws each, as an attacker who
//! uploads a face set afresh), and is scored on one upload of every validation image. Every
//! scored epoch's networks are saved; at the end the run keeps, among the epochs whose
//! validation accuracy is within a tolerance of the best, the one that attacker read the least.
//! The test split is never looked at.

use burn::module::Module;
use burn::prelude::*;

use super::ops::perturb;
use super::pool::AdversaryKind;
use super::targets::Targets;
use crate::batch;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::eval::{Classifier, FitConfig, burn_accuracy, fit};
use crate::nets::{LinearProbe, Nets, RecognizerConfig};
use crate::run::EpochMetrics;
use crate::{Error, Result};

/// Training images the validation attacker learns from (a seeded sample).
pub const SELECT_TRAIN_IMAGES: usize = 4000;
/// Noise draws of each of those images.
pub const SELECT_DRAWS: usize = 2;
/// The validation attacker's epochs, all of them run (patience = epochs); `fit` keeps its best
/// epoch on the validation uploads, so the score is the best of these, the same optimism for
/// every epoch it ranks.
pub const SELECT_EPOCHS: usize = 4;

/// The uploads of `indices` of `ds`, `draws` noise draws each, as a dataset with their labels.
pub(crate) fn uploads(
    nets: &Nets,
    cfg: &TrainConfig,
    ds: &Dataset,
    indices: &[usize],
    draws: usize,
    t: &Targets,
    device: &Device,
) -> Dataset {
    let p = nets.perturber.valid();
    let sub = ds.subset(indices);
    let mut out = Dataset {
        size: sub.size,
        images: Vec::with_capacity(draws * sub.images.len()),
        names: Vec::new(),
        attributes: sub
            .attributes
            .iter()
            .map(|a| crate::data::Attribute {
                name: a.name.clone(),
                classes: a.classes.clone(),
                labels: Vec::new(),
            })
            .collect(),
    };
    let all: Vec<usize> = (0..sub.len()).collect();
    for _ in 0..draws {
        for idx in batch::chunks(&all, 256) {
            let x = batch::images(&sub, idx, device);
            let o = p.forward(x.clone());
            let xp = crate::keyed::maybe_apply(t.keyed.as_ref(), perturb(x, &o, cfg.noise));
            out.images.extend(
                batch::to_vec(xp)
                    .iter()
                    .map(|&v| scrim_core::imaging::quantize(v)),
            );
        }
        out.names.extend(sub.names.iter().cloned());
        for (a, src) in out.attributes.iter_mut().zip(&sub.attributes) {
            a.labels.extend_from_slice(&src.labels);
        }
    }
    out
}

/// Accuracy of a fresh `kind` attacker on the sensitive label: trained on uploads of a sample
/// of `train`, scored on uploads of `val` (see the module docs).
///
/// # Errors
/// [`Error::InvalidOption`] without a sensitive label or for a kind this selection does not
/// train (blur, variance).
// Eight arguments: every one is needed, and a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attacker_accuracy(
    nets: &Nets,
    cfg: &TrainConfig,
    ds: &Dataset,
    train: &[usize],
    val: &[usize],
    t: &Targets,
    kind: AdversaryKind,
    device: &Device,
) -> Result<f64> {
    let s = t.sensitive.ok_or_else(|| {
        Error::option("--select-attacker", "needs --sensitive, the label it reads")
    })?;
    let attr = ds.attributes[s].name.clone();
    let classes = ds.attributes[s].classes.len();
    let mut sample = train.to_vec();
    {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        sample.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            cfg.seed ^ 0x5e1e,
        ));
    }
    sample.truncate(SELECT_TRAIN_IMAGES);
    let tr = uploads(nets, cfg, ds, &sample, SELECT_DRAWS, t, device);
    let va = uploads(nets, cfg, ds, val, 1, t, device);
    let fit_cfg = FitConfig::new()
        .with_epochs(SELECT_EPOCHS)
        .with_patience(SELECT_EPOCHS)
        .with_seed(cfg.seed);
    let size = ds.size;
    match kind {
        AdversaryKind::Linear => fit_and_score(
            |d: &Device| LinearProbe::new([3, size, size], classes, d),
            (&tr, &va),
            &attr,
            &fit_cfg,
            device,
        ),
        AdversaryKind::Cnn => {
            let widths = cfg.adversary_widths.clone();
            fit_and_score(
                |d: &Device| RecognizerConfig::new(classes).with_widths(widths).init(d),
                (&tr, &va),
                &attr,
                &fit_cfg,
                device,
            )
        }
        other => Err(Error::option(
            "--select-attacker",
            format!("is linear or cnn, got {other:?}"),
        )),
    }
}

/// Trains the classifier `init` builds on `train` and returns its accuracy on `val`.
fn fit_and_score<M: Classifier>(
    init: impl FnOnce(&Device) -> M,
    (train, val): (&Dataset, &Dataset),
    attr: &str,
    cfg: &FitConfig,
    device: &Device,
) -> Result<f64> {
    let m = fit(
        init,
        train,
        val,
        attr,
        cfg,
        device,
        "validation attacker",
        false,
    )?;
    Ok(burn_accuracy(&m.model, val, attr, device)?.accuracy)
}

/// The file prefix of epoch `epoch`'s networks.
pub(crate) fn prefix(epoch: usize) -> String {
    format!("epoch-{epoch}")
}

/// The epoch to keep: among the scored epochs whose validation accuracy is within `tolerance`
/// of the best scored one, the one the fresh attacker read the least (the earliest of ties).
pub(crate) fn choose(metrics: &[EpochMetrics], tolerance: f64) -> Option<usize> {
    let scored: Vec<(&EpochMetrics, f64)> = metrics
        .iter()
        .filter_map(|m| m.val_attack_acc.map(|a| (m, a)))
        .collect();
    let top = scored
        .iter()
        .map(|(m, _)| m.val_acc_perturbed)
        .fold(f64::NEG_INFINITY, f64::max);
    scored
        .into_iter()
        .filter(|(m, _)| m.val_acc_perturbed >= top - tolerance)
        .fold(None, |best: Option<(usize, f64)>, (m, a)| match best {
            Some((_, b)) if b <= a => best,
            _ => Some((m.epoch, a)),
        })
        .map(|(epoch, _)| epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, desired: f64, attack: Option<f64>) -> EpochMetrics {
        EpochMetrics {
            epoch,
            val_acc_perturbed: desired,
            val_attack_acc: attack,
            ..Default::default()
        }
    }

    #[test]
    fn the_least_read_epoch_within_the_tolerance_is_kept() {
        let m = [
            epoch(0, 0.95, None), // not scored (warm-up)
            epoch(1, 0.80, Some(0.45)),
            epoch(2, 0.87, Some(0.60)),
            epoch(3, 0.868, Some(0.55)),
            epoch(4, 0.875, Some(0.58)),
            epoch(5, 0.866, Some(0.55)),
        ];
        assert_eq!(choose(&m, 0.01), Some(3));
        assert_eq!(choose(&m, 0.0), Some(4));
        assert_eq!(choose(&m, 0.1), Some(1));
        assert_eq!(choose(&m[..1], 0.01), None);
    }
}
