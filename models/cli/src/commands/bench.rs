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
    /// Time only the co-training step on this burn backend (wgpu: a GPU, with `--features
    /// wgpu`) beside flex on the CPU, at each of --batches; with --torch, PyTorch's step on
    /// the CPU and on --torch-device too. Writes accelerator.json and accelerator.md into
    /// --out. Example: `scrim bench --backend wgpu --torch --torch-device cuda --python python3`.
    #[arg(long)]
    backend: Option<scrim_train::backend::Backend>,
    /// Batch sizes of --backend's table.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64,256,1024",
        requires = "backend"
    )]
    batches: Vec<usize>,
    /// The torch device of --backend's table beside the CPU (PyTorch's name: cuda, mps, xpu).
    #[arg(long, default_value = "cuda", requires = "backend")]
    torch_device: String,
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
    if let Some(backend) = a.backend {
        return accelerator(backend, a);
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

/// `scrim bench --backend B`: the co-training step on B beside flex (and PyTorch).
fn accelerator(backend: scrim_train::backend::Backend, a: Args) -> anyhow::Result<()> {
    let o = bench::AccelOptions {
        backend,
        batches: a.batches,
        size: BenchOptions::default().train_size,
        steps: a.steps.unwrap_or(20),
        torch: a.torch,
        torch_device: a.torch_device,
        python: a.python,
        out: a.out,
        command_line: super::command_line(),
    };
    anyhow::ensure!(
        !o.batches.is_empty() && !o.batches.contains(&0),
        "--batches needs one or more sizes above 0"
    );
    let report = bench::run_accelerator(&o)?;
    println!("{}", bench::accel_markdown(&report));
    eprintln!(
        "wrote {} and accelerator.md",
        o.out.join("accelerator.json").display()
    );
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
