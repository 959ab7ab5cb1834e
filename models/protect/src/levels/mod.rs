//! Selective weight encryption with hierarchical service levels (PSS + DPRM, Tian et al.,
//! CVPR 2021) for ONNX recognizers: ranking kernels ([`importance`]), protecting a model
//! ([`select`]), restoring a level ([`decrypt`]) and the accuracy-per-level experiment
//! ([`eval`]). The cryptography and the ONNX rewriting live in `scrim_seal::selective`.

pub mod eval;
pub mod importance;
pub mod net;

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use scrim_core::Manifest;
use scrim_core::onnx_graph::Graph;
use scrim_seal::selective::{self, ConvLayer, LayerSelection};
use serde::{Deserialize, Serialize};

pub use importance::{Importance, PssConfig};

use scrim_train::data::{self, DataSpec, Dataset, LoadOptions};
use scrim_train::{Error, Result};

/// Every kernel of one conv layer, most important first.
#[derive(Debug, Clone)]
pub struct RankedLayer {
    /// The layer.
    pub layer: ConvLayer,
    /// All kernel indices by decreasing importance.
    pub order: Vec<usize>,
}

/// The conv layers to protect: `indices` into [`selective::conv_layers`] (all when `None`).
///
/// # Errors
/// [`Error::Input`] for an index out of range or a model without protectable conv layers.
pub fn protected_layers(onnx: &[u8], indices: Option<&[usize]>) -> Result<Vec<ConvLayer>> {
    let all = selective::conv_layers(onnx)?;
    if all.is_empty() {
        return Err(Error::Input(
            "the model has no conv layer whose weight is an initializer".into(),
        ));
    }
    match indices {
        None => Ok(all),
        Some(idx) => idx
            .iter()
            .map(|&i| {
                all.get(i).cloned().ok_or_else(|| {
                    Error::Input(format!(
                        "--layers: conv layer {i} does not exist (the model has {}, numbered from 0)",
                        all.len()
                    ))
                })
            })
            .collect(),
    }
}

/// Ranks every kernel of each layer by `importance`. PSS needs `data` (images at the model's
/// input size and the label `attr`); the baselines need none.
///
/// # Errors
/// [`Error::Input`] for PSS without data or on a model it cannot rebuild.
#[allow(clippy::too_many_arguments)]
pub fn rank_layers(
    onnx: &[u8],
    manifest: &Manifest,
    layers: &[ConvLayer],
    importance: Importance,
    data: Option<(&Dataset, &str)>,
    pss: &PssConfig,
    seed: u64,
    device: &Device,
    progress: bool,
) -> Result<Vec<RankedLayer>> {
    let graph = Graph::parse(onnx)?;
    layers
        .iter()
        .enumerate()
        .map(|(li, layer)| {
            let w = &graph
                .initializers
                .get(&layer.name)
                .ok_or_else(|| Error::Input(format!("no initializer {:?}", layer.name)))?
                .values;
            let k = layer.kernel_len();
            let scores = match importance {
                Importance::Random => {
                    importance::random_scores(layer.kernels(), seed.wrapping_add(li as u64))
                }
                Importance::Mean => importance::mean_scores(w, k),
                Importance::Pss => {
                    let (ds, attr) = data.ok_or_else(|| {
                        Error::Input("--importance pss needs --data (training images)".into())
                    })?;
                    importance::pss_scores(
                        &graph,
                        &manifest.normalization,
                        layer,
                        ds,
                        attr,
                        pss,
                        device,
                        progress,
                    )?
                }
            };
            Ok(RankedLayer {
                layer: layer.clone(),
                order: importance::rank(&scores, w, k),
            })
        })
        .collect()
}

/// The top `⌊N · ratio⌋ + 1` kernels of every ranked layer.
pub fn selections(ranked: &[RankedLayer], ratio: f64) -> Vec<LayerSelection> {
    ranked
        .iter()
        .map(|r| {
            let s = selective::selection_size(r.layer.kernels(), ratio);
            LayerSelection::new(&r.layer.name, r.order[..s].to_vec())
        })
        .collect()
}

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
}

impl SelectRequest {
    /// Defaults: PSS importance, ratio 0.05, 4 levels, every conv layer.
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

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Ranks, selects and encrypts: writes `encrypted.onnx` (+ its manifest), `bundle.scrimlv`,
/// `level-1.key` … `level-M.key` and `protection.json` into `req.out`.
///
/// # Errors
/// [`Error::Input`] for bad options; I/O, data and model errors.
pub fn select(req: &SelectRequest) -> Result<SelectReport> {
    if !(req.ratio > 0.0 && req.ratio <= 1.0) {
        return Err(Error::Input(format!(
            "--ratio must be in (0, 1], got {}",
            req.ratio
        )));
    }
    if !(1..=selective_max_levels()).contains(&req.levels) {
        return Err(Error::Input(format!(
            "--levels must be in 1..={}, got {}",
            selective_max_levels(),
            req.levels
        )));
    }
    let plain = std::fs::read(&req.model).map_err(|e| Error::io(&req.model, e))?;
    let manifest = Manifest::load(&Manifest::path_for(&req.model))?;
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
    let protected = selective::protect(&plain, &sel, req.levels, &mut selective::os_rng())?;
    std::fs::create_dir_all(&req.out).map_err(|e| Error::io(&req.out, e))?;
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
        key.save(&req.out.join(&name))?;
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
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Internal(format!("protection.json: {e}")))?;
    write(&req.out.join("protection.json"), json.as_bytes())?;
    Ok(report)
}

fn selective_max_levels() -> usize {
    scrim_seal::sealed::MAX_LEVELS
}

/// Restores the model of `key`'s level from `model` (encrypted) and `bundle`, and writes it to
/// `out` with the encrypted model's manifest beside it. Returns the level.
///
/// # Errors
/// Authentication errors for a wrong key or a modified bundle; I/O errors.
pub fn decrypt(model: &Path, bundle: &Path, key: &Path, out: &Path) -> Result<usize> {
    let level = scrim_seal::LevelKey::load(key)?.level();
    let bytes = selective::restore_files(model, bundle, key)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write(out, &bytes)?;
    let src = Manifest::path_for(model);
    if src.exists() {
        Manifest::load(&src)?.save(&Manifest::path_for(out))?;
    }
    Ok(level)
}
