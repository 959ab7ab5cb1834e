//! What the schemes of one audit share: the clean splits, the request, the device, and what is
//! trained on clean images once (the clean attackers used by `finetune` and `reconstruct`, and
//! the clean desired-task recognizer); and how every attacker is trained and scored.

use std::collections::HashMap;

use burn::prelude::*;

use scrim_train::batch::Inputs;
use scrim_train::data::Dataset;
use scrim_train::eval::{self, Accuracy, ClassifierConfig};
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
        let m = self.train_attacker(
            self.train,
            self.val,
            &self.req.desired,
            None,
            &self.req.attacker,
            "clean recognizer",
        )?;
        let a = eval::burn_accuracy(&m, self.test, &self.req.desired, &self.device)?;
        self.clean_desired = Some((m.clone(), a));
        Ok((m, a))
    }

    /// The attacker for `attr` trained on clean images (trained once per audit).
    pub fn clean_attacker(&mut self, attr: &str) -> Result<Recognizer> {
        if let Some(m) = self.clean_attackers.get(attr) {
            return Ok(m.clone());
        }
        let m = self.train_attacker(
            self.train,
            self.val,
            attr,
            None,
            &self.req.attacker,
            &format!("clean attacker ({attr})"),
        )?;
        self.clean_attackers.insert(attr.to_string(), m.clone());
        Ok(m)
    }

    /// Scores [`AuditRequest::attacker_seeds`] attackers that differ only in their seed
    /// (initialisation, shuffling, augmentation): the mean accuracy, and each seed's accuracy
    /// when there is more than one. `attack` trains and scores one attacker with the seed given.
    pub fn over_seeds(
        &self,
        mut attack: impl FnMut(u64) -> Result<Accuracy>,
    ) -> Result<(Accuracy, Vec<f64>)> {
        let k = self.req.attacker_seeds.max(1);
        let mut runs = Vec::with_capacity(k);
        for i in 0..k as u64 {
            runs.push(attack(
                self.req.attacker.seed.wrapping_add(i * SEED_STRIDE),
            )?);
        }
        // Every seed is scored on the same test images: `n` counts them once.
        let accuracy = Accuracy {
            n: runs[0].n,
            ..mean_accuracy(&runs)
        };
        let seeds = if k > 1 {
            runs.iter().map(|a| a.accuracy).collect()
        } else {
            Vec::new()
        };
        Ok((accuracy, seeds))
    }

    /// The audit's attacker configuration with another seed.
    pub fn attacker_with_seed(&self, seed: u64) -> ClassifierConfig {
        self.req.attacker.clone().with_seed(seed)
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
