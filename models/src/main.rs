//! `scrim`: co-train, export, perturb, classify and demo. Thin over `scrim_models`.

mod cli_audit;
mod cli_bench;

use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use clap::{Args, Parser, Subcommand};
use scrim_models::workflow::{self, DemoOptions, TrainRequest};
use scrim_models::{Result, data::DataSpec};

#[derive(Parser, Debug)]
#[command(
    name = "scrim",
    version,
    about = "Scrim: privacy-preserving perturbation for cloud image recognition"
)]
struct Cli {
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Co-train a perturber and a recognizer, export both to ONNX, and test them.
    Train(TrainArgs),
    /// Perturb images with a trained perturber (8-bit PNGs, same file names).
    Perturb(PerturbArgs),
    /// Classify images with a trained recognizer (JSON lines).
    Classify(ClassifyArgs),
    /// First-run demo on built-in synthetic data: train, export, perturb, attack. No downloads.
    Demo(DemoArgs),
    /// Privacy audit: fresh attackers on perturbed images, utility, baselines, frontier plot.
    Audit(cli_audit::AuditArgs),
    /// Train one run per (variant, λ) and audit them together: the privacy–utility frontier.
    Sweep(cli_audit::SweepArgs),
    /// Merge audit reports into docs/RESULTS.md with the frontier plot.
    Results(cli_audit::ResultsArgs),
    /// Write a new 256-bit secret key file (for `protect` and `train --block-key`).
    Keygen(cli::protect::KeygenArgs),
    /// Model protection: key-based image transforms, model encryption, service levels.
    Protect(cli::protect::ProtectArgs),
    /// Benchmarks: perturbation (tract vs onnxruntime), co-training (burn vs PyTorch), server.
    Bench(cli_bench::BenchArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Data: utkface:DIR, imagefolder:DIR[#SUBDIR], csv:FILE or synthetic[:N]. DIR may be a .tar.gz.
    #[arg(long)]
    data: String,
    /// The label the cloud recognizer must keep (e.g. gender; `shape` for synthetic).
    #[arg(long)]
    desired: String,
    /// The label to hide (e.g. race); needed for --adversarial, recorded for the audit.
    #[arg(long)]
    sensitive: Option<String>,
    /// Input size in pixels (square).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Privacy/utility trade-off λ in CE − λ·mean(log σ).
    #[arg(long, default_value_t = 0.05)]
    lambda: f64,
    /// Utility-constrained mode: adapt λ by dual ascent so the recognizer's accuracy on
    /// perturbed validation images stays at this fraction (e.g. 0.871 = clean 0.891 − 2
    /// points); --lambda becomes the starting value.
    #[arg(long)]
    target_accuracy: Option<f64>,
    /// Step of the dual ascent on log λ per accuracy unit (with --target-accuracy).
    #[arg(long, default_value_t = 1.0)]
    dual_rate: f64,
    /// Epochs (warm-up included).
    #[arg(long, default_value_t = 12)]
    epochs: usize,
    /// Recognizer-only warm-up epochs on clean images.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// The last N epochs (counted in --epochs) train the recognizer alone on the frozen
    /// perturber's output, so the cloud model ends adapted to the final perturbation.
    #[arg(long, default_value_t = 0)]
    finetune_epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// The perturber's learning rate as a multiple of --lr.
    #[arg(long, default_value_t = 2.0)]
    perturber_lr_scale: f64,
    /// Initial σ as a fraction of σ_max (sets the σ head's bias).
    #[arg(long, default_value_t = 0.12)]
    sigma_init: f64,
    /// Upper bound of σ.
    #[arg(long, default_value_t = 1.0)]
    sigma_max: f64,
    /// Noise kind: gaussian or laplace.
    #[arg(long, default_value = "gaussian")]
    noise: String,
    /// Recognizer widths, comma-separated (depth = count).
    #[arg(long, default_value = "32,64,128", value_delimiter = ',')]
    widths: Vec<usize>,
    /// Train an adversary on the sensitive label and reward the perturber for defeating it.
    #[arg(long)]
    adversarial: bool,
    /// Weight of the adversarial term.
    #[arg(long, default_value_t = 1.0)]
    adversary_weight: f64,
    /// Distillation weight: the recognizer also matches the soft labels of a frozen teacher
    /// (itself after warm-up) that sees each image without noise (0 = off).
    #[arg(long, default_value_t = 0.0)]
    distill: f64,
    /// Re-initialise the adversary every K co-training epochs (0 = never), so the perturber
    /// cannot settle on fooling one adversary.
    #[arg(long, default_value_t = 0)]
    adversary_reset: usize,
    /// Upload luma only: a fixed grey conversion on the device before the noise.
    #[arg(long)]
    gray: bool,
    /// Tone standardisation (implies --gray): each image's luma is shifted and scaled to a
    /// fixed mean and contrast on the device, removing overall brightness such as skin tone.
    #[arg(long)]
    standardize: bool,
    /// Suppression: pixels fade to mid-grey where σ saturates (k = 1 − σ/σ_max).
    #[arg(long)]
    suppress: bool,
    /// Add a learned deterministic shift μ(x) bounded by this value (0 = off; useful with
    /// --adversarial).
    #[arg(long, default_value_t = 0.0)]
    shift_max: f64,
    /// Baseline: one learned σ map for every image (Cloak-style, input-independent).
    #[arg(long)]
    input_independent: bool,
    /// Channels of the perturber's hidden convolutions (fewer = faster on the phone).
    #[arg(long, default_value_t = 16)]
    perturber_channels: usize,
    /// Compute σ at 1/D of the input resolution and upsample it (faster on the phone; 1 = off).
    #[arg(long, default_value_t = 1)]
    downsample: usize,
    /// Depthwise-separable perturber: a D×D patch stem (D = --downsample), depthwise 3×3
    /// convolutions and 1×1 heads; about 2× faster in tract than the dense layout.
    #[arg(long)]
    separable: bool,
    /// Fully depthwise perturber: every convolution (a D×D patch stem, depthwise 3×3 layers and
    /// heads) works on each colour channel alone; the fastest layout in tract.
    #[arg(long)]
    depthwise: bool,
    /// Seed (initialisation, shuffling, training noise, split).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Backend: flex (default), ndarray or wgpu (cargo features).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Noise draws averaged in the final test evaluation.
    #[arg(long, default_value_t = 3)]
    draws: usize,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Do not read or write the decoded-image cache.
    #[arg(long)]
    no_cache: bool,
    /// Train the recognizer behind a key-based block-wise transform with this key file
    /// (`scrim keygen`); the recognizer's manifest records the scheme and block size.
    #[arg(long, requires = "block_scheme")]
    block_key: Option<PathBuf>,
    /// Block-wise scheme for --block-key: shuffle, np, ffx or patch.
    #[arg(long, requires = "block_key")]
    block_scheme: Option<String>,
    /// Block size M for --block-key.
    #[arg(long, default_value_t = 4)]
    block: usize,
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct PerturbArgs {
    /// A run folder from `scrim train` (uses its perturber.onnx).
    #[arg(long)]
    run: Option<PathBuf>,
    /// A perturber ONNX file (with its .json manifest beside it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// An image file or a folder of images.
    #[arg(long)]
    input: PathBuf,
    /// Output folder.
    #[arg(long)]
    output: PathBuf,
    /// Deterministic noise, for tests and reproducible experiments only.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args, Debug)]
struct ClassifyArgs {
    /// A run folder (uses its recognizer.onnx).
    #[arg(long)]
    run: Option<PathBuf>,
    /// A recognizer ONNX file (with its .json manifest beside it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// An image file or a folder of images.
    #[arg(long)]
    input: PathBuf,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Run folder.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Synthetic images to generate.
    #[arg(long, default_value_t = 3000)]
    count: usize,
    /// Co-training epochs (warm-up included).
    #[arg(long, default_value_t = 12)]
    epochs: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let progress = !cli.quiet;
    match cli.command {
        Command::Train(a) => train(a, progress),
        Command::Audit(a) => cli_audit::run_audit(a, progress),
        Command::Sweep(a) => cli_audit::run_sweep(a, progress),
        Command::Results(a) => cli_audit::run_results(a),
        Command::Bench(a) => cli_bench::run_bench(a),
        Command::Perturb(a) => {
            let model = workflow::resolve_model(a.run.as_deref(), a.model.as_deref(), "perturber")?;
            let files = workflow::list_images(&a.input)?;
            let written = workflow::perturb_files(&model, &files, &a.output, a.seed)?;
            eprintln!(
                "wrote {} perturbed PNGs to {}",
                written.len(),
                a.output.display()
            );
            Ok(())
        }
        Command::Classify(a) => {
            let model =
                workflow::resolve_model(a.run.as_deref(), a.model.as_deref(), "recognizer")?;
            let files = workflow::list_images(&a.input)?;
            for c in workflow::classify_files(&model, &files)? {
                let labels: Vec<_> = c
                    .labels
                    .iter()
                    .map(|(l, s)| serde_json::json!({"label": l, "score": s}))
                    .collect();
                println!("{}", serde_json::json!({"file": c.file, "labels": labels}));
            }
            Ok(())
        }
        Command::Keygen(a) => cli::protect::keygen(a),
        Command::Protect(a) => cli::protect::run(a, progress),
        Command::Demo(a) => {
            let report = workflow::demo(&DemoOptions {
                out: a.out,
                count: a.count,
                epochs: a.epochs,
                progress,
                ..Default::default()
            })?;
            print_demo(&report);
            Ok(())
        }
    }
}

fn train(a: TrainArgs, progress: bool) -> Result<()> {
    let data: DataSpec = a.data.parse()?;
    let mut req = TrainRequest::new(data, &a.desired, a.out);
    let c = &mut req.config;
    c.sensitive = a.sensitive;
    c.size = a.size;
    c.lambda = a.lambda;
    if let Some(t) = a.target_accuracy
        && !(t > 0.0 && t < 1.0)
    {
        return Err(scrim_models::Error::Input(format!(
            "--target-accuracy is a fraction in (0, 1), got {t}"
        )));
    }
    if !(a.dual_rate > 0.0 && a.dual_rate.is_finite()) {
        return Err(scrim_models::Error::Input(format!(
            "--dual-rate must be positive, got {}",
            a.dual_rate
        )));
    }
    if a.target_accuracy.is_some()
        && a.lambda.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
    {
        return Err(scrim_models::Error::Input(
            "--target-accuracy starts from --lambda, which must be positive".into(),
        ));
    }
    c.target_accuracy = a.target_accuracy;
    c.dual_rate = a.dual_rate;
    c.epochs = a.epochs;
    c.warmup_epochs = a.warmup;
    c.finetune_epochs = a.finetune_epochs;
    c.batch_size = a.batch_size;
    c.learning_rate = a.lr;
    c.perturber.sigma_max = a.sigma_max;
    c.perturber_lr_scale = a.perturber_lr_scale;
    if !(a.sigma_init > 0.0 && a.sigma_init < 1.0) {
        return Err(scrim_models::Error::Input(format!(
            "--sigma-init must be in (0, 1), got {}",
            a.sigma_init
        )));
    }
    c.perturber.head_bias = (a.sigma_init / (1.0 - a.sigma_init)).ln();
    c.noise = a.noise;
    c.recognizer.widths = a.widths;
    c.adversarial = a.adversarial;
    c.adversary_weight = a.adversary_weight;
    c.adversary_reset_epochs = a.adversary_reset;
    c.distill = a.distill;
    c.perturber.gray = a.gray || a.standardize;
    c.perturber.standardize = a.standardize;
    c.perturber.suppress = a.suppress;
    if !(a.shift_max >= 0.0 && a.shift_max <= 1.0) {
        return Err(scrim_models::Error::Input(format!(
            "--shift-max must be in [0, 1], got {}",
            a.shift_max
        )));
    }
    c.perturber.shift_max = a.shift_max;
    c.perturber.input_independent = a.input_independent;
    if a.perturber_channels == 0 {
        return Err(scrim_models::Error::Input(
            "--perturber-channels must be at least 1".into(),
        ));
    }
    c.perturber.channels = a.perturber_channels;
    if a.downsample == 0 || !a.size.is_multiple_of(a.downsample) {
        return Err(scrim_models::Error::Input(format!(
            "--downsample must divide --size ({}), got {}",
            a.size, a.downsample
        )));
    }
    c.perturber.downsample = a.downsample;
    if a.separable && a.input_independent {
        return Err(scrim_models::Error::Input(
            "--separable and --input-independent exclude each other: the input-independent map has no network".into(),
        ));
    }
    if a.depthwise && (a.separable || a.input_independent) {
        return Err(scrim_models::Error::Input(
            "--depthwise excludes --separable and --input-independent: it is a layout of its own"
                .into(),
        ));
    }
    c.perturber.separable = a.separable;
    c.perturber.depthwise = a.depthwise;
    c.perturber.map_size = a.size;
    c.seed = a.seed;
    c.backend = a.backend;
    if let (Some(key), Some(scheme)) = (a.block_key, a.block_scheme) {
        c.block_key = Some(
            scrim_models::keyed::BlockKeyConfig::new(
                // An absolute path, so `--resume` works from another directory.
                key.canonicalize().unwrap_or(key).display().to_string(),
                scheme,
            )
            .with_block(a.block),
        );
    }
    req.resume = a.resume;
    req.cache = !a.no_cache;
    req.progress = progress;
    req.draws = a.draws;
    let s = workflow::train_run(&req)?;
    println!(
        "test accuracy ({}): clean {:.3}, perturbed {:.3} ± {:.3} (mean of {} draws), majority {:.3}; mean σ {:.3}; trained in {:.0} s",
        s.desired,
        s.test_clean.accuracy,
        s.test_perturbed.accuracy,
        s.test_perturbed.ci95(),
        s.draws,
        s.majority,
        s.mean_sigma,
        s.train_seconds
    );
    println!(
        "wrote {}/perturber.onnx and recognizer.onnx (+ manifests)",
        s.run.display()
    );
    Ok(())
}

fn print_demo(r: &scrim_models::workflow::DemoReport) {
    let (d, s) = &r.labels;
    println!();
    println!("Scrim demo (synthetic data, desired = {d}, sensitive = {s}; test split)");
    println!(
        "| images uploaded | {d} accuracy (cloud recognizer) | {s} accuracy (fresh attacker) |"
    );
    println!(
        "|-----------------|------------------------------------|-------------------------------|"
    );
    for row in &r.rows {
        println!(
            "| {:<15} | {:>34} | {:>29} |",
            row.images,
            format!(
                "{:.1}% ± {:.1}",
                100.0 * row.desired.accuracy,
                100.0 * row.desired.ci95()
            ),
            format!(
                "{:.1}% ± {:.1}",
                100.0 * row.attacker.accuracy,
                100.0 * row.attacker.ci95()
            )
        );
    }
    println!(
        "majority-class rate of {s}: {:.1}%; mean σ {:.3}",
        100.0 * r.sensitive_majority,
        r.train.mean_sigma
    );
    println!(
        "clean: a recognizer and an attacker trained on raw images; perturbed: the co-trained"
    );
    println!("recognizer on Scrim uploads, and an attacker trained from scratch on Scrim uploads.");
    println!(
        "artifacts: {}/perturber.onnx, recognizer.onnx (+ .json manifests)",
        r.train.run.display()
    );
}
