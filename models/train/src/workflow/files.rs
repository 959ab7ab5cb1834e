//! `scrim perturb` and `scrim classify` as library calls: image files in, uploads or labels out.

use std::path::{Path, PathBuf};

use scrim_core::manifest::{Pairing, check_pair};
use scrim_core::{BatchMode, Model, NoiseSource, Perturber, Role};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Lists image files: `input` itself if it is a file, else the images directly inside it.
///
/// # Errors
/// [`Error::NotFound`] or [`Error::BadData`] when nothing is found.
pub fn list_images(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    if !input.is_dir() {
        return Err(Error::NotFound(input.to_path_buf()));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| Error::io(input, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| crate::data::is_image(&n.to_string_lossy()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::data(
            input.display(),
            "no JPEG, PNG or WebP images in this folder",
        ));
    }
    Ok(files)
}

/// Resolves a perturber or recognizer ONNX path from `--run` or `--model`.
///
/// # Errors
/// [`Error::InvalidOption`] when neither or both are given, [`Error::NotFound`] when the file is missing.
pub fn resolve_model(run: Option<&Path>, model: Option<&Path>, which: &str) -> Result<PathBuf> {
    let path = match (run, model) {
        (Some(r), None) => r.join(format!("{which}.onnx")),
        (None, Some(m)) => m.to_path_buf(),
        (Some(_), Some(_)) => {
            return Err(Error::option(
                "--run",
                "and --model exclude each other: give one",
            ));
        }
        (None, None) => return Err(Error::option("--run", "DIR or --model FILE.onnx is needed")),
    };
    if !path.is_file() {
        return Err(Error::NotFound(path));
    }
    Ok(path)
}

/// What happened to one input file of [`perturb_files`] or [`classify_files`]. A file that
/// fails does not stop the others: its error is kept here, naming the file.
#[derive(Debug)]
pub struct FileResult<T> {
    /// The input file.
    pub file: PathBuf,
    /// Its result, or what went wrong with it.
    pub outcome: Result<T>,
}

impl<T> FileResult<T> {
    /// How many of `results` failed.
    pub fn failures(results: &[Self]) -> usize {
        results.iter().filter(|r| r.outcome.is_err()).count()
    }
}

/// The name a perturbed upload of `input` gets: the input's stem with `.png` (uploads are
/// lossless PNGs whatever the input format), so `photo.jpg` becomes `photo.png`.
pub fn upload_name(input: &Path) -> String {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    format!("{stem}.png")
}

/// Loads a model for one role, saying which file to pass instead when it has the other role.
fn load_role(path: &Path, role: Role, batch: BatchMode) -> Result<Model> {
    let model = Model::load_path(path, batch)?;
    let found = model.manifest().role;
    if found == role {
        return Ok(model);
    }
    let (flag, what, instead) = match role {
        Role::Recognizer => (
            "--model",
            "a perturber (it turns photos into uploads on the phone), not a recognizer",
            "recognizer.onnx",
        ),
        Role::Perturber => (
            "--model",
            "a recognizer (it classifies uploads in the cloud), not a perturber",
            "perturber.onnx",
        ),
    };
    Err(Error::option(
        flag,
        format!(
            "{}: this model is {what}; pass the {instead} of the same run (or --run DIR)",
            path.display()
        ),
    ))
}

/// Perturbs files into `out` as PNGs named by [`upload_name`] (`photo.jpg` → `photo.png`). A
/// file that fails (unreadable, not an image, or a second input with the same stem, which
/// would overwrite the first upload) is reported in its [`FileResult`] and the others go on.
///
/// `seed` makes the noise deterministic: anyone who knows it can subtract the noise, so it is
/// for tests and reproducible experiments only.
///
/// # Errors
/// Only for what stops every file: the model (missing, invalid, not a perturber) or an output
/// folder that cannot be created.
pub fn perturb_files(
    model: &Path,
    inputs: &[PathBuf],
    out: &Path,
    seed: Option<u64>,
) -> Result<Vec<FileResult<PathBuf>>> {
    let noise = seed.map_or_else(NoiseSource::from_os, NoiseSource::seeded_for_tests);
    let perturber =
        Perturber::with_noise(load_role(model, Role::Perturber, BatchMode::Single)?, noise)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut taken: std::collections::HashMap<PathBuf, PathBuf> = Default::default();
    Ok(inputs
        .iter()
        .map(|f| {
            let dst = out.join(upload_name(f));
            let outcome = match taken.get(&dst) {
                Some(first) => Err(Error::data(
                    f.display(),
                    format!(
                        "its upload would be {}, already written from {}; rename one of them",
                        dst.display(),
                        first.display()
                    ),
                )),
                None => perturb_one(&perturber, f, &dst),
            };
            if outcome.is_ok() {
                taken.insert(dst, f.clone());
            }
            FileResult {
                file: f.clone(),
                outcome,
            }
        })
        .collect())
}

fn perturb_one(perturber: &Perturber, f: &Path, dst: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
    let img = perturber
        .perturb(&bytes)
        .map_err(|e| Error::data(f.display(), e))?;
    std::fs::write(dst, &img.png).map_err(|e| Error::io(dst, e))?;
    Ok(dst.to_path_buf())
}

/// One classified file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Classified {
    /// The file.
    pub file: String,
    /// Labels with softmax scores, best first.
    pub labels: Vec<(String, f32)>,
}

