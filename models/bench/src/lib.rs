//! `scrim bench`: one run, one table. Scrim's own stack measured side by side with what users
//! would pick instead, on the same models:
//!
//! 1. on-device perturbation (σ network alone, and the whole path) in tract against
//!    onnxruntime, both on one thread, on the same ONNX file ([`device`]);
//! 2. the co-training step in burn against the same step in PyTorch ([`cotrain`]);
//! 3. the server (tract and onnxruntime engines) against a minimal Python server (aiohttp + one
//!    onnxruntime session) and raw batched inference on the same recognizer ([`server`], through
//!    `scrim-cloud bench`);
//! 4. peak RSS of the perturbation path and the size of each artifact ([`device`]);
//! 5. growth: perturbation latency against image side, epoch time against dataset size.
//!
//! Benchmarks report; they never assert timings. [`BenchOptions::smoke`] is the CI setting.

mod accel;
mod cotrain;
mod device;
mod error;
mod memory;
mod python;
mod report;
mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use accel::{AccelOptions, AccelReport, AccelRow};
pub use accel::{markdown as accel_markdown, run as run_accelerator};
pub use cotrain::{CotrainReport, EpochGrowth};
pub use device::PerturbRow;
pub use memory::{FileSize, MemoryReport, RssProbe, RssRow, rss_probe};
pub use report::{Machine, markdown};
pub use server::{RawLevel, ServerLevel, ServerRatio, ServerReport, ServerTarget};

pub use error::{Error, Result};
use scrim_train::nets::{PerturberConfig, PerturberLayout};

/// What to measure and where to write it.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A run folder whose perturber (best checkpoint, re-exported at each size) and recognizer
    /// are measured; `None` builds untrained default-architecture networks (no downloads).
    pub run: Option<PathBuf>,
    /// Folder for `bench.json` and the ONNX files the bench writes.
    pub out: PathBuf,
    /// Where to write the Markdown report (by default `PERFORMANCE.md` in `out`; the
    /// repository's is `docs/PERFORMANCE.md`); `None` skips it.
    pub doc: Option<PathBuf>,
    /// Image sides of the perturbation section.
    pub sizes: Vec<usize>,
    /// Timed runs per perturbation measurement (the median is reported).
    pub iterations: usize,
    /// Rounds of the σ-network timing (in each, every file is timed in tract and right after in
    /// onnxruntime) and of the server section (`scrim-cloud bench --rounds`). Timings and ratios
    /// in the report are medians over rounds.
    pub rounds: usize,
    /// Perturber architectures measured (name, config); ignored with `run`.
    pub variants: Vec<(String, PerturberConfig)>,
    /// Timed co-training steps.
    pub cotrain_steps: usize,
    /// Co-training batch size and image side.
    pub batch_size: usize,
    /// Image side of the co-training step.
    pub train_size: usize,
    /// Synthetic dataset sizes for the epoch-time growth measurement.
    pub epoch_counts: Vec<usize>,
    /// Run the PyTorch reference (installs torch into the bench virtualenv if missing).
    pub torch: bool,
    /// Python virtualenv for onnxruntime (and torch): created when missing unless `smoke`.
    pub venv: PathBuf,
    /// A Python interpreter to use instead of the virtualenv's (must have onnxruntime).
    pub python: Option<PathBuf>,
    /// The `scrim` binary, for the RSS probe child process (default: this executable).
    pub scrim_exe: Option<PathBuf>,
    /// The `scrim-cloud` binary (default: `SCRIM_CLOUD_BIN`, else next to `scrim_exe`).
    pub scrim_cloud: Option<PathBuf>,
    /// Smoke run: tiny sizes, few iterations, no torch, no virtualenv creation.
    pub smoke: bool,
    /// The command line, recorded in the report.
    pub command_line: String,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            run: None,
            out: PathBuf::from("bench-out"),
            doc: Some(PathBuf::from("bench-out/PERFORMANCE.md")),
            sizes: vec![32, 64, 128, 224],
            iterations: 100,
            rounds: 5,
            variants: default_variants(),
            cotrain_steps: 20,
            batch_size: 64,
            train_size: 32,
            epoch_counts: vec![256, 512, 1024, 2048],
            torch: false,
            venv: python::default_venv(),
            python: None,
            scrim_exe: None,
            scrim_cloud: None,
            smoke: false,
            command_line: String::new(),
        }
    }
}

