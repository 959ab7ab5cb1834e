//! Validation of the networks under training: the metrics of one epoch.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;

use super::ops::{perturb, prior_cross_entropy};
use super::targets::Targets;
use crate::Result;
use crate::batch;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::nets::Nets;
use crate::run::EpochMetrics;

/// Validation metrics of the current networks on `indices`.
pub(crate) fn validate(
    nets: &Nets,
    cfg: &TrainConfig,
    ds: &Dataset,
    indices: &[usize],
    t: &Targets,
    noise: scrim_core::NoiseKind,
    device: &Device,
) -> Result<EpochMetrics> {
    let p = nets.perturber.valid();
    let c = nets.recognizer.valid();
    let a = nets.adversary.as_ref().map(Module::valid);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let (mut clean_ok, mut pert_ok, mut adv_ok, mut ce, mut sig, mut logsig, mut reward) =
        (0usize, 0usize, 0usize, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for idx in batch::chunks(indices, 256) {
        let x = batch::images(ds, idx, device);
        let y = batch::labels(ds, t.desired, idx, device);
        let labels: Vec<usize> = idx
            .iter()
            .map(|&i| ds.attributes[t.desired].labels[i] as usize)
            .collect();
        let hits = |logits: Tensor<2>, labels: &[usize]| {
            batch::predictions(logits)
                .iter()
                .zip(labels)
                .filter(|(p, l)| p == l)
                .count()
        };
        clean_ok += hits(
            c.forward(crate::keyed::maybe_apply(t.keyed.as_ref(), x.clone())),
            &labels,
        );
        let out = p.forward(x.clone());
        let xp = crate::keyed::maybe_apply(t.keyed.as_ref(), perturb(x, &out, noise));
        let logits = c.forward(xp.clone());
        let n = idx.len() as f64;
        ce += f64::from(
            batch::to_vec(loss_fn.forward(logits.clone(), y))
                .first()
                .copied()
                .unwrap_or(0.0),
        ) * n;
        pert_ok += hits(logits, &labels);
        sig += f64::from(
            batch::to_vec(out.sigma.mean())
                .first()
                .copied()
                .unwrap_or(0.0),
        ) * n;
        logsig += f64::from(
            batch::to_vec(out.log_sigma.mean())
                .first()
                .copied()
                .unwrap_or(0.0),
        ) * n;
        if let (Some(a), Some(s)) = (&a, t.sensitive) {
            let sl: Vec<usize> = idx
                .iter()
                .map(|&i| ds.attributes[s].labels[i] as usize)
                .collect();
            let logits = a.forward(xp);
            reward += f64::from(
                batch::to_vec(prior_cross_entropy(logits.clone(), &t.prior))
                    .first()
                    .copied()
                    .unwrap_or(0.0),
            ) * n;
            adv_ok += hits(logits, &sl);
        }
    }
    let n = indices.len().max(1) as f64;
    let mut objective = ce / n - cfg.lambda * logsig / n;
    if a.is_some() {
        objective += cfg.adversary_weight * reward / n;
    }
    Ok(EpochMetrics {
        val_acc_clean: clean_ok as f64 / n,
        val_acc_perturbed: pert_ok as f64 / n,
        val_ce: ce / n,
        mean_sigma: sig / n,
        mean_log_sigma: logsig / n,
        val_objective: objective,
        adversary_val_acc: a.as_ref().map(|_| adv_ok as f64 / n),
        ..Default::default()
    })
}
