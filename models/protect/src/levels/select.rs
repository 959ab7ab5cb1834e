//! Protecting a recognizer (`scrim protect select`) and restoring one service level from it
//! (`scrim protect decrypt`).

use std::path::{Path, PathBuf};

use scrim_core::Manifest;
use scrim_seal::selective::{self, ConvLayer};
use serde::{Deserialize, Serialize};

use crate::files::{create_dir, create_parent, read, write, write_json};
use crate::levels::importance::{Importance, PssConfig};
use crate::levels::rank::{protected_layers, rank_layers, selections};
use crate::secret_file::{Existing, write_secret_owned};
use crate::{Error, Result};
use scrim_train::data::{self, DataSpec, LoadOptions};

/// What `scrim protect select` does.
#[derive(Debug, Clone)]
pub struct SelectRequest {
    /// The plain recognizer ONNX file (its manifest beside it).
    pub model: PathBuf,
    /// Training images, for PSS.
    pub data: Option<DataSpec>,
    /// The label to train the gates on (default: the manifest's task).
    pub attr: Option<String>,
    /// How kernels are ranked.
    pub importance: Importance,
    /// Fraction R of each protected layer's kernels to encrypt (`⌊N·R⌋ + 1`).
    pub ratio: f64,
    /// Number of service levels M.
    pub levels: usize,
    /// Conv layers to protect (indices, from 0); all when `None`.
    pub layers: Option<Vec<usize>>,
    /// PSS gate training.
    pub pss: PssConfig,
    /// Output folder.
    pub out: PathBuf,
    /// Seed of the random baseline's order (the encryption itself always uses the OS CSPRNG).
    pub seed: u64,
    /// Show progress bars.
    pub progress: bool,
    /// Use the decoded-image cache.
    pub cache: bool,
    /// What to do about level keys already in `out` (checked before anything is written).
    pub keys: Existing,
}

impl SelectRequest {
    /// Defaults: PSS importance, ratio 0.05, 4 levels, every conv layer, existing level keys
    /// refused.
    pub fn new(model: PathBuf, out: PathBuf) -> Self {
        Self {
            model,
            data: None,
            attr: None,
            importance: Importance::Pss,
            ratio: 0.05,
            levels: 4,
            layers: None,
            pss: PssConfig::new(),
            out,
            seed: 42,
            progress: false,
            cache: true,
            keys: Existing::Refuse,
        }
    }
}

/// One protected layer in `protection.json` (public: counts, never which kernels).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerReport {
    /// Weight initializer name.
    pub layer: String,
    /// Kernels N.
    pub kernels: usize,
    /// Kernels encrypted S.
    pub selected: usize,
    /// Kernels restored at levels 1..=M (`a_0..a_{M-1}`).
    pub restored_per_level: Vec<usize>,
}

/// What [`select`] wrote; saved as `protection.json`. It holds no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectReport {
    /// How kernels were ranked.
    pub importance: Importance,
    /// The ratio R.
    pub ratio: f64,
    /// Number of levels M.
    pub levels: usize,
    /// Total kernels encrypted.
    pub selected: usize,
    /// Total kernels in the protected layers.
    pub kernels: usize,
    /// Per layer.
    pub layers: Vec<LayerReport>,
    /// Files written, relative to the output folder.
    pub files: Vec<String>,
}

/// File names in the output folder of [`select`].
pub const ENCRYPTED_ONNX: &str = "encrypted.onnx";
/// The sealed restoration bundle.
pub const BUNDLE: &str = "bundle.scrimlv";

/// The key file of level `l`.
pub fn key_file(l: usize) -> String {
    format!("level-{l}.key")
}

