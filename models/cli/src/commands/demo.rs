//! `scrim demo`: the first-run demo on built-in synthetic data. No downloads.

use std::path::PathBuf;

use scrim_train::workflow::{self, DemoOptions, DemoReport};

/// `scrim demo` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
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

/// Runs `scrim demo`.
///
/// # Errors
/// Training, export and evaluation errors.
pub fn run(a: Args) -> anyhow::Result<()> {
    let report = workflow::demo(&DemoOptions {
        out: a.out,
        count: a.count,
        epochs: a.epochs,
        progress: true,
        ..Default::default()
    })?;
    print_demo(&report);
    Ok(())
}

fn print_demo(r: &DemoReport) {
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
