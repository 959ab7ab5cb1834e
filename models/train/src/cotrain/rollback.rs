//! Going back when co-training collapses.
//!
//! One epoch can carry the perturber's σ to σ_max everywhere: the uploads are then noise (grey,
//! with suppression), the recognizer falls to the majority rate, and nothing brings σ back down
//! (the saturated sigmoid passes little gradient, and the cross-entropy no longer depends on the
//! image). The synthetic audit test (`scrim-audit`'s `perturbation_hides_texture_and_keeps_shape`)
//! ended so in one run of about thirty, on noise draws that depend on the threads' timing; the
//! same settings with the perturber 3–12× faster did not collapse, so the event is a matter of
//! draws more than of speed. When a co-training epoch ends with the recognizer at the majority
//! rate after an earlier epoch had learned the desired label, the run goes back to the previous
//! epoch's checkpoint and repeats the epoch on other noise draws with the perturber's learning
//! rate halved, at most [`MAX_ROLLBACKS`] times; after that it carries on as it is and says so.
//! An epoch that fell is never kept as the run's best ([`Fall`]).

use crate::run::EpochMetrics;

/// How many times a run may go back.
pub(super) const MAX_ROLLBACKS: usize = 2;
/// The perturber's learning rate is multiplied by this at each rollback.
pub(super) const SLOWDOWN: f64 = 0.5;
/// An epoch whose accuracy on uploads is within this of the majority rate has collapsed (and
/// is gone back on)...
const COLLAPSE_MARGIN: f64 = 0.03;
/// ...if an earlier epoch read the desired label at least this far above it.
const LEARNED_MARGIN: f64 = 0.10;

/// How far an epoch has fallen ([`fall`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fall {
    /// It still reads the desired label, or never learned it.
    None,
    /// It lost it, on validation uploads within [`LEARNED_MARGIN`] of the majority rate (a
    /// small validation split's luck): never kept as the run's best.
    Fallen,
    /// It lost it, within [`COLLAPSE_MARGIN`] on validation uploads: gone back on.
    Collapsed,
}

/// Whether epoch `m` lost the desired label that one of the `earlier` epochs had learned: `m`
/// reads it near the `majority` rate on validation uploads and barely above it on the last
/// quarter of its training batches, while an earlier epoch read it well above that rate on both
/// (on validation uploads, or on clean images where the recognizer sees them). Both sides, so
/// that a small validation split's luck neither starts nor stops a rollback.
pub(super) fn fall(m: &EpochMetrics, earlier: &[EpochMetrics], majority: f64) -> Fall {
    let learned = earlier.iter().any(|e| {
        let val = [e.val_acc_perturbed, e.val_acc_clean]
            .into_iter()
            .filter(|a| !a.is_nan())
            .fold(0.0f64, f64::max);
        e.train_acc >= majority + LEARNED_MARGIN && val >= majority + LEARNED_MARGIN
    });
    // The end of the epoch's training, not its average: an epoch that collapses midway
    // averages well above the majority rate, and its checkpoint must not become the one a
    // later rollback goes back to.
    let train_end = m.train_acc_tail.unwrap_or(m.train_acc);
    if !learned || train_end >= majority + LEARNED_MARGIN {
        Fall::None
    } else if m.val_acc_perturbed < majority + COLLAPSE_MARGIN {
        Fall::Collapsed
    } else if m.val_acc_perturbed < majority + LEARNED_MARGIN {
        Fall::Fallen
    } else {
        Fall::None
    }
}

