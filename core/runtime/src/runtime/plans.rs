//! tract's plans for one model: one per batch size (or one symbolic), each with a pool of run
//! states, and how a batch of images is split over them and joined back.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tract_onnx::prelude::*;

use super::{Output, PlanChoice};
use crate::{Error, Result};

/// A tract plan and the run states it has handed out and taken back: a state is built once per
/// concurrent caller, not once per run.
pub(super) struct Plan {
    pub(super) batch: Option<usize>,
    pub(super) runnable: Arc<TypedRunnableModel>,
    states: Mutex<Vec<TypedSimpleState>>,
}

impl Plan {
    pub(super) fn new(batch: Option<usize>, runnable: Arc<TypedRunnableModel>) -> Self {
        Self {
            batch,
            runnable,
            states: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn run(&self, input: TValue) -> Result<TVec<TValue>> {
        let pooled = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut state = match pooled {
            Some(state) => state,
            None => self.runnable.spawn().map_err(|e| {
                Error::InvalidModel(format!("cannot start a run: {}", root_cause(&e)))
            })?,
        };
        let outputs = state
            .run(tvec!(input))
            .map_err(|e| Error::InvalidModel(format!("inference failed: {}", root_cause(&e))))?;
        // Only a state whose run succeeded goes back: a failed one may hold half a turn.
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(state);
        Ok(outputs)
    }
}

/// tract's plans for one model: one per batch size, sorted, or one symbolic.
pub(super) struct TractPlans {
    pub(super) plans: Vec<Plan>,
    /// What [`TractPlans::keep_faster`] measured and chose (empty when it did not run).
    pub(super) choices: Vec<PlanChoice>,
}

/// Timed runs of each plan when choosing plans (the fastest counts).
const CHOICE_RUNS: usize = 3;

impl TractPlans {
    /// Drops the fixed plans for batches over one that do not run an image faster than the
    /// batch-1 plan, each timed here on zeros (the fastest of [`CHOICE_RUNS`] runs after a
    /// warm-up). tract unrolls lazily only for a batch of one, so on a small model a batch
    /// run image by image can beat the batched plan; the plans kept then serve every batch
    /// ([`TractPlans::chunks`]). Only a choice between plans that compute the same outputs.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] if a plan fails to run.
    pub(super) fn keep_faster(&mut self, chw: [usize; 3]) -> Result<()> {
        let per_image_us = |plan: &Plan, b: usize| -> Result<f64> {
            let input = || {
                Tensor::zero::<f32>(&[b, chw[0], chw[1], chw[2]])
                    .map(Tensor::into_tvalue)
                    .map_err(|e| Error::InvalidModel(root_cause(&e)))
            };
            plan.run(input()?)?;
            let mut best = f64::INFINITY;
            for _ in 0..CHOICE_RUNS {
                let x = input()?;
                let started = Instant::now();
                plan.run(x)?;
                best = best.min(started.elapsed().as_secs_f64() * 1e6);
            }
            Ok(best / b as f64)
        };
        let Some(one) = self.plans.iter().find(|p| p.batch == Some(1)) else {
            return Ok(());
        };
        if self.plans.len() < 2 {
            return Ok(());
        }
        let base = per_image_us(one, 1)?;
        let mut kept = Vec::with_capacity(self.plans.len());
        let mut choices = Vec::with_capacity(self.plans.len());
        for plan in std::mem::take(&mut self.plans) {
            // A tuned model has fixed plans only (`BatchMode::planned_sizes`).
            let Some(batch) = plan.batch else { continue };
            let us = if batch == 1 {
                base
            } else {
                per_image_us(&plan, batch)?
            };
            let keep = batch == 1 || us < base;
            choices.push(PlanChoice {
                batch,
                us_per_image: us,
                kept: keep,
            });
            if keep {
                kept.push(plan);
            }
        }
        self.plans = kept;
        self.choices = choices;
        Ok(())
    }

    /// Splits `n` images into plan runs: each chunk goes to the smallest plan that holds it
    /// (padded with zeros up to the plan's size), chunks of the largest plan first.
    pub(super) fn chunks(
        &self,
        data: &[f32],
        n: usize,
        chw: [usize; 3],
    ) -> Result<Vec<(usize, TValue, usize)>> {
        let per_image = chw.iter().product::<usize>();
        let to_err = |e: TractError| Error::InvalidModel(root_cause(&e));
        // A symbolic plan takes the whole batch as it is.
        if let [only] = &self.plans[..]
            && only.batch.is_none()
        {
            let t = Tensor::from_shape(&[n, chw[0], chw[1], chw[2]], data).map_err(to_err)?;
            return Ok(vec![(0, t.into_tvalue(), n)]);
        }
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < n {
            let left = n - start;
            let (index, size) = self
                .plans
                .iter()
                .enumerate()
                .filter_map(|(k, p)| p.batch.map(|b| (k, b)))
                .find(|&(_, b)| b >= left)
                .or_else(|| {
                    self.plans
                        .iter()
                        .enumerate()
                        .filter_map(|(k, p)| p.batch.map(|b| (k, b)))
                        .last()
                })
                .ok_or_else(|| Error::InvalidModel("the model has no plan".into()))?;
            let real = left.min(size);
            let mut padded = vec![0.0f32; size * per_image];
            padded[..real * per_image]
                .copy_from_slice(&data[start * per_image..(start + real) * per_image]);
            let tensor =
                Tensor::from_shape(&[size, chw[0], chw[1], chw[2]], &padded).map_err(to_err)?;
            chunks.push((index, tensor.into_tvalue(), real));
            start += real;
        }
        Ok(chunks)
    }

    /// Runs the chunks and joins their outputs, the padding rows left out.
    pub(super) fn run(&self, chunks: &[(usize, TValue, usize)], n: usize) -> Result<Vec<Output>> {
        let mut joined: Vec<Output> = Vec::new();
        for (index, value, real) in chunks {
            let plan = self.plans.get(*index).ok_or_else(|| {
                Error::InvalidArgument("an input prepared for another plan".into())
            })?;
            let outputs = plan.run(value.clone())?;
            if joined.is_empty() {
                joined = outputs
                    .iter()
                    .map(|_| Output {
                        shape: Vec::new(),
                        data: Vec::new(),
                    })
                    .collect();
            }
            for (out, t) in joined.iter_mut().zip(outputs.iter()) {
                let view = t.to_plain_array_view::<f32>().map_err(|e| {
                    Error::InvalidModel(format!("non-f32 output: {}", root_cause(&e)))
                })?;
                let shape = view.shape().to_vec();
                let rows = shape.first().copied().unwrap_or(0);
                if rows < *real {
                    return Err(Error::InvalidModel(format!(
                        "an output of shape {shape:?} has fewer rows than the {real} images given"
                    )));
                }
                let per_row = view.len().checked_div(rows).unwrap_or(0);
                out.data.extend(view.iter().take(real * per_row).copied());
                out.shape = shape;
            }
        }
        for out in &mut joined {
            if let Some(rows) = out.shape.first_mut() {
                *rows = n;
            }
        }
        Ok(joined)
    }
}

/// The innermost message of a tract error chain, which is usually the informative one, with the
/// outer context in front.
pub(super) fn root_cause(e: &TractError) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    match chain.as_slice() {
        [] => "unknown error".into(),
        [one] => one.clone(),
        [first, .., last] => format!("{first}: {last}"),
    }
}
