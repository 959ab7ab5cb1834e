//! The Python side of the bench: a virtualenv with onnxruntime (and, when asked, PyTorch), and
//! the reference scripts from the repository's `bench/` folder, carried inside the binary so the
//! bench runs from any directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::BenchOptions;
use crate::{Error, Result};

/// `bench/ort_perturb.py`: times ONNX files in onnxruntime on one thread, on request.
pub(crate) const ORT_SCRIPT: &str = include_str!("../../../bench/ort_perturb.py");
/// `bench/cotrain_torch.py`: the co-training step in PyTorch.
pub(crate) const TORCH_SCRIPT: &str = include_str!("../../../bench/cotrain_torch.py");

/// `SCRIM_BENCH_VENV`, else `~/.cache/scrim/bench-venv` (apart from the test virtualenv, so
/// PyTorch never lands in the one CI uses).
pub(crate) fn default_venv() -> PathBuf {
    if let Some(v) = std::env::var_os("SCRIM_BENCH_VENV") {
        return PathBuf::from(v);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/scrim/bench-venv")
}

pub(crate) fn imports(python: &Path, modules: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn pip(python: &Path, args: &[&str]) -> bool {
    scrim_train::report::note(&format!("[bench] pip install {}", args.join(" ")));
    Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python interpreter that imports onnxruntime and numpy: `opts.python`, then the bench
/// virtualenv, then (smoke runs) `SCRIM_PYTHON` as set by `scripts/test`. A full run creates
/// the virtualenv when it is missing. `None`, with a note, when there is none.
pub(crate) fn resolve(opts: &BenchOptions, notes: &mut Vec<String>) -> Option<PathBuf> {
    let venv_python = opts.venv.join("bin/python");
    let mut candidates: Vec<PathBuf> = opts.python.iter().cloned().collect();
    candidates.push(venv_python.clone());
    if let Some(p) = std::env::var_os("SCRIM_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(p) = candidates
        .iter()
        .find(|p| p.is_file() && imports(p, "onnxruntime, numpy"))
    {
        return Some(p.clone());
    }
    if !opts.smoke && opts.python.is_none() {
        scrim_train::report::note(&format!(
            "[bench] creating Python virtualenv {} (onnxruntime, numpy)",
            opts.venv.display()
        ));
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&opts.venv)
            .status()
            .is_ok_and(|s| s.success());
        if created
            && pip(&venv_python, &["onnxruntime", "numpy"])
            && imports(&venv_python, "onnxruntime, numpy")
        {
            return Some(venv_python);
        }
    }
    notes.push(format!(
        "onnxruntime not measured: no Python with onnxruntime and numpy (looked at --python, \
         {}, SCRIM_PYTHON{})",
        venv_python.display(),
        if opts.smoke {
            "; smoke runs create no virtualenv"
        } else {
            "; creating the virtualenv failed"
        }
    ));
    None
}

/// Makes sure `python` imports torch, installing the CPU build when missing (the PyTorch index
/// first, then PyPI). Returns why not, when it cannot.
pub(crate) fn ensure_torch(python: &Path) -> std::result::Result<(), String> {
    if imports(python, "torch") {
        return Ok(());
    }
    let cpu_index = [
        "torch",
        "--index-url",
        "https://download.pytorch.org/whl/cpu",
    ];
    if (pip(python, &cpu_index) || pip(python, &["torch"])) && imports(python, "torch") {
        Ok(())
    } else {
        Err(format!(
            "PyTorch could not be installed into {} (pip install torch failed)",
            python.display()
        ))
    }
}

/// Writes `script` into `dir` as `name` and runs it with `args`; parses its last stdout line as
/// JSON.
pub(crate) fn run_script(
    python: &Path,
    dir: &Path,
    name: &str,
    script: &str,
    args: &[String],
) -> Result<serde_json::Value> {
    let path = dir.join(name);
    std::fs::write(&path, script).map_err(|e| Error::io(&path, e))?;
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| Error::io(python, e))?;
    if !out.status.success() {
        return Err(Error::reference(
            name,
            format!(
                "failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| Error::reference(name, format!("bad output: {e}")))
}

/// `bench/ort_perturb.py` running in the background with every model loaded: the bench asks it
/// for one timing at a time, between tract's timings of the same files.
pub(crate) struct OrtWorker {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// onnxruntime's version.
    pub version: String,
}

impl OrtWorker {
    /// Writes the script to `dir`, starts it on `models` and waits until they are loaded.
    pub(crate) fn start(python: &Path, dir: &Path, models: &[PathBuf]) -> Result<Self> {
        use std::process::Stdio;
        let script = dir.join("ort_perturb.py");
        std::fs::write(&script, ORT_SCRIPT).map_err(|e| Error::io(&script, e))?;
        let mut child = Command::new(python)
            .arg(&script)
            .args(models)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(python, e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::reference("ort_perturb.py", "no pipes to the child"));
        };
        let mut worker = Self {
            child,
            stdin,
            stdout: std::io::BufReader::new(stdout),
            version: String::new(),
        };
        let hello = worker.reply()?;
        worker.version = hello["_version"].as_str().unwrap_or("?").to_string();
        Ok(worker)
    }

    /// Median ms of `iterations` runs of model `index` (in the order given to `start`).
    pub(crate) fn median_ms(&mut self, index: usize, iterations: usize) -> Result<f64> {
        use std::io::Write;
        writeln!(self.stdin, "{index} {iterations}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| Error::reference("ort_perturb.py", format!("stopped: {e}")))?;
        self.reply()?["median_ms"]
            .as_f64()
            .ok_or_else(|| Error::reference("ort_perturb.py", "reply without median_ms"))
    }

    fn reply(&mut self) -> Result<serde_json::Value> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line).unwrap_or(0);
        if read == 0 {
            // The child ended: its last stderr line says why (a missing module, a bad model).
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = self.child.wait();
            return Err(Error::reference(
                "ort_perturb.py",
                format!("failed: {}", err.lines().last().unwrap_or("no output")),
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| Error::reference("ort_perturb.py", format!("bad output: {e}")))
    }
}

impl Drop for OrtWorker {
    fn drop(&mut self) {
        // The script would wait on stdin for the next request.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
