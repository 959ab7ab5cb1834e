//! How each scheme perturbs images: a [`Scheme`] resolved into its perturbation, the recognizer
//! that serves it and its plot family, and uniform noise through scrim-core's device path.

use std::path::Path;

use scrim_core::{BatchMode, Model, NoiseKind, NoiseSource, Perturber};

use scrim_train::data::Dataset;
use scrim_train::eval;
use scrim_train::run::RunDir;

use crate::error::{Error, Result};
use crate::request::Scheme;
use crate::runs::{family_of, run_lambda};

/// Adds Gaussian noise of one σ to every pixel through scrim-core's device path (CSPRNG, 8-bit).
///
/// # Errors
/// Tensor shape errors (never for a well-formed dataset).
pub fn uniform_noise(ds: &Dataset, sigma: f32) -> Result<Dataset> {
    let s = ds.size;
    let source = NoiseSource::from_os();
    let mut images = Vec::with_capacity(ds.images.len());
    for i in 0..ds.len() {
        let x = scrim_core::imaging::rgb_to_tensor(&ds.rgb(i));
        let maps = scrim_core::noise::PerturbationMaps {
            sigma: scrim_core::ImageTensor::new([1, 3, s, s], vec![sigma; 3 * s * s])?,
            shift: None,
            keep: None,
            fill: 0.5,
        };
        let y = scrim_core::noise::apply(&x, &maps, NoiseKind::Gaussian, &source)?;
        images.extend(y.data().iter().map(|&v| scrim_core::imaging::quantize(v)));
    }
    Ok(Dataset {
        images,
        ..ds.clone()
    })
}

/// How a scheme perturbs images.
pub(crate) enum Perturb {
    Identity,
    Uniform(f32),
    Onnx(Box<Perturber>),
}

impl Perturb {
    /// A perturbed copy of `ds`, with fresh noise.
    pub fn apply(&self, ds: &Dataset, progress: bool) -> Result<Dataset> {
        Ok(match self {
            Self::Identity => ds.clone(),
            Self::Uniform(sigma) => uniform_noise(ds, *sigma)?,
            Self::Onnx(p) => eval::perturb_dataset(p, ds, progress)?,
        })
    }

    /// Mean and RMS σ over the images of `ds`.
    pub fn sigma_stats(&self, ds: &Dataset) -> Result<(f64, f64)> {
        Ok(match self {
            Self::Identity => (0.0, 0.0),
            Self::Uniform(s) => (f64::from(*s), f64::from(*s)),
            Self::Onnx(p) => eval::sigma_stats(p, ds)?,
        })
    }
}

/// A scheme resolved into what its audit needs.
pub(crate) enum Resolved {
    /// A scheme that uploads perturbed images.
    Images(Box<ImageScheme>),
    /// The ARDEN baseline, which uploads features (audited by `arden.rs`).
    Arden { nullify: f64, laplace_b: f64 },
}

/// What the audit of an image scheme needs.
pub(crate) struct ImageScheme {
    pub perturb: Perturb,
    /// The recognizer that serves the scheme, when it has one (a run, or an ONNX with its
    /// recognizer).
    pub recognizer: Option<Model>,
    pub family: String,
    pub lambda: Option<f64>,
    /// Multiply-adds per image of the perturber and of the recognizer, when they are ONNX files.
    pub multiply_adds: (Option<u64>, Option<u64>),
    /// A run's training configuration, for the report.
    pub training: Option<serde_json::Value>,
}

impl Resolved {
    /// The scheme's name in reports: uniform noise names the σ it resolved to.
    pub fn name(&self, scheme: &Scheme) -> String {
        if let Self::Images(images) = self
            && let Perturb::Uniform(s) = images.perturb
        {
            return format!("uniform σ={s:.3}");
        }
        scheme.name()
    }
}