impl BenchOptions {
    /// The CI setting: tiny sizes and few iterations, seconds to run; no torch, and no
    /// virtualenv is created (onnxruntime is measured only if a Python with it is at hand).
    pub fn smoke() -> Self {
        Self {
            sizes: vec![16, 32],
            iterations: 3,
            rounds: 1,
            cotrain_steps: 2,
            batch_size: 16,
            train_size: 16,
            epoch_counts: vec![32, 64],
            smoke: true,
            doc: None,
            ..Self::default()
        }
    }
}

/// The perturber architectures measured by default: the default for other data, the faster
/// layouts, the default for faces (`bounded`) and the global view (`global`).
pub fn default_variants() -> Vec<(String, PerturberConfig)> {
    vec![
        ("default".into(), PerturberConfig::new()),
        ("half-res".into(), PerturberConfig::new().with_downsample(2)),
        (
            "quarter-res".into(),
            PerturberConfig::new().with_downsample(4),
        ),
        (
            "quarter-res-8ch".into(),
            PerturberConfig::new().with_downsample(4).with_channels(8),
        ),
        (
            "quarter-res-8ch-sep".into(),
            PerturberConfig::new()
                .with_downsample(4)
                .with_channels(8)
                .with_layout(PerturberLayout::Separable),
        ),
        (
            "depthwise".into(),
            PerturberConfig::new().with_layout(PerturberLayout::Depthwise),
        ),
        (
            "half-res-dw".into(),
            PerturberConfig::new()
                .with_downsample(2)
                .with_layout(PerturberLayout::Depthwise),
        ),
        (
            "quarter-res-dw".into(),
            PerturberConfig::new()
                .with_downsample(4)
                .with_layout(PerturberLayout::Depthwise),
        ),
        (
            "bounded".into(),
            PerturberConfig::new().with_layout(PerturberLayout::Bounded),
        ),
        (
            "global".into(),
            PerturberConfig::new()
                .with_layout(PerturberLayout::Global)
                .with_encoder_widths(scrim_train::nets::GLOBAL_ENCODER_WIDTHS.to_vec()),
        ),
    ]
}

/// `cfg` for images of side `size`. A bounded release or a global view keeps its map side
/// when `size` is that side times a power of two, and otherwise takes the side that is (224 px:
/// 7, as an app at that size would train with `--release-side 7`); its encoder repeats its last
/// width for each halving beyond those it has. Other layouts do not depend on the size.
pub fn at_size(cfg: &PerturberConfig, size: usize) -> PerturberConfig {
    let mut c = cfg.clone();
    if !matches!(c.layout, PerturberLayout::Bounded | PerturberLayout::Global) || size == 0 {
        return c;
    }
    if c.release_halvings(size).is_none() {
        c.release_side = size >> size.trailing_zeros();
    }
    let halvings = c.release_halvings(size).unwrap_or(0);
    let last = c.encoder_widths.last().copied().unwrap_or(16);
    while c.encoder_widths.len() <= halvings {
        c.encoder_widths.push(last);
    }
    c
}

/// The `scrim` binary the bench runs its child probes with (and finds `scrim-cloud` beside).
pub(crate) fn scrim_exe(opts: &BenchOptions) -> Option<PathBuf> {
    opts.scrim_exe
        .clone()
        .or_else(|| std::env::current_exe().ok())
}

/// The three headline ratios against their goals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ratios {
    /// tract / onnxruntime on the σ network at the largest side, per variant (goal ≤ 1.0).
    pub tract_over_onnxruntime: Vec<(String, usize, f64)>,
    /// burn / PyTorch co-training step time (goal ≤ 1.5).
    pub burn_over_pytorch: Option<f64>,
    /// Server images/s over the best raw tract images/s at the highest concurrency (goal ≥ 0.8).
    pub server_over_raw: Option<(usize, f64)>,
}

