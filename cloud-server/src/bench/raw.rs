//! The raw side of `scrim-cloud bench`: the model's throughput without HTTP, measured in every
//! round after the servers (the raw table) and between the slices of each server's highest
//! level (the reference of that server's ratio in that round, [`super::level`]).

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

/// The batch raw tract is fastest at, by the median of `passes` interleaved measurements of
/// each batch (`each` long): chosen once, before the rounds, so that the reference of the
/// server's ratio is one measurement rather than the best of several noisy ones, which would
/// sit above the machine's real speed.
///
/// # Errors
/// As [`measure_round`].
pub(super) fn reference_batch(
    model: &Model,
    batches: [usize; 3],
    threads: usize,
    each: Duration,
    passes: usize,
) -> Result<usize> {
    let mut seen: Vec<Vec<f64>> = vec![Vec::new(); batches.len()];
    for _ in 0..passes.max(1) {
        for (k, &batch) in batches.iter().enumerate() {
            seen[k].push(throughput(model, batch, threads, each)?.throughput);
        }
    }
    let medians: Vec<f64> = seen.into_iter().map(median).collect();
    Ok((0..batches.len())
        .max_by(|&a, &b| medians[a].total_cmp(&medians[b]))
        .map_or(1, |k| batches[k]))
}

/// Each round's level (`levels[round]`) over that round's reference (`references[round]`, raw
/// tract at the reference batch measured between the level's slices).
pub(super) fn paired_ratios(levels: Option<&[LevelStats]>, references: &[f64]) -> Vec<f64> {
    levels
        .into_iter()
        .flatten()
        .zip(references)
        .filter(|&(_, &reference)| reference > 0.0)
        .map(|(level, &reference)| level.throughput / reference)
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
pub(super) fn throughput(
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
        engine: model.engine().name().to_string(),
        batch,
        threads: threads.max(1),
        images,
        throughput: images as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(throughput: f64) -> LevelStats {
        LevelStats {
            clients: 16,
            ok: 100,
            errors: 0,
            seconds: 1.0,
            throughput,
            p50_ms: 1.0,
            p95_ms: 2.0,
            p99_ms: 3.0,
            mean_batch: 8.0,
            model_seconds: 0.0,
        }
    }

    #[test]
    fn each_round_is_divided_by_its_own_reference() {
        let levels = [level(900.0), level(1200.0), level(500.0)];
        // The second round's reference is higher, the third has none (skipped).
        let ratios = paired_ratios(Some(&levels), &[1000.0, 1500.0, 0.0]);
        assert_eq!(ratios, vec![0.9, 0.8]);
        assert!(paired_ratios(None, &[1000.0]).is_empty());
        assert!((median(ratios) - 0.85).abs() < 1e-12);
    }
}
