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
//!    decode-amplification senders run beside them (see [`hostile`]);
//! 4. stop everything, wait for the queue to empty; read its memory (*after*, and the peak
//!    `VmHWM`);
//! 5. SIGTERM under load (see [`shutdown`]).
//!
//! It fails (see [`SoakReport::failures`]) when a legitimate request gets anything but 200 or
//! 503 + `Retry-After`, when a hostile sender gets what the server's defences should not give
//! (or never ran into them), when memory after the run exceeds *before* + the margin or the
//! peak exceeds the cap (*before* + `queue × max_body_bytes` + a head buffer per connection +
//! the margin), or when a request written before shutdown is cut off.

mod hostile;
mod process;
mod shutdown;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use scrim_core::{Manifest, fixtures};
use serde::Serialize;

pub use hostile::{DecodeAmpStats, HostileStats, SlowBodyStats, SlowlorisStats};
pub use shutdown::ShutdownStats;

use crate::load::{self, OK, OVERLOADED_RETRY, Plan, percentile, sample_png};
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
    /// Server: inference threads (0: one per core).
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

/// The legitimate load.
#[derive(Debug, Clone, Serialize)]
pub struct LegitStats {
    /// Keep-alive connections.
    pub connections: usize,
    /// Requests sent.
    pub requests: usize,
    /// Answered 200.
    pub ok: usize,
    /// Wall time of the load.
    pub seconds: f64,
    /// 200 answers per second.
    pub throughput: f64,
    /// Latency of 200 answers, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Requests by outcome: `"200"`, `"503 overloaded + Retry-After"`, `"<status> <code>"`,
    /// `"connection error: …"`.
    pub outcomes: BTreeMap<String, usize>,
}

/// The server's resident memory, in bytes.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryStats {
    /// Right after start.
    pub start: u64,
    /// After the warm-up.
    pub before: u64,
    /// The most ever resident (`VmHWM`), read after the load.
    pub peak: u64,
    /// After the load, once the queue is empty.
    pub after: u64,
    /// `after` may not exceed `before` + this.
    pub margin: u64,
    /// `peak` may not exceed this: `before` + `queue × max_body_bytes` + a head buffer
    /// (`max_header_bytes`) per connection + `margin`.
    pub peak_cap: u64,
}

/// Everything a soak run measured, and what failed.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The preset.
    pub mode: SoakMode,
    /// Manifest name.
    pub model: String,
    /// Input size, `CxHxW`.
    pub input: String,
    /// The server's settings, as passed to `scrim-cloud serve`.
    pub server_args: Vec<String>,
    /// Legitimate load.
    pub legit: LegitStats,
    /// Hostile senders.
    pub hostile: HostileStats,
    /// Server memory.
    pub memory: MemoryStats,
    /// SIGTERM under load.
    pub shutdown: ShutdownStats,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

impl SoakReport {
    /// No failure.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
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
    report.failures.extend(check(&report, o));
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

/// Everything in `outcomes` that is not one of `allowed`, as `"kind ×N"`.
fn unexpected(outcomes: &BTreeMap<String, usize>, allowed: &[&str]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|(k, _)| !allowed.contains(&k.as_str()))
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect()
}