/// What the run tells its user when it goes back (`redo` false: it has gone back
/// [`MAX_ROLLBACKS`] times and carries on).
pub(super) fn message(m: &EpochMetrics, majority: f64, factor: f64, redo: bool) -> String {
    let what = format!(
        "epoch {}: the recognizer fell to {:.1}% on uploads (majority rate {:.1}%, mean σ {:.3}): \
         the perturber's σ outran it",
        m.epoch + 1,
        100.0 * m.val_acc_perturbed,
        100.0 * majority,
        m.mean_sigma
    );
    if redo {
        format!(
            "{what}; going back to the end of epoch {} and repeating it on other noise draws \
             with the perturber's learning rate at {factor} of its setting",
            m.epoch
        )
    } else {
        format!(
            "{what}, again after {MAX_ROLLBACKS} repeats at a lower rate; carrying on (the kept \
             checkpoint is the best validation objective among the epochs that did not fall). \
             Try a smaller --lambda or --perturber-lr-scale"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collapsed(m: &EpochMetrics, earlier: &[EpochMetrics], majority: f64) -> bool {
        fall(m, earlier, majority) == Fall::Collapsed
    }

    fn epoch(train: f64, clean: f64, uploads: f64) -> EpochMetrics {
        EpochMetrics {
            train_acc: train,
            val_acc_clean: clean,
            val_acc_perturbed: uploads,
            ..EpochMetrics::default()
        }
    }

    #[test]
    fn a_run_collapses_only_after_it_had_learned() {
        let warmup = epoch(0.85, 0.99, 0.50);
        let good = epoch(0.95, 0.70, 0.96);
        let fallen = epoch(0.51, 0.50, 0.51);
        // Warm-up learned on clean images, the first co-training epoch fell: collapsed.
        assert!(collapsed(&fallen, std::slice::from_ref(&warmup), 0.5));
        assert!(collapsed(&fallen, &[warmup.clone(), good.clone()], 0.5));
        // Fallen midway: the epoch's average is high, its last quarter at chance.
        let mut midway = epoch(0.75, 0.5, 0.50);
        assert!(!collapsed(&midway, &[warmup.clone(), good.clone()], 0.5));
        midway.train_acc_tail = Some(0.52);
        assert!(collapsed(&midway, &[warmup.clone(), good.clone()], 0.5));
        // At chance on training, 5.8 points above it on validation: not gone back on, never
        // kept.
        midway.val_acc_perturbed = 0.558;
        assert!(!collapsed(&midway, &[warmup.clone(), good.clone()], 0.5));
        assert_eq!(
            fall(&midway, &[warmup.clone(), good.clone()], 0.5),
            Fall::Fallen
        );
        midway.train_acc_tail = Some(0.9);
        assert!(!collapsed(&midway, &[warmup.clone(), good.clone()], 0.5));
        // Still reading the label on uploads, or on its own training batches: not collapsed.
        assert!(!collapsed(
            &epoch(0.9, 0.5, 0.60),
            &[warmup.clone(), good.clone()],
            0.5
        ));
        assert!(!collapsed(&epoch(0.9, 0.5, 0.51), &[warmup, good], 0.5));
        // Never learned anything (a stuck run, warned about elsewhere), or only a small
        // validation split's luck: nothing to go back to.
        assert!(!collapsed(&fallen, &[epoch(0.52, 0.52, 0.50)], 0.5));
        assert!(!collapsed(&fallen, &[epoch(0.52, 0.67, 0.58)], 0.5));
        assert!(!collapsed(&fallen, &[], 0.5));
        // A NaN accuracy (no clean images for a bounded release) is ignored.
        assert!(collapsed(&fallen, &[epoch(0.9, f64::NAN, 0.9)], 0.5));
        assert!(!collapsed(&fallen, &[epoch(0.9, f64::NAN, 0.5)], 0.5));
    }

    #[test]
    fn the_message_names_the_epoch_and_what_happens_next() {
        let mut m = epoch(0.5, 0.5, 0.496);
        m.epoch = 3;
        m.mean_sigma = 1.0;
        let redo = message(&m, 0.5, 0.5, true);
        assert!(
            redo.starts_with("epoch 4: the recognizer fell to 49.6% on uploads"),
            "{redo}"
        );
        assert!(
            redo.contains("end of epoch 3") && redo.contains("at 0.5 of"),
            "{redo}"
        );
        let last = message(&m, 0.5, 0.25, false);
        assert!(
            last.contains("carrying on") && last.contains("--lambda"),
            "{last}"
        );
    }
}
