//! The privacy audit: how much of the sensitive label survives a perturbation, measured by
//! attackers trained from scratch on perturbed images (DESIGN §4).
//!
//! Every *scheme* (a trained Scrim run, any perturber ONNX, or a baseline) is turned into
//! perturbed copies of the train, validation and test splits. Then, per sensitive attribute:
//!
//! | attacker | trained on | what it models |
//! |---|---|---|
//! | `cnn` | perturbed train images, early stopping on perturbed val | the curious provider |
//! | `blur` | the same after a 3×3 binomial blur | a denoise-then-classify provider |
//! | `finetune` | first clean images, then perturbed ones | a provider with public clean faces |
//! | `reconstruct` | a decoder x' → x, then the clean attacker on its output | image recovery |
//!
//! Multi-copy averaging is outside the threat model: each photo is uploaded once, with noise
//! drawn fresh on the device. A user who uploads the same photo twice halves the noise
//! variance for that photo; the audit does not model this.
//!
//! Utility is the desired-task accuracy on perturbed test images averaged over `draws` noise
//! draws: with the scheme's own recognizer where it has one (a Scrim run), else with a
//! recognizer trained on perturbed images (noisy training), which is how the baselines would be
//! deployed.
//!
//! The ARDEN-style baseline ([`Scheme::Arden`], see `arden.rs`) uploads noisy features of a
//! frozen first conv block instead of images: its attackers are CNNs on those features, its
//! utility is the cloud part trained on them, and the image attackers (blur, reconstruct) are
//! skipped with a note in the report.

mod arden;
mod context;
mod plots;
mod results;
mod sweep;

use std::path::{Path, PathBuf};

use scrim_core::{BatchMode, ImageTensor, Model, NoiseKind, NoiseSource, Perturber};
use serde::{Deserialize, Serialize};

use scrim_train::backend::Backend;
use scrim_train::data::{self, DataSpec, Dataset, LoadOptions, Split, SplitFractions};
use scrim_train::eval::{self, Accuracy, ClassifierConfig};
use scrim_train::run::RunDir;
use scrim_train::{Error, Result};

pub use context::{Reconstruction, psnr, ssim};
pub use plots::{markdown, merge, write_markdown, write_plots};
pub use results::{ResultsRequest, write_results};
pub use sweep::{SweepRequest, Variant, sweep};

/// What to audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scheme {
    /// No perturbation: the clean reference.
    None,
    /// Input-independent Gaussian noise of one σ everywhere. `sigma: None` takes the RMS σ of
    /// the first perturber audited (equal mean noise energy).
    Uniform {
        /// The noise σ.
        sigma: Option<f64>,
        /// A run whose perturber's RMS σ this noise matches (when `sigma` is absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matching: Option<PathBuf>,
    },
    /// A run folder from `scrim train` (its perturber, recognizer and split).
    Run {
        /// The folder.
        path: PathBuf,
    },
    /// Any perturber ONNX (with its manifest next to it), optionally with the recognizer that
    /// serves it.
    Onnx {
        /// The perturber.
        perturber: PathBuf,
        /// The recognizer; without one, utility uses a recognizer trained on perturbed images.
        recognizer: Option<PathBuf>,
    },
    /// The ARDEN-style feature baseline (Wang et al., KDD 2018): the phone runs the first conv
    /// block of a clean-trained recognizer, frozen, on the image with a fraction `nullify` of
    /// its pixels set to 0, bounds the features to `[0, 1]` and adds Laplace noise of scale
    /// `laplace_b`; the cloud part is trained on such noisy features.
    Arden {
        /// Probability that an input pixel is nullified (ARDEN's μ).
        nullify: f64,
        /// Laplace scale b on features bounded to `[0, 1]`.
        laplace_b: f64,
    },
}

impl Scheme {
    /// A short name for tables and plots.
    pub fn name(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Uniform { sigma: Some(s), .. } => format!("uniform σ={s:.3}"),
            Self::Uniform { sigma: None, .. } => "uniform".into(),
            Self::Arden { nullify, laplace_b } => format!("arden μ={nullify} b={laplace_b}"),
            Self::Run { path }
            | Self::Onnx {
                perturber: path, ..
            } => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
        }
    }
}

/// The attackers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attack {
    /// A CNN trained from scratch on perturbed images.
    Cnn,
    /// Blur, then a CNN.
    Blur,
    /// A CNN trained on clean images, then fine-tuned on perturbed ones.
    Finetune,
    /// A decoder that reconstructs the clean image; scored by PSNR/SSIM and by the clean
    /// attacker's accuracy on its output.
    Reconstruct,
}