/// The failures of a run, each a sentence that says why.
fn check(r: &SoakReport, o: &SoakOptions) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |cond: bool, why: String| {
        if cond {
            failures.push(why);
        }
    };
    let bad = unexpected(&r.legit.outcomes, &[OK, OVERLOADED_RETRY]);
    fail(
        !bad.is_empty(),
        format!("legitimate requests failed: {}", bad.join(", ")),
    );
    fail(
        r.legit.requests < o.requests,
        format!(
            "only {} of {} legitimate requests were sent within {:?}",
            r.legit.requests, o.requests, o.max_duration
        ),
    );

    let s = &r.hostile.slowloris;
    fail(
        o.slowloris > 0 && s.closed_by_header_timeout == 0,
        "no slowloris connection was closed by the header timeout".into(),
    );
    fail(
        s.held_past_limit > 0,
        format!(
            "{} slowloris connections were still open long after the header timeout",
            s.held_past_limit
        ),
    );
    let b = &r.hostile.slow_body;
    let body_timeout = format!("{} body_timeout", 408);
    let bad = unexpected(&b.outcomes, &[&body_timeout, OVERLOADED_RETRY]);
    fail(
        !bad.is_empty(),
        format!("slow bodies got other answers: {}", bad.join(", ")),
    );
    fail(
        o.slow_body > 0 && b.outcomes.get(&body_timeout).is_none_or(|&n| n == 0),
        "no slow body was answered 408 body_timeout".into(),
    );
    let d = &r.hostile.decode_amp;
    let bad = unexpected(&d.outcomes, &["400 wrong_size"]);
    fail(
        !bad.is_empty(),
        format!(
            "decode-amplification uploads got other answers: {}",
            bad.join(", ")
        ),
    );
    fail(
        o.decode_amp > 0 && d.uploads == 0,
        "no decode-amplification upload was answered".into(),
    );

    let m = &r.memory;
    fail(
        m.after > m.before + m.margin,
        format!(
            "server memory after the run, {:.1} MiB, exceeds before ({:.1} MiB) + the margin \
             ({:.1} MiB)",
            mib(m.after),
            mib(m.before),
            mib(m.margin)
        ),
    );
    fail(
        m.peak > m.peak_cap,
        format!(
            "server peak memory, {:.1} MiB, exceeds the cap of {:.1} MiB",
            mib(m.peak),
            mib(m.peak_cap)
        ),
    );

    let t = &r.shutdown;
    fail(
        t.cut_off > 0,
        format!(
            "{} requests written whole on served keep-alive connections got EOF instead of an \
             answer after SIGTERM",
            t.cut_off
        ),
    );
    let mut bad: Vec<String> = t
        .violations
        .iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect();
    bad.extend(unexpected(&t.answers, &[OK, OVERLOADED_RETRY]));
    fail(
        !bad.is_empty(),
        format!("SIGTERM phase: {}", bad.join(", ")),
    );
    fail(
        t.answered_after_sigterm == 0,
        "no request was answered after SIGTERM, so the shutdown phase tested nothing".into(),
    );
    fail(
        !t.exit_success,
        format!("the server did not exit cleanly after SIGTERM: {}", t.exit),
    );
    failures
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn outcomes(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.legit;
        writeln!(
            f,
            "soak ({:?}): model {} ({}), server: {}",
            self.mode,
            self.model,
            self.input,
            self.server_args.join(" ")
        )?;
        writeln!(f)?;
        writeln!(f, "legitimate: {} keep-alive connections", l.connections)?;
        writeln!(
            f,
            "  {:>9} {:>9} {:>8} {:>10} {:>8} {:>8}",
            "requests", "ok", "seconds", "req/s", "p50 ms", "p99 ms"
        )?;
        writeln!(
            f,
            "  {:>9} {:>9} {:>8.1} {:>10.1} {:>8.2} {:>8.2}",
            l.requests, l.ok, l.seconds, l.throughput, l.p50_ms, l.p99_ms
        )?;
        writeln!(f, "  outcomes: {}", outcomes(&l.outcomes))?;
        writeln!(f)?;
        let s = &self.hostile.slowloris;
        writeln!(
            f,
            "slowloris ({} senders): {} connections; closed by the header timeout {}, earlier {}, \
             held past the limit {}; closed after {:.0}–{:.0} ms; answers: {}",
            s.senders,
            s.connections,
            s.closed_by_header_timeout,
            s.closed_early,
            s.held_past_limit,
            s.close_ms_min,
            s.close_ms_max,
            outcomes(&s.answers)
        )?;
        let b = &self.hostile.slow_body;
        writeln!(
            f,
            "slow body ({} senders): {} uploads; {}; slowest answer {:.0} ms",
            b.senders,
            b.attempts,
            outcomes(&b.outcomes),
            b.answer_ms_max
        )?;
        let d = &self.hostile.decode_amp;
        writeln!(
            f,
            "decode amplification ({} senders, {} bytes declaring {}): {} uploads; {}; p99 {:.2} \
             ms, max {:.2} ms",
            d.senders,
            d.upload_bytes,
            d.declared,
            d.uploads,
            outcomes(&d.outcomes),
            d.p99_ms,
            d.max_ms
        )?;
        writeln!(f)?;
        let m = &self.memory;
        writeln!(
            f,
            "server RSS (MiB): start {:.1}, before {:.1}, peak {:.1} (cap {:.1}), after {:.1} \
             (bound {:.1})",
            mib(m.start),
            mib(m.before),
            mib(m.peak),
            mib(m.peak_cap),
            mib(m.after),
            mib(m.before + m.margin)
        )?;
        writeln!(f)?;
        let t = &self.shutdown;
        writeln!(
            f,
            "SIGTERM after {:.0} ms of load from {} clients: {} answered after it ({} with \
             Connection: close); allowed: {} refused, {} new connections closed, {} unwritten; \
             cut off: {}; {}; exit in {:.0} ms",
            t.sigterm_after_ms,
            t.clients,
            t.answered_after_sigterm,
            t.closed_with_answer,
            t.refused,
            t.new_connection_closed,
            t.unwritten,
            t.cut_off,
            t.exit,
            t.exit_ms
        )?;
        writeln!(f, "  answers: {}", outcomes(&t.answers))?;
        writeln!(f)?;
        if self.passed() {
            writeln!(f, "PASSED")
        } else {
            writeln!(f, "FAILED:")?;
            for why in &self.failures {
                writeln!(f, "  - {why}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_200_and_503_with_retry_after_are_allowed() {
        let outcomes: BTreeMap<String, usize> = [
            (OK.to_owned(), 10),
            (OVERLOADED_RETRY.to_owned(), 2),
            ("503 overloaded".to_owned(), 1),
            ("connection error: reset".to_owned(), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            unexpected(&outcomes, &[OK, OVERLOADED_RETRY]),
            vec!["503 overloaded ×1", "connection error: reset ×3"]
        );
    }

    /// A report that passes every check.
    fn passing(o: &SoakOptions) -> SoakReport {
        let mut hostile = HostileStats::default();
        hostile.slowloris.closed_by_header_timeout = 16;
        hostile.slow_body.outcomes = [("408 body_timeout".to_owned(), 16)].into();
        hostile.decode_amp.uploads = 4;
        hostile.decode_amp.outcomes = [("400 wrong_size".to_owned(), 4)].into();
        SoakReport {
            mode: o.mode,
            model: "m".into(),
            input: "3x32x32".into(),
            server_args: Vec::new(),
            legit: LegitStats {
                connections: 64,
                requests: o.requests,
                ok: o.requests,
                seconds: 1.0,
                throughput: 1.0,
                p50_ms: 1.0,
                p99_ms: 1.0,
                outcomes: [(OK.to_owned(), o.requests)].into(),
            },
            hostile,
            memory: MemoryStats {
                start: 20 * MIB,
                before: 30 * MIB,
                peak: 40 * MIB,
                after: 35 * MIB,
                margin: 32 * MIB,
                peak_cap: 100 * MIB,
            },
            shutdown: ShutdownStats {
                answered_after_sigterm: 64,
                answers: [(OK.to_owned(), 100)].into(),
                exit_success: true,
                ..ShutdownStats::default()
            },
            failures: Vec::new(),
        }
    }

    #[test]
    fn every_kind_of_misbehaviour_is_a_failure() {
        let o = SoakOptions::new(SoakMode::Short, PathBuf::from("x"));
        assert_eq!(check(&passing(&o), &o), Vec::<String>::new());
        type Spoil = fn(&mut SoakReport);
        let cases: [(Spoil, &str); 9] = [
            (
                |r| r.memory.after = r.memory.before + r.memory.margin + 1,
                "memory after the run",
            ),
            (|r| r.memory.peak = r.memory.peak_cap + 1, "peak memory"),
            (
                |r| {
                    r.legit.outcomes.insert("503 overloaded".into(), 1);
                },
                "legitimate requests failed: 503 overloaded ×1",
            ),
            (|r| r.legit.requests = 10, "only 10 of"),
            (
                |r| r.hostile.slowloris.closed_by_header_timeout = 0,
                "no slowloris connection",
            ),
            (
                |r| {
                    r.hostile.decode_amp.outcomes.insert(OK.into(), 1);
                },
                "decode-amplification uploads got other answers: 200",
            ),
            (
                |r| r.hostile.slow_body.outcomes.clear(),
                "no slow body was answered",
            ),
            (|r| r.shutdown.cut_off = 2, "2 requests written whole"),
            (|r| r.shutdown.answered_after_sigterm = 0, "tested nothing"),
        ];
        for (spoil, why) in cases {
            let mut r = passing(&o);
            spoil(&mut r);
            let failures = check(&r, &o);
            assert!(
                failures.iter().any(|f| f.contains(why)),
                "{why}: {failures:?}"
            );
        }
    }

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
