//! `scrim bench`: Scrim's stack side by side with what users would pick instead.

use std::path::PathBuf;

use scrim_bench::{self as bench, BenchOptions};

/// `scrim bench` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Measure this run's perturber (re-exported at each side) and recognizer instead of
    /// untrained default-architecture networks.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Folder for bench.json, the Markdown report and the ONNX files measured.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Markdown report to write (default: PERFORMANCE.md in --out; the repository's report is
    /// `--doc docs/PERFORMANCE.md`).
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Tiny sizes and few iterations (CI); skips PyTorch and writes no Markdown report.
    #[arg(long)]
    smoke: bool,
    /// Run the PyTorch reference of the co-training step (installs torch into the bench
    /// virtualenv when missing; needs network access once).
    #[arg(long, env = "SCRIM_BENCH_TORCH")]
    torch: bool,
    /// Image sides of the perturbation section.
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Timed runs per perturbation measurement.
    #[arg(long)]
    iterations: Option<usize>,
    /// Rounds of the σ-network timing (each file in tract, then right after in onnxruntime)
    /// and of the server section (every server at every level, then raw tract); the report
    /// gives medians over rounds.
    #[arg(long)]
    rounds: Option<usize>,
    /// Timed co-training steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Python with onnxruntime and numpy (default: the bench virtualenv, created on first use).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The scrim-cloud binary (default: $SCRIM_CLOUD_BIN, else next to this binary).
    #[arg(long)]
    scrim_cloud: Option<PathBuf>,
    /// Internal: measure peak RSS of the perturbation path with this perturber and exit.
    #[arg(long, hide = true)]
    rss_probe: Option<PathBuf>,
}

/// Runs `scrim bench`.
///
/// # Errors
/// Export, model and measurement errors.
pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(model) = a.rss_probe {
        let probe = bench::rss_probe(&model)?;
        println!("{}", serde_json::to_string(&probe).unwrap_or_default());
        return Ok(());
    }
    let mut o = if a.smoke {
        BenchOptions::smoke()
    } else {
        BenchOptions {
            doc: Some(a.doc.unwrap_or_else(|| a.out.join("PERFORMANCE.md"))),
            ..BenchOptions::default()
        }
    };
    o.run = a.run;
    o.out = a.out;
    o.torch = a.torch;
    o.python = a.python;
    o.scrim_cloud = a.scrim_cloud;
    if let Some(v) = a.sizes {
        o.sizes = v;
    }
    if let Some(v) = a.rounds {
        o.rounds = v;
    }
    if let Some(v) = a.iterations {
        o.iterations = v;
    }
    if let Some(v) = a.steps {
        o.cotrain_steps = v;
    }
    o.command_line = super::command_line();
    let report = bench::run(&o)?;
    println!("{}", bench::markdown(&report));
    eprintln!("wrote {}", o.out.join("bench.json").display());
    if let Some(doc) = &o.doc {
        eprintln!("wrote {}", doc.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    #[test]
    fn by_default_writes_only_into_its_out_folder() {
        let a = Cli::parse_from(["bench"]).args;
        assert_eq!(a.out, std::path::Path::new("bench-out"));
        assert_eq!(
            a.doc, None,
            "the report goes into --out unless --doc says otherwise"
        );
        let a = Cli::parse_from(["bench", "--out", "x", "--doc", "docs/PERFORMANCE.md"]).args;
        assert_eq!(a.doc.as_deref(), Some("docs/PERFORMANCE.md".as_ref()));
    }
}