impl Attack {
    /// All attackers.
    pub const ALL: [Attack; 4] = [Self::Cnn, Self::Blur, Self::Finetune, Self::Reconstruct];
}

impl std::str::FromStr for Attack {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cnn" => Ok(Self::Cnn),
            "blur" => Ok(Self::Blur),
            "finetune" => Ok(Self::Finetune),
            "reconstruct" => Ok(Self::Reconstruct),
            other => Err(Error::Input(format!(
                "unknown attack {other:?}; use cnn, blur, finetune or reconstruct"
            ))),
        }
    }
}

/// A baseline audited beside the runs (`scrim audit --baselines`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The clean images: what an attacker reads without any perturbation.
    None,
    /// Uniform noise of equal energy (σ matched to the first perturber's RMS σ).
    Uniform,
    /// ARDEN-style noisy features of a frozen first conv block.
    Arden,
}

impl std::str::FromStr for Baseline {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "uniform" => Ok(Self::Uniform),
            "arden" => Ok(Self::Arden),
            other => Err(Error::Input(format!(
                "unknown baseline {other:?}; use none, uniform or arden (train a Cloak-style run with `scrim train --input-independent` and pass it with --run)"
            ))),
        }
    }
}

/// An audit to run.
#[derive(Debug, Clone)]
pub struct AuditRequest {
    /// The data.
    pub data: DataSpec,
    /// Image side (taken from the first run when auditing runs).
    pub size: usize,
    /// The desired label.
    pub desired: String,
    /// Sensitive labels; the first is the primary one (the frontier's y axis).
    pub sensitive: Vec<String>,
    /// Schemes, in report order.
    pub schemes: Vec<Scheme>,
    /// Attackers to train.
    pub attacks: Vec<Attack>,
    /// Noise draws averaged for utility.
    pub draws: usize,
    /// Attacker training.
    pub attacker: ClassifierConfig,
    /// Attackers trained per (scheme, attribute, attack), each with its own seed; reports give
    /// their mean and each seed. Attackers vary by several points from seed to seed.
    pub attacker_seeds: usize,
    /// Output folder.
    pub out: PathBuf,
    /// Split seed when no run provides a split.
    pub seed: u64,
    /// Progress bars.
    pub progress: bool,
    /// Decoded-image cache.
    pub cache: bool,
    /// A run folder whose split (and image size) the audit uses without auditing the run.
    pub split_from: Option<PathBuf>,
}

impl AuditRequest {
    /// An audit of `schemes` with every attacker and the defaults of the README.
    pub fn new(data: DataSpec, desired: &str, sensitive: &[&str], out: PathBuf) -> Self {
        Self {
            data,
            size: 32,
            desired: desired.into(),
            sensitive: sensitive.iter().map(|s| (*s).to_string()).collect(),
            schemes: Vec::new(),
            attacks: Attack::ALL.to_vec(),
            draws: 3,
            attacker: ClassifierConfig::new().with_epochs(10).with_patience(2),
            attacker_seeds: 1,
            out,
            seed: 42,
            progress: false,
            cache: true,
            split_from: None,
        }
    }
}

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
    /// What a reader needs to know to compare this row (attackers skipped, units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl SchemeReport {
    /// The best attacker's accuracy on `attribute`.
    pub fn best_attack(&self, attribute: &str) -> Option<&AttackResult> {
        self.attacks
            .iter()
            .filter(|a| a.attribute == attribute)
            .max_by(|a, b| a.accuracy.accuracy.total_cmp(&b.accuracy.accuracy))
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
    /// Attacker training configuration.
    pub attacker: ClassifierConfig,
    /// Schemes in order.
    pub schemes: Vec<SchemeReport>,
    /// The command line that produced the report.
    pub command: String,
}

/// How a scheme perturbs images.
enum Perturb {
    Identity,
    Uniform(f32),
    Onnx(Box<Perturber>),
}

impl Perturb {
    fn apply(&self, ds: &Dataset, progress: bool) -> Result<Dataset> {
        match self {
            Self::Identity => Ok(ds.clone()),
            Self::Uniform(sigma) => uniform_noise(ds, *sigma),
            Self::Onnx(p) => eval::perturb_dataset(p, ds, progress),
        }
    }
}

