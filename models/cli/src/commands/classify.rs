//! `scrim classify`: classify image files with a trained recognizer (JSON lines).

use std::path::PathBuf;

use scrim_train::workflow::{self, ClassifyOptions, FileResult, InputSize};

/// `scrim classify` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder (uses its recognizer.onnx).
    #[arg(long)]
    run: Option<PathBuf>,
    /// A recognizer ONNX file (with its .json manifest beside it); not a perturber.
    #[arg(long)]
    model: Option<PathBuf>,
    /// An image file or a folder of images. Like scrim-cloud, the recognizer takes only uploads
    /// at its input size (what `scrim perturb` writes); other sizes are refused unless --resize
    /// or --perturber is given.
    #[arg(long)]
    input: PathBuf,
    /// Resize images of another size to the recognizer's input instead of refusing them (the
    /// server would refuse them).
    #[arg(long, conflicts_with = "perturber")]
    resize: bool,
    /// Perturb each input with this perturber first, as the phone would, then classify the
    /// upload: the whole pipeline on this machine. It must come from the recognizer's run.
    #[arg(long)]
    perturber: Option<PathBuf>,
}

/// Runs `scrim classify`: one JSON line per classified file on stdout; a file that fails is
/// reported on stderr with its path and the others go on.
///
/// # Errors
/// Missing or wrong models or inputs; at the end, the number of files that failed.
pub fn run(a: Args) -> anyhow::Result<()> {
    let model = workflow::resolve_model(a.run.as_deref(), a.model.as_deref(), "recognizer")?;
    let files = workflow::list_images(&a.input)?;
    let opts = ClassifyOptions {
        size: if a.resize {
            InputSize::Resize
        } else {
            InputSize::Exact
        },
        perturber: a.perturber,
    };
    let results = workflow::classify_files(&model, &files, &opts)?;
    for r in &results {
        match &r.outcome {
            Ok(c) => {
                let labels: Vec<_> = c
                    .labels
                    .iter()
                    .map(|(l, s)| serde_json::json!({"label": l, "score": s}))
                    .collect();
                println!("{}", serde_json::json!({"file": c.file, "labels": labels}));
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    super::fail_on_failures(FileResult::failures(&results), results.len(), "classified")
}
