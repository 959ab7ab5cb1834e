//! Section 3: the server against what an operator would run instead, and against raw batched
//! inference, on the same recognizer. scrim-models does not depend on axum, so this runs
//! `scrim-cloud bench --json` (the server's own load generator: in-process servers on loopback,
//! one per engine, 1/4/16 keep-alive clients, alternating rounds, raw throughput in the same
//! run) as a child process and reads its report. The peer is `bench/peer_server.py` (aiohttp +
//! one onnxruntime session, no batching), started here in the bench virtualenv and handed to
//! `scrim-cloud bench --peer`, so the same load generator measures it in the same rounds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

use super::BenchOptions;
use super::python;

/// `bench/peer_server.py`: the Python server measured beside scrim-cloud.
pub(crate) const PEER_SCRIPT: &str = include_str!("../../../bench/peer_server.py");

/// One concurrency level.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerLevel {
    /// Concurrent clients.
    pub clients: usize,
    /// Images classified per second.
    pub images_per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Mean batch the server formed.
    pub mean_batch: f64,
}

/// One server measured: `scrim-cloud (tract)`, `scrim-cloud (onnxruntime)` or `peer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerTarget {
    /// Its name in the report.
    pub name: String,
    /// Per concurrency level (medians over rounds).
    pub levels: Vec<ServerLevel>,
}

/// One raw measurement: images/s of `engine` at `batch` without HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawLevel {
    /// `tract` or `onnxruntime`.
    pub engine: String,
    /// Images per run.
    pub batch: usize,
    /// Images per second.
    pub images_per_sec: f64,
}

/// The ratios of one scrim-cloud engine at the highest concurrency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRatio {
    /// The scrim-cloud target.
    pub target: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Its images/s over the best raw tract images/s (goal ≥ 0.9).
    pub over_raw_tract: Option<f64>,
    /// Its images/s over the peer's (goal ≥ 2).
    pub over_peer: Option<f64>,
    /// Its p99 over the peer's (goal < 1).
    pub p99_over_peer: Option<f64>,
}

/// Section 3.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerReport {
    /// The recognizer served.
    pub model: String,
    /// The command that measured it.
    pub command: Option<String>,
    /// The first scrim-cloud target's levels.
    pub levels: Vec<ServerLevel>,
    /// Every server measured, scrim-cloud engines first, then the peer.
    #[serde(default)]
    pub targets: Vec<ServerTarget>,
    /// Raw throughput per engine and batch.
    #[serde(default)]
    pub raw: Vec<RawLevel>,
    /// The convolution methods tract picked, per plan.
    #[serde(default)]
    pub kernels: Vec<String>,
    /// Rounds measured.
    #[serde(default)]
    pub rounds: usize,
    /// Best raw batched tract throughput (images/s) and its batch size.
    pub raw_best: Option<(usize, f64)>,
    /// Clients at the highest level and the first server over raw tract there.
    pub ratio: Option<(usize, f64)>,
    /// Per scrim-cloud engine, at the highest level.
    #[serde(default)]
    pub ratios: Vec<ServerRatio>,
}

fn scrim_cloud(opts: &BenchOptions) -> Option<PathBuf> {
    let sibling = super::scrim_exe(opts).and_then(|e| e.parent().map(|d| d.join("scrim-cloud")));
    opts.scrim_cloud
        .clone()
        .or_else(|| std::env::var_os("SCRIM_CLOUD_BIN").map(PathBuf::from))
        .into_iter()
        .chain(sibling)
        .find(|p| p.is_file())
}

/// The onnxruntime shared library: `SCRIM_ORT_LIBRARY`, else the one inside `python`'s
/// onnxruntime package (PyPI's wheel ships it under `onnxruntime/capi/`).
pub(crate) fn ort_library(python: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SCRIM_ORT_LIBRARY").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    scrim_core::fixtures::onnxruntime_library_of(python?)
}

