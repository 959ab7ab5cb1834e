//! What the schemes of one audit share: the clean splits, the request, the device, and what is
//! trained on clean images once (the clean attackers used by `finetune` and `reconstruct`, and
//! the clean desired-task recognizer); and how every attacker is trained and scored.

use std::collections::HashMap;

use burn::prelude::*;

use scrim_train::batch::Inputs;
use scrim_train::data::Dataset;
use scrim_train::eval::{self, Accuracy, ClassifierConfig, Trained};
use scrim_train::nets::Recognizer;

use crate::error::Result;
use crate::reports::mean_accuracy;
use crate::request::AuditRequest;

/// State shared by the schemes of one audit.
pub(crate) struct Context<'a> {
    pub train: &'a Dataset,
    pub val: &'a Dataset,
    pub test: &'a Dataset,
    pub req: &'a AuditRequest,
    pub device: Device,
    clean_attackers: HashMap<String, Recognizer>,
    clean_desired: Option<(Recognizer, Accuracy)>,
}

/// One trained attacker: its test score and its validation accuracy per epoch.
pub(crate) struct SeedRun {
    pub accuracy: Accuracy,
    pub val_history: Vec<f64>,
}

impl SeedRun {
    /// `trained` scored by `score` on the test releases.
    pub fn scored(
        trained: Trained,
        score: impl FnOnce(&Recognizer) -> Result<Accuracy>,
    ) -> Result<Self> {
        Ok(Self {
            accuracy: score(&trained.model)?,
            val_history: trained.val_history,
        })
    }
}

/// The attackers of [`Context::over_seeds`]: their mean accuracy, each seed's accuracy (when
/// there are several) and each seed's validation history.
pub(crate) struct SeedRuns {
    pub accuracy: Accuracy,
    pub seeds: Vec<f64>,
    pub histories: Vec<Vec<f64>>,
}

impl SeedRuns {
    /// One attacker that trains nothing here (the clean attacker, reused): no history.
    pub fn single(accuracy: Accuracy) -> Self {
        Self {
            accuracy,
            seeds: Vec::new(),
            histories: Vec::new(),
        }
    }
}

