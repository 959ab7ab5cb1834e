//! `scrim perturb` and `scrim classify` as library calls: image files in, uploads or labels out.

use std::path::{Path, PathBuf};

use scrim_core::{BatchMode, Model, NoiseSource, Perturber};
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

/// Perturbs files into `out` as PNGs with the same stem. Returns the written paths.
///
/// # Errors
/// [`Error::BadData`] naming the file at fault.
pub fn perturb_files(
    model: &Path,
    inputs: &[PathBuf],
    out: &Path,
    seed: Option<u64>,
) -> Result<Vec<PathBuf>> {
    let noise = seed.map_or_else(NoiseSource::from_os, NoiseSource::seeded_for_tests);
    let perturber = Perturber::with_noise(Model::load_path(model, BatchMode::Single)?, noise)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut written = Vec::new();
    for f in inputs {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        let img = perturber
            .perturb(&bytes)
            .map_err(|e| Error::data(f.display(), e))?;
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let dst = out.join(format!("{stem}.png"));
        std::fs::write(&dst, &img.png).map_err(|e| Error::io(&dst, e))?;
        written.push(dst);
    }
    Ok(written)
}

/// One classified file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Classified {
    /// The file.
    pub file: String,
    /// Labels with softmax scores, best first.
    pub labels: Vec<(String, f32)>,
}

/// Classifies files with a recognizer. Images are resized to the model's input if needed.
///
/// # Errors
/// Core errors, naming the file at fault.
pub fn classify_files(model: &Path, inputs: &[PathBuf]) -> Result<Vec<Classified>> {
    let model = Model::load_path(model, BatchMode::Single)?;
    let m = model.manifest().clone();
    inputs
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            let named = |e: scrim_core::Error| Error::data(f.display(), e);
            let rgb = scrim_core::imaging::decode(&bytes, scrim_core::DecodeLimits::default())
                .map_err(named)?;
            let x = scrim_core::imaging::to_tensor(&rgb, m.input);
            let out = model.run(&x).map_err(named)?;
            Ok(Classified {
                file: f.display().to_string(),
                labels: softmax_labels(&out[0].data, &m.labels),
            })
        })
        .collect()
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
