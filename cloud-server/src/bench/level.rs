//! One concurrency level on one target. The highest level is cut into slices with raw tract
//! measured between them, so that the server and its reference see the same moments of a host
//! whose speed drifts within a fraction of a second.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use scrim_core::Model;
use tokio::runtime::Runtime;

use super::{LevelStats, raw};
use crate::AppState;
use crate::Result;
use crate::load::{self, Plan, Tally, percentile};

/// The first raw slice, before any server slice has said how long a slice lasts.
const FIRST_RAW: Duration = Duration::from_millis(200);
/// Bounds of a raw slice (each lasts as long as the server slice before it).
const RAW_SLICE: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// Raw tract interleaved with a level: one model at one batch, `slices` server slices.
pub(super) struct Slicing<'a> {
    pub(super) model: &'a Model,
    pub(super) batch: usize,
    pub(super) threads: usize,
    pub(super) slices: usize,
    /// Shortest server slice ([`super::BenchOptions::min_slice`]).
    pub(super) min_slice: Duration,
}

/// A level as measured, with raw tract's images/s over the same moments when sliced.
pub(super) struct Measured {
    pub(super) stats: LevelStats,
    pub(super) reference: Option<f64>,
}

/// Sends `plan` to its target, in `slicing.slices` parts with raw tract before, between and
/// after them when `slicing` is given. The reference is the time-weighted mean, over the server
/// slices, of the two raw measurements around each.
///
/// # Errors
/// As [`load::drive`] and [`raw::throughput`].
pub(super) fn measure(
    clients: &Runtime,
    plan: Plan,
    upload: &Bytes,
    state: Option<&AppState>,
    slicing: Option<&Slicing<'_>>,
) -> Result<Measured> {
    let raw = |s: &Slicing<'_>, duration| -> Result<f64> {
        Ok(raw::throughput(s.model, s.batch, s.threads, duration)?.throughput)
    };
    let slices = slicing.map_or(1, |s| s.slices.max(1));
    let per_slice = plan.requests.div_ceil(slices);
    let before = state.map(state_batches);
    let in_model = state.map(|s| s.metrics().inference_seconds());
    let mut previous = slicing.map(|s| raw(s, FIRST_RAW)).transpose()?;
    let mut tally = Tally::default();
    let mut seconds = 0.0;
    let mut raw_images = 0.0;
    let mut left = plan.requests;
    while left > 0 {
        let requests = per_slice.min(left);
        left -= requests;
        let slice = Plan {
            requests,
            max_duration: plan.max_duration / slices as u32,
            min_duration: slicing.map_or(plan.min_duration, |s| plan.min_duration.max(s.min_slice)),
            ..plan
        };
        let started = Instant::now();
        tally.merge(clients.block_on(load::drive(slice, upload))?);
        let took = started.elapsed();
        seconds += took.as_secs_f64();
        if let (Some(s), Some(before_slice)) = (slicing, previous) {
            let after_slice = raw(s, took.clamp(RAW_SLICE.0, RAW_SLICE.1))?;
            raw_images += took.as_secs_f64() * (before_slice + after_slice) / 2.0;
            previous = Some(after_slice);
        }
    }
    let after = state.map(state_batches);
    let model_seconds = match (state, in_model) {
        (Some(s), Some(before)) => s.metrics().inference_seconds() - before,
        _ => 0.0,
    };
    tally.latencies_ms.sort_by(f64::total_cmp);
    let mean_batch = match (before, after) {
        (Some((b0, i0)), Some((b1, i1))) if b1 > b0 => {
            i1.saturating_sub(i0) as f64 / (b1 - b0) as f64
        }
        _ => 0.0,
    };
    let stats = LevelStats {
        clients: plan.clients,
        ok: tally.ok(),
        errors: tally.errors(),
        seconds,
        throughput: tally.ok() as f64 / seconds.max(1e-9),
        p50_ms: percentile(&tally.latencies_ms, 0.50),
        p95_ms: percentile(&tally.latencies_ms, 0.95),
        p99_ms: percentile(&tally.latencies_ms, 0.99),
        mean_batch,
        model_seconds,
    };
    let reference = previous.map(|_| raw_images / seconds.max(1e-9));
    Ok(Measured { stats, reference })
}

fn state_batches(state: &AppState) -> (u64, u64) {
    state.metrics().batch_totals()
}