/// Ranks, selects and encrypts: writes `encrypted.onnx` (+ its manifest), `bundle.scrimlv`,
/// `level-1.key` … `level-M.key` and `protection.json` into `req.out`. The level keys are
/// written owner-only and atomically; with [`Existing::Refuse`] a level key already in `req.out`
/// stops the run before any file is written (after the options, the model and the data have
/// been checked), so old keys never end up beside a new bundle.
///
/// # Errors
/// [`Error::BadRatio`], [`Error::BadLevels`], [`Error::KeyFileExists`]; the errors of
/// [`rank_layers`]; I/O, data and model errors.
pub fn select(req: &SelectRequest) -> Result<SelectReport> {
    if !(req.ratio > 0.0 && req.ratio <= 1.0) {
        return Err(Error::BadRatio(req.ratio));
    }
    let max = scrim_seal::sealed::MAX_LEVELS;
    if !(1..=max).contains(&req.levels) {
        return Err(Error::BadLevels {
            levels: req.levels,
            max,
        });
    }
    let plain = read(&req.model)?;
    let manifest = Manifest::load_beside(&req.model)?;
    let layers = protected_layers(&plain, req.layers.as_deref())?;
    let device = scrim_train::backend::Backend::Flex.device()?;
    let ds = match (&req.data, req.importance) {
        (Some(spec), Importance::Pss) => Some(data::load(
            spec,
            &LoadOptions {
                size: manifest.input.height,
                cache: req.cache,
                progress: req.progress,
            },
        )?),
        _ => None,
    };
    let attr = req
        .attr
        .clone()
        .or_else(|| manifest.task.clone())
        .unwrap_or_else(|| "class".into());
    let ranked = rank_layers(
        &plain,
        &manifest,
        &layers,
        req.importance,
        ds.as_ref().map(|d| (d, attr.as_str())),
        &req.pss,
        req.seed,
        &device,
        req.progress,
    )?;
    let sel = selections(&ranked, req.ratio);
    if req.keys == Existing::Refuse {
        let in_the_way = (1..=req.levels)
            .map(|l| req.out.join(key_file(l)))
            .find(|p| p.symlink_metadata().is_ok());
        if let Some(path) = in_the_way {
            return Err(Error::KeyFileExists(path));
        }
    }
    let protected = selective::protect(&plain, &sel, req.levels, &mut selective::os_rng())?;
    create_dir(&req.out)?;
    let enc_path = req.out.join(ENCRYPTED_ONNX);
    write(&enc_path, &protected.onnx)?;
    manifest.save(&Manifest::path_for(&enc_path))?;
    write(&req.out.join(BUNDLE), &protected.bundle)?;
    let mut files = vec![
        ENCRYPTED_ONNX.to_string(),
        "encrypted.json".into(),
        BUNDLE.into(),
    ];
    for key in &protected.keys {
        let name = key_file(key.level());
        write_secret_owned(&req.out.join(&name), key.to_bytes(), req.keys)?;
        files.push(name);
    }
    let report = SelectReport {
        importance: req.importance,
        ratio: req.ratio,
        levels: req.levels,
        selected: sel.iter().map(|s| s.ranked.len()).sum(),
        kernels: layers.iter().map(ConvLayer::kernels).sum(),
        layers: layers
            .iter()
            .zip(&sel)
            .map(|(l, s)| LayerReport {
                layer: l.name.clone(),
                kernels: l.kernels(),
                selected: s.ranked.len(),
                restored_per_level: selective::level_counts(s.ranked.len(), req.levels),
            })
            .collect(),
        files,
    };
    write_json(&req.out.join("protection.json"), &report, "")?;
    Ok(report)
}

/// Restores the model of `key`'s level from `model` (encrypted) and `bundle`, and writes it to
/// `out` with the encrypted model's manifest beside it. Returns the level.
///
/// # Errors
/// Authentication errors for a wrong key or a modified bundle; I/O errors.
pub fn decrypt(model: &Path, bundle: &Path, key: &Path, out: &Path) -> Result<usize> {
    let level = scrim_seal::LevelKey::load(key)?.level();
    let bytes = selective::restore_files(model, bundle, key)?;
    create_parent(out)?;
    write(out, &bytes)?;
    let src = Manifest::path_for(model);
    if src.exists() {
        Manifest::load(&src)?.save(&Manifest::path_for(out))?;
    }
    Ok(level)
}
