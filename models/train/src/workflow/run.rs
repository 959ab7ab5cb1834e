//! `scrim train` as a library call: load, co-train, export, check the export, test.

use std::path::PathBuf;
use std::time::Instant;

use scrim_core::{BatchMode, Model, NoiseSource, Perturber};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::config::TrainConfig;
use crate::cotrain::{self, TrainOptions};
use crate::data::{self, DataSpec, Dataset, LoadOptions, Split, SplitFractions};
use crate::eval::{self, Accuracy};
use crate::run::RunDir;

/// A request to train one run.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Where the data comes from.
    pub data: DataSpec,
    /// The full training configuration.
    pub config: TrainConfig,
    /// The run folder.
    pub out: PathBuf,
    /// Continue from the last checkpoint.
    pub resume: bool,
    /// Progress bars.
    pub progress: bool,
    /// Use the decoded-image cache.
    pub cache: bool,
    /// Noise draws averaged in the test evaluation.
    pub draws: usize,
}

impl TrainRequest {
    /// Defaults for `data`, desired label and output folder.
    pub fn new(data: DataSpec, desired: &str, out: PathBuf) -> Self {
        Self {
            config: TrainConfig::for_data(&data, desired),
            data,
            out,
            resume: false,
            progress: false,
            cache: true,
            draws: 3,
        }
    }
}

/// What `train_run` measured on the held-out test split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The run folder.
    pub run: PathBuf,
    /// Desired attribute.
    pub desired: String,
    /// λ.
    pub lambda: f64,
    /// Backend that trained.
    pub backend: String,
    /// Recognizer accuracy on clean test images (tract).
    pub test_clean: Accuracy,
    /// Recognizer accuracy on perturbed test images, averaged over `draws` noise draws (tract,
    /// CSPRNG noise: the device path).
    pub test_perturbed: Accuracy,
    /// Noise draws averaged.
    pub draws: usize,
    /// Mean σ over the test images.
    pub mean_sigma: f64,
    /// Majority-class rate of the desired label on the test split.
    pub majority: f64,
    /// Wall-clock training time.
    pub train_seconds: f64,
    /// Max |tract − burn| at export.
    pub export_check: crate::export::ExportCheck,
    /// For a bounded release, the most bits one upload can carry (`scrim_core::release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_upload: Option<f64>,
    /// Multiply-adds per image of the exported perturber (on the device) and recognizer (in the
    /// cloud), counted by `scrim_core::cost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiply_adds: Option<[u64; 2]>,
}

/// The device should render, not recognise: a perturber costing more than this share of the
/// recognizer's multiply-adds gets a warning.
pub const DEVICE_BUDGET: f64 = 0.10;

/// Multiply-adds per image of the run's exported perturber and recognizer.
fn run_cost(run: &RunDir, input: scrim_core::InputSpec) -> Option<[u64; 2]> {
    let count = |p: std::path::PathBuf| -> Option<u64> {
        scrim_core::cost::multiply_adds(&std::fs::read(p).ok()?, input).ok()
    };
    Some([count(run.perturber_onnx())?, count(run.recognizer_onnx())?])
}

/// Loads the dataset and split for a request.
///
/// # Errors
/// Data errors.
pub fn load_data(
    spec: &DataSpec,
    cfg: &TrainConfig,
    progress: bool,
    cache: bool,
) -> Result<(Dataset, Split)> {
    let ds = data::load(
        spec,
        &LoadOptions {
            size: cfg.size,
            cache,
            progress,
        },
    )?;
    ds.attribute(&cfg.desired)?;
    if let Some(s) = &cfg.sensitive {
        ds.attribute(s)?;
    }
    let split = Split::stratified(
        &ds,
        &cfg.desired,
        SplitFractions {
            val: cfg.val_fraction,
            test: cfg.test_fraction,
        },
        cfg.seed,
    )?;
    Ok((ds, split))
}

