//! `scrim-cloud soak`: the server under legitimate load and hostile senders at once, its memory
//! before, at its peak and after, then SIGTERM under load.
//!
//! The server runs as a child process (`scrim-cloud serve` of the same binary) on
//! `127.0.0.1:0`, so `/proc/PID/status` gives the memory of the server alone. The run:
//!
//! 1. start the server (the fixture recognizer, or `--model`); read its memory (*start*);
//! 2. warm up: 20 requests per connection; read its memory (*before*);
//! 3. legitimate `POST /v1/classify` from `connections` keep-alive clients (at least `requests`
//!    requests, for at least `min_duration`) while slowloris, slow-body and
//!    decode-amplification senders run beside them (see `soak/hostile.rs`);
//! 4. stop everything, wait for the queue to empty; read its memory (*after*, and the peak
//!    `VmHWM`);
//! 5. SIGTERM under load (see `soak/shutdown.rs`).
//!
//! It fails (see [`SoakReport::failures`]) when a legitimate request gets anything but 200 or
//! 503 + `Retry-After`, when a hostile sender gets what the server's defences should not give
//! (or never ran into them), when memory after the run exceeds *before* + the margin or the
//! peak exceeds the cap (*before* + `queue × max_body_bytes` + a head buffer per connection +
//! the margin), or when a request written before shutdown is cut off.

mod hostile;
mod process;
mod report;
mod shutdown;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use scrim_core::{Manifest, fixtures};
use serde::Serialize;

pub use hostile::{DecodeAmpStats, HostileStats, SlowBodyStats, SlowlorisStats};
pub use report::{LegitStats, MemoryStats, SoakReport};
pub use shutdown::ShutdownStats;

use crate::load::{self, Plan, percentile, sample_png};
use crate::{Config, Error, Result};
use process::{ServerProcess, TempDir};

const MIB: u64 = 1 << 20;

/// Which preset a run starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SoakMode {
    /// For CI: 10 000 requests over at least 10 s, server timeouts of 1 s; under a minute on two
    /// cores.
    Short,
    /// 100 000 requests over at least 3 minutes, the server's default timeouts.
    Long,
}

/// What to run. Start from [`SoakOptions::new`] and change what you need.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The preset these values came from.
    pub mode: SoakMode,
    /// The `scrim-cloud` binary to start as the server (normally the running one).
    pub server_exe: PathBuf,
    /// A recognizer ONNX (manifest beside it); `None` writes the fixture recognizer.
    pub model: Option<PathBuf>,
    /// Input size of the fixture recognizer.
    pub size: usize,
    /// Legitimate keep-alive connections.
    pub connections: usize,
    /// Legitimate requests, at least.
    pub requests: usize,
    /// The load runs at least this long (so the hostile senders run into every timeout).
    pub min_duration: Duration,
    /// ... and at most this long; fewer than `requests` by then is a failure.
    pub max_duration: Duration,
    /// Slowloris senders.
    pub slowloris: usize,
    /// Slow-body senders.
    pub slow_body: usize,
    /// Decode-amplification senders.
    pub decode_amp: usize,
    /// Slowloris: pause between header lines.
    pub line_interval: Duration,
    /// Slow body: pause between 1 KiB chunks.
    pub drip_interval: Duration,
    /// Server: `queue`.
    pub queue: usize,
    /// Server: `max_body_bytes` (the slow bodies claim one byte less).
    pub max_body_bytes: usize,
    /// Server: `header_read_timeout_ms`.
    pub header_read_timeout_ms: u64,
    /// Server: `body_timeout_ms`.
    pub body_timeout_ms: u64,
    /// Server: `idle_timeout_ms`.
    pub idle_timeout_ms: u64,
    /// Server: `shutdown_grace_ms`.
    pub shutdown_grace_ms: u64,
    /// Server: inference threads (0: cores − 1, at least 1).
    pub workers: usize,
    /// Memory allowed after the run above *before*, in bytes; also the slack of the peak cap.
    pub rss_margin: u64,
    /// Clients of the SIGTERM phase.
    pub shutdown_clients: usize,
    /// Load before SIGTERM.
    pub shutdown_after: Duration,
}

