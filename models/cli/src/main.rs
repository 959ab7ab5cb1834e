//! `scrim`: co-train, export, perturb, classify, audit, protect and benchmark. Each subcommand
//! lives in its own file under `commands/` (parse → request → library call → print).

mod commands;
mod reporter;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::{audit, bench, classify, demo, keygen, perturb, protect, results, sweep, train};

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
    Train(train::Args),
    /// Perturb images with a trained perturber (8-bit PNGs named after the inputs: photo.jpg →
    /// photo.png).
    Perturb(perturb::Args),
    /// Classify images with a trained recognizer (JSON lines).
    Classify(classify::Args),
    /// First-run demo on built-in synthetic data: train, export, perturb, attack. No downloads.
    Demo(demo::Args),
    /// Privacy audit: fresh attackers on perturbed images, utility, baselines, frontier plot.
    Audit(audit::Args),
    /// Train one run per (variant, λ) and audit them together: the privacy–utility frontier.
    Sweep(sweep::Args),
    /// Merge audit reports into one Markdown document (--out) with the frontier plot.
    Results(results::Args),
    /// Write a new 256-bit secret key file (for `protect` and `train --block-key`).
    Keygen(keygen::Args),
    /// Model protection: key-based image transforms, model encryption, service levels.
    Protect(protect::Args),
    /// Benchmarks: perturbation (tract vs onnxruntime), co-training (burn vs PyTorch), server.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before anything allocates: training reuses freed buffers instead of faulting them in.
    scrim_train::allocator::tune_for_training();
    reporter::install(!cli.quiet);
    let result = match cli.command {
        Command::Train(a) => train::run(a),
        Command::Perturb(a) => perturb::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Results(a) => results::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Protect(a) => protect::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