/// Everything one `scrim bench` run measured. Written as `bench.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// The machine.
    pub machine: Machine,
    /// The exact command line.
    pub command: String,
    /// UTC date and time of the run.
    pub date: String,
    /// Whether this was a smoke run.
    pub smoke: bool,
    /// Timed runs per measurement.
    #[serde(default)]
    pub iterations: usize,
    /// Rounds of the σ-network timing (tract and onnxruntime back to back per file).
    #[serde(default)]
    pub rounds: usize,
    /// Section 1: perturbation latency per variant and side.
    pub perturbation: Vec<PerturbRow>,
    /// Section 2: the co-training step.
    pub cotrain: CotrainReport,
    /// Section 3: the server.
    pub server: ServerReport,
    /// Section 4: memory and sizes.
    pub memory: MemoryReport,
    /// Section 5: epoch time against dataset size (perturbation growth is in `perturbation`).
    pub epoch_growth: Vec<EpochGrowth>,
    /// The headline ratios.
    pub ratios: Ratios,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// Runs every section, prints progress to stderr, and writes `bench.json` (and the Markdown
/// report when `opts.doc` is set). A section that cannot run (no Python, no `scrim-cloud`
/// binary) is reported as such; it does not fail the bench.
///
/// # Errors
/// I/O errors writing the outputs; model errors building the networks.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let mut notes = Vec::new();
    let py = python::resolve(opts, &mut notes);

    scrim_train::report::note(
        "[bench] 1/5 on-device perturbation (tract vs onnxruntime, one thread)",
    );
    let dev = device::run(opts, py.as_deref(), &mut notes)?;
    scrim_train::report::note("[bench] 2/5 co-training step (burn vs PyTorch)");
    let cotrain = cotrain::run(opts, py.as_deref(), &mut notes)?;
    scrim_train::report::note(
        "[bench] 3/5 server vs the Python peer and raw inference (scrim-cloud bench)",
    );
    let server = server::run(opts, &dev.recognizer, py.as_deref(), &mut notes);
    scrim_train::report::note("[bench] 4/5 memory and sizes");
    let memory = memory::memory(opts, &dev, &mut notes);
    scrim_train::report::note("[bench] 5/5 growth: epoch time against dataset size");
    let epoch_growth = cotrain::epoch_growth(opts)?;

    let largest = opts.sizes.iter().copied().max().unwrap_or(0);
    let ratios = Ratios {
        tract_over_onnxruntime: dev
            .rows
            .iter()
            .filter(|r| r.size == largest)
            .filter_map(|r| r.ratio.map(|q| (r.variant.clone(), r.size, q)))
            .collect(),
        burn_over_pytorch: cotrain.ratio,
        server_over_raw: server.ratio,
    };
    let report = BenchReport {
        machine: Machine::describe(),
        command: opts.command_line.clone(),
        date: report::utc_now(),
        smoke: opts.smoke,
        iterations: opts.iterations,
        rounds: opts.rounds.max(1),
        perturbation: dev.rows,
        cotrain,
        server,
        memory,
        epoch_growth,
        ratios,
        notes,
    };
    let json = opts.out.join("bench.json");
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Internal(format!("bench.json: {e}")))?;
    std::fs::write(&json, text).map_err(|e| Error::io(&json, e))?;
    if let Some(doc) = &opts.doc {
        if let Some(dir) = doc.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(doc, markdown(&report)).map_err(|e| Error::io(doc, e))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_layouts_fit_every_bench_side() {
        let variants = default_variants();
        for name in ["bounded", "global"] {
            let (_, cfg) = variants.iter().find(|(n, _)| n == name).expect("variant");
            for size in [16, 32, 64, 128, 224] {
                let c = at_size(cfg, size);
                c.validate(size)
                    .unwrap_or_else(|e| panic!("{name} at {size} px: {e}"));
                assert!(
                    size / c.release_side >= 2,
                    "{name} at {size}: a real bottleneck"
                );
            }
            let same = at_size(cfg, 32);
            assert_eq!(
                (same.release_side, &same.encoder_widths),
                (cfg.release_side, &cfg.encoder_widths),
                "the trained size keeps its architecture"
            );
            let big = at_size(cfg, 224);
            assert_eq!(big.release_side, 7);
            assert_eq!(
                big.encoder_widths.len(),
                6,
                "5 halvings from 224 to 7, one more at 7"
            );
        }
        let dense = PerturberConfig::new();
        let d = at_size(&dense, 224);
        assert_eq!(
            (d.release_side, d.encoder_widths),
            (dense.release_side, dense.encoder_widths)
        );
    }
}
