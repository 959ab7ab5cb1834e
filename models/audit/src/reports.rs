//! What an audit measures: one attacker's score, everything about one scheme, and the whole
//! report written as `report.json`.

use serde::{Deserialize, Serialize};

use scrim_train::eval::{Accuracy, ClassifierConfig};

use crate::context::SeedRuns;
use crate::quality::Reconstruction;
use crate::request::{Attack, Recipes, Scheme};

/// One attacker's score on one sensitive attribute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttackResult {
    /// The sensitive attribute.
    pub attribute: String,
    /// `cnn`, `blur`, `finetune` or `reconstruct`.
    pub attacker: Attack,
    /// Test accuracy (and balanced accuracy) on perturbed test images.
    pub accuracy: Accuracy,
    /// 95% half-width of the accuracy.
    pub ci95: f64,
    /// Majority-class rate of the attribute on the test split.
    pub majority: f64,
    /// Accuracy of each attacker seed when several were trained (`accuracy` is their mean).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<f64>,
    /// Wall time of this attack, every seed included (0 in reports from before it was kept).
    #[serde(default)]
    pub seconds: f64,
    /// Each seed's validation accuracy per epoch, in seed order (how long each attacker trained
    /// and where it peaked; empty for attackers that train nothing and in older reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_histories: Vec<Vec<f64>>,
}

impl AttackResult {
    /// A result with its Wilson half-width.
    pub(crate) fn new(attr: &str, attacker: Attack, accuracy: Accuracy, majority: f64) -> Self {
        Self {
            attribute: attr.to_string(),
            attacker,
            ci95: accuracy.ci95(),
            accuracy,
            majority,
            seeds: Vec::new(),
            seconds: 0.0,
            val_histories: Vec::new(),
        }
    }

    /// The same result with the wall time it took.
    pub(crate) fn with_seconds(mut self, seconds: f64) -> Self {
        self.seconds = seconds;
        self
    }