impl SoakOptions {
    /// The preset of `mode`, serving with `server_exe`.
    pub fn new(mode: SoakMode, server_exe: PathBuf) -> Self {
        let defaults = Config::default();
        let short = Self {
            mode,
            server_exe,
            model: None,
            size: 32,
            connections: 64,
            requests: 10_000,
            min_duration: Duration::from_secs(10),
            max_duration: Duration::from_secs(40),
            slowloris: 16,
            slow_body: 16,
            decode_amp: 4,
            line_interval: Duration::from_millis(300),
            drip_interval: Duration::from_millis(200),
            queue: 128,
            max_body_bytes: 256 << 10,
            header_read_timeout_ms: 1_000,
            body_timeout_ms: 1_000,
            idle_timeout_ms: 1_000,
            shutdown_grace_ms: 5_000,
            workers: 0,
            rss_margin: 32 * MIB,
            shutdown_clients: 64,
            shutdown_after: Duration::from_secs(1),
        };
        match mode {
            SoakMode::Short => short,
            SoakMode::Long => Self {
                requests: 100_000,
                min_duration: Duration::from_secs(180),
                max_duration: Duration::from_secs(900),
                line_interval: Duration::from_secs(2),
                drip_interval: Duration::from_secs(1),
                header_read_timeout_ms: defaults.header_read_timeout_ms,
                body_timeout_ms: defaults.body_timeout_ms,
                idle_timeout_ms: defaults.idle_timeout_ms,
                shutdown_grace_ms: defaults.shutdown_grace_ms,
                shutdown_after: Duration::from_secs(3),
                ..short
            },
        }
    }
}

