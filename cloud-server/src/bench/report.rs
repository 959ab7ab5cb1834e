//! What `scrim-cloud bench` reports: per-level statistics of each target, the raw batched
//! throughput, and the table that puts them side by side.

use std::fmt;

use serde::Serialize;

use super::PEER;

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
    /// Seconds the server's inference threads spent in model runs during the level (0 for a
    /// peer): with `seconds` and `ok`, how busy they were and how fast the model ran in them.
    pub model_seconds: f64,
}

/// One server measured: a scrim-cloud engine, or the peer.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStats {
    /// `scrim-cloud (tract)`, `scrim-cloud (onnxruntime)` or `peer`.
    pub name: String,
    /// The engine of a scrim-cloud target (`None` for the peer).
    pub engine: Option<String>,
    /// One entry per concurrency level: medians over rounds (counts summed).
    pub levels: Vec<LevelStats>,
    /// The highest level's images/s over raw tract's images/s at the reference batch, measured
    /// between the level's slices, median over rounds (`None` when raw tract measured nothing).
    pub over_raw_tract: Option<f64>,
    /// That ratio in each round.
    pub over_raw_tract_rounds: Vec<f64>,
    /// Raw tract's images/s between the slices of the highest level, in each round (the
    /// references of those ratios).
    pub raw_tract_rounds: Vec<f64>,
    /// The highest level as measured in each round (every target measures it in the same
    /// rounds, one after another, so two targets' ratios can be paired by round).
    pub top_rounds: Vec<LevelStats>,
}

/// Raw model throughput without HTTP.
#[derive(Debug, Clone, Serialize)]
pub struct RawStats {
    /// `tract` or `onnxruntime`.
    pub engine: String,
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
    /// Rounds measured.
    pub rounds: usize,
    /// The batch raw tract was fastest at before the rounds: the reference of the server/raw
    /// ratios.
    pub reference_batch: usize,
    /// Slices of each target's highest level, with raw tract at the reference batch before,
    /// between and after them.
    pub slices: usize,
    /// The first scrim-cloud target's levels (what earlier reports had).
    pub levels: Vec<LevelStats>,
    /// Every target: each scrim-cloud engine, then the peer.
    pub targets: Vec<TargetStats>,
    /// Raw throughput per engine at batch 1, at the highest concurrency (capped by
    /// `max_batch`) and at `max_batch`: measured in every round after the servers, the median
    /// over rounds (images summed). The ratios use their own measurements, between the slices of
    /// each server's highest level ([`TargetStats::over_raw_tract_rounds`]).
    pub raw: Vec<RawStats>,
    /// What the convolutions of each tract plan run as (`batch: method, method, …`).
    pub kernels: Vec<String>,
}

impl BenchReport {
    /// The fastest raw tract measurement (tract is not always faster on larger batches).
    pub fn best_raw(&self) -> Option<&RawStats> {
        self.best_raw_of("tract")
    }

    /// The fastest raw measurement of `engine`.
    pub fn best_raw_of(&self, engine: &str) -> Option<&RawStats> {
        self.raw
            .iter()
            .filter(|r| r.engine == engine)
            .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
    }

    /// The first server's throughput at its highest level over raw tract's throughput measured
    /// between its slices, median over rounds.
    pub fn paired_ratio(&self) -> Option<f64> {
        self.targets.first()?.over_raw_tract
    }

    /// The first server's throughput at `clients` over the best raw tract throughput (medians
    /// over rounds of each).
    pub fn ratio(&self, clients: usize) -> Option<f64> {
        let server = self
            .levels
            .iter()
            .find(|l| l.clients == clients)?
            .throughput;
        let raw = self.best_raw()?.throughput;
        (raw > 0.0).then(|| server / raw)
    }

    fn level(&self, target: &str, clients: usize) -> Option<&LevelStats> {
        self.targets
            .iter()
            .find(|t| t.name == target)?
            .levels
            .iter()
            .find(|l| l.clients == clients)
    }