    /// The standard deviation of the seeds' accuracies (`None` for a single attacker).
    pub fn spread(&self) -> Option<f64> {
        if self.seeds.len() < 2 {
            return None;
        }
        let n = self.seeds.len() as f64;
        let m = self.seeds.iter().sum::<f64>() / n;
        Some((self.seeds.iter().map(|s| (s - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
    }

    /// The result of `runs`: their mean, each seed's accuracy and validation history.
    pub(crate) fn from_runs(attr: &str, attacker: Attack, runs: SeedRuns, majority: f64) -> Self {
        Self {
            seeds: runs.seeds,
            val_histories: runs.histories,
            ..Self::new(attr, attacker, runs.accuracy, majority)
        }
    }

    /// The number of epochs each seed's attacker trained (empty when not recorded).
    pub fn epochs(&self) -> Vec<usize> {
        self.val_histories.iter().map(Vec::len).collect()
    }

    /// The strongest of the seeds (the accuracy itself for a single attacker).
    pub fn best_seed(&self) -> f64 {
        self.seeds
            .iter()
            .copied()
            .fold(self.accuracy.accuracy, f64::max)
    }
}

/// Everything measured for one scheme.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemeReport {
    /// Name.
    pub name: String,
    /// What it is.
    pub scheme: Scheme,
    /// A family for the frontier plot (`scrim`, `cloak`, `uniform`, `none`, a variant name).
    pub family: String,
    /// λ of the run, when known.
    pub lambda: Option<f64>,
    /// Mean σ over the test images (for ARDEN: the Laplace scale b on its bounded features).
    pub mean_sigma: f64,
    /// Root-mean-square σ (the noise energy per pixel is its square; for ARDEN the Laplace
    /// noise's standard deviation `√2·b` per feature value).
    pub rms_sigma: f64,
    /// Desired accuracy on clean test images (the scheme's recognizer, or a clean-trained one).
    pub desired_clean: Accuracy,
    /// Desired accuracy on perturbed test images, mean over draws.
    pub desired_perturbed: Accuracy,
    /// How `desired_perturbed` was measured.
    pub utility_model: String,
    /// Attackers.
    pub attacks: Vec<AttackResult>,
    /// Reconstruction quality, when the reconstruction attacker ran.
    pub reconstruction: Option<Reconstruction>,
    /// Multiply-adds per image of the perturber on the device and of the recognizer in the
    /// cloud (`scrim_core::cost`), when both are ONNX files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiply_adds: Option<DeviceCost>,
    /// What a reader needs to know to compare this row (attackers skipped, units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// How a run was trained (its `config.json`), so that `scrim results` can say it where the
    /// run folder is not (reports written before session 20 lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

impl SchemeReport {
    /// The headline attack on `attribute`: the maximum over attack kinds of the mean accuracy
    /// over seeds.
    pub fn best_attack(&self, attribute: &str) -> Option<&AttackResult> {
        self.attacks
            .iter()
            .filter(|a| a.attribute == attribute)
            .max_by(|a, b| a.accuracy.accuracy.total_cmp(&b.accuracy.accuracy))
    }
}

/// What a scheme costs per image on the phone and in the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCost {
    /// The perturber's multiply-adds (on the phone).
    pub perturber: u64,
    /// The recognizer's multiply-adds (in the cloud).
    pub recognizer: Option<u64>,
}

impl DeviceCost {
    /// The perturber's share of the recognizer's cost.
    pub fn share(&self) -> Option<f64> {
        self.recognizer
            .filter(|&r| r > 0)
            .map(|r| self.perturber as f64 / r as f64)
    }
}

/// The audit's result, written as `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditReport {
    /// The data source.
    pub data: String,
    /// Desired label.
    pub desired: String,
    /// Sensitive labels (the first is primary).
    pub sensitive: Vec<String>,
    /// Images in train / val / test.
    pub split_sizes: [usize; 3],
    /// Majority rate of the desired label on the test split.
    pub desired_majority: f64,
    /// Noise draws averaged for utility.
    pub draws: usize,
    /// Attacker training configuration (`cnn`, `blur`, `finetune`, and the recognizer of
    /// schemes without one).
    pub attacker: ClassifierConfig,
    /// Training of the attackers who hold the perturber (absent from older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipes: Option<Recipes>,
    /// Attackers trained per attack (each with its own seed).
    #[serde(default = "one")]
    pub attacker_seeds: usize,
    /// Wall time of the whole audit in seconds (0 in older reports).
    #[serde(default)]
    pub wall_seconds: f64,
    /// Schemes in order.
    pub schemes: Vec<SchemeReport>,
    /// The command line that produced the report.
    pub command: String,
}

/// The mean of several measurements (noise draws, attacker seeds); `n` is their total count.
pub(crate) fn mean_accuracy(accs: &[Accuracy]) -> Accuracy {
    let n = accs.len().max(1) as f64;
    Accuracy {
        accuracy: accs.iter().map(|a| a.accuracy).sum::<f64>() / n,
        balanced: accs.iter().map(|a| a.balanced).sum::<f64>() / n,
        n: accs.iter().map(|a| a.n).sum(),
    }
}

fn one() -> usize {
    1
}

/// Reports for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use scrim_train::eval::Accuracy;

    /// A scheme of family `none` whose desired accuracy is 0.9, with the given attacks
    /// (attribute, kind, accuracy) at a majority rate of 0.4.
    pub(crate) fn scheme(name: &str, attacks: &[(&str, Attack, f64)]) -> SchemeReport {
        let acc = |a: f64| Accuracy {
            accuracy: a,
            balanced: a,
            n: 100,
        };
        SchemeReport {
            name: name.into(),
            scheme: Scheme::None,
            family: "none".into(),
            lambda: None,
            mean_sigma: 0.0,
            rms_sigma: 0.0,
            desired_clean: acc(0.9),
            desired_perturbed: acc(0.9),
            utility_model: String::new(),
            attacks: attacks
                .iter()
                .map(|(attr, attacker, a)| AttackResult {
                    attribute: (*attr).into(),
                    attacker: *attacker,
                    accuracy: acc(*a),
                    ci95: 0.01,
                    majority: 0.4,
                    seeds: Vec::new(),
                    seconds: 0.0,
                    val_histories: Vec::new(),
                })
                .collect(),
            reconstruction: None,
            multiply_adds: None,
            notes: Vec::new(),
            training: None,
        }
    }

    /// A report of `data` (desired `shape`, sensitive `texture`) holding `schemes`.
    pub(crate) fn report(data: &str, schemes: Vec<SchemeReport>) -> AuditReport {
        AuditReport {
            data: data.into(),
            desired: "shape".into(),
            sensitive: vec!["texture".into()],
            split_sizes: [1, 2, 3],
            desired_majority: 0.5,
            draws: 1,
            attacker: scrim_train::eval::ClassifierConfig::new(),
            recipes: None,
            attacker_seeds: 1,
            wall_seconds: 0.0,
            schemes,
            command: "scrim audit".into(),
        }
    }
}
