//! `scrim protect transform | encrypt-model | eval`: model access control with secret keys;
//! the service-level subcommands are in `levels.rs`.

use std::path::PathBuf;

use clap::Subcommand;
use scrim_core::{Scheme, SecretKey};
use scrim_protect::keys::{self as protect, TransformRequest, eval::EvalConfig};

/// `scrim protect ...`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ProtectCommand,
}

/// The protect subcommands.
#[derive(Subcommand, Debug)]
pub enum ProtectCommand {
    /// Apply (or undo) a key-based block-wise transform to images (PNG out, same file names).
    Transform(TransformArgs),
    /// Encrypt a patch-embedding model (first conv with kernel = stride) with a key, exactly.
    EncryptModel(EncryptModelArgs),
    /// Train and measure protected models on CIFAR-10 (or any ImageFolder) and write the table.
    Eval(EvalArgs),
    /// Selective weight encryption with service levels: select, decrypt, eval-levels.
    #[command(flatten)]
    Levels(super::levels::LevelsCommand),
}

/// `scrim protect transform`.
#[derive(clap::Args, Debug)]
pub struct TransformArgs {
    /// Key file from `scrim keygen`.
    #[arg(long)]
    pub key: PathBuf,
    /// shuffle, np, ffx or patch.
    #[arg(long)]
    pub scheme: Scheme,
    /// Block size M (the patch size p for `patch`).
    #[arg(long, default_value_t = 4)]
    pub block: usize,
    /// An image file or a folder of images.
    #[arg(long)]
    pub input: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub output: PathBuf,
    /// Undo the transform (inputs are this command's outputs).
    #[arg(long)]
    pub inverse: bool,
    /// Resize to SIZE×SIZE first, as the device does for a model's input.
    #[arg(long)]
    pub size: Option<usize>,
}

/// `scrim protect encrypt-model`.
#[derive(clap::Args, Debug)]
pub struct EncryptModelArgs {
    /// The plain ONNX model (its .json manifest beside it).
    #[arg(long)]
    pub model: PathBuf,
    /// Key file from `scrim keygen`.
    #[arg(long)]
    pub key: PathBuf,
    /// The encrypted ONNX model to write (its manifest is written beside it).
    #[arg(long)]
    pub out: PathBuf,
}

/// `scrim protect eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Training images (ImageFolder with a `class/` folder per label).
    #[arg(
        long,
        default_value = "imagefolder:../shared/data/cifar10/cifar10-jpeg.tar.gz#train"
    )]
    pub train: String,
    /// Test images.
    #[arg(
        long,
        default_value = "imagefolder:../shared/data/cifar10/cifar10-jpeg.tar.gz#test"
    )]
    pub test: String,
    /// Label to learn.
    #[arg(long, default_value = "class")]
    pub label: String,
    /// Training images used (seeded random subset; 0 = all).
    #[arg(long, default_value_t = 10_000)]
    pub train_images: usize,
    /// Test images used (seeded random subset; 0 = all).
    #[arg(long, default_value_t = 2_000)]
    pub test_images: usize,
    /// Epochs per model.
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// Image side.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Recognizer widths, comma-separated.
    #[arg(long, default_value = "32,64,128", value_delimiter = ',')]
    pub widths: Vec<usize>,
    /// Block size of the block-wise transforms.
    #[arg(long, default_value_t = 4)]
    pub block: usize,
    /// ConvMixer width.
    #[arg(long, default_value_t = 128)]
    pub mixer_dim: usize,
    /// ConvMixer depth.
    #[arg(long, default_value_t = 4)]
    pub mixer_depth: usize,
    /// ConvMixer patch size.
    #[arg(long, default_value_t = 4)]
    pub mixer_patch: usize,
    /// Key-estimation attack: swaps tried.
    #[arg(long, default_value_t = 400)]
    pub attack_iterations: usize,
    /// Key-estimation attack: labelled plain images the attacker scores guesses on.
    #[arg(long, default_value_t = 256)]
    pub attack_batch: usize,
    /// Key file (default: a fresh key, used only for this run).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Where to write the table (Markdown); the JSON goes beside it. No default, so that a run
    /// never writes into the `docs/` of whatever folder it starts in (the repository's table is
    /// `--out docs/results/protect-keys.md`).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `scrim protect ...`.
///
/// # Errors
/// Bad keys or models, unreadable images, unwritable output.
pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        ProtectCommand::Levels(command) => super::levels::run(command),
        ProtectCommand::Transform(a) => {
            let req = TransformRequest {
                key: a.key,
                scheme: a.scheme,
                block: a.block,
                inverse: a.inverse,
                size: a.size,
            };
            let files = scrim_train::workflow::list_images(&a.input)?;
            let written = protect::transform_files(&req, &files, &a.output)?;
            eprintln!(
                "wrote {} {} images to {}",
                written.len(),
                if req.inverse {
                    "restored"
                } else {
                    "transformed"
                },
                a.output.display()
            );
            Ok(())
        }
        ProtectCommand::EncryptModel(a) => {
            let stem = protect::encrypt_model_file(&a.model, &a.key, &a.out)?;
            eprintln!(
                "encrypted stem {:?} (patch {}, {} channels); wrote {} and its manifest (key: patch, block {})",
                stem.node,
                stem.patch,
                stem.channels,
                a.out.display(),
                stem.patch
            );
            Ok(())
        }
        ProtectCommand::Eval(a) => {
            let cfg = EvalConfig {
                train: a.train,
                test: a.test,
                label: a.label,
                size: a.size,
                train_images: a.train_images,
                test_images: a.test_images,
                epochs: a.epochs,
                widths: a.widths,
                block: a.block,
                mixer_dim: a.mixer_dim,
                mixer_depth: a.mixer_depth,
                mixer_patch: a.mixer_patch,
                attack_iterations: a.attack_iterations,
                attack_batch: a.attack_batch,
                seed: a.seed,
                ..EvalConfig::default()
            };
            let key = match &a.key {
                Some(p) => SecretKey::load(p)?,
                None => SecretKey::generate()?,
            };
            let report = protect::eval::run(&cfg, &key, true)?;
            let md = protect::eval::markdown(&report);
            println!("{md}");
            protect::eval::save(&report, &a.out, &super::command_line())?;
            eprintln!("wrote {} (and .json)", a.out.display());
            Ok(())
        }
    }
}
