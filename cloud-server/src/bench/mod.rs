//! The load generator behind `scrim-cloud bench`.
//!
//! Starts the server in-process on `127.0.0.1:0` (it never talks to another host), once per
//! engine asked for (tract, onnxruntime), sends `POST /v1/classify` from 1, 4 and 16 concurrent
//! keep-alive clients, and measures, in the same run, the raw batched throughput of the same
//! model without HTTP. With `peer`, another server on loopback (the Python server of
//! `bench/peer_server.py`, started by `scrim bench`) gets the same load: every round measures
//! each level on every target in turn, so all of them see the same machine, and the report gives
//! medians over rounds. Every phase is bounded by a request count and a duration. It reports
//! numbers; it asserts nothing about them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use scrim_core::{Model, fixtures};

use crate::load::{self, Plan, sample_png};
use crate::server::{RunningServer, spawn_state};
use crate::{AppState, Config, EngineKind, Error, Result};

mod level;
mod raw;
mod report;
pub use report::{BenchReport, LevelStats, RawStats, TargetStats};

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
    /// Inference threads, for the server and the raw measurement alike (0: cores − 1, at
    /// least 1).
    pub workers: usize,
    /// The engines served (one in-process server each) and measured raw; tract is always
    /// measured raw, the reference of the server/raw ratio.
    pub engines: Vec<EngineKind>,
    /// The onnxruntime library for [`EngineKind::Ort`].
    pub ort_library: Option<PathBuf>,
    /// Other servers on loopback that answer `POST /v1/classify` like scrim-cloud, by name,
    /// measured with the same load in the same rounds ([`PEER`] is the Python peer the ratios
    /// compare with).
    pub peers: Vec<(String, SocketAddr)>,
    /// Rounds: each measures every level on every target once; the report gives medians.
    pub rounds: usize,
    /// Slices of the highest level, with raw tract measured before, between and after them
    /// (the reference of the server/raw ratio).
    pub slices: usize,
    /// Shortest slice: more requests are sent until it has passed, so that a slice's start and
    /// end (clients starting, the last batches draining) stay a small part of it. At 2000
    /// requests a slice of a 6,000 images/s server lasted 55 ms, and the server was in the model
    /// 92% of the level against 96% in slices of a second (docs/PERFORMANCE.md §1k).
    pub min_slice: Duration,
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
            engines: vec![server.engine],
            ort_library: server.ort_library,
            peers: Vec::new(),
            rounds: 3,
            slices: 6,
            min_slice: Duration::from_millis(250),
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
            rounds: 1,
            slices: 2,
            min_slice: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// The name of the peer in reports.
pub const PEER: &str = "peer";

/// One server under load: a scrim-cloud engine in-process, or the peer's address.
struct Target {
    name: String,
    engine: Option<String>,
    addr: SocketAddr,
    state: Option<AppState>,
    server: Option<RunningServer>,
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
    if options.engines.is_empty() {
        return Err(Error::Config("bench needs at least one engine".into()));
    }
    let mut config = Config::new(options.model.clone().unwrap_or_else(|| "<fixture>".into()));
    config.listen = ([127, 0, 0, 1], 0).into();
    config.max_batch = options.max_batch;
    config.max_wait_ms = options.max_wait_ms;
    config.workers = options.workers;
    config.ort_library.clone_from(&options.ort_library);
    config.queue = config
        .queue
        .max(4 * options.clients.iter().copied().max().unwrap_or(1));
    config.request_timeout_ms = 60_000;
    let workers = config.worker_threads();

    // One model per engine; tract's is always there, for the raw reference.
    let mut engines = options.engines.clone();
    engines.dedup();
    let mut models: Vec<(EngineKind, Model)> = Vec::new();
    for kind in engines.iter().copied().chain([EngineKind::Tract]) {
        if models.iter().any(|(k, _)| *k == kind) {
            continue;
        }
        config.engine = kind;
        models.push((kind, load_model(options, &config)?));
    }
    let Some((_, first)) = models.first() else {
        return Err(Error::Config("bench needs at least one engine".into()));
    };
    let manifest = first.manifest().clone();
    let upload = Bytes::from(sample_png(manifest.input)?);

    let mut targets = Vec::new();
    for kind in &engines {
        let Some((_, model)) = models.iter().find(|(k, _)| k == kind) else {
            continue;
        };
        config.engine = *kind;
        let state = AppState::with_model(&config, model.clone())?;
        let server = spawn_state(state.clone(), config.listen, Duration::from_secs(5))?;
        targets.push(Target {
            name: format!("scrim-cloud ({})", model.engine().name()),
            engine: Some(model.engine().name().to_string()),
            addr: server.addr,
            state: Some(state),
            server: Some(server),
        });
    }
    for (name, addr) in &options.peers {
        targets.push(Target {
            name: name.clone(),
            engine: None,
            addr: *addr,
            state: None,
            server: None,
        });
    }
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("scrim-bench-client")
        .build()
        .map_err(|e| Error::Bench(format!("cannot start the client runtime: {e}")))?;

