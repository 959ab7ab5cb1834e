//! The workflows behind the `scrim` command: train (+ export + test), perturb, classify, demo.

use std::path::{Path, PathBuf};
use std::time::Instant;

use scrim_core::{BatchMode, Model, NoiseSource, Perturber};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{self, DataSpec, Dataset, LoadOptions, Split, SplitFractions};
use crate::eval::{self, Accuracy, ClassifierConfig};
use crate::run::RunDir;
use crate::train::{self, TrainOptions};
use crate::{Error, Result};

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
    let (ds, split) = load_data(&req.data, &req.config, req.progress, req.cache)?;
    // The recognizer's output count follows the desired label's classes.
    let mut cfg = req.config.clone();
    cfg.recognizer.num_classes = ds.attribute(&cfg.desired)?.classes.len();
    // The input-independent map covers the whole image.
    cfg.perturber.map_size = cfg.size;
    let cfg = &cfg;
    cfg.validate()?;
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
    let nets = train::train(
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
    };
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

/// Lists image files: `input` itself if it is a file, else the images directly inside it.
///
/// # Errors
/// [`Error::Input`] when nothing is found.
pub fn list_images(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    if !input.is_dir() {
        return Err(Error::Input(format!("{} does not exist", input.display())));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| Error::io(input, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(
                        e.to_ascii_lowercase().as_str(),
                        "jpg" | "jpeg" | "png" | "webp"
                    )
                })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Input(format!(
            "no JPEG, PNG or WebP images in {}",
            input.display()
        )));
    }
    Ok(files)
}

/// Resolves a perturber or recognizer ONNX path from `--run` or `--model`.
///
/// # Errors
/// [`Error::Input`] when neither or both are given, or the file is missing.
pub fn resolve_model(run: Option<&Path>, model: Option<&Path>, which: &str) -> Result<PathBuf> {
    let path = match (run, model) {
        (Some(r), None) => r.join(format!("{which}.onnx")),
        (None, Some(m)) => m.to_path_buf(),
        (Some(_), Some(_)) => return Err(Error::Input("give --run or --model, not both".into())),
        (None, None) => return Err(Error::Input("give --run DIR or --model FILE.onnx".into())),
    };
    if !path.is_file() {
        return Err(Error::Input(format!("{} not found", path.display())));
    }
    Ok(path)
}

/// Perturbs files into `out` as PNGs with the same stem. Returns the written paths.
///
/// # Errors
/// [`Error::Input`] / core errors, naming the file at fault.
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
            .map_err(|e| Error::Input(format!("{}: {e}", f.display())))?;
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
            let named = |e: scrim_core::Error| Error::Input(format!("{}: {e}", f.display()));
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

/// One row of the demo table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoRow {
    /// `clean` or `perturbed`.
    pub images: String,
    /// Desired-task accuracy: a recognizer trained on clean images for `clean`, the co-trained
    /// cloud recognizer for `perturbed`.
    pub desired: Accuracy,
    /// A freshly trained attacker's accuracy on the sensitive label.
    pub attacker: Accuracy,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoReport {
    /// Training summary.
    pub train: TrainSummary,
    /// Clean and perturbed rows.
    pub rows: Vec<DemoRow>,
    /// Majority-class rate of the sensitive label on the test split.
    pub sensitive_majority: f64,
    /// Desired and sensitive label names.
    pub labels: (String, String),
}

/// Options of the demo (defaults: the README's first-run demo).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Run folder.
    pub out: PathBuf,
    /// Synthetic images.
    pub count: usize,
    /// Co-training epochs.
    pub epochs: usize,
    /// Attacker epochs.
    pub attacker_epochs: usize,
    /// Progress bars.
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            out: "runs/demo".into(),
            count: 3000,
            epochs: 12,
            attacker_epochs: 8,
            progress: true,
        }
    }
}

/// The first-run demo: synthetic data → co-training → export → perturbation through the device
/// path → desired accuracy and a fresh attacker's sensitive accuracy, clean vs perturbed.
///
/// # Errors
/// Any training or evaluation error.
pub fn demo(opts: &DemoOptions) -> Result<DemoReport> {
    let data = DataSpec::Synthetic(data::SyntheticConfig {
        count: opts.count,
        ..Default::default()
    });
    let mut req = TrainRequest::new(data, "shape", opts.out.clone());
    req.config.sensitive = Some("texture".into());
    req.config.epochs = opts.epochs;
    req.config.lambda = 0.5;
    req.config.perturber_lr_scale = 2.0;
    req.config.recognizer.widths = vec![16, 32, 64];
    req.progress = opts.progress;
    req.draws = 1;
    let train = train_run(&req)?;
    let run = RunDir::open(&opts.out)?;
    let (ds, split) = load_data(&req.data, &req.config, false, false)?;
    let device = Backend::Flex.device()?;
    let perturber = Perturber::new(Model::load_path(&run.perturber_onnx(), BatchMode::Single)?)?;
    let recognizer = Model::load_path(&run.recognizer_onnx(), BatchMode::Dynamic)?;
    let attacker_cfg = ClassifierConfig::new()
        .with_epochs(opts.attacker_epochs)
        .with_widths(vec![16, 32, 64]);
    let (train_ds, val_ds, test_ds) = (
        ds.subset(&split.train),
        ds.subset(&split.val),
        ds.subset(&split.test),
    );
    let mut rows = Vec::new();
    for perturbed in [false, true] {
        let (tr, va, te) = if perturbed {
            (
                eval::perturb_dataset(&perturber, &train_ds, opts.progress)?,
                eval::perturb_dataset(&perturber, &val_ds, opts.progress)?,
                eval::perturb_dataset(&perturber, &test_ds, opts.progress)?,
            )
        } else {
            (train_ds.clone(), val_ds.clone(), test_ds.clone())
        };
        let name = if perturbed { "perturbed" } else { "clean" };
        let attacker = eval::train_classifier(
            &tr,
            &va,
            "texture",
            &attacker_cfg,
            None,
            &device,
            &format!("attacker ({name})"),
            opts.progress,
        )?;
        // Without Scrim the cloud would run a recognizer trained on clean images; with Scrim it
        // runs the co-trained one (which is specialised to perturbed inputs).
        let desired = if perturbed {
            eval::onnx_accuracy(&recognizer, &te, "shape")?
        } else {
            let baseline = eval::train_classifier(
                &tr,
                &va,
                "shape",
                &attacker_cfg,
                None,
                &device,
                "clean recognizer",
                opts.progress,
            )?;
            eval::burn_accuracy(&baseline.model, &te, "shape", &device)?
        };
        rows.push(DemoRow {
            images: name.into(),
            desired,
            attacker: eval::burn_accuracy(&attacker.model, &te, "texture", &device)?,
        });
    }
    let report = DemoReport {
        sensitive_majority: ds.attribute("texture")?.majority_rate(&split.test),
        train,
        rows,
        labels: ("shape".into(), "texture".into()),
    };
    run.save_json("demo.json", &report)?;
    Ok(report)
}
