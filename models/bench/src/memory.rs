//! Section 4 of the bench: peak RSS of the perturbation path (in a child process), and the
//! sizes of the ONNX files and of the stripped mobile library.

use std::path::{Path, PathBuf};

use scrim_core::{BatchMode, Model, Perturber};
use serde::{Deserialize, Serialize};

use super::device::{DeviceOut, test_jpeg};
use super::{BenchOptions, scrim_exe};
use crate::Result;

/// Peak RSS of the perturbation path at one side, measured in a child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssRow {
    /// Architecture.
    pub variant: String,
    /// Image side.
    pub size: usize,
    /// VmHWM of the child before loading the model, KiB.
    pub baseline_kib: u64,
    /// VmHWM after loading and perturbing, KiB.
    pub peak_kib: u64,
}

/// A file and its size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileSize {
    /// Path.
    pub path: String,
    /// Bytes.
    pub bytes: u64,
}

/// Section 4.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryReport {
    /// Peak RSS of the perturbation path.
    pub rss: Vec<RssRow>,
    /// Every ONNX file measured.
    pub onnx_files: Vec<FileSize>,
    /// Stripped mobile libraries found (profile `mobile`); empty when not built.
    pub mobile_library: Vec<FileSize>,
}

/// What the RSS probe child prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssProbe {
    /// VmHWM before loading, KiB.
    pub baseline_kib: u64,
    /// VmHWM after loading the model and perturbing five images, KiB.
    pub peak_kib: u64,
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The child side of the RSS measurement (`scrim bench --rss-probe MODEL.onnx`): loads the
/// perturber (manifest beside it), perturbs five JPEGs at its size, and reports VmHWM before
/// and after. Linux only (reads `/proc/self/status`); elsewhere both are 0.
///
/// # Errors
/// As [`Model::load_path`] and [`Perturber::perturb`].
pub fn rss_probe(model: &Path) -> Result<RssProbe> {
    let baseline_kib = vm_hwm_kib();
    let perturber = Perturber::new(Model::load_path(model, BatchMode::Single)?)?;
    let size = perturber.manifest().input.height;
    let jpeg = test_jpeg(size)?;
    for _ in 0..5 {
        perturber.perturb(&jpeg)?;
    }
    Ok(RssProbe {
        baseline_kib,
        peak_kib: vm_hwm_kib(),
    })
}

fn file_size(path: &Path) -> Option<FileSize> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileSize {
        path: path.display().to_string(),
        bytes: meta.len(),
    })
}

/// The cargo target folder: `CARGO_TARGET_DIR`, else two levels above the `scrim` binary.
fn target_dir(exe: &Path) -> Option<PathBuf> {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| exe.parent()?.parent().map(Path::to_path_buf))
}

/// Section 4.
pub(crate) fn memory(
    opts: &BenchOptions,
    dev: &DeviceOut,
    notes: &mut Vec<String>,
) -> MemoryReport {
    let mut report = MemoryReport::default();
    let exe = scrim_exe(opts);
    for (variant, size, path) in &dev.perturbers {
        let Some(exe) = &exe else { break };
        let out = std::process::Command::new(exe)
            .args(["bench", "--rss-probe"])
            .arg(path)
            .output();
        let probe = out.ok().filter(|o| o.status.success()).and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            serde_json::from_str::<RssProbe>(text.lines().last().unwrap_or("")).ok()
        });
        match probe {
            Some(p) => report.rss.push(RssRow {
                variant: variant.clone(),
                size: *size,
                baseline_kib: p.baseline_kib,
                peak_kib: p.peak_kib,
            }),
            None => {
                notes.push(format!(
                    "peak RSS not measured: `{} bench --rss-probe` failed",
                    exe.display()
                ));
                break;
            }
        }
    }
    let mut onnx: Vec<PathBuf> = dev.perturbers.iter().map(|(_, _, p)| p.clone()).collect();
    if let Some(run) = &opts.run {
        onnx.push(run.join("perturber.onnx"));
    }
    onnx.push(dev.recognizer.clone());
    report.onnx_files = onnx.iter().filter_map(|p| file_size(p)).collect();
    if let Some(target) = exe.as_deref().and_then(target_dir) {
        let mut candidates = vec![target.join("mobile/libscrim_mobile.so")];
        if let Ok(entries) = std::fs::read_dir(&target) {
            for e in entries.flatten() {
                candidates.push(e.path().join("mobile/libscrim_mobile.so"));
            }
        }
        candidates.sort();
        candidates.dedup();
        report.mobile_library = candidates.iter().filter_map(|p| file_size(p)).collect();
    }
    if report.mobile_library.is_empty() {
        notes.push(
            "stripped mobile library: not built (cargo build --profile mobile -p scrim-mobile)"
                .into(),
        );
    }
    report
}
