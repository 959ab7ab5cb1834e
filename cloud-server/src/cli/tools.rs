//! Flags of the operator's tools, `scrim-cloud bench` and `scrim-cloud soak`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::bench::BenchOptions;
use crate::config::EngineKind;
use crate::soak::{SoakMode, SoakOptions};

/// Flags of `scrim-cloud bench`. They deliberately read no environment variables.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A recognizer ONNX file; without it, a small fixture recognizer is generated.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Input size of the fixture recognizer.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 4, 16])]
    pub clients: Vec<usize>,
    /// Requests per concurrency level [default: 2000, or 50 with --quick].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Smoke test: no warm-up, short measurements, 5 s cap per level.
    #[arg(long)]
    pub quick: bool,
    /// Time cap per concurrency level, in seconds.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Server batching: largest batch [default: 32].
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Server batching: longest wait, in ms [default: 2].
    #[arg(long)]
    pub max_wait_ms: Option<u64>,
    /// Inference threads for the server and the raw measurement; 0 = cores − 1, at least 1.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Inference engines, comma-separated: one in-process server each, measured in turn in
    /// every round (tract is always measured raw).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![EngineKind::Tract])]
    pub engines: Vec<EngineKind>,
    /// The onnxruntime shared library for the ort engine.
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Another server on loopback answering POST /v1/classify, as [NAME=]ADDR (repeatable),
    /// measured with the same load in the same rounds; the ratios compare with the one named
    /// `peer` (the default name: bench/peer_server.py, as `scrim bench` starts it).
    #[arg(long, value_parser = parse_peer)]
    pub peer: Vec<(String, SocketAddr)>,
    /// Rounds; each measures every level on every server in turn [default: 3, or 1 with
    /// --quick].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Slices of the highest level, with raw tract measured before, between and after them
    /// (the reference of the server/raw ratio), each at least 250 ms (more requests are sent
    /// until then; no minimum with --quick) [default: 6, or 2 with --quick].
    #[arg(long)]
    pub slices: Option<usize>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The bench options these flags describe.
    pub fn options(&self) -> BenchOptions {
        let mut o = if self.quick {
            BenchOptions::quick(self.requests.unwrap_or(50))
        } else {
            BenchOptions {
                requests: self.requests.unwrap_or(2000),
                ..BenchOptions::default()
            }
        };
        o.model = self.model.clone();
        o.size = self.size;
        o.clients = self.clients.clone();
        if let Some(s) = self.max_seconds.filter(|s| s.is_finite() && *s > 0.0) {
            o.max_duration = Duration::from_secs_f64(s.min(600.0));
        }
        if let Some(v) = self.max_batch {
            o.max_batch = v;
        }
        if let Some(v) = self.max_wait_ms {
            o.max_wait_ms = v;
        }
        if let Some(v) = self.workers {
            o.workers = v;
        }
        o.engines.clone_from(&self.engines);
        o.ort_library.clone_from(&self.ort_library);
        o.peers.clone_from(&self.peer);
        if let Some(v) = self.rounds {
            o.rounds = v.clamp(1, 100);
        }
        if let Some(v) = self.slices {
            o.slices = v.clamp(1, 100);
        }
        o
    }
}

/// `ADDR` (named `peer`) or `NAME=ADDR`.
pub(super) fn parse_peer(value: &str) -> std::result::Result<(String, SocketAddr), String> {
    let (name, addr) = value.split_once('=').unwrap_or((crate::bench::PEER, value));
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address like 127.0.0.1:8000: {e}"))?;
    if name.is_empty() {
        return Err("a peer's name is empty".into());
    }
    Ok((name.to_string(), addr))
}

/// Flags of `scrim-cloud soak`. They deliberately read no environment variables.
#[derive(Debug, Args)]
#[command(after_help = SOAK_EXAMPLES)]
pub struct SoakArgs {
    /// CI preset: 10 000 requests over at least 10 s, server timeouts of 1 s, under a minute on
    /// two cores. Without it: 100 000 requests over at least 3 minutes with the server's
    /// default timeouts.
    #[arg(long, visible_alias = "quick")]
    pub short: bool,
    /// A recognizer ONNX file (manifest beside it); without it, a small fixture recognizer is
    /// generated.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Input size of the fixture recognizer.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Legitimate keep-alive connections [default: 64].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Legitimate requests, at least [default: 100000, or 10000 with --short].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Run the load at least this long, in seconds [default: 180, or 10 with --short].
    #[arg(long)]
    pub min_seconds: Option<f64>,
    /// Fail when the requests are not sent within this many seconds [default: 900, or 40 with
    /// --short].
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Slowloris senders (a header line every 300 ms with --short, every 2 s without) [default:
    /// 16].
    #[arg(long)]
    pub slowloris: Option<usize>,
    /// Slow-body senders (half drip 1 KiB per 200 ms / 1 s, half stall) [default: 16].
    #[arg(long)]
    pub slow_body: Option<usize>,
    /// Decode-amplification senders (a 2000x2000 16-bit RGBA PNG, back to back) [default: 4].
    #[arg(long)]
    pub decode_amp: Option<usize>,
    /// Server inference threads; 0 = cores − 1, at least 1 [default: 0].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Server memory allowed after the run above its memory before it, in MiB [default: 32].
    #[arg(long)]
    pub rss_margin_mib: Option<u64>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

const SOAK_EXAMPLES: &str = "Examples:
  scrim-cloud soak --short                 # CI: under a minute, fixture recognizer
  scrim-cloud soak                         # 100k requests, several minutes
  scrim-cloud soak --model runs/NAME/recognizer.onnx --requests 20000
  scrim-cloud soak --short --json > soak.json

The server runs as a child process (scrim-cloud serve on 127.0.0.1:0) so its memory is read
from /proc/PID/status (Linux). Exit status 1 when a legitimate request fails (other than 503
with Retry-After), a hostile sender is not stopped by the server's limits, the server's memory
grows beyond the margin or cap, or a request written before SIGTERM is cut off.";

impl SoakArgs {
    /// The soak options these flags describe; `server_exe` is the binary to start as the server.
    pub fn options(&self, server_exe: PathBuf) -> SoakOptions {
        let mode = if self.short {
            SoakMode::Short
        } else {
            SoakMode::Long
        };
        let mut o = SoakOptions::new(mode, server_exe);
        o.model = self.model.clone();
        o.size = self.size;
        let seconds = |s: Option<f64>| {
            s.filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
        };
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { o.$field = v; } )* };
        }
        overlay!(
            connections,
            requests,
            slowloris,
            slow_body,
            decode_amp,
            workers
        );
        if let Some(v) = seconds(self.min_seconds) {
            o.min_duration = v;
        }
        if let Some(v) = seconds(self.max_seconds) {
            o.max_duration = v;
        }
        if let Some(v) = self.rss_margin_mib {
            o.rss_margin = v << 20;
        }
        o
    }
}