/// What [`classify_files`] does with an image that is not the recognizer's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputSize {
    /// Refuse it, as scrim-cloud does: uploads are perturbed on the phone at the model's size.
    #[default]
    Exact,
    /// Resize it to the model's input first (for trying a recognizer on other images; the
    /// server would refuse them).
    Resize,
}

/// How [`classify_files`] reads its inputs.
#[derive(Debug, Clone, Default)]
pub struct ClassifyOptions {
    /// Images of another size: refused (the server's rule) or resized.
    pub size: InputSize,
    /// Perturb every input with this perturber first, as the phone would, and classify the
    /// upload (the whole pipeline on this machine). It must come from the recognizer's run.
    pub perturber: Option<PathBuf>,
}

/// Classifies files with a recognizer. A file that fails (unreadable, not an image, not the
/// model's input size under [`InputSize::Exact`]) is reported in its [`FileResult`] and the
/// others go on.
///
/// # Errors
/// Only for what stops every file: a model that is missing, invalid or not a recognizer, or a
/// perturber from another run than the recognizer (`scrim_core::Error::MismatchedRuns`, when
/// both carry a run id; without ids the pair is used unchecked, with a warning).
pub fn classify_files(
    model: &Path,
    inputs: &[PathBuf],
    opts: &ClassifyOptions,
) -> Result<Vec<FileResult<Classified>>> {
    let model = load_role(model, Role::Recognizer, BatchMode::Single)?;
    let m = model.manifest().clone();
    let perturber = match &opts.perturber {
        Some(path) => {
            let p = Perturber::new(load_role(path, Role::Perturber, BatchMode::Single)?)?;
            if check_pair(p.manifest(), &m)? == Pairing::Unknown {
                crate::report::note(&format!(
                    "warning: {} or the recognizer carries no run id (exported before run ids \
                     existed), so whether they were co-trained together is not checked",
                    path.display()
                ));
            }
            if m.key.is_some() {
                return Err(Error::option(
                    "--perturber",
                    "cannot be used with a recognizer trained behind a secret key: classify \
                     uploads that were transformed with the key instead",
                ));
            }
            Some(p)
        }
        None => None,
    };
    let classify = |f: &Path| -> Result<Classified> {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        let named = |e: scrim_core::Error| Error::data(f.display(), e);
        let limits = scrim_core::DecodeLimits::default();
        let x = match (&perturber, opts.size) {
            (Some(p), _) => {
                let upload = p.perturb(&bytes).map_err(named)?;
                scrim_core::imaging::decode_exact(&upload.png, m.input, limits).map_err(named)?
            }
            (None, InputSize::Exact) => scrim_core::imaging::decode_exact(&bytes, m.input, limits)
                .map_err(|e| match e {
                    scrim_core::Error::WrongSize { found, .. } => Error::data(
                        f.display(),
                        format!(
                            "{found}, but the recognizer (like scrim-cloud) takes only \
                                 uploads of exactly {}x{} pixels, as `scrim perturb` writes them; \
                                 perturb the photo first (or pass --perturber), or pass --resize \
                                 to classify it resized anyway",
                            m.input.width, m.input.height
                        ),
                    ),
                    other => named(other),
                })?,
            (None, InputSize::Resize) => {
                let rgb = scrim_core::imaging::decode(&bytes, limits).map_err(named)?;
                scrim_core::imaging::to_tensor(&rgb, m.input)
            }
        };
        let out = model.run(&x).map_err(named)?;
        Ok(Classified {
            file: f.display().to_string(),
            labels: softmax_labels(&out[0].data, &m.labels),
        })
    };
    Ok(inputs
        .iter()
        .map(|f| FileResult {
            file: f.clone(),
            outcome: classify(f),
        })
        .collect())
}

/// Softmax scores with label names, best first.
pub fn softmax_labels(logits: &[f32], labels: &[String]) -> Vec<(String, f32)> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut out: Vec<(String, f32)> = labels
        .iter()
        .cloned()
        .zip(exp.iter().map(|e| e / sum))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}