/// Seeds of successive attackers in [`Context::over_seeds`] are this far apart.
const SEED_STRIDE: u64 = 7919;

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
        }
    }

    /// The majority-class rate of `attr` on the test split: what an attacker gets by always
    /// guessing the commonest class.
    pub fn majority(&self, attr: &str) -> Result<f64> {
        let all: Vec<usize> = (0..self.test.len()).collect();
        Ok(self.test.attribute(attr)?.majority_rate(&all))
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
        let m = self
            .fit_attacker(
                self.train,
                self.val,
                &self.req.desired,
                None,
                &self.req.attacker,
                "clean recognizer",
            )?
            .model;
        let a = eval::burn_accuracy(&m, self.test, &self.req.desired, &self.device)?;
        self.clean_desired = Some((m.clone(), a));
        Ok((m, a))
    }

    /// The attacker for `attr` trained on clean images (trained once per audit).
    pub fn clean_attacker(&mut self, attr: &str) -> Result<Recognizer> {
        if let Some(m) = self.clean_attackers.get(attr) {
            return Ok(m.clone());
        }
        let m = self
            .fit_attacker(
                self.train,
                self.val,
                attr,
                None,
                &self.req.attacker,
                &format!("clean attacker ({attr})"),
            )?
            .model;
        self.clean_attackers.insert(attr.to_string(), m.clone());
        Ok(m)
    }

    /// Scores [`AuditRequest::attacker_seeds`] attackers that differ only in their seed
    /// (initialisation, shuffling, augmentation): the mean accuracy, and each seed's accuracy
    /// when there is more than one. `attack` trains and scores one attacker with the seed given.
    pub fn over_seeds(&self, attack: impl Fn(u64) -> Result<SeedRun> + Sync) -> Result<SeedRuns> {
        let k = self.req.attacker_seeds.max(1);
        let seeds: Vec<u64> = (0..k as u64)
            .map(|i| self.req.attacker.seed.wrapping_add(i * SEED_STRIDE))
            .collect();
        // The attackers are independent and burn's CPU kernels keep about one core busy on
        // these small images: train up to `jobs` of them at once, each on its own thread.
        let attack = &attack;
        let mut runs = Vec::with_capacity(k);
        for chunk in seeds.chunks(self.req.parallel_jobs()) {
            let done: Vec<Result<SeedRun>> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&seed| s.spawn(move || attack(seed)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            for r in done {
                runs.push(r?);
            }
        }
        let scores: Vec<Accuracy> = runs.iter().map(|r| r.accuracy).collect();
        // Every seed is scored on the same test images: `n` counts them once.
        let accuracy = Accuracy {
            n: scores[0].n,
            ..mean_accuracy(&scores)
        };
        let seeds = if k > 1 {
            scores.iter().map(|a| a.accuracy).collect()
        } else {
            Vec::new()
        };
        Ok(SeedRuns {
            accuracy,
            seeds,
            histories: runs.into_iter().map(|r| r.val_history).collect(),
        })
    }

    /// The audit's attacker configuration with another seed.
    pub fn attacker_with_seed(&self, seed: u64) -> ClassifierConfig {
        self.req.attacker.clone().with_seed(seed)
    }

    /// A fresh attacker for `attr` (or `init` fine-tuned) on `train`, early-stopping on `val`,
    /// trained with `cfg` (the audit's attacker configuration, possibly another seed), with its
    /// validation history.
    pub fn fit_attacker<I: Inputs + ?Sized>(
        &self,
        train: &I,
        val: &I,
        attr: &str,
        init: Option<&Recognizer>,
        cfg: &ClassifierConfig,
        label: &str,
    ) -> Result<Trained> {
        Ok(eval::train_classifier(
            train,
            val,
            attr,
            cfg,
            init,
            &self.device,
            label,
            self.req.progress,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scrim_train::data::{DataSpec, LoadOptions, SyntheticConfig, load};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn score(accuracy: f64) -> Accuracy {
        Accuracy {
            accuracy,
            balanced: accuracy,
            n: 10,
        }
    }

    #[test]
    fn seeds_run_in_parallel_keep_their_order_and_their_errors() {
        let spec = DataSpec::Synthetic(SyntheticConfig::default());
        let opts = LoadOptions {
            size: 8,
            cache: false,
            progress: false,
        };
        let ds = load(&spec, &opts).expect("synthetic data");
        let mut req = AuditRequest::new(spec, "shape", &["colour"], "o".into());
        req.attacker_seeds = 5;
        let base = req.attacker.seed;
        for jobs in [1, 2, 3] {
            req.jobs = jobs;
            let ctx = Context::new(&ds, &ds, &ds, &req, Device::flex());
            let calls = AtomicUsize::new(0);
            // Each seed scores its own index: the order of the seeds must survive the threads.
            let runs = ctx
                .over_seeds(|seed| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let i = (seed - base) / SEED_STRIDE;
                    Ok(SeedRun {
                        accuracy: score(i as f64 / 10.0),
                        val_history: vec![0.5; i as usize + 1],
                    })
                })
                .expect("no seed fails");
            assert_eq!(calls.load(Ordering::SeqCst), 5, "jobs {jobs}");
            assert_eq!(runs.seeds, vec![0.0, 0.1, 0.2, 0.3, 0.4], "jobs {jobs}");
            assert!((runs.accuracy.accuracy - 0.2).abs() < 1e-9, "jobs {jobs}");
            let epochs: Vec<usize> = runs.histories.iter().map(Vec::len).collect();
            assert_eq!(
                epochs,
                vec![1, 2, 3, 4, 5],
                "jobs {jobs}: histories keep the seed order"
            );
            let failed = ctx.over_seeds(|seed| {
                if seed == base + 3 * SEED_STRIDE {
                    Err(crate::error::Error::NoScheme)
                } else {
                    Ok(SeedRun {
                        accuracy: score(0.5),
                        val_history: Vec::new(),
                    })
                }
            });
            assert!(
                failed.is_err(),
                "jobs {jobs}: the failing seed's error is returned"
            );
        }
    }
}
