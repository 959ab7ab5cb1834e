//! `scrim perturb`: perturb image files with a trained perturber, as the device would.

use std::path::PathBuf;

use scrim_train::workflow;

/// `scrim perturb` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
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

/// Runs `scrim perturb`.
///
/// # Errors
/// Missing model or inputs, unreadable images, unwritable output.
pub fn run(a: Args) -> anyhow::Result<()> {
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
