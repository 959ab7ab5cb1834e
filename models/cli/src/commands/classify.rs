//! `scrim classify`: classify image files with a trained recognizer (JSON lines).

use std::path::PathBuf;

use scrim_train::workflow;

/// `scrim classify` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
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

/// Runs `scrim classify`.
///
/// # Errors
/// Missing model or inputs, unreadable images.
pub fn run(a: Args) -> anyhow::Result<()> {
    let model = workflow::resolve_model(a.run.as_deref(), a.model.as_deref(), "recognizer")?;
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
