//! Sections 1 and 4: the on-device perturbation path in tract against onnxruntime, peak RSS of
//! the path (in a child process), and the size of every artifact.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use scrim_core::{BatchMode, ImageTensor, InputSpec, Manifest, Model, NoiseKind, Perturber};
use serde::{Deserialize, Serialize};

use super::BenchOptions;
use super::python;
use crate::{Error, Result};
use scrim_train::export::{perturber_manifest, perturber_onnx, recognizer_onnx};
use scrim_train::nets::Nets;
use scrim_train::nets::{self, PerturberConfig, RecognizerConfig};
use scrim_train::run::RunDir;

/// One perturber architecture at one image side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerturbRow {
    /// Architecture name (`default`, `half-res`, `run`).
    pub variant: String,
    /// Image side in pixels.
    pub size: usize,
    /// Size of the ONNX file.
    pub onnx_bytes: u64,
    /// σ network alone in tract, one thread: median ms.
    pub tract_sigma_ms: f64,
    /// The same through `Model::run`, which checks and copies the input before each run
    /// (round 1 only): median ms.
    #[serde(default)]
    pub tract_sigma_with_copy_ms: f64,
    /// The same ONNX file in onnxruntime, one thread: median ms.
    pub onnxruntime_sigma_ms: Option<f64>,
    /// tract / onnxruntime: the median over rounds of each round's ratio (the two timings of
    /// one round are taken back to back).
    pub ratio: Option<f64>,
    /// The σ network in tract with tract's own convolutions (Scrim's direct convolution
    /// switched off, `scrim_core::set_direct_convolutions`), timed in the same rounds: median ms.
    #[serde(default)]
    pub tract_own_conv_ms: Option<f64>,
    /// tract with its own convolutions / onnxruntime, as `ratio`: what the ratio was before
    /// Scrim's direct convolution.
    #[serde(default)]
    pub ratio_own_conv: Option<f64>,
    /// The whole path in tract (JPEG decode, resize, σ network, CSPRNG noise, PNG encode):
    /// median ms.
    pub tract_path_ms: f64,
    /// Whole path per thousand pixels, in µs (growth: constant if linear in pixels).
    pub path_us_per_kpixel: f64,
    /// The method tract runs each convolution of the σ network with, in graph order
    /// (`ScrimConv` is Scrim's direct convolution).
    #[serde(default)]
    pub convolutions: Vec<String>,
    /// The same with Scrim's direct convolution switched off.
    #[serde(default)]
    pub own_convolutions: Vec<String>,
}