/// Adds Gaussian noise of one σ to every pixel through scrim-core's device path (CSPRNG, 8-bit).
///
/// # Errors
/// Tensor shape errors (never for a well-formed dataset).
pub fn uniform_noise(ds: &Dataset, sigma: f32) -> Result<Dataset> {
    let s = ds.size;
    let source = NoiseSource::from_os();
    let mut images = Vec::with_capacity(ds.images.len());
    for i in 0..ds.len() {
        let x = ImageTensor::new(
            [1, 3, s, s],
            ds.image(i).iter().map(|&b| f32::from(b) / 255.0).collect(),
        )?;
        let maps = scrim_core::noise::PerturbationMaps {
            sigma: ImageTensor::new([1, 3, s, s], vec![sigma; 3 * s * s])?,
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

/// A scheme resolved into what it needs.
struct Resolved {
    perturb: Perturb,
    recognizer: Option<Model>,
    family: String,
    lambda: Option<f64>,
}

fn load_perturber(path: &Path) -> Result<Perturber> {
    Ok(Perturber::new(Model::load_path(path, BatchMode::Single)?)?)
}

/// `None` for ARDEN, which releases features and is audited by `arden.rs`.
fn resolve(scheme: &Scheme, first_rms: Option<f64>, train: &Dataset) -> Result<Option<Resolved>> {
    Ok(Some(match scheme {
        Scheme::Arden { nullify, laplace_b } => {
            arden::check(*nullify, *laplace_b)?;
            return Ok(None);
        }
        Scheme::None => Resolved {
            perturb: Perturb::Identity,
            recognizer: None,
            family: "none".into(),
            lambda: None,
        },
        Scheme::Uniform { sigma, matching } => {
            let matched = match matching {
                Some(run) => Some(
                    scrim_train::eval::sigma_stats(
                        &load_perturber(&RunDir::open(run)?.perturber_onnx())?,
                        train,
                    )?
                    .1,
                ),
                None => None,
            };
            let s = sigma.or(matched).or(first_rms).ok_or_else(|| {
                Error::Input(
                    "uniform noise needs --uniform-sigma or a perturber to match its energy".into(),
                )
            })?;
            Resolved {
                perturb: Perturb::Uniform(s as f32),
                recognizer: None,
                family: "uniform".into(),
                lambda: None,
            }
        }
        Scheme::Run { path } => {
            let run = RunDir::open(path)?;
            let cfg = run.load_config()?;
            let family = sweep::family_of(&cfg);
            Resolved {
                perturb: Perturb::Onnx(Box::new(load_perturber(&run.perturber_onnx())?)),
                recognizer: Some(Model::load_path(
                    &run.recognizer_onnx(),
                    BatchMode::Dynamic,
                )?),
                family,
                lambda: Some(run_lambda(&run, &cfg)),
            }
        }
        Scheme::Onnx {
            perturber,
            recognizer,
        } => Resolved {
            perturb: Perturb::Onnx(Box::new(load_perturber(perturber)?)),
            recognizer: recognizer
                .as_deref()
                .map(|r| Model::load_path(r, BatchMode::Dynamic))
                .transpose()?,
            family: "onnx".into(),
            lambda: None,
        },
    }))
}

/// The run whose split (and image size) the audit uses: `split_from`, else the first audited run.
fn split_run(req: &AuditRequest) -> Option<&Path> {
    req.split_from.as_deref().or_else(|| {
        req.schemes.iter().find_map(|s| match s {
            Scheme::Run { path } => Some(path.as_path()),
            _ => None,
        })
    })
}

/// The λ a run ended with: its fixed λ, or for a utility-constrained run (`--target-accuracy`)
/// the value the dual ascent reached in its last epoch (its starting λ when no metrics are left).
pub fn run_lambda(run: &RunDir, cfg: &scrim_train::config::TrainConfig) -> f64 {
    if cfg.target_accuracy.is_none() {
        return cfg.lambda;
    }
    run.metrics()
        .ok()
        .and_then(|m| m.last().map(|e| e.lambda))
        .unwrap_or(cfg.lambda)
}

/// The split the audit uses: the split run's (so test images were never seen in co-training),
/// else a stratified split with `seed`.
fn audit_split(req: &AuditRequest, ds: &Dataset) -> Result<Split> {
    if let Some(path) = split_run(req) {
        let split = RunDir::open(path)?.load_split()?;
        let max = split
            .train
            .iter()
            .chain(&split.val)
            .chain(&split.test)
            .copied()
            .max()
            .unwrap_or(0);
        if max >= ds.len() {
            return Err(Error::Input(format!(
                "{}: its split indexes {} images but --data has {}; audit with the data the run was trained on",
                path.display(),
                max + 1,
                ds.len()
            )));
        }
        return Ok(split);
    }
    Split::stratified(
        ds,
        &req.desired,
        SplitFractions {
            val: 0.1,
            test: 0.2,
        },
        req.seed,
    )
}

/// Runs the audit and writes `report.json`, `report.md`, the frontier plot and a sample grid
/// into `req.out`.
///
/// # Errors
/// Data, model and training errors; [`Error::Input`] for unknown labels or an empty scheme list.
pub fn audit(req: &AuditRequest) -> Result<AuditReport> {
    if req.schemes.is_empty() {
        return Err(Error::Input(
            "nothing to audit: give --run, --perturber or --baselines".into(),
        ));
    }
    if req.sensitive.is_empty() {
        return Err(Error::Input("give at least one --sensitive label".into()));
    }
    let mut size = req.size;
    if let Some(path) = split_run(req) {
        size = RunDir::open(path)?.load_config()?.size;
    }
    let ds = data::load(
        &req.data,
        &LoadOptions {
            size,
            cache: req.cache,
            progress: req.progress,
        },
    )?;
    ds.attribute(&req.desired)?;
    for s in &req.sensitive {
        ds.attribute(s)?;
    }
    let split = audit_split(req, &ds)?;
    std::fs::create_dir_all(&req.out).map_err(|e| Error::io(&req.out, e))?;
    let (train, val, test) = (
        ds.subset(&split.train),
        ds.subset(&split.val),
        ds.subset(&split.test),
    );
    scrim_train::report::note(&format!(
        "audit: {} train / {} val / {} test images at {size}x{size}; desired {:?}, sensitive {:?}",
        train.len(),
        val.len(),
        test.len(),
        req.desired,
        req.sensitive
    ));
    let device = Backend::Flex.device()?;
    let mut ctx = context::Context::new(&train, &val, &test, req, device);

    // The RMS σ of the first perturber fixes the energy of uniform noise that names no σ.
    let first_perturber = req.schemes.iter().find_map(|s| match s {
        Scheme::Run { path } => Some(RunDir::open(path).map(|r| r.perturber_onnx())),
        Scheme::Onnx { perturber, .. } => Some(Ok(perturber.clone())),
        _ => None,
    });
    let first_rms = match first_perturber {
        Some(p) => Some(scrim_train::eval::sigma_stats(&load_perturber(&p?)?, &train)?.1),
        None => None,
    };
    let resolved = req
        .schemes
        .iter()
        .map(|s| resolve(s, first_rms, &train))
        .collect::<Result<Vec<_>>>()?;

    let mut reports = Vec::new();
    for (scheme, r) in req.schemes.iter().zip(&resolved) {
        let name = match (&scheme, r.as_ref().map(|r| &r.perturb)) {
            (Scheme::Uniform { .. }, Some(Perturb::Uniform(s))) => format!("uniform σ={s:.3}"),
            _ => scheme.name(),
        };
        scrim_train::report::note(&format!("— {name}"));
        let report = match (scheme, r) {
            (Scheme::Arden { nullify, laplace_b }, _) => {
                arden::audit_arden(&mut ctx, &name, scheme, *nullify, *laplace_b)?
            }
            (_, Some(r)) => audit_scheme(&mut ctx, &name, scheme, r)?,
            (_, None) => {
                return Err(Error::Train(format!("{name}: scheme not resolved")));
            }
        };
        print_scheme(&report);
        reports.push(report);
        // Written after every scheme so a long audit that is interrupted keeps what it measured.
        let partial = assemble(req, &ds, &split, reports.clone());
        save_json(&req.out.join("report.json"), &partial)?;
    }
    let report = assemble(req, &ds, &split, reports);
    save_json(&req.out.join("report.json"), &report)?;
    write_markdown(&report, &req.out.join("report.md"))?;
    write_plots(&report, &req.out)?;
    plots::sample_grid(&req.schemes, &test, &req.out.join("samples.png"))?;
    Ok(report)
}

fn assemble(
    req: &AuditRequest,
    ds: &Dataset,
    split: &Split,
    schemes: Vec<SchemeReport>,
) -> AuditReport {
    AuditReport {
        data: req.data.to_string(),
        desired: req.desired.clone(),
        sensitive: req.sensitive.clone(),
        split_sizes: [split.train.len(), split.val.len(), split.test.len()],
        desired_majority: ds
            .attribute(&req.desired)
            .map(|a| a.majority_rate(&split.test))
            .unwrap_or(0.0),
        draws: req.draws,
        attacker: req.attacker.clone(),
        schemes,
        command: std::iter::once("scrim".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn save_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Train(format!("cannot serialise the report: {e}")))?;
    std::fs::write(path, json).map_err(|e| Error::io(path, e))
}

fn print_scheme(r: &SchemeReport) {
    scrim_train::report::note(&format!(
        "  desired: clean {:.3}, perturbed {:.3} ({}); mean σ {:.3}",
        r.desired_clean.accuracy, r.desired_perturbed.accuracy, r.utility_model, r.mean_sigma
    ));
    for a in &r.attacks {
        scrim_train::report::note(&format!(
            "  {:<10} {:<11} {:.3} ± {:.3} (balanced {:.3}; majority {:.3})",
            a.attribute,
            format!("{:?}", a.attacker).to_lowercase(),
            a.accuracy.accuracy,
            a.ci95,
            a.accuracy.balanced,
            a.majority
        ));
    }
    for note in &r.notes {
        scrim_train::report::note(&format!("  note: {note}"));
    }
    if let Some(rec) = &r.reconstruction {
        scrim_train::report::note(&format!(
            "  reconstruction: PSNR {:.2} dB, SSIM {:.3} (perturbed input: {:.2} dB, {:.3})",
            rec.psnr, rec.ssim, rec.input_psnr, rec.input_ssim
        ));
    }
}

/// Audits one scheme.
fn audit_scheme(
    ctx: &mut context::Context<'_>,
    name: &str,
    scheme: &Scheme,
    r: &Resolved,
) -> Result<SchemeReport> {
    let req = ctx.req;
    let progress = req.progress;
    let ptrain = r.perturb.apply(ctx.train, progress)?;
    let pval = r.perturb.apply(ctx.val, progress)?;
    let ptest = r.perturb.apply(ctx.test, progress)?;
    let (mean_sigma, rms_sigma) = match &r.perturb {
        Perturb::Identity => (0.0, 0.0),
        Perturb::Uniform(s) => (f64::from(*s), f64::from(*s)),
        Perturb::Onnx(p) => scrim_train::eval::sigma_stats(p, ctx.test)?,
    };
    // Utility.
    let draws = req.draws.max(1);
    let (desired_clean, desired_perturbed, utility_model) = match &r.recognizer {
        Some(model) => {
            let clean = eval::onnx_accuracy(model, ctx.test, &req.desired)?;
            let mut accs = vec![eval::onnx_accuracy(model, &ptest, &req.desired)?];
            for _ in 1..draws {
                let t = r.perturb.apply(ctx.test, false)?;
                accs.push(eval::onnx_accuracy(model, &t, &req.desired)?);
            }
            (
                clean,
                mean_accuracy(&accs),
                "co-trained recognizer".to_string(),
            )
        }
        None => {
            let clean = ctx.clean_desired()?;
            let perturbed = if matches!(r.perturb, Perturb::Identity) {
                clean
            } else {
                let m = eval::train_classifier(
                    &ptrain,
                    &pval,
                    &req.desired,
                    &req.attacker,
                    None,
                    &ctx.device,
                    &format!("{name}: recognizer"),
                    progress,
                )?
                .model;
                let mut accs = vec![eval::burn_accuracy(&m, &ptest, &req.desired, &ctx.device)?];
                for _ in 1..draws {
                    let t = r.perturb.apply(ctx.test, false)?;
                    accs.push(eval::burn_accuracy(&m, &t, &req.desired, &ctx.device)?);
                }
                mean_accuracy(&accs)
            };
            (
                clean,
                perturbed,
                "recognizer trained on perturbed images".to_string(),
            )
        }
    };
    let (attacks, reconstruction) = ctx.attack_all(
        name,
        matches!(r.perturb, Perturb::Identity),
        &ptrain,
        &pval,
        &ptest,
    )?;
    Ok(SchemeReport {
        name: name.into(),
        scheme: scheme.clone(),
        family: r.family.clone(),
        lambda: r.lambda,
        mean_sigma,
        rms_sigma,
        desired_clean,
        desired_perturbed,
        utility_model,
        attacks,
        reconstruction,
        notes: Vec::new(),
    })
}

fn mean_accuracy(accs: &[Accuracy]) -> Accuracy {
    let n = accs.len().max(1) as f64;
    Accuracy {
        accuracy: accs.iter().map(|a| a.accuracy).sum::<f64>() / n,
        balanced: accs.iter().map(|a| a.balanced).sum::<f64>() / n,
        n: accs.iter().map(|a| a.n).sum(),
    }
}
