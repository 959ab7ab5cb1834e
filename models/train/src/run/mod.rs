//! A run folder: everything one co-training run writes, and how to read it back.
//!
//! ```text
//! runs/NAME/
//!   config.json            the full TrainConfig (reload, resume, reproduce)
//!   split.json             train/val/test indices into the dataset
//!   metrics.jsonl          one EpochMetrics line per epoch
//!   curves.svg, curves.png training curves, redrawn after every epoch
//!   best-*.bpk             the kept checkpoint (burnpack)
//!   epoch-N-*.bpk          every scored epoch's networks, with --select-attacker
//!   last-*.bpk, last-optim-*.bpk, checkpoint.json   for --resume
//!   perturber.onnx + perturber.json, recognizer.onnx + recognizer.json   the artifacts
//! ```
//!
//! JSON files are replaced atomically, and the checkpoint files of an epoch are committed as one
//! ([`commit`]), so a run killed at any point resumes from a whole checkpoint.

mod commit;
mod curves;
mod weights;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use self::commit::write_atomic;
use crate::config::TrainConfig;
use crate::data::Split;
use crate::{Error, Result};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 0-based epoch.
    pub epoch: usize,
    /// `warmup` or `cotrain`.
    pub phase: String,
    /// λ in effect.
    pub lambda: f64,
    /// Learning rate in effect.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy of the recognizer (on what it trained on).
    pub train_acc: f64,
    /// The same over the epoch's last quarter of batches (absent in older metrics files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc_tail: Option<f64>,
    /// Validation accuracy on clean images.
    pub val_acc_clean: f64,
    /// Validation accuracy on perturbed images (one noise draw).
    pub val_acc_perturbed: f64,
    /// Validation cross-entropy on perturbed images.
    pub val_ce: f64,
    /// Mean σ on validation images.
    pub mean_sigma: f64,
    /// Mean log σ on validation images.
    pub mean_log_sigma: f64,
    /// The validation objective `CE − λ·mean log σ` (+ adversarial term), at full λ.
    pub val_objective: f64,
    /// Adversary accuracy on perturbed validation images (adversarial mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adversary_val_acc: Option<f64>,
    /// Sensitive-label accuracy of a freshly trained validation attacker on validation uploads
    /// (`--select-attacker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_attack_acc: Option<f64>,
    /// Wall time of the epoch.
    pub seconds: f64,
    /// Training throughput.
    pub images_per_sec: f64,
}

/// Training progress saved with the `last` checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Epoch of the best checkpoint.
    pub best_epoch: Option<usize>,
    /// Its validation objective.
    pub best_objective: Option<f64>,
    /// λ reached by the utility-constrained mode (absent in older checkpoints).
    #[serde(default)]
    pub lambda: Option<f64>,
    /// Times co-training went back after a collapse, each halving the perturber's learning
    /// rate (absent in older checkpoints: none).
    #[serde(default)]
    pub rollbacks: usize,
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

fn record_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::BadRecord {
        path: path.to_path_buf(),
        reason: format!("cannot read or write weights: {e}"),
    }
}