    // samples[target][level] = one LevelStats per round; raw_rounds[round] = that round's raw
    // measurements.
    let mut samples: Vec<Vec<Vec<LevelStats>>> =
        vec![vec![Vec::new(); options.clients.len()]; targets.len()];
    let rounds = options.rounds.max(1);
    let top = options.clients.iter().copied().max().unwrap_or(1);
    let top_level = (0..options.clients.len())
        .max_by_key(|&i| options.clients[i])
        .unwrap_or(0);
    let raw_batches = [1, top.min(options.max_batch), options.max_batch];
    let raw_slice = (options.raw_duration / rounds as u32).max(Duration::from_millis(100));
    let mut raw_rounds: Vec<Vec<RawStats>> = Vec::with_capacity(rounds);
    // The reference batch, chosen once; then references[target][round]: raw tract between the
    // slices of that target's highest level in that round.
    let tract = models
        .iter()
        .find(|(k, _)| *k == EngineKind::Tract)
        .map(|(_, m)| m)
        .ok_or_else(|| Error::Config("bench needs tract for the raw reference".into()))?;
    let calibration = (options.raw_duration / 9).max(Duration::from_millis(20));
    let reference_batch = raw::reference_batch(tract, raw_batches, workers, calibration, 3)?;
    let slicing = level::Slicing {
        model: tract,
        batch: reference_batch,
        threads: workers,
        slices: options.slices.max(1),
        min_slice: options.min_slice,
    };
    let mut references: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); targets.len()];
    for round in 0..rounds {
        for (li, &n) in options.clients.iter().enumerate() {
            for (ti, target) in targets.iter().enumerate() {
                let plan = |requests| Plan {
                    addr: target.addr,
                    clients: n,
                    requests,
                    min_duration: Duration::ZERO,
                    max_duration: options.max_duration,
                };
                if round == 0 && options.warmup > 0 {
                    clients.block_on(load::drive(plan(options.warmup), &upload))?;
                }
                // The host's speed drifts within a fraction of a second: the highest level is
                // cut into slices with raw tract between them, so its ratio compares like
                // with like.
                let sliced = (li == top_level).then_some(&slicing);
                let measured = level::measure(
                    &clients,
                    plan(options.requests),
                    &upload,
                    target.state.as_ref(),
                    sliced,
                )?;
                references[ti].extend(measured.reference);
                samples[ti][li].push(measured.stats);
            }
        }
        // Raw throughput at every batch in the same round, after the servers: the raw table.
        raw_rounds.push(raw::measure_round(
            &models,
            raw_batches,
            workers,
            raw_slice,
        )?);
    }
    drop(clients);
    let stats: Vec<TargetStats> = targets
        .iter_mut()
        .zip(samples)
        .zip(&references)
        .map(|((target, levels), references)| {
            if let Some(server) = target.server.take() {
                server.shutdown();
            }
            let over_raw = raw::paired_ratios(levels.get(top_level).map(Vec::as_slice), references);
            TargetStats {
                name: target.name.clone(),
                engine: target.engine.clone(),
                levels: levels.iter().map(|rounds| median_level(rounds)).collect(),
                over_raw_tract: (!over_raw.is_empty()).then(|| raw::median(over_raw.clone())),
                over_raw_tract_rounds: over_raw,
                raw_tract_rounds: references.clone(),
                top_rounds: levels.get(top_level).cloned().unwrap_or_default(),
            }
        })
        .collect();

    let raw = raw::merge(&raw_rounds);
    let mut kernels = Vec::new();
    for (_, model) in &models {
        for plan in model.kernels() {
            let methods: Vec<&str> = plan.convolutions.iter().map(|(_, m)| m.as_str()).collect();
            let batch = plan.batch.map_or("N".to_string(), |b| b.to_string());
            let pools: Vec<&str> = plan.pools.iter().map(|(_, m)| m.as_str()).collect();
            let pools = if pools.is_empty() {
                String::new()
            } else {
                format!("; max pooling: {}", pools.join(", "))
            };
            kernels.push(format!("batch {batch}: {}{pools}", methods.join(", ")));
        }
        let choices = model.plan_choices();
        if !choices.is_empty() {
            let timed: Vec<String> = choices
                .iter()
                .map(|c| {
                    let verdict = if c.kept { "kept" } else { "dropped" };
                    format!(
                        "batch {} {:.0} µs/image ({verdict})",
                        c.batch, c.us_per_image
                    )
                })
                .collect();
            kernels.push(format!(
                "timed at load, a batch over one kept only if faster per image than batch 1: {}",
                timed.join(", ")
            ));
        }
    }
    Ok(BenchReport {
        model: manifest.name.clone(),
        input: manifest.input.describe(),
        max_batch: options.max_batch,
        max_wait_ms: options.max_wait_ms,
        workers,
        rounds: options.rounds.max(1),
        reference_batch,
        slices: slicing.slices,
        levels: stats.first().map(|t| t.levels.clone()).unwrap_or_default(),
        targets: stats,
        raw,
        kernels,
    })
}

