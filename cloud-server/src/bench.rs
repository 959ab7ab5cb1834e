//! The load generator behind `scrim-cloud bench`.
//!
//! Starts the server in-process on `127.0.0.1:0` (it never talks to another host), sends
//! `POST /v1/classify` from 1, 4 and 16 concurrent keep-alive clients, and measures, in the same
//! run, the raw batched tract throughput of the same model without HTTP. Every phase is bounded by
//! a request count and a duration. It reports numbers; it asserts nothing about them.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use scrim_core::{BatchMode, ImageTensor, Model, fixtures};
use serde::Serialize;

use crate::load::{self, Plan, percentile, sample_png, sample_tensor};
use crate::server::spawn_state;
use crate::{AppState, Config, Error, Result};

/// What to measure. [`BenchOptions::default`] is the full run; [`BenchOptions::quick`] a smoke
/// test that takes a few seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// A recognizer ONNX (manifest beside it); `None` uses the fixture recognizer.
    pub model: Option<PathBuf>,
    /// Input size of the fixture recognizer.
    pub size: usize,
    /// Concurrency levels to measure.
    pub clients: Vec<usize>,
    /// Requests per concurrency level.
    pub requests: usize,
    /// Time cap per concurrency level.
    pub max_duration: Duration,
    /// Unmeasured requests before each level.
    pub warmup: usize,
    /// Duration of each raw-throughput measurement.
    pub raw_duration: Duration,
    /// Server batching: largest batch.
    pub max_batch: usize,
    /// Server batching: longest wait for a batch to fill, in milliseconds.
    pub max_wait_ms: u64,
    /// Inference threads, for the server and the raw measurement alike (0: one per core).
    pub workers: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let server = Config::default();
        Self {
            model: None,
            size: 32,
            clients: vec![1, 4, 16],
            requests: 2000,
            max_duration: Duration::from_secs(20),
            warmup: 50,
            raw_duration: Duration::from_secs(3),
            max_batch: server.max_batch,
            max_wait_ms: server.max_wait_ms,
            workers: server.workers,
        }
    }
}

impl BenchOptions {
    /// A smoke-test run: `requests` per level, no warm-up, short raw measurement, 5 s cap.
    pub fn quick(requests: usize) -> Self {
        Self {
            requests,
            warmup: 0,
            max_duration: Duration::from_secs(5),
            raw_duration: Duration::from_millis(300),
            ..Self::default()
        }
    }
}

/// Results of one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelStats {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests answered 200.
    pub ok: usize,
    /// Requests that failed (non-200 or connection error).
    pub errors: usize,
    /// Wall time of the level.
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latency percentiles of successful requests, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean images per model run during the level.
    pub mean_batch: f64,
}

/// Raw model throughput without HTTP.
#[derive(Debug, Clone, Serialize)]
pub struct RawStats {
    /// Images per run.
    pub batch: usize,
    /// Threads running batches concurrently.
    pub threads: usize,
    /// Images classified.
    pub images: usize,
    /// Images per second.
    pub throughput: f64,
}

/// Everything one bench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Manifest name.
    pub model: String,
    /// Input size, `CxHxW`.
    pub input: String,
    /// Server batching.
    pub max_batch: usize,
    /// Server batching.
    pub max_wait_ms: u64,
    /// Inference threads.
    pub workers: usize,
    /// One entry per concurrency level.
    pub levels: Vec<LevelStats>,
    /// Raw throughput at batch 1, at the highest concurrency (capped by `max_batch`) and at
    /// `max_batch`.
    pub raw: Vec<RawStats>,
}

impl BenchReport {
    /// The fastest raw measurement (tract is not always faster on larger batches).
    pub fn best_raw(&self) -> Option<&RawStats> {
        self.raw
            .iter()
            .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
    }

    /// Server throughput at `clients` over the best raw tract throughput.
    pub fn ratio(&self, clients: usize) -> Option<f64> {
        let server = self
            .levels
            .iter()
            .find(|l| l.clients == clients)?
            .throughput;
        let raw = self.best_raw()?.throughput;
        (raw > 0.0).then(|| server / raw)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model {} ({}), max_batch {}, max_wait {} ms, {} inference threads, loopback",
            self.model, self.input, self.max_batch, self.max_wait_ms, self.workers
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>7} {:>8} {:>6} {:>10} {:>8} {:>8} {:>8} {:>10}",
            "clients", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "mean batch"
        )?;
        for l in &self.levels {
            writeln!(
                f,
                "{:>7} {:>8} {:>6} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>10.2}",
                l.clients, l.ok, l.errors, l.throughput, l.p50_ms, l.p95_ms, l.p99_ms, l.mean_batch
            )?;
        }
        writeln!(f)?;
        writeln!(f, "raw tract, no HTTP:")?;
        writeln!(
            f,
            "{:>7} {:>8} {:>10} {:>10}",
            "batch", "threads", "images", "images/s"
        )?;
        for r in &self.raw {
            writeln!(
                f,
                "{:>7} {:>8} {:>10} {:>10.1}",
                r.batch, r.threads, r.images, r.throughput
            )?;
        }
        let top = self.levels.iter().map(|l| l.clients).max();
        if let (Some(top), Some(best)) = (top, self.best_raw())
            && let Some(ratio) = self.ratio(top)
        {
            writeln!(f)?;
            writeln!(
                f,
                "server/raw at {top} clients: {ratio:.2} (against the best raw figure, batch \
                 {}; goal >= 0.8)",
                best.batch
            )?;
        }
        Ok(())
    }
}