/// Runs the soak.
///
/// # Errors
/// [`Error::Bench`] / [`Error::Model`] / [`Error::Io`] when the run itself cannot be done (the
/// server does not start, a client cannot connect, `/proc` is missing). A server that misbehaves
/// is not an error: it is a failure in the report.
pub fn run(options: &SoakOptions) -> Result<SoakReport> {
    let o = options;
    if o.connections == 0 || o.shutdown_clients == 0 {
        return Err(Error::Config("soak needs at least one connection".into()));
    }
    let dir = TempDir::new()?;
    let model = match &o.model {
        Some(path) => path.clone(),
        None => write_fixture(&dir.0, o.size)?,
    };
    let manifest = Manifest::load(&Manifest::path_for(&model)).map_err(Error::Model)?;
    let upload = Bytes::from(sample_png(manifest.input)?);
    let crafted = hostile::crafted_png()?;
    let server_args: Vec<String> = [
        ("--queue", o.queue.to_string()),
        ("--max-body-bytes", o.max_body_bytes.to_string()),
        (
            "--header-read-timeout-ms",
            o.header_read_timeout_ms.to_string(),
        ),
        ("--body-timeout-ms", o.body_timeout_ms.to_string()),
        ("--idle-timeout-ms", o.idle_timeout_ms.to_string()),
        ("--shutdown-grace-ms", o.shutdown_grace_ms.to_string()),
        ("--workers", o.workers.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect();
    let mut args: Vec<OsString> = vec!["--model".into(), model.clone().into_os_string()];
    args.extend(server_args.iter().map(OsString::from));
    let mut server = ServerProcess::start(&o.server_exe, &args)?;
    let start = server.memory()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("scrim-soak-client")
        .build()
        .map_err(|e| Error::Bench(format!("cannot start the client runtime: {e}")))?;
    let mut failures = Vec::new();

    let warmup = runtime.block_on(load::drive(
        Plan {
            addr: server.addr,
            clients: o.connections,
            requests: o.connections * 20,
            min_duration: Duration::ZERO,
            max_duration: Duration::from_secs(30),
        },
        &upload,
    ))?;
    if warmup.errors() > 0 {
        failures.push(format!("the warm-up had errors: {:?}", warmup.outcomes));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = server.memory()?;

    let attack = hostile::Attack {
        addr: server.addr,
        slowloris: o.slowloris,
        slow_body: o.slow_body,
        decode_amp: o.decode_amp,
        line_interval: o.line_interval,
        drip_interval: o.drip_interval,
        claim: o.max_body_bytes.saturating_sub(1).max(2048),
        header_timeout: Duration::from_millis(o.header_read_timeout_ms),
        body_timeout: Duration::from_millis(o.body_timeout_ms),
        crafted,
    };
    let senders = {
        let _inside = runtime.enter();
        hostile::start(&attack)
    };
    let started = Instant::now();
    let mut tally = runtime.block_on(load::drive(
        Plan {
            addr: server.addr,
            clients: o.connections,
            requests: o.requests,
            min_duration: o.min_duration,
            max_duration: o.max_duration,
        },
        &upload,
    ))?;
    let seconds = started.elapsed().as_secs_f64();
    let hostile = runtime.block_on(senders.stop())?;
    runtime.block_on(wait_for_empty_queue(&server, Duration::from_secs(10)))?;
    std::thread::sleep(Duration::from_millis(500));
    let after = server.memory()?;

    tally.latencies_ms.sort_by(f64::total_cmp);
    let legit = LegitStats {
        connections: o.connections,
        requests: tally.total(),
        ok: tally.ok(),
        seconds,
        throughput: tally.ok() as f64 / seconds.max(1e-9),
        p50_ms: percentile(&tally.latencies_ms, 0.50),
        p99_ms: percentile(&tally.latencies_ms, 0.99),
        outcomes: tally.outcomes,
    };
    let all_connections = (o.connections + o.slowloris + o.slow_body + o.decode_amp) as u64;
    let memory = MemoryStats {
        start: start.rss,
        before: before.rss,
        peak: after.hwm,
        after: after.rss,
        margin: o.rss_margin,
        peak_cap: before.rss
            + (o.queue * o.max_body_bytes) as u64
            + all_connections * Config::default().max_header_bytes as u64
            + o.rss_margin,
    };

    let mut request = format!(
        "POST /v1/classify HTTP/1.1\r\nHost: soak\r\nContent-Type: image/png\r\n\
         Content-Length: {}\r\n\r\n",
        upload.len()
    )
    .into_bytes();
    request.extend_from_slice(&upload);
    let shutdown = shutdown::run(
        &runtime,
        &mut server,
        o.shutdown_clients,
        request,
        o.shutdown_after,
        Duration::from_millis(o.shutdown_grace_ms),
    )?;
    drop(runtime);

    let mut report = SoakReport {
        mode: o.mode,
        model: manifest.name.clone(),
        input: manifest.input.describe(),
        server_args,
        legit,
        hostile,
        memory,
        shutdown,
        failures,
    };
    report.failures.extend(report::check(&report, o));
    if !report.passed() {
        let tail = server.log_tail();
        if !tail.is_empty() {
            report
                .failures
                .push(tail.trim_start_matches("; ").to_owned());
        }
    }
    Ok(report)
}

fn write_fixture(dir: &std::path::Path, size: usize) -> Result<PathBuf> {
    let labels = ["class-0", "class-1", "class-2", "class-3"];
    let (onnx, manifest) = fixtures::recognizer(size, &labels);
    let path = dir.join("recognizer.onnx");
    std::fs::write(&path, onnx).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    manifest
        .save(&Manifest::path_for(&path))
        .map_err(Error::Model)?;
    Ok(path)
}

/// Polls `/metrics` until `scrim_queue_depth` is 0.
async fn wait_for_empty_queue(server: &ServerProcess, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut connection = crate::client::Connection::open(server.addr).await?;
    loop {
        let reply = connection.get("/metrics").await?;
        let text = String::from_utf8_lossy(&reply.body);
        let depth = text
            .lines()
            .find_map(|l| l.strip_prefix("scrim_queue_depth "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if depth == Some(0.0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Bench(format!(
                "the queue did not empty within {limit:?} after the load (depth {depth:?})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_preset_keeps_the_server_defaults() {
        let exe = PathBuf::from("scrim-cloud");
        let long = SoakOptions::new(SoakMode::Long, exe.clone());
        let defaults = Config::default();
        assert_eq!(long.header_read_timeout_ms, defaults.header_read_timeout_ms);
        assert_eq!(long.body_timeout_ms, defaults.body_timeout_ms);
        assert!(long.requests >= 100_000 && long.connections == 64);
        let short = SoakOptions::new(SoakMode::Short, exe);
        assert!(short.requests >= 10_000 && short.max_duration <= Duration::from_secs(40));
    }
}
