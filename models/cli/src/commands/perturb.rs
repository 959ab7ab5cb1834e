//! `scrim perturb`: perturb image files with a trained perturber, as the device would.

use std::path::PathBuf;

use scrim_train::workflow::{self, FileResult};

/// `scrim perturb` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder from `scrim train` (uses its perturber.onnx).
    #[arg(long)]
    run: Option<PathBuf>,
    /// A perturber ONNX file (with its .json manifest beside it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// An image file or a folder of images (JPEG, PNG or WebP).
    #[arg(long)]
    input: PathBuf,
    /// Output folder. Each upload is a lossless 8-bit PNG named after its input with the
    /// extension .png: photo.jpg → photo.png.
    #[arg(long)]
    output: PathBuf,
    /// Deterministic noise, for tests and reproducible experiments only: anyone who knows the
    /// seed can subtract the noise. Without it the noise comes from the OS-seeded CSPRNG.
    #[arg(long)]
    seed: Option<u64>,
    /// Also write NAME-maps.png beside each upload: the photo at the model's size, its σ map
    /// (σ/σ_max in colour, with a scale; for a bounded release the picture the phone renders)
    /// and an upload from a fresh noise draw, side by side.
    #[arg(long)]
    save_maps: bool,
}

/// The warning `--seed` prints on stderr.
pub const SEED_WARNING: &str = "warning: --seed makes the noise reproducible: anyone who knows \
     the seed can subtract it from these uploads. Use it for tests only, never for photos that \
     leave this machine.";

/// Runs `scrim perturb`: a file that fails is reported on stderr with its path and the others
/// go on.
///
/// # Errors
/// Missing model or inputs, unwritable output; at the end, the number of files that failed.
pub fn run(a: Args) -> anyhow::Result<()> {
    let model = workflow::resolve_model(a.run.as_deref(), a.model.as_deref(), "perturber")?;
    let files = workflow::list_images(&a.input)?;
    if a.seed.is_some() {
        eprintln!("{SEED_WARNING}");
    }
    let results = workflow::perturb_files(&model, &files, &a.output, a.seed)?;
    for r in &results {
        if let Err(e) = &r.outcome {
            eprintln!("error: {e}");
        }
    }
    let mut failed = FileResult::failures(&results);
    if a.save_maps {
        let maps = scrim_train::figures::save_maps(&model, &files, &a.output)?;
        for r in &maps {
            if let Err(e) = &r.outcome {
                eprintln!("error: maps of {}: {e}", r.file.display());
            }
        }
        let bad = FileResult::failures(&maps);
        eprintln!(
            "wrote {} maps (NAME-maps.png) to {}",
            maps.len() - bad,
            a.output.display()
        );
        failed = failed.max(bad);
    }
    eprintln!(
        "wrote {} perturbed PNGs to {}",
        results.len() - failed,
        a.output.display()
    );
    super::fail_on_failures(failed, results.len(), "perturbed")
}