/// The model of `options` (or the fixture recognizer) in `config`'s engine, planned as the
/// server plans it.
fn load_model(options: &BenchOptions, config: &Config) -> Result<Model> {
    let (engine, batch) = config.engine()?;
    match &options.model {
        Some(path) => Model::load_path_with(path, batch, &engine).map_err(Error::Model),
        None => {
            let labels = ["class-0", "class-1", "class-2", "class-3"];
            let (onnx, manifest) = fixtures::recognizer(options.size, &labels);
            Model::load_with(&onnx, manifest, batch, &engine).map_err(Error::Model)
        }
    }
}

/// Medians over rounds of each figure; counts and durations summed.
fn median_level(rounds: &[LevelStats]) -> LevelStats {
    let median = |f: fn(&LevelStats) -> f64| raw::median(rounds.iter().map(f).collect());
    LevelStats {
        clients: rounds.first().map_or(0, |l| l.clients),
        ok: rounds.iter().map(|l| l.ok).sum(),
        errors: rounds.iter().map(|l| l.errors).sum(),
        seconds: rounds.iter().map(|l| l.seconds).sum(),
        throughput: median(|l| l.throughput),
        p50_ms: median(|l| l.p50_ms),
        p95_ms: median(|l| l.p95_ms),
        p99_ms: median(|l| l.p99_ms),
        mean_batch: median(|l| l.mean_batch),
        model_seconds: rounds.iter().map(|l| l.model_seconds).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_level_s_slices_last_at_least_the_shortest_slice() {
        let mut options = BenchOptions::quick(4);
        options.size = 16;
        options.clients = vec![1, 2];
        options.raw_duration = Duration::from_millis(50);
        options.workers = 1;
        options.min_slice = Duration::from_millis(150);
        let report = run(&options).expect("bench");
        let (low, top) = (&report.levels[0], &report.levels[1]);
        // 4 requests take milliseconds: the lower level stops there, each of the top level's
        // two slices keeps sending for 150 ms.
        assert_eq!(low.ok, 4, "{low:?}");
        assert!(top.seconds >= 0.3 && top.ok > 4, "{top:?}");
    }

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
        let paired = &report.targets[0].over_raw_tract_rounds;
        assert_eq!(paired.len(), 1, "one ratio per round");
        let raw_between = &report.targets[0].raw_tract_rounds;
        assert!(
            raw_between.len() == 1 && raw_between[0] > 0.0,
            "raw tract between the slices: {raw_between:?}"
        );
        assert!(
            [1, 3, options.max_batch].contains(&report.reference_batch),
            "the reference batch is one of the raw batches: {}",
            report.reference_batch
        );
        assert_eq!(report.slices, 2);
        let top = &report.targets[0].top_rounds[0];
        assert!(
            top.model_seconds > 0.0 && top.model_seconds < top.seconds,
            "the inference thread's time in the model: {top:?}"
        );
        assert_eq!(report.paired_ratio(), Some(paired[0]));
        let text = report.to_string();
        assert!(
            text.contains("scrim-cloud (tract) / raw tract at 3 clients"),
            "{text}"
        );
        assert!(
            text.contains("batch 1: "),
            "the plans' convolutions: {text}"
        );
        assert_eq!(report.targets.len(), 1, "no peer given");
    }

    #[test]
    fn a_peer_gets_the_same_load_in_every_round() {
        // Another scrim-cloud stands in for the Python peer: anything that answers
        // POST /v1/classify like the server does.
        let labels = ["class-0", "class-1", "class-2", "class-3"];
        let (onnx, manifest) = fixtures::recognizer(16, &labels);
        let model = Model::load(&onnx, manifest, scrim_core::BatchMode::Dynamic).expect("model");
        let mut config = Config::new("<fixture>");
        config.listen = ([127, 0, 0, 1], 0).into();
        config.workers = 1;
        let state = AppState::with_model(&config, model).expect("state");
        let peer = spawn_state(state, config.listen, Duration::from_secs(1)).expect("peer");

        let mut options = BenchOptions::quick(10);
        options.size = 16;
        options.clients = vec![1, 2];
        options.raw_duration = Duration::from_millis(50);
        options.workers = 1;
        options.rounds = 2;
        options.peers = vec![(PEER.to_string(), peer.addr)];
        let report = run(&options).expect("bench");
        peer.shutdown();
        let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["scrim-cloud (tract)", PEER]);
        for target in &report.targets {
            for level in &target.levels {
                assert_eq!(level.ok, 20, "10 requests in each of 2 rounds: {level:?}");
            }
            assert_eq!(target.over_raw_tract_rounds.len(), 2, "{target:?}");
            assert_eq!(
                target.top_rounds.len(),
                2,
                "the top level of each round: {target:?}"
            );
        }
        for raw in &report.raw {
            assert!(raw.images > 0 && raw.throughput > 0.0, "{raw:?}");
        }
        assert!(report.compare("scrim-cloud (tract)", PEER, 2).is_some());
        assert!(
            report.to_string().contains("/ peer at 2 clients"),
            "{report}"
        );
    }
}