/// Trains, exports, checks the export and evaluates on the test split.
///
/// # Errors
/// Data, training and export errors.
pub fn train_run(req: &TrainRequest) -> Result<TrainSummary> {
    // Options first: a bad flag should not wait for the data to load.
    req.config.validate()?;
    let (ds, split) = load_data(&req.data, &req.config, req.progress, req.cache)?;
    // The recognizer's output count follows the desired label's classes.
    let mut cfg = req.config.clone();
    cfg.recognizer.num_classes = ds.attribute(&cfg.desired)?.classes.len();
    // The input-independent map covers the whole image.
    cfg.perturber.map_size = cfg.size;
    let cfg = &cfg;
    let keyed = crate::keyed::load(cfg.block_key.as_ref())?;
    if let Some(t) = &keyed {
        crate::keyed::check_size(t, cfg.size)?;
    }
    crate::report::note(&format!(
        "data: {} images at {}x{} ({} train / {} val / {} test); desired {:?}{}",
        ds.len(),
        ds.size,
        ds.size,
        split.train.len(),
        split.val.len(),
        split.test.len(),
        cfg.desired,
        cfg.sensitive
            .as_ref()
            .map(|s| format!(", sensitive {s:?}"))
            .unwrap_or_default()
    ));
    let run = RunDir::create(&req.out)?;
    let started = Instant::now();
    let nets = cotrain::train(
        cfg,
        &ds,
        &split,
        &run,
        &TrainOptions {
            resume: req.resume,
            progress: req.progress,
        },
    )?;
    let train_seconds = started.elapsed().as_secs_f64();
    let backend = cfg.backend;
    let device = backend.device()?;
    let check: Vec<usize> = split.val.iter().copied().take(16).collect();
    let noise = cfg.noise;
    let export_check = crate::export::export(
        &run,
        &nets.perturber,
        &nets.recognizer,
        &ds,
        &cfg.desired,
        noise,
        &check,
        &device,
    )?;
    if let Some(t) = &keyed {
        crate::keyed::record_requirement(&run.recognizer_onnx(), t)?;
    }
    let test = ds.subset(&split.test);
    let recognizer = Model::load_path(&run.recognizer_onnx(), BatchMode::Dynamic)?;
    let perturber = Perturber::with_noise(
        Model::load_path(&run.perturber_onnx(), BatchMode::Single)?,
        NoiseSource::seeded_for_tests(cfg.seed ^ 0x7e57),
    )?;
    let test_clean = eval::onnx_accuracy_keyed(&recognizer, &test, &cfg.desired, keyed.as_ref())?;
    let (test_perturbed, mean_sigma) = perturbed_accuracy(
        &perturber,
        &recognizer,
        &test,
        &cfg.desired,
        req.draws.max(1),
        req.progress,
        keyed.as_ref(),
    )?;
    let summary = TrainSummary {
        run: req.out.clone(),
        desired: cfg.desired.clone(),
        lambda: cfg.lambda,
        backend: cfg.backend.to_string(),
        majority: ds.attribute(&cfg.desired)?.majority_rate(&split.test),
        test_clean,
        test_perturbed,
        draws: req.draws.max(1),
        mean_sigma,
        train_seconds,
        export_check,
        bits_per_upload: cfg
            .perturber
            .bounded_release(cfg.size)
            .map(|r| f64::from(r.bits_per_upload)),
        multiply_adds: run_cost(&run, ds.input()),
    };
    if let Some([p, c]) = summary.multiply_adds {
        let share = p as f64 / c.max(1) as f64;
        crate::report::note(&format!(
            "the perturber costs {:.2} M multiply-adds per image on the device, {:.1}% of the \
             recognizer's {:.2} M{}",
            p as f64 / 1e6,
            100.0 * share,
            c as f64 / 1e6,
            if share > DEVICE_BUDGET {
                format!(" (over the {:.0}% device budget)", 100.0 * DEVICE_BUDGET)
            } else {
                String::new()
            }
        ));
    }
    if let Some(bits) = summary.bits_per_upload {
        crate::report::note(&format!(
            "bounded release: one upload carries at most {bits:.1} bits of the photo"
        ));
    }
    run.save_json("summary.json", &summary)?;
    Ok(summary)
}

/// Recognizer accuracy on `draws` independently perturbed copies of `ds` (each then passed through
/// the key-based transform `keyed`, when the recognizer was trained behind one), pooled, and the
/// mean σ.
///
/// # Errors
/// Model errors.
pub fn perturbed_accuracy(
    perturber: &Perturber,
    recognizer: &Model,
    ds: &Dataset,
    attr: &str,
    draws: usize,
    progress: bool,
    keyed: Option<&scrim_core::BlockTransform>,
) -> Result<(Accuracy, f64)> {
    let mut acc = Vec::new();
    for _ in 0..draws {
        let p = eval::perturb_dataset(perturber, ds, progress)?;
        acc.push(eval::onnx_accuracy_keyed(recognizer, &p, attr, keyed)?);
    }
    let n = acc.len() as f64;
    let pooled = Accuracy {
        accuracy: acc.iter().map(|a| a.accuracy).sum::<f64>() / n,
        balanced: acc.iter().map(|a| a.balanced).sum::<f64>() / n,
        n: acc.iter().map(|a| a.n).sum(),
    };
    Ok((pooled, mean_sigma(perturber, ds)?))
}

/// Mean σ of the perturber over a dataset.
///
/// # Errors
/// Model errors.
pub fn mean_sigma(perturber: &Perturber, ds: &Dataset) -> Result<f64> {
    Ok(eval::sigma_stats(perturber, ds)?.0)
}