    /// `(images/s ratio, p99 ratio)` of target `a` over target `b` at `clients`: at the highest
    /// level, the medians of the rounds' ratios (both measured in the same round); elsewhere
    /// the ratios of the medians.
    pub fn compare(&self, a: &str, b: &str, clients: usize) -> Option<(f64, f64)> {
        let rounds = |name: &str| {
            self.targets
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.top_rounds.as_slice())
                .filter(|r| r.first().is_some_and(|l| l.clients == clients))
        };
        if let (Some(ra), Some(rb)) = (rounds(a), rounds(b))
            && ra.len() == rb.len()
            && rb.iter().all(|l| l.throughput > 0.0 && l.p99_ms > 0.0)
        {
            let ratio = |f: fn(&LevelStats) -> f64| {
                super::raw::median(ra.iter().zip(rb).map(|(x, y)| f(x) / f(y)).collect())
            };
            return Some((ratio(|l| l.throughput), ratio(|l| l.p99_ms)));
        }
        let (a, b) = (self.level(a, clients)?, self.level(b, clients)?);
        (b.throughput > 0.0 && b.p99_ms > 0.0)
            .then(|| (a.throughput / b.throughput, a.p99_ms / b.p99_ms))
    }

    /// Where a scrim-cloud target's time went at its highest level, over all rounds: how much
    /// of it its inference threads spent in the model, and the model's time per image there
    /// against raw tract's between the slices.
    fn time_split(&self, t: &TargetStats) -> Option<String> {
        let sum = |f: fn(&LevelStats) -> f64| t.top_rounds.iter().map(f).sum::<f64>();
        let (model, seconds, images) = (
            sum(|l| l.model_seconds),
            sum(|l| l.seconds),
            sum(|l| l.ok as f64),
        );
        let raw = super::raw::median(t.raw_tract_rounds.clone());
        if model <= 0.0 || seconds <= 0.0 || images <= 0.0 || raw <= 0.0 {
            return None;
        }
        let in_model = 1e6 * model / images;
        let raw_us = 1e6 / raw;
        Some(format!(
            "its inference threads were in the model {:.1}% of the level, at {in_model:.0} µs \
             per image against raw tract's {raw_us:.0} ({:.2}×)",
            100.0 * model / (seconds * self.workers.max(1) as f64),
            in_model / raw_us
        ))
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model {} ({}), max_batch {}, max_wait {} ms, {} inference threads, loopback, \
             {} round(s), medians over rounds",
            self.model, self.input, self.max_batch, self.max_wait_ms, self.workers, self.rounds
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<26} {:>7} {:>8} {:>6} {:>10} {:>8} {:>8} {:>8} {:>10}",
            "server",
            "clients",
            "ok",
            "errors",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "mean batch"
        )?;
        for t in &self.targets {
            for l in &t.levels {
                writeln!(
                    f,
                    "{:<26} {:>7} {:>8} {:>6} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>10.2}",
                    t.name,
                    l.clients,
                    l.ok,
                    l.errors,
                    l.throughput,
                    l.p50_ms,
                    l.p95_ms,
                    l.p99_ms,
                    l.mean_batch
                )?;
            }
        }
        writeln!(f)?;
        writeln!(f, "raw, no HTTP:")?;
        writeln!(
            f,
            "{:<12} {:>7} {:>8} {:>10} {:>10}",
            "engine", "batch", "threads", "images", "images/s"
        )?;
        for r in &self.raw {
            writeln!(
                f,
                "{:<12} {:>7} {:>8} {:>10} {:>10.1}",
                r.engine, r.batch, r.threads, r.images, r.throughput
            )?;
        }
        if !self.kernels.is_empty() {
            writeln!(f)?;
            writeln!(f, "tract's convolutions and max poolings per plan:")?;
            for k in &self.kernels {
                writeln!(f, "  {k}")?;
            }
        }
        let Some(top) = self.levels.iter().map(|l| l.clients).max() else {
            return Ok(());
        };
        writeln!(f)?;
        for t in self.targets.iter().filter(|t| t.engine.is_some()) {
            let Some(level) = self.level(&t.name, top) else {
                continue;
            };
            if let Some(paired) = t.over_raw_tract {
                let rounds: Vec<String> = t
                    .over_raw_tract_rounds
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect();
                writeln!(
                    f,
                    "{} / raw tract at {top} clients: {paired:.2} (median over rounds of each \
                     round's ratio to raw tract at batch {} (its fastest before the rounds), \
                     measured between the level's {} slices: {}; goal >= 0.9)",
                    t.name,
                    self.reference_batch,
                    self.slices,
                    rounds.join(", ")
                )?;
                if let Some(split) = self.time_split(t) {
                    writeln!(f, "  {split}")?;
                }
            } else if let Some(raw) = self.best_raw().filter(|r| r.throughput > 0.0) {
                writeln!(
                    f,
                    "{} / raw tract at {top} clients: {:.2} (best raw tract: batch {}; goal >= 0.9)",
                    t.name,
                    level.throughput / raw.throughput,
                    raw.batch
                )?;
            }
            if let Some(engine) = t.engine.as_deref().filter(|e| *e != "tract")
                && let Some(raw) = self.best_raw_of(engine).filter(|r| r.throughput > 0.0)
            {
                writeln!(
                    f,
                    "{} / raw {engine} at {top} clients: {:.2}",
                    t.name,
                    level.throughput / raw.throughput
                )?;
            }
            if let Some((speed, p99)) = self.compare(&t.name, PEER, top) {
                writeln!(
                    f,
                    "{} / peer at {top} clients: {speed:.2} in req/s (goal >= 2), p99 {:.2} ms \
                     against {:.2} ms (ratio {p99:.2}, goal < 1; both ratios medians of the \
                     rounds' ratios)",
                    t.name,
                    level.p99_ms,
                    self.level(PEER, top).map_or(0.0, |l| l.p99_ms)
                )?;
            }
        }
        Ok(())
    }
}