/// The Python peer, listening on loopback; killed when dropped.
struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bench/peer_server.py` on `model` with `python` (installing aiohttp and Pillow into
/// the bench virtualenv when they are missing, outside smoke runs). `Err` says why not.
fn start_peer(
    opts: &BenchOptions,
    python: Option<&Path>,
    model: &Path,
) -> std::result::Result<Peer, String> {
    use std::io::{BufRead, Read};
    let python = python.ok_or("no Python with onnxruntime (see the notes above)")?;
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import aiohttp, PIL, onnxruntime, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready(python) {
        let in_venv = python.starts_with(&opts.venv);
        if opts.smoke || !in_venv || !python::pip(python, &["aiohttp", "pillow"]) {
            return Err(format!(
                "{} lacks aiohttp or Pillow{}",
                python.display(),
                if opts.smoke {
                    " (smoke runs install nothing)"
                } else if in_venv {
                    " and pip install aiohttp pillow failed"
                } else {
                    " (only the bench virtualenv is installed into)"
                }
            ));
        }
    }
    let script = opts.out.join("peer_server.py");
    std::fs::write(&script, PEER_SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    let mut child = Command::new(python)
        .arg(&script)
        .arg(model)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let port = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok());
    match port {
        Some(port) => Ok(Peer { child, port }),
        None => {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            Err(format!(
                "peer_server.py did not start: {}",
                err.lines().last().unwrap_or("no output")
            ))
        }
    }
}

/// Section 3. Never fails the bench: a missing binary, peer or library, or a failed run,
/// becomes a note.
pub(crate) fn run(
    opts: &BenchOptions,
    model: &Path,
    python: Option<&Path>,
    notes: &mut Vec<String>,
) -> ServerReport {
    let mut report = ServerReport {
        model: model.display().to_string(),
        ..Default::default()
    };
    let Some(bin) = scrim_cloud(opts) else {
        notes.push(
            "server not measured: no scrim-cloud binary (build it: cargo build --release \
             --workspace; or set SCRIM_CLOUD_BIN)"
                .into(),
        );
        return report;
    };
    let mut args: Vec<String> = vec!["bench".into(), "--json".into(), "--model".into()];
    args.push(model.display().to_string());
    if opts.smoke {
        args.extend(["--quick".into(), "--requests".into(), "20".into()]);
    } else {
        // As many rounds as the σ-network timing: each round pairs the servers with raw tract.
        args.extend(["--rounds".into(), opts.rounds.max(1).to_string()]);
    }
    match ort_library(python) {
        Some(lib) => {
            args.extend([
                "--engines".into(),
                "tract,ort".into(),
                "--ort-library".into(),
            ]);
            args.push(lib.display().to_string());
        }
        None => notes.push(
            "scrim-cloud's onnxruntime engine not measured: no libonnxruntime (set \
             SCRIM_ORT_LIBRARY, or give the bench a Python with onnxruntime)"
                .into(),
        ),
    }
    let peer = match start_peer(opts, python, model) {
        Ok(peer) => Some(peer),
        Err(why) => {
            notes.push(format!("Python peer server not measured: {why}"));
            None
        }
    };
    if let Some(peer) = &peer {
        args.extend(["--peer".into(), format!("127.0.0.1:{}", peer.port)]);
    }
    report.command = Some(format!("{} {}", bin.display(), args.join(" ")));
    let out = Command::new(&bin).args(&args).output();
    drop(peer);
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            notes.push(format!(
                "server bench failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
            return report;
        }
        Err(e) => {
            notes.push(format!(
                "server bench could not start {}: {e}",
                bin.display()
            ));
            return report;
        }
    };
    let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => {
            notes.push(format!("server bench: unreadable report: {e}"));
            return report;
        }
    };
    read_report(&json, &mut report);
    report
}

/// Fills `report` from `scrim-cloud bench --json`.
fn read_report(json: &serde_json::Value, report: &mut ServerReport) {
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let levels = |v: &serde_json::Value| -> Vec<ServerLevel> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|l| ServerLevel {
                clients: l["clients"].as_u64().unwrap_or(0) as usize,
                images_per_sec: f(l, "throughput"),
                p50_ms: f(l, "p50_ms"),
                p99_ms: f(l, "p99_ms"),
                mean_batch: f(l, "mean_batch"),
            })
            .collect()
    };
    report.levels = levels(&json["levels"]);
    report.rounds = json["rounds"].as_u64().unwrap_or(1) as usize;
    report.targets = json["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| ServerTarget {
            name: t["name"].as_str().unwrap_or("?").to_string(),
            levels: levels(&t["levels"]),
        })
        .collect();
    report.raw = json["raw"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| RawLevel {
            engine: r["engine"].as_str().unwrap_or("tract").to_string(),
            batch: r["batch"].as_u64().unwrap_or(0) as usize,
            images_per_sec: f(r, "throughput"),
        })
        .collect();
    report.kernels = json["kernels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    report.raw_best = report
        .raw
        .iter()
        .filter(|r| r.engine == "tract")
        .map(|r| (r.batch, r.images_per_sec))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let raw_tract = report.raw_best.map(|(_, t)| t).filter(|t| *t > 0.0);
    // A target's own entry in the JSON, for what scrim-cloud paired by rounds.
    let target = |name: &str| {
        json["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"].as_str() == Some(name))
    };
    // Each target's ratio to raw tract as scrim-cloud paired it (the median over rounds of each
    // round's ratio), else the ratio of the medians (reports from before the pairing).
    let paired = |name: &str| target(name).and_then(|t| t["over_raw_tract"].as_f64());
    let over_raw = |name: &str, top: &ServerLevel| {
        paired(name).or_else(|| raw_tract.map(|r| top.images_per_sec / r))
    };
    if let Some(top) = report.levels.iter().max_by_key(|l| l.clients) {
        let first = report.targets.first().map_or("", |t| t.name.as_str());
        report.ratio = over_raw(first, top).map(|r| (top.clients, r));
    }
    let top_of = |t: &ServerTarget| t.levels.iter().max_by_key(|l| l.clients).cloned();
    // A target's highest level in each round (scrim-cloud measures every target in the same
    // rounds): the peer's ratios are medians of the rounds' ratios when both sides have them.
    let top_rounds = |name: &str| -> Vec<(f64, f64)> {
        target(name)
            .and_then(|t| t["top_rounds"].as_array())
            .into_iter()
            .flatten()
            .map(|l| (f(l, "throughput"), f(l, "p99_ms")))
            .collect()
    };
    let paired_with_peer = |name: &str| -> Option<(f64, f64)> {
        let (a, b) = (top_rounds(name), top_rounds("peer"));
        if a.is_empty() || a.len() != b.len() || b.iter().any(|&(t, p)| t <= 0.0 || p <= 0.0) {
            return None;
        }
        let ratio = |g: fn(&(f64, f64)) -> f64| {
            let r: Vec<f64> = a.iter().zip(&b).map(|(x, y)| g(x) / g(y)).collect();
            super::device::median(&r)
        };
        Some((ratio(|x| x.0), ratio(|x| x.1)))
    };
    let peer = report
        .targets
        .iter()
        .find(|t| t.name == "peer")
        .and_then(top_of);
    report.ratios = report
        .targets
        .iter()
        .filter(|t| t.name != "peer")
        .filter_map(|t| {
            let top = top_of(t)?;
            let peer = peer.as_ref().filter(|p| p.clients == top.clients);
            let paired = peer.and(paired_with_peer(&t.name));
            Some(ServerRatio {
                target: t.name.clone(),
                clients: top.clients,
                over_raw_tract: over_raw(&t.name, &top),
                over_peer: paired.map(|p| p.0).or_else(|| {
                    peer.filter(|p| p.images_per_sec > 0.0)
                        .map(|p| top.images_per_sec / p.images_per_sec)
                }),
                p99_over_peer: paired.map(|p| p.1).or_else(|| {
                    peer.filter(|p| p.p99_ms > 0.0)
                        .map(|p| top.p99_ms / p.p99_ms)
                }),
            })
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One level of `scrim-cloud bench --json`.
    fn level(clients: u64, throughput: f64, p99: f64) -> serde_json::Value {
        serde_json::json!({"clients": clients, "throughput": throughput, "p50_ms": 1.0,
            "p99_ms": p99, "mean_batch": 2.0})
    }

    #[test]
    fn reads_every_target_and_the_ratios_at_the_highest_level() {
        let json = serde_json::json!({
            "rounds": 3,
            "levels": [level(1, 100.0, 2.0), level(16, 900.0, 8.0)],
            "targets": [
                {"name": "scrim-cloud (tract)", "levels": [level(1, 100.0, 2.0), level(16, 900.0, 8.0)]},
                {"name": "scrim-cloud (onnxruntime)", "levels": [level(16, 3000.0, 4.0)]},
                {"name": "peer", "levels": [level(16, 1000.0, 10.0)]}
            ],
            "raw": [
                {"engine": "tract", "batch": 1, "throughput": 1000.0},
                {"engine": "tract", "batch": 16, "throughput": 800.0},
                {"engine": "onnxruntime", "batch": 16, "throughput": 5000.0}
            ],
            "kernels": ["batch 1: LazyIm2col"]
        });
        let mut r = ServerReport::default();
        read_report(&json, &mut r);
        assert_eq!(r.targets.len(), 3);
        assert_eq!(r.raw_best, Some((1, 1000.0)), "raw tract only");
        assert_eq!(r.ratio, Some((16, 0.9)));
        assert_eq!(
            r.ratios.len(),
            2,
            "one per scrim-cloud engine: {:?}",
            r.ratios
        );
        let ort = &r.ratios[1];
        assert_eq!(ort.target, "scrim-cloud (onnxruntime)");
        assert_eq!(ort.over_raw_tract, Some(3.0));
        assert_eq!(ort.over_peer, Some(3.0));
        assert_eq!(ort.p99_over_peer, Some(0.4));
        assert_eq!(r.kernels, ["batch 1: LazyIm2col"]);
    }

    #[test]
    fn the_peer_ratios_are_paired_by_rounds_when_both_sides_have_them() {
        // Medians of the levels: 2000 against 1000 (2.0); round by round: 2.5, 1.5, 3.0.
        let json = serde_json::json!({
            "rounds": 3,
            "levels": [level(16, 2000.0, 4.0)],
            "targets": [
                {"name": "scrim-cloud (tract)", "levels": [level(16, 2000.0, 4.0)],
                 "top_rounds": [level(16, 2500.0, 4.0), level(16, 1500.0, 4.0),
                                level(16, 3000.0, 6.0)]},
                {"name": "peer", "levels": [level(16, 1000.0, 10.0)],
                 "top_rounds": [level(16, 1000.0, 8.0), level(16, 1000.0, 10.0),
                                level(16, 1000.0, 10.0)]}
            ],
            "raw": [{"engine": "tract", "batch": 1, "throughput": 2000.0}]
        });
        let mut r = ServerReport::default();
        read_report(&json, &mut r);
        assert_eq!(r.ratios[0].over_peer, Some(2.5));
        assert_eq!(r.ratios[0].p99_over_peer, Some(0.5));
    }

    #[test]
    fn a_ratio_paired_by_rounds_is_taken_as_it_is() {
        let level = serde_json::json!({"clients": 16, "throughput": 900.0, "p99_ms": 8.0});
        let json = serde_json::json!({
            "levels": [level.clone()],
            "targets": [{"name": "scrim-cloud (tract)", "levels": [level], "over_raw_tract": 0.95}],
            "raw": [{"engine": "tract", "batch": 1, "throughput": 1000.0}]
        });
        let mut r = ServerReport::default();
        read_report(&json, &mut r);
        assert_eq!(r.ratio, Some((16, 0.95)), "not 900 / 1000");
        assert_eq!(r.ratios[0].over_raw_tract, Some(0.95));
    }
}