/// Runs the benchmark.
///
/// # Errors
/// [`Error::Model`] / [`Error::Config`] if the model cannot be served, [`Error::Bench`] if the
/// loopback server cannot be reached.
pub fn run(options: &BenchOptions) -> Result<BenchReport> {
    if options.clients.is_empty() || options.clients.iter().any(|&c| c == 0 || c > 1024) {
        return Err(Error::Config("bench clients must be in 1..=1024".into()));
    }
    let model = match &options.model {
        Some(path) => Model::load_path(path, BatchMode::Dynamic).map_err(Error::Model)?,
        None => {
            let labels = ["class-0", "class-1", "class-2", "class-3"];
            let (onnx, manifest) = fixtures::recognizer(options.size, &labels);
            Model::load(&onnx, manifest, BatchMode::Dynamic).map_err(Error::Model)?
        }
    };
    let mut config = Config::new(options.model.clone().unwrap_or_else(|| "<fixture>".into()));
    config.listen = ([127, 0, 0, 1], 0).into();
    config.max_batch = options.max_batch;
    config.max_wait_ms = options.max_wait_ms;
    config.workers = options.workers;
    config.queue = config
        .queue
        .max(4 * options.clients.iter().copied().max().unwrap_or(1));
    config.request_timeout_ms = 60_000;
    let workers = config.worker_threads();
    let state = AppState::with_model(&config, model.clone())?;
    let manifest = model.manifest().clone();
    let upload = Bytes::from(sample_png(manifest.input)?);
    let server = spawn_state(state.clone(), config.listen, Duration::from_secs(5))?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("scrim-bench-client")
        .build()
        .map_err(|e| Error::Bench(format!("cannot start the client runtime: {e}")))?;

    let mut levels = Vec::new();
    for &n in &options.clients {
        let plan = |requests| Plan {
            addr: server.addr,
            clients: n,
            requests,
            min_duration: Duration::ZERO,
            max_duration: options.max_duration,
        };
        if options.warmup > 0 {
            clients.block_on(load::drive(plan(options.warmup), &upload))?;
        }
        let (batches_before, images_before) = state_batches(&state);
        let started = Instant::now();
        let mut tally = clients.block_on(load::drive(plan(options.requests), &upload))?;
        let seconds = started.elapsed().as_secs_f64();
        let (batches_after, images_after) = state_batches(&state);
        tally.latencies_ms.sort_by(f64::total_cmp);
        let batches = batches_after.saturating_sub(batches_before);
        levels.push(LevelStats {
            clients: n,
            ok: tally.ok(),
            errors: tally.errors(),
            seconds,
            throughput: tally.ok() as f64 / seconds.max(1e-9),
            p50_ms: percentile(&tally.latencies_ms, 0.50),
            p95_ms: percentile(&tally.latencies_ms, 0.95),
            p99_ms: percentile(&tally.latencies_ms, 0.99),
            mean_batch: if batches == 0 {
                0.0
            } else {
                images_after.saturating_sub(images_before) as f64 / batches as f64
            },
        });
    }
    server.shutdown();
    drop(clients);

    let mut raw = Vec::new();
    let top = options.clients.iter().copied().max().unwrap_or(1);
    for batch in [1, top.min(options.max_batch), options.max_batch] {
        if raw.iter().any(|r: &RawStats| r.batch == batch) {
            continue;
        }
        raw.push(raw_throughput(
            &model,
            batch,
            workers,
            options.raw_duration,
        )?);
    }
    Ok(BenchReport {
        model: manifest.name.clone(),
        input: manifest.input.describe(),
        max_batch: options.max_batch,
        max_wait_ms: options.max_wait_ms,
        workers,
        levels,
        raw,
    })
}

fn state_batches(state: &AppState) -> (u64, u64) {
    state.metrics().batch_totals()
}

/// Images per second of `threads` threads each running batches of `batch` for `duration`.
fn raw_throughput(
    model: &Model,
    batch: usize,
    threads: usize,
    duration: Duration,
) -> Result<RawStats> {
    let one = sample_tensor(model.manifest().input);
    let input = ImageTensor::stack(&vec![one; batch]).map_err(Error::Model)?;
    // One untimed run so that lazy initialisation is not measured.
    model.run(&input).map_err(Error::Model)?;
    let started = Instant::now();
    let counts: Vec<Result<usize>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut images = 0;
                    while started.elapsed() < duration {
                        model.run(&input).map_err(Error::Model)?;
                        images += batch;
                    }
                    Ok(images)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Bench("raw thread panicked".into())))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let images = counts.into_iter().sum::<Result<usize>>()?;
    Ok(RawStats {
        batch,
        threads: threads.max(1),
        images,
        throughput: images as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_run_reports_every_level_and_the_ratio() {
        let mut options = BenchOptions::quick(12);
        options.size = 16;
        options.clients = vec![1, 3];
        options.raw_duration = Duration::from_millis(50);
        options.workers = 1;
        let report = run(&options).expect("bench");
        assert_eq!(report.levels.len(), 2);
        for level in &report.levels {
            assert_eq!(level.ok + level.errors, 12, "{level:?}");
            assert_eq!(level.errors, 0, "{level:?}");
        }
        assert!(report.ratio(3).is_some());
        let text = report.to_string();
        assert!(text.contains("server/raw at 3 clients"), "{text}");
    }
}
