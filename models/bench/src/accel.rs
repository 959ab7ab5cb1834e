//! `scrim bench --backend B`: the co-training step of `scrim train` on another burn backend
//! (wgpu: a GPU through Vulkan, Metal or DX12) beside flex on this machine's CPU, and PyTorch's
//! same step on the CPU and on `--torch-device` (say `cuda`), at several batch sizes.
//!
//! The step is [`Trainer::step`], the one training repeats: it reads the mean σ back every
//! step, so a step's wall time includes waiting for the device. PyTorch's step ends in
//! `.item()` for the same reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cotrain::{step, synthetic, torch_args, trainer};
use super::device::median_ms;
use super::python;
use super::report::{Machine, utc_now};
use crate::{Error, Result};
use scrim_train::backend::Backend;

/// What `scrim bench --backend B` measures.
#[derive(Debug, Clone)]
pub struct AccelOptions {
    /// The burn backend measured beside flex.
    pub backend: Backend,
    /// Images per step: one row each.
    pub batches: Vec<usize>,
    /// Image side.
    pub size: usize,
    /// Timed steps per measurement (after three untimed ones).
    pub steps: usize,
    /// Run PyTorch's step too, on the CPU and on `torch_device`.
    pub torch: bool,
    /// The torch device beside the CPU (`cuda`, `mps`, ...).
    pub torch_device: String,
    /// A Python that imports torch (default: the bench virtualenv's).
    pub python: Option<PathBuf>,
    /// Folder for `accelerator.json` and `accelerator.md`.
    pub out: PathBuf,
    /// The command line, recorded in the report.
    pub command_line: String,
}

/// One batch size: median step times in ms (`None`: not measured, see the notes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccelRow {
    /// Images per step.
    pub batch: usize,
    /// burn on flex, this machine's CPU.
    pub flex_ms: f64,
    /// burn on the backend measured.
    pub backend_ms: f64,
    /// PyTorch on the CPU.
    pub torch_cpu_ms: Option<f64>,
    /// PyTorch on the torch device.
    pub torch_device_ms: Option<f64>,
}

/// `accelerator.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccelReport {
    /// Where it ran.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// When (UTC).
    pub date: String,
    /// The burn backend measured beside flex.
    pub backend: String,
    /// The torch device beside the CPU.
    pub torch_device: String,
    /// PyTorch's version, when it ran.
    pub torch: Option<String>,
    /// Image side.
    pub size: usize,
    /// Timed steps per measurement.
    pub steps: usize,
    /// One row per batch size.
    pub rows: Vec<AccelRow>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// The median ms of `steps` co-training steps at `batch` images on `backend`.
fn burn_step_ms(backend: Backend, batch: usize, size: usize, steps: usize) -> Result<f64> {
    let device = backend.train_device()?;
    device.seed(3);
    let ds = synthetic(batch, size)?;
    let idx: Vec<usize> = (0..ds.len()).collect();
    let (mut t, cfg) = trainer(&ds, &device)?;
    median_ms(steps, || {
        step(&mut t, &cfg, &ds, &idx);
        Ok(())
    })
}

/// PyTorch's median step in ms on `device`, with its version; the reason when it failed.
fn torch_step_ms(
    py: &Path,
    opts: &AccelOptions,
    batch: usize,
    device: &str,
) -> std::result::Result<(f64, String), String> {
    let mut args = torch_args(opts.steps, batch, opts.size, &[]);
    args.push(device.to_string());
    let json = python::run_script(
        py,
        &opts.out,
        "cotrain_torch.py",
        python::TORCH_SCRIPT,
        &args,
    )
    .map_err(|e| e.to_string())?;
    let ms = json["median_step_ms"]
        .as_f64()
        .ok_or_else(|| "no median_step_ms in its output".to_string())?;
    Ok((ms, json["version"].as_str().unwrap_or("?").to_string()))
}

/// Measures every batch size, writes `accelerator.json` and `accelerator.md` into `opts.out`.
///
/// # Errors
/// The backend is not compiled in or fails; I/O errors writing the outputs.
pub fn run(opts: &AccelOptions) -> Result<AccelReport> {
    // Before any measuring: a backend this build lacks fails at once.
    opts.backend.device()?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let mut notes = Vec::new();
    let py = opts.torch.then(|| torch_python(opts, &mut notes)).flatten();
    let (mut rows, mut version) = (Vec::new(), None);
    for &batch in &opts.batches {
        let note =
            |what: &str| scrim_train::report::note(&format!("[bench] batch {batch}: {what}"));
        note("burn flex (CPU)");
        let flex_ms = burn_step_ms(Backend::Flex, batch, opts.size, opts.steps)?;
        note(&format!("burn {}", opts.backend));
        let backend_ms = burn_step_ms(opts.backend, batch, opts.size, opts.steps)?;
        let mut torch = |device: &str| -> Option<f64> {
            let py = py.as_deref()?;
            note(&format!("PyTorch {device}"));
            match torch_step_ms(py, opts, batch, device) {
                Ok((ms, v)) => {
                    version = Some(v);
                    Some(ms)
                }
                Err(why) => {
                    notes.push(format!("PyTorch on {device}, batch {batch}: {why}"));
                    None
                }
            }
        };
        let torch_cpu_ms = torch("cpu");
        let torch_device_ms = torch(&opts.torch_device);
        rows.push(AccelRow {
            batch,
            flex_ms,
            backend_ms,
            torch_cpu_ms,
            torch_device_ms,
        });
    }
    let report = AccelReport {
        machine: Machine::describe(),
        command: opts.command_line.clone(),
        date: utc_now(),
        backend: opts.backend.to_string(),
        torch_device: opts.torch_device.clone(),
        torch: version,
        size: opts.size,
        steps: opts.steps,
        rows,
        notes,
    };
    let json = opts.out.join("accelerator.json");
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Internal(format!("accelerator.json: {e}")))?;
    std::fs::write(&json, text).map_err(|e| Error::io(&json, e))?;
    let md = opts.out.join("accelerator.md");
    std::fs::write(&md, markdown(&report)).map_err(|e| Error::io(&md, e))?;
    Ok(report)
}