/// Each convolution's method of a model's first plan, without its parameters.
fn methods(model: &Model) -> Vec<String> {
    model
        .kernels()
        .into_iter()
        .next()
        .map(|plan| {
            plan.convolutions
                .into_iter()
                .map(|(_, m)| m.split(['(', ' ']).next().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) struct DeviceOut {
    pub rows: Vec<PerturbRow>,
    /// The recognizer ONNX the server section serves.
    pub recognizer: PathBuf,
    /// (variant, side, path) of every perturber ONNX written.
    pub perturbers: Vec<(String, usize, PathBuf)>,
}

/// Median of `iterations` timed calls after three unmeasured ones, in ms.
pub(crate) fn median_ms(iterations: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut times = Vec::with_capacity(iterations.max(1));
    for _ in 0..iterations.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&times))
}

/// Medians of two measurements, each timed alone: `a` run back to back (three warm-ups, then
/// `iterations` timed), then `b` likewise. As PyTorch's reference times its step and layers:
/// alternating them (session 33 and before) handed each of `a`'s runs the caches that `b`, burn's
/// generic path with its unrolled matrices, had just swept (16→16 @32: 7.0 ms interleaved
/// against 5.5 alone).
pub(crate) fn each_alone_median_ms(
    iterations: usize,
    a: impl FnMut() -> Result<()>,
    b: impl FnMut() -> Result<()>,
) -> Result<(f64, f64)> {
    Ok((median_ms(iterations, a)?, median_ms(iterations, b)?))
}

/// Median of a non-empty sample (the upper middle value for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A photo-like JPEG of `size × size`: smooth gradients, a disc, some texture.
pub(crate) fn test_jpeg(size: usize) -> Result<Vec<u8>> {
    let s = size as u32;
    let img = image::RgbImage::from_fn(s, s, |x, y| {
        let (fx, fy) = (x as f32 / s as f32, y as f32 / s as f32);
        let d = ((fx - 0.5).powi(2) + (fy - 0.45).powi(2)).sqrt();
        let disc = if d < 0.3 { 60.0 } else { 0.0 };
        let tex = ((x * 7 + y * 13) % 17) as f32;
        image::Rgb([
            (80.0 + 120.0 * fx + disc + tex) as u8,
            (60.0 + 100.0 * fy + disc * 0.8) as u8,
            (90.0 + 60.0 * (1.0 - fx) + tex) as u8,
        ])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Jpeg)
        .map_err(|e| Error::Internal(format!("cannot encode the test JPEG: {e}")))?;
    Ok(buf.into_inner())
}

/// A perturber to measure: a trained one, or a variant's architecture, built fresh at each side.
enum Source {
    Trained(Box<nets::Perturber>),
    Fresh(PerturberConfig),
}

impl Source {
    /// The network exported at side `size` (`Err`: the architecture does not fit that side).
    fn at(&self, size: usize, device: &Device) -> std::result::Result<nets::Perturber, String> {
        match self {
            Self::Trained(p) => Ok(p.as_ref().clone()),
            Self::Fresh(cfg) => {
                let cfg = crate::at_size(cfg, size);
                cfg.validate(size).map_err(|e| e.to_string())?;
                Ok(cfg.init_for(size, device))
            }
        }
    }
}

/// The perturbers to measure: the run's best checkpoint, or fresh networks of each variant.
fn perturbers(opts: &BenchOptions, device: &Device) -> Result<Vec<(String, Source)>> {
    match &opts.run {
        Some(path) => {
            let run = RunDir::open(path)?;
            let cfg = run.load_config()?;
            let template = Nets {
                perturber: cfg.perturber.init(device),
                recognizer: cfg.recognizer.init(device),
                adversary: None,
                teacher: None,
            };
            Ok(vec![(
                "run".into(),
                Source::Trained(Box::new(run.load_best(&template, device)?.perturber)),
            )])
        }
        None => Ok(opts
            .variants
            .iter()
            .map(|(name, cfg)| (name.clone(), Source::Fresh(cfg.clone())))
            .collect()),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Section 1.
pub(crate) fn run(
    opts: &BenchOptions,
    python: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<DeviceOut> {
    let device = Device::flex();
    device.seed(7);
    let mut rows = Vec::new();
    let mut written = Vec::new();
    let mut loaded = Vec::new();
    for (variant, source) in perturbers(opts, &device)? {
        for &size in &opts.sizes {
            let p = match source.at(size, &device) {
                Ok(p) => p,
                Err(e) => {
                    notes.push(format!(
                        "perturber {variant} at {size} px not measured: {e}"
                    ));
                    continue;
                }
            };
            let input = InputSpec::rgb(size, size);
            let bytes = perturber_onnx(&p, input);
            let path = opts.out.join(format!("perturber-{variant}-{size}.onnx"));
            write(&path, &bytes)?;
            let manifest = perturber_manifest(&p, input, NoiseKind::Gaussian);
            manifest.save(&Manifest::path_for(&path))?;
            // The same file with tract's own convolutions, for the before/after columns.
            let was = scrim_core::direct_convolutions();
            scrim_core::set_direct_convolutions(false);
            let own = Model::load(&bytes, manifest.clone(), BatchMode::Single);
            scrim_core::set_direct_convolutions(was);
            let model = match Model::load(&bytes, manifest, BatchMode::Single) {
                Ok(m) => m,
                Err(e) => {
                    notes.push(format!(
                        "perturber {variant} at {size} px not measured: {e}"
                    ));
                    continue;
                }
            };
            let perturber = Perturber::new(model.clone())?;
            let jpeg = test_jpeg(size)?;
            let path_ms = median_ms(opts.iterations, || {
                perturber.perturb(&jpeg).map(drop).map_err(Into::into)
            })?;
            scrim_train::report::note(&format!(
                "[bench]   {variant} {size} px: whole path {path_ms:.3} ms"
            ));
            rows.push(PerturbRow {
                variant: variant.clone(),
                size,
                onnx_bytes: bytes.len() as u64,
                tract_sigma_ms: f64::NAN,
                tract_sigma_with_copy_ms: f64::NAN,
                onnxruntime_sigma_ms: None,
                ratio: None,
                tract_own_conv_ms: None,
                ratio_own_conv: None,
                tract_path_ms: path_ms,
                path_us_per_kpixel: path_ms * 1e3 / ((size * size) as f64 / 1e3),
                convolutions: methods(&model),
                own_convolutions: own.as_ref().map(methods).unwrap_or_default(),
            });
            // Timed on a prepared input, as onnxruntime is on a ready numpy array (both
            // get pseudo-random pixels).
            let pixels = (0..3 * size * size)
                .map(|k| ((k as u64).wrapping_mul(2_654_435_761) % 1000) as f32 / 1000.0)
                .collect();
            let image = ImageTensor::new([1, 3, size, size], pixels)?;
            let x = model.prepare(&image)?;
            let own = match own {
                Ok(m) => {
                    let x = m.prepare(&image)?;
                    Some((m, x))
                }
                Err(e) => {
                    notes.push(format!(
                        "perturber {variant} at {size} px with tract's own convolutions not \
                         measured: {e}"
                    ));
                    None
                }
            };
            loaded.push((model, image, x, own));
            written.push((variant.clone(), size, path));
        }
    }
    // The σ network in both runtimes, interleaved: each file in tract, then at once the same
    // file in onnxruntime (a worker process with every model loaded), over several rounds. A
    // disturbance on a shared machine then hits both sides of one pair, not one runtime, and
    // the median over rounds drops the disturbed pairs.
    let paths: Vec<PathBuf> = written.iter().map(|(_, _, p)| p.clone()).collect();
    let mut worker = python.and_then(|py| match python::OrtWorker::start(py, &opts.out, &paths) {
        Ok(w) => {
            notes.push(format!(
                "onnxruntime {} (CPU execution provider, one thread)",
                w.version
            ));
            Some(w)
        }
        Err(e) => {
            notes.push(format!("onnxruntime not measured: {e}"));
            None
        }
    });
    let rounds = opts.rounds.max(1);
    let mut tract_ms = vec![Vec::new(); loaded.len()];
    let mut ort_ms = vec![Vec::new(); loaded.len()];
    let mut ratios = vec![Vec::new(); loaded.len()];
    let mut own_ms = vec![Vec::new(); loaded.len()];
    let mut own_ratios = vec![Vec::new(); loaded.len()];
    for round in 1..=rounds {
        for (i, ((model, image, x, own), row)) in loaded.iter().zip(&mut rows).enumerate() {
            let t = median_ms(opts.iterations, || {
                model.run_prepared(x).map(drop).map_err(Into::into)
            })?;
            tract_ms[i].push(t);
            let t_own = match own {
                Some((m, x)) => Some(median_ms(opts.iterations, || {
                    m.run_prepared(x).map(drop).map_err(Into::into)
                })?),
                None => None,
            };
            own_ms[i].extend(t_own);
            let ort = worker.as_mut().map(|w| w.median_ms(i, opts.iterations));
            match ort {
                Some(Ok(o)) => {
                    ort_ms[i].push(o);
                    ratios[i].push(t / o);
                    own_ratios[i].extend(t_own.map(|t| t / o));
                }
                Some(Err(e)) => {
                    notes.push(format!("onnxruntime not measured: {e}"));
                    worker = None;
                }
                None => {}
            }
            if round == 1 {
                row.tract_sigma_with_copy_ms = median_ms(opts.iterations, || {
                    model.run(image).map(drop).map_err(Into::into)
                })?;
            }
        }
        scrim_train::report::note(&format!("[bench]   σ networks, round {round}/{rounds}"));
    }
    let measured_ort = worker.is_some();
    drop(worker);
    for (i, row) in rows.iter_mut().enumerate() {
        row.tract_sigma_ms = median(&tract_ms[i]);
        if own_ms[i].len() == rounds {
            row.tract_own_conv_ms = Some(median(&own_ms[i]));
        }
        if measured_ort && ort_ms[i].len() == rounds {
            row.onnxruntime_sigma_ms = Some(median(&ort_ms[i]));
            row.ratio = Some(median(&ratios[i]));
            if own_ratios[i].len() == rounds {
                row.ratio_own_conv = Some(median(&own_ratios[i]));
            }
        }
        scrim_train::report::note(&format!(
            "[bench]   {} {} px: σ network tract {:.3} ms (its own convolutions {}), \
             onnxruntime {}",
            row.variant,
            row.size,
            row.tract_sigma_ms,
            row.tract_own_conv_ms
                .map_or("not measured".into(), |m| format!("{m:.3} ms")),
            row.onnxruntime_sigma_ms
                .map_or("not measured".into(), |m| format!("{m:.3} ms"))
        ));
    }
    let recognizer = match &opts.run {
        Some(path) => RunDir::open(path)?.recognizer_onnx(),
        None => {
            let c = RecognizerConfig::new(2).init(&device);
            let input = InputSpec::rgb(opts.train_size, opts.train_size);
            let path = opts.out.join("recognizer.onnx");
            write(&path, &recognizer_onnx(&c, input))?;
            Manifest::recognizer(
                "scrim-recognizer",
                input,
                "class",
                vec!["a".into(), "b".into()],
            )
            .save(&Manifest::path_for(&path))?;
            path
        }
    };
    Ok(DeviceOut {
        rows,
        recognizer,
        perturbers: written,
    })
}
