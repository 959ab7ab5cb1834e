//! The utility-constrained mode (`target_accuracy`): λ adapted by dual ascent, and the epoch
//! ranking that goes with it.

use burn::module::Module;
use burn::prelude::*;

use super::ops::perturb;
use super::targets::Targets;
use crate::batch;
use crate::config::LAMBDA_RANGE;
use crate::data::Dataset;
use crate::nets::Nets;
use crate::run::EpochMetrics;

/// The dual variable of the utility-constrained mode (`target_accuracy`): λ follows
/// `log λ += rate · (acc − target)`, where `acc` is a running mean of the recognizer's accuracy
/// on perturbed validation batches. Accuracy above the target buys more noise, below it less.
pub(crate) struct Dual {
    pub target: f64,
    pub rate: f64,
    pub lambda: f64,
    /// Running mean of the validation accuracy (exponential, weight [`Dual::SMOOTHING`]).
    pub accuracy: Option<f64>,
    /// The next validation batch, cycling through the validation split.
    pub next: usize,
}

impl Dual {
    const SMOOTHING: f64 = 0.1;

    /// One control step: measures one perturbed validation batch, updates λ and returns it.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        nets: &Nets,
        ds: &Dataset,
        val: &[usize],
        batch_size: usize,
        t: &Targets,
        noise: scrim_core::NoiseKind,
        device: &Device,
    ) -> f64 {
        let n = batch_size.clamp(1, val.len().max(1));
        let start = (self.next * n) % val.len().max(1);
        self.next += 1;
        let idx: Vec<usize> = val.iter().cycle().skip(start).take(n).copied().collect();
        if idx.is_empty() {
            return self.lambda;
        }
        let x = batch::images(ds, &idx, device);
        let out = nets.perturber.valid().forward(x.clone());
        let xp = crate::keyed::maybe_apply(t.keyed.as_ref(), perturb(x, &out, noise));
        let hits = batch::predictions(nets.recognizer.valid().forward(xp))
            .iter()
            .zip(&idx)
            .filter(|(p, i)| **p == ds.attributes[t.desired].labels[**i] as usize)
            .count();
        let acc = hits as f64 / idx.len() as f64;
        let smoothed = self
            .accuracy
            .map_or(acc, |a| a + Self::SMOOTHING * (acc - a));
        self.accuracy = Some(smoothed);
        self.lambda = (self.lambda.ln() + self.rate * (smoothed - self.target))
            .exp()
            .clamp(LAMBDA_RANGE.0, LAMBDA_RANGE.1);
        self.lambda
    }
}

/// Tolerance on the target accuracy when ranking epochs in the utility-constrained mode.
const TARGET_SLACK: f64 = 0.005;

/// The epoch ranking of the utility-constrained mode (lower is better): among epochs whose
/// perturbed validation accuracy meets the target (within [`TARGET_SLACK`]), the most noise
/// (highest mean log σ); an epoch that misses the target ranks below every one that meets it,
/// by how far it misses.
pub(crate) fn constrained_objective(m: &EpochMetrics, target: f64) -> f64 {
    if m.val_acc_perturbed + TARGET_SLACK >= target {
        -m.mean_log_sigma
    } else {
        1e3 + (target - m.val_acc_perturbed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constrained_ranking_prefers_noise_within_the_budget() {
        let m = |acc: f64, log_sigma: f64| EpochMetrics {
            val_acc_perturbed: acc,
            mean_log_sigma: log_sigma,
            ..Default::default()
        };
        let rank = |e: &EpochMetrics| constrained_objective(e, 0.87);
        // Both meet the target: more noise wins, however much more accurate the other is.
        assert!(rank(&m(0.87, -0.5)) < rank(&m(0.95, -2.0)));
        // Within the slack still counts as meeting it.
        assert!(rank(&m(0.866, -0.5)) < rank(&m(0.95, -2.0)));
        // Missing the target ranks below any epoch that meets it, nearer misses first.
        assert!(rank(&m(0.90, -3.0)) < rank(&m(0.85, -0.1)));
        assert!(rank(&m(0.85, -0.1)) < rank(&m(0.80, -0.1)));
    }
}