impl RunDir {
    /// Creates the folder (and parents) if needed.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be created.
    pub fn create(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing run (it must have a `config.json`).
    ///
    /// # Errors
    /// [`Error::NotARun`] when the folder is not a run.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join("config.json").is_file() {
            return Err(Error::NotARun(path.to_path_buf()));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// A file in the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    /// The exported perturber.
    pub fn perturber_onnx(&self) -> PathBuf {
        self.file("perturber.onnx")
    }
    /// The exported recognizer.
    pub fn recognizer_onnx(&self) -> PathBuf {
        self.file("recognizer.onnx")
    }

    fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        let path = self.file(name);
        write_atomic(&path, (json_text(value)? + "\n").as_bytes())
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        let path = self.file(name);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::BadRecord {
            path: path.clone(),
            reason: e.to_string(),
        })
    }

    /// Saves the training configuration.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_config(&self, cfg: &TrainConfig) -> Result<()> {
        self.write_json("config.json", cfg)
    }
    /// Loads the training configuration.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::BadRecord`] for a malformed file.
    pub fn load_config(&self) -> Result<TrainConfig> {
        let saved: serde_json::Value = self.read_json("config.json")?;
        config_from_json(saved).map_err(|reason| Error::BadRecord {
            path: self.file("config.json"),
            reason,
        })
    }
    /// Saves the split.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_split(&self, split: &Split) -> Result<()> {
        self.write_json("split.json", split)
    }
    /// Loads the split.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::BadRecord`].
    pub fn load_split(&self) -> Result<Split> {
        self.read_json("split.json")
    }
    /// Saves any JSON document into the run.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        self.write_json(name, value)
    }

    pub(crate) fn reset_metrics(&self) -> Result<()> {
        write_atomic(&self.file("metrics.jsonl"), b"")
    }

    /// Keeps the metrics of the first `epochs` epochs only: on resume, the lines of epochs that
    /// ran after the checkpoint (or a line torn by a crash) are dropped, so that every epoch
    /// appears once.
    pub(crate) fn truncate_metrics(&self, epochs: usize) -> Result<()> {
        let path = self.file("metrics.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut kept = String::new();
        for line in text.lines() {
            if let Ok(m) = serde_json::from_str::<EpochMetrics>(line)
                && m.epoch < epochs
            {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        write_atomic(&path, kept.as_bytes())
    }

    pub(crate) fn append_metrics(&self, m: &EpochMetrics) -> Result<()> {
        use std::io::Write;
        let path = self.file("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let line = serde_json::to_string(m).map_err(|e| Error::Internal(e.to_string()))?;
        // One write per line, flushed: a crash tears at most this line, which resume drops.
        f.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io(&path, e))
    }

    /// Reads `metrics.jsonl`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::BadRecord`].
    pub fn metrics(&self) -> Result<Vec<EpochMetrics>> {
        let path = self.file("metrics.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| Error::BadRecord {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

fn json_text(value: &impl Serialize) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))
}

/// A training configuration as saved in a run's `config.json` (or embedded in an audit report).
/// Runs written before an option existed lack its field: every missing field takes today's
/// default, so older runs stay loadable (and mean what they meant).
///
/// # Errors
/// Why the document is no training configuration.
pub fn config_from_json(mut saved: serde_json::Value) -> std::result::Result<TrainConfig, String> {
    upgrade_layout(&mut saved);
    let data = saved
        .get("data")
        .and_then(|v| v.as_str())
        .unwrap_or("synthetic");
    let desired = saved.get("desired").and_then(|v| v.as_str()).unwrap_or("");
    let defaults = TrainConfig::for_data(
        &data
            .parse()
            .unwrap_or(crate::data::DataSpec::Synthetic(Default::default())),
        desired,
    );
    let mut merged = serde_json::to_value(&defaults).map_err(|e| e.to_string())?;
    merge_json(&mut merged, saved);
    serde_json::from_value(merged).map_err(|e| e.to_string())
}

/// Runs written before [`crate::nets::PerturberLayout`] existed said their layout with three
/// booleans: turn them into the one field (the input-independent map took precedence, then the
/// depthwise layout).
fn upgrade_layout(saved: &mut serde_json::Value) {
    let Some(p) = saved
        .get_mut("perturber")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    let mut flag = |name: &str| p.remove(name).and_then(|v| v.as_bool()).unwrap_or(false);
    let (cloak, depthwise, separable) = (
        flag("input_independent"),
        flag("depthwise"),
        flag("separable"),
    );
    if p.contains_key("layout") {
        return;
    }
    let layout = if cloak {
        "input-independent"
    } else if depthwise {
        "depthwise"
    } else if separable {
        "separable"
    } else {
        "dense"
    };
    p.insert("layout".into(), layout.into());
}

/// Overwrites `base` with `over`, recursing into objects (fields absent from `over` keep their
/// `base` value).
fn merge_json(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_from_before_an_option_existed_still_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = RunDir::create(dir.path()).expect("run");
        let cfg =
            TrainConfig::for_data(&"synthetic".parse().expect("spec"), "shape").with_lambda(0.3);
        let mut json = serde_json::to_value(&cfg).expect("json");
        // An older run: no suppression/grey fields in the perturber, no adversary reset.
        let p = json["perturber"].as_object_mut().expect("perturber");
        p.remove("suppress");
        p.remove("gray");
        json.as_object_mut()
            .expect("object")
            .remove("adversary_reset_epochs");
        std::fs::write(run.file("config.json"), json.to_string()).expect("write");
        let back = run.load_config().expect("load");
        assert!((back.lambda - 0.3).abs() < 1e-12);
        assert!(!back.perturber.suppress && !back.perturber.gray);
        assert_eq!(back.adversary_reset_epochs, 0);
        // An older run that said its layout with booleans.
        let mut json = serde_json::to_value(&cfg).expect("json");
        let p = json["perturber"].as_object_mut().expect("perturber");
        p.remove("layout");
        p.insert("separable".into(), true.into());
        p.insert("depthwise".into(), true.into());
        std::fs::write(run.file("config.json"), json.to_string()).expect("write");
        let back = run.load_config().expect("load");
        assert_eq!(
            back.perturber.layout,
            crate::nets::PerturberLayout::Depthwise
        );
        // A file that is not a config at all is still an error.
        std::fs::write(run.file("config.json"), "[1, 2]").expect("write");
        assert!(run.load_config().is_err());
    }
}
