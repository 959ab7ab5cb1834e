//! `scrim protect select | decrypt | eval-levels`: selective weight encryption with service
//! levels, the subcommand group of `scrim protect`.

use std::path::PathBuf;

use clap::Subcommand;
use scrim_protect::levels::eval::{EvalLevelsRequest, eval_levels, markdown};
use scrim_protect::levels::{self as protect, Importance, PssConfig, SelectRequest};
use scrim_train::data::DataSpec;

/// Selective weight encryption with hierarchical service levels.
#[derive(Subcommand, Debug)]
pub enum LevelsCommand {
    /// Rank conv kernels, encrypt the most important ones (DPRM), and write the encrypted model,
    /// the sealed bundle and one key per service level.
    Select(SelectArgs),
    /// Restore the model of a key's level from an encrypted model and its bundle.
    Decrypt(DecryptArgs),
    /// Accuracy per level for PSS, random and |mean| selection at several ratios.
    EvalLevels(EvalLevelsArgs),
}

/// Gate-training options shared by `select` and `eval-levels`.
#[derive(clap::Args, Debug)]
pub struct PssArgs {
    /// PSS: optimiser steps per layer.
    #[arg(long, default_value_t = 120)]
    pss_steps: usize,
    /// PSS: λ₀, weight of the expected number of open gates.
    #[arg(long, default_value_t = 0.002)]
    pss_l0: f64,
    /// PSS: Adam learning rate on log α.
    #[arg(long, default_value_t = 0.05)]
    pss_lr: f64,
}

impl PssArgs {
    fn config(&self) -> PssConfig {
        PssConfig::new()
            .with_steps(self.pss_steps)
            .with_l0(self.pss_l0)
            .with_learning_rate(self.pss_lr)
    }
}

#[derive(clap::Args, Debug)]
pub struct SelectArgs {
    /// The plain recognizer ONNX file (its .json manifest beside it).
    #[arg(long)]
    model: PathBuf,
    /// Training images for PSS: utkface:DIR, imagefolder:DIR[#SUB], csv:FILE or synthetic[:N].
    #[arg(long)]
    data: Option<DataSpec>,
    /// The label PSS trains on (default: the manifest's task).
    #[arg(long)]
    attr: Option<String>,
    /// Kernel importance: pss, random or mean.
    #[arg(long, default_value = "pss")]
    importance: Importance,
    /// Fraction of each protected layer's kernels to encrypt (⌊N·R⌋+1 kernels).
    #[arg(long, default_value_t = 0.05)]
    ratio: f64,
    /// Number of service levels M (keys level-1 … level-M).
    #[arg(long, default_value_t = 4)]
    levels: usize,
    /// Conv layers to protect, comma-separated indices from 0 (default: all).
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    #[command(flatten)]
    pss: PssArgs,
    /// Seed of the random baseline's order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Do not read or write the decoded-image cache.
    #[arg(long)]
    no_cache: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct DecryptArgs {
    /// The encrypted model (encrypted.onnx).
    #[arg(long)]
    model: PathBuf,
    /// The sealed bundle (bundle.scrimlv).
    #[arg(long)]
    bundle: PathBuf,
    /// A level key (level-K.key).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the restored ONNX model (its manifest goes beside it).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct EvalLevelsArgs {
    /// Training images (recognizer training and PSS).
    #[arg(long)]
    data: DataSpec,
    /// Test images.
    #[arg(long)]
    test_data: DataSpec,
    /// The label.
    #[arg(long, default_value = "class")]
    attr: String,
    /// An existing recognizer ONNX; when absent one is trained and written to --out.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Widths of the trained recognizer (conv-BN-ReLU-pool blocks).
    #[arg(long, default_value = "32,64,128", value_delimiter = ',')]
    widths: Vec<usize>,
    /// Epochs of the trained recognizer.
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    /// Training images used (seeded subset; 0 = all).
    #[arg(long, default_value_t = 10000)]
    train_limit: usize,
    /// Test images used (seeded subset; 0 = all).
    #[arg(long, default_value_t = 2000)]
    test_limit: usize,
    /// Image size.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Importances compared.
    #[arg(long, default_value = "pss,random,mean", value_delimiter = ',')]
    importance: Vec<Importance>,
    /// Ratios R.
    #[arg(long, default_value = "0.02,0.05,0.1,0.2", value_delimiter = ',')]
    ratios: Vec<f64>,
    /// Levels M.
    #[arg(long, default_value_t = 4)]
    levels: usize,
    /// Conv layers to protect, comma-separated indices from 0 (default: all).
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    #[command(flatten)]
    pss: PssArgs,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Do not read or write the decoded-image cache.
    #[arg(long)]
    no_cache: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// Runs one `scrim protect` subcommand.
///
/// # Errors
/// Bad models, keys or data; unwritable output.
pub fn run(command: LevelsCommand) -> anyhow::Result<()> {
    let progress = true;
    match command {
        LevelsCommand::Select(a) => {
            let mut req = SelectRequest::new(a.model, a.out);
            req.data = a.data;
            req.attr = a.attr;
            req.importance = a.importance;
            req.ratio = a.ratio;
            req.levels = a.levels;
            req.layers = a.layers;
            req.pss = a.pss.config();
            req.seed = a.seed;
            req.cache = !a.no_cache;
            req.progress = progress;
            let r = protect::select(&req)?;
            println!(
                "encrypted {} of {} kernels ({:.1}%) in {} conv layers by {} importance; {} levels",
                r.selected,
                r.kernels,
                100.0 * r.selected as f64 / r.kernels.max(1) as f64,
                r.layers.len(),
                r.importance,
                r.levels
            );
            println!("wrote {} into {}", r.files.join(", "), req.out.display());
            Ok(())
        }
        LevelsCommand::Decrypt(a) => {
            let level = protect::decrypt(&a.model, &a.bundle, &a.key, &a.out)?;
            println!("restored level {level}: wrote {}", a.out.display());
            Ok(())
        }
        LevelsCommand::EvalLevels(a) => {
            let importances = a.importance;
            let req = EvalLevelsRequest {
                train: a.data,
                test: a.test_data,
                attr: a.attr,
                model: a.model,
                widths: a.widths,
                epochs: a.epochs,
                train_limit: a.train_limit,
                test_limit: a.test_limit,
                size: a.size,
                importances,
                ratios: a.ratios,
                levels: a.levels,
                layers: a.layers,
                pss: a.pss.config(),
                seed: a.seed,
                out: a.out,
                progress,
                cache: !a.no_cache,
            };
            let r = eval_levels(&req)?;
            print!("{}", markdown(&r));
            println!("wrote {}/levels.md and levels.json", req.out.display());
            Ok(())
        }
    }
}
