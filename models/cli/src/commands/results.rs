//! `scrim results`: merge audit reports into one document with its frontier plot.

use std::path::PathBuf;

use scrim_audit::{ResultsRequest, write_results};

/// `scrim results`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Audit reports (report.json) to merge, repeatable; all of the same data and split.
    #[arg(long, required = true)]
    report: Vec<PathBuf>,
    /// Markdown files appended as further sections (e.g. the model-protection tables).
    #[arg(long)]
    include: Vec<PathBuf>,
    /// The document to write; the plots go into `figures/` beside it. No default, so that a run
    /// never writes into the `docs/` of whatever folder it starts in (the repository's document
    /// is `--out docs/RESULTS.md`).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `scrim results`.
///
/// # Errors
/// Unreadable or incompatible reports, unwritable output.
pub fn run(a: Args) -> anyhow::Result<()> {
    let figures = write_results(&ResultsRequest {
        reports: a.report,
        include: a.include,
        out: a.out.clone(),
        command: super::command_line(),
    })?;
    println!(
        "wrote {} and {}/frontier.svg/png",
        a.out.display(),
        figures.display()
    );
    Ok(())
}
