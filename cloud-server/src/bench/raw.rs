//! The raw side of `scrim-cloud bench`: the model's throughput without HTTP, measured in every
//! round right after the servers, and the servers' ratios to it paired by round.

use std::time::{Duration, Instant};

use scrim_core::{ImageTensor, Model};

use super::{EngineKind, LevelStats, RawStats};
use crate::load::sample_tensor;
use crate::{Error, Result};

/// One round's raw measurements: every model at every batch size (each engine and batch once).
///
/// # Errors
/// [`Error::Model`] if a run fails, [`Error::Bench`] if a thread panics.
pub(super) fn measure_round(
    models: &[(EngineKind, Model)],
    batches: [usize; 3],
    threads: usize,
    duration: Duration,
) -> Result<Vec<RawStats>> {
    let mut measured: Vec<RawStats> = Vec::new();
    for (_, model) in models {
        for batch in batches {
            let engine = model.engine().name();
            if !measured
                .iter()
                .any(|r| r.batch == batch && r.engine == engine)
            {
                measured.push(throughput(model, batch, threads, duration)?);
            }
        }
    }
    Ok(measured)
}

/// Each round's level (`levels[round]`) over that round's best raw tract throughput.
pub(super) fn paired_ratios(levels: Option<&[LevelStats]>, rounds: &[Vec<RawStats>]) -> Vec<f64> {
    levels
        .into_iter()
        .flatten()
        .zip(rounds)
        .filter_map(|(level, raw)| {
            let best = raw
                .iter()
                .filter(|r| r.engine == "tract")
                .map(|r| r.throughput)
                .fold(0.0, f64::max);
            (best > 0.0).then(|| level.throughput / best)
        })
        .collect()
}

/// The median (0 for none).
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One entry per engine and batch: images summed over rounds, the median throughput.
pub(super) fn merge(rounds: &[Vec<RawStats>]) -> Vec<RawStats> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|r| {
            let same = || {
                rounds
                    .iter()
                    .flatten()
                    .filter(|x| x.engine == r.engine && x.batch == r.batch)
            };
            RawStats {
                images: same().map(|x| x.images).sum(),
                throughput: median(same().map(|x| x.throughput).collect()),
                ..r.clone()
            }
        })
        .collect()
}

/// Images per second of `threads` threads each running batches of `batch` for `duration`.
fn throughput(model: &Model, batch: usize, threads: usize, duration: Duration) -> Result<RawStats> {
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
        engine: model.engine().name().to_string(),
        batch,
        threads: threads.max(1),
        images,
        throughput: images as f64 / seconds,
    })
}