/// Resolves `scheme`; uniform noise without a σ of its own takes `first_rms`.
///
/// # Errors
/// Bad scheme parameters, unreadable runs or models, [`Error::UniformNeedsSigma`].
pub(crate) fn resolve(
    scheme: &Scheme,
    first_rms: Option<f64>,
    train: &Dataset,
) -> Result<Resolved> {
    scheme.check()?;
    let images = match scheme {
        Scheme::Arden { nullify, laplace_b } => {
            return Ok(Resolved::Arden {
                nullify: *nullify,
                laplace_b: *laplace_b,
            });
        }
        Scheme::None => ImageScheme {
            perturb: Perturb::Identity,
            recognizer: None,
            family: "none".into(),
            lambda: None,
            multiply_adds: (None, None),
            training: None,
        },
        Scheme::Uniform { sigma, matching } => {
            let matched = match matching {
                Some(run) => Some(rms_sigma(&RunDir::open(run)?.perturber_onnx(), train)?),
                None => None,
            };
            let s = sigma
                .or(matched)
                .or(first_rms)
                .ok_or(Error::UniformNeedsSigma)?;
            ImageScheme {
                perturb: Perturb::Uniform(s as f32),
                recognizer: None,
                family: "uniform".into(),
                lambda: None,
                multiply_adds: (None, None),
                training: None,
            }
        }
        Scheme::Run { path } => {
            let run = RunDir::open(path)?;
            let cfg = run.load_config()?;
            let perturber = load_perturber(&run.perturber_onnx())?;
            let recognizer = Model::load_path(&run.recognizer_onnx(), BatchMode::Dynamic)?;
            scrim_core::manifest::check_pair(perturber.manifest(), recognizer.manifest())?;
            ImageScheme {
                perturb: Perturb::Onnx(Box::new(perturber)),
                recognizer: Some(recognizer),
                family: family_of(&cfg),
                lambda: run_lambda(&run, &cfg),
                multiply_adds: (
                    onnx_cost(&run.perturber_onnx()),
                    onnx_cost(&run.recognizer_onnx()),
                ),
                training: serde_json::to_value(&cfg).ok(),
            }
        }
        Scheme::Onnx {
            perturber,
            recognizer,
        } => {
            // A recognizer of another run reads these uploads as noise: refuse the pair when
            // both carry run ids (third-party models without ids are audited unchecked).
            let p = load_perturber(perturber)?;
            let r = recognizer
                .as_deref()
                .map(|r| Model::load_path(r, BatchMode::Dynamic))
                .transpose()?;
            if let Some(r) = &r {
                scrim_core::manifest::check_pair(p.manifest(), r.manifest())?;
            }
            ImageScheme {
                perturb: Perturb::Onnx(Box::new(p)),
                recognizer: r,
                family: "onnx".into(),
                lambda: None,
                multiply_adds: (
                    onnx_cost(perturber),
                    recognizer.as_deref().and_then(onnx_cost),
                ),
                training: None,
            }
        }
    };
    Ok(Resolved::Images(Box::new(images)))
}

/// The RMS σ of the first perturber among `schemes` over `train`, which fixes the energy of
/// uniform noise that names no σ; `None` when no scheme has a perturber.
pub(crate) fn first_rms(schemes: &[Scheme], train: &Dataset) -> Result<Option<f64>> {
    let first = schemes.iter().find_map(|s| match s {
        Scheme::Run { path } => Some(RunDir::open(path).map(|r| r.perturber_onnx())),
        Scheme::Onnx { perturber, .. } => Some(Ok(perturber.clone())),
        _ => None,
    });
    match first {
        Some(p) => Ok(Some(rms_sigma(&p?, train)?)),
        None => Ok(None),
    }
}

/// The RMS σ of the perturber at `onnx` over `ds`.
fn rms_sigma(onnx: &Path, ds: &Dataset) -> Result<f64> {
    Ok(eval::sigma_stats(&load_perturber(onnx)?, ds)?.1)
}

/// Multiply-adds per image of the ONNX model at `path` (with its manifest), if it can be counted.
fn onnx_cost(path: &Path) -> Option<u64> {
    let manifest = scrim_core::Manifest::load(&scrim_core::Manifest::path_for(path)).ok()?;
    let bytes = std::fs::read(path).ok()?;
    scrim_core::cost::multiply_adds(&bytes, manifest.input).ok()
}

fn load_perturber(path: &Path) -> Result<Perturber> {
    Ok(Perturber::new(Model::load_path(path, BatchMode::Single)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scrim_core::{Manifest, fixtures};
    use scrim_train::data::{self, DataSpec, LoadOptions, SyntheticConfig};

    #[test]
    fn a_perturber_and_a_recognizer_of_different_runs_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, (onnx, m): (Vec<u8>, Manifest), id: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, onnx).expect("onnx");
            m.with_run("r", id)
                .save(&Manifest::path_for(&path))
                .expect("manifest");
            path
        };
        let p = write("p.onnx", fixtures::perturber(16, 0.2), "00000000000000aa");
        let r = write(
            "r.onnx",
            fixtures::recognizer(16, &["circle", "square"]),
            "00000000000000bb",
        );
        let same = write(
            "same.onnx",
            fixtures::recognizer(16, &["circle", "square"]),
            "00000000000000aa",
        );
        let train = data::load(
            &DataSpec::Synthetic(SyntheticConfig { count: 8, seed: 1 }),
            &LoadOptions {
                size: 16,
                cache: false,
                progress: false,
            },
        )
        .expect("data");
        let scheme = |recognizer: &Path| Scheme::Onnx {
            perturber: p.clone(),
            recognizer: Some(recognizer.to_path_buf()),
        };
        let err = resolve(&scheme(&r), None, &train)
            .err()
            .expect("mismatch")
            .to_string();
        assert!(err.contains("different training runs"), "{err}");
        assert!(resolve(&scheme(&same), None, &train).is_ok());
    }
}