/// `opts.python`, else the bench virtualenv's, provided it imports torch (never installed
/// here: the CPU wheel the full bench installs cannot run on a GPU).
fn torch_python(opts: &AccelOptions, notes: &mut Vec<String>) -> Option<PathBuf> {
    let py = opts
        .python
        .clone()
        .unwrap_or_else(|| python::default_venv().join("bin/python"));
    if python::imports(&py, "torch") {
        Some(py)
    } else {
        notes.push(format!(
            "PyTorch not measured: {} does not import torch (pass --python)",
            py.display()
        ));
        None
    }
}

/// The table: each step in ms and images/s, and the two ratios that matter.
#[must_use]
pub fn markdown(r: &AccelReport) -> String {
    let b = &r.backend;
    let d = &r.torch_device;
    let cell = |ms: Option<f64>, batch: usize| {
        ms.map_or("–".into(), |m| {
            format!("{m:.1} ms ({:.0} img/s)", batch as f64 / (m / 1e3))
        })
    };
    let ratio = |a: f64, b: Option<f64>| b.map_or("–".into(), |b| format!("{:.2}", a / b));
    let mut s = format!(
        "## The co-training step on {b} (burn) and {d} (PyTorch)\n\n\
         {}, {} cores; {}; `{}`. Median of {} steps at {}×{} px, default perturber and \
         recognizer; each step waits for the device.\n\n\
         | batch | burn flex (CPU) | PyTorch CPU | burn {b} | PyTorch {d} | {b} speed-up over flex | \
         burn {b} / PyTorch {d} |\n|---|---|---|---|---|---|---|\n",
        r.machine.cpu,
        r.machine.cores,
        r.torch
            .as_deref()
            .map_or("PyTorch not run".into(), |v| format!("PyTorch {v}")),
        r.command,
        r.steps,
        r.size,
        r.size,
    );
    for row in &r.rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {:.2} | {} |\n",
            row.batch,
            cell(Some(row.flex_ms), row.batch),
            cell(row.torch_cpu_ms, row.batch),
            cell(Some(row.backend_ms), row.batch),
            cell(row.torch_device_ms, row.batch),
            row.flex_ms / row.backend_ms,
            ratio(row.backend_ms, row.torch_device_ms),
        );
    }
    for n in &r.notes {
        s += &format!("\n- {n}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mode end to end on flex (the backend every build has): rows for each batch, both
    /// files written, and a table a reader can check against the JSON.
    #[test]
    fn measures_each_batch_and_writes_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = AccelOptions {
            backend: Backend::Flex,
            batches: vec![4, 8],
            size: 16,
            steps: 1,
            torch: false,
            torch_device: "cuda".into(),
            python: None,
            out: dir.path().to_path_buf(),
            command_line: "scrim bench --backend flex".into(),
        };
        let r = run(&opts).expect("bench");
        assert_eq!(r.rows.iter().map(|r| r.batch).collect::<Vec<_>>(), [4, 8]);
        for row in &r.rows {
            assert!(row.flex_ms > 0.0 && row.backend_ms > 0.0, "{row:?}");
            assert!(row.torch_cpu_ms.is_none() && row.torch_device_ms.is_none());
        }
        let back: AccelReport = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("accelerator.json")).expect("json"),
        )
        .expect("parses");
        assert_eq!(back.rows.len(), 2);
        let md = std::fs::read_to_string(dir.path().join("accelerator.md")).expect("md");
        assert!(md.contains("| 8 | "), "{md}");
        assert!(md.contains("PyTorch not run"), "{md}");
    }

    /// A backend left out of the build is refused before anything is measured or written.
    #[test]
    fn a_backend_not_built_in_fails_at_once() {
        if Backend::Wgpu.device().is_ok() {
            // Built with `--features wgpu`: nothing to refuse.
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let opts = AccelOptions {
            backend: Backend::Wgpu,
            batches: vec![4],
            size: 16,
            steps: 1,
            torch: false,
            torch_device: "cuda".into(),
            python: None,
            out: out.clone(),
            command_line: String::new(),
        };
        let e = run(&opts).expect_err("no wgpu in this build").to_string();
        assert!(e.contains("wgpu") && e.contains("feature"), "{e}");
        assert!(!out.exists(), "nothing written");
    }
}
