//! Section 3: the server against raw batched tract on the same recognizer. scrim-models does
//! not depend on axum, so this runs `scrim-cloud bench --json` (the server's own load
//! generator: in-process server on loopback, 1/4/16 keep-alive clients, raw tract in the same
//! run) as a child process and reads its report.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::BenchOptions;

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

/// Section 3.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerReport {
    /// The recognizer served.
    pub model: String,
    /// The command that measured it.
    pub command: Option<String>,
    /// Per concurrency level.
    pub levels: Vec<ServerLevel>,
    /// Best raw batched tract throughput (images/s) and its batch size.
    pub raw_best: Option<(usize, f64)>,
    /// Clients at the highest level and server/raw there.
    pub ratio: Option<(usize, f64)>,
}

fn scrim_cloud(opts: &BenchOptions) -> Option<PathBuf> {
    let sibling =
        super::device::scrim_exe(opts).and_then(|e| e.parent().map(|d| d.join("scrim-cloud")));
    opts.scrim_cloud
        .clone()
        .or_else(|| std::env::var_os("SCRIM_CLOUD_BIN").map(PathBuf::from))
        .into_iter()
        .chain(sibling)
        .find(|p| p.is_file())
}

/// Section 3. Never fails the bench: a missing binary or a failed run becomes a note.
pub(crate) fn run(opts: &BenchOptions, model: &Path, notes: &mut Vec<String>) -> ServerReport {
    let mut report = ServerReport {
        model: model.display().to_string(),
        ..Default::default()
    };
    let Some(bin) = scrim_cloud(opts) else {
        notes.push(
            "server not measured: no scrim-cloud binary (build it: cargo build --release -p \
             scrim-cloud; or set SCRIM_CLOUD_BIN)"
                .into(),
        );
        return report;
    };
    let mut args: Vec<String> = vec!["bench".into(), "--json".into(), "--model".into()];
    args.push(model.display().to_string());
    if opts.smoke {
        args.extend(["--quick".into(), "--requests".into(), "20".into()]);
    }
    report.command = Some(format!("{} {}", bin.display(), args.join(" ")));
    let out = match Command::new(&bin).args(&args).output() {
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
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    for l in json["levels"].as_array().into_iter().flatten() {
        report.levels.push(ServerLevel {
            clients: l["clients"].as_u64().unwrap_or(0) as usize,
            images_per_sec: f(l, "throughput"),
            p50_ms: f(l, "p50_ms"),
            p99_ms: f(l, "p99_ms"),
            mean_batch: f(l, "mean_batch"),
        });
    }
    report.raw_best = json["raw"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["batch"].as_u64().unwrap_or(0) as usize,
                f(r, "throughput"),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let (Some(top), Some((_, raw))) = (
        report.levels.iter().max_by_key(|l| l.clients),
        report.raw_best,
    ) && raw > 0.0
    {
        report.ratio = Some((top.clients, top.images_per_sec / raw));
    }
    report
}
