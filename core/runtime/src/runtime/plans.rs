//! tract's plans for one model: one per batch size (or one symbolic), each with a pool of run
//! states, and how a batch of images is split over them and joined back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;

use super::{Output, PlanChoice, PlanKernels};
use crate::{Error, Result};

/// A tract plan and the run states it has handed out and taken back: a state is built once per
/// concurrent caller, not once per run.
pub(super) struct Plan {
    pub(super) batch: Option<usize>,
    pub(super) runnable: Arc<TypedRunnableModel>,
    /// Microseconds per image as timed at load ([`TractPlans::keep_faster`]), when it was.
    us_per_image: Option<f64>,
    states: Mutex<Vec<TypedSimpleState>>,
}

impl Plan {
    pub(super) fn new(batch: Option<usize>, runnable: Arc<TypedRunnableModel>) -> Self {
        Self {
            batch,
            runnable,
            us_per_image: None,
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

/// Rounds of timing when choosing plans: at least [`MIN_ROUNDS`], more while the rounds so far
/// took under [`CHOICE_BUDGET`], at most [`MAX_ROUNDS`].
const MIN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 15;
const CHOICE_BUDGET: Duration = Duration::from_millis(150);

impl TractPlans {
    /// Drops the fixed plans for batches over one that do not run an image faster than the
    /// batch-1 plan. Each plan runs once on zeros as a warm-up; then, in each round, each plan
    /// serves as many images as the largest plan holds, in consecutive runs (as it serves a
    /// stream of batches), the plans taking turns so that a slow moment of the machine falls on
    /// all of them alike; a plan's time per image is its fastest round. tract unrolls lazily only for a batch of one, and a batch's
    /// activations can outgrow the caches that one image's fit in, so on a small model a batch
    /// run image by image can beat the batched plan; the plans kept then serve every batch
    /// ([`TractPlans::chunks`]). Only a choice between plans that compute the same outputs.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] if a plan fails to run.
    pub(super) fn keep_faster(&mut self, chw: [usize; 3]) -> Result<()> {
        if self.plans.len() < 2 || !self.plans.iter().any(|p| p.batch == Some(1)) {
            return Ok(());
        }
        // A tuned model has fixed plans only (`BatchMode::planned_sizes`).
        self.plans.retain(|p| p.batch.is_some());
        let input = |b: usize| {
            Tensor::zero::<f32>(&[b, chw[0], chw[1], chw[2]])
                .map(Tensor::into_tvalue)
                .map_err(|e| Error::InvalidModel(root_cause(&e)))
        };
        let batches: Vec<usize> = self.plans.iter().filter_map(|p| p.batch).collect();
        for (plan, &b) in self.plans.iter().zip(&batches) {
            plan.run(input(b)?)?;
        }
        // Every plan serves as many images per round as the largest holds, in consecutive
        // runs, as it would serve a stream of batches.
        let images = batches.iter().copied().max().unwrap_or(1);
        let mut best = vec![f64::INFINITY; self.plans.len()];
        let started = Instant::now();
        for round in 0..MAX_ROUNDS {
            if round >= MIN_ROUNDS && started.elapsed() >= CHOICE_BUDGET {
                break;
            }
            for ((plan, &b), best) in self.plans.iter().zip(&batches).zip(&mut best) {
                let runs = images.div_ceil(b);
                let xs = (0..runs).map(|_| input(b)).collect::<Result<Vec<_>>>()?;
                let t = Instant::now();
                for x in xs {
                    plan.run(x)?;
                }
                *best = best.min(t.elapsed().as_secs_f64() * 1e6 / (runs * b) as f64);
            }
        }
        let base = batches
            .iter()
            .zip(&best)
            .find_map(|(&b, &us)| (b == 1).then_some(us))
            .unwrap_or(f64::INFINITY);
        let mut kept = Vec::with_capacity(self.plans.len());
        let mut choices = Vec::with_capacity(self.plans.len());
        for ((mut plan, batch), us) in std::mem::take(&mut self.plans)
            .into_iter()
            .zip(batches)
            .zip(best)
        {
            let keep = batch == 1 || us < base;
            choices.push(PlanChoice {
                batch,
                us_per_image: us,
                kept: keep,
            });
            if keep {
                plan.us_per_image = Some(us);
                kept.push(plan);
            }
        }
        self.plans = kept;
        self.choices = choices;
        Ok(())
    }

    /// For each plan, the method of every convolution and max pooling ([`Model::kernels`]).
    ///
    /// [`Model::kernels`]: super::Model::kernels
    pub(super) fn kernels(&self) -> Vec<PlanKernels> {
        const CONVOLUTIONS: [&str; 8] = [
            "ScrimConv",
            "ScrimChain",
            "ScrimWinograd",
            "LazyIm2col",
            "Im2col",
            "DirectSpatialConv",
            "DepthWise",
            "BlockedConv",
        ];
        const POOLS: [&str; 3] = ["ScrimMaxPool", "OptMaxPool", "MaxPool"];
        self.plans
            .iter()
            .map(|plan| {
                let model = plan.runnable.model();
                let named = |methods: &[&str]| -> Vec<(String, String)> {
                    plan.runnable
                        .order_without_consts()
                        .iter()
                        .filter_map(|&id| {
                            let node = model.nodes().get(id)?;
                            let op = node.op.name();
                            methods
                                .iter()
                                .any(|m| op.starts_with(m))
                                .then(|| (node.name.clone(), op.to_string()))
                        })
                        .collect()
                };
                PlanKernels {
                    batch: plan.batch,
                    convolutions: named(&CONVOLUTIONS),
                    pools: named(&POOLS),
                }
            })
            .collect()
    }

    /// Splits `n` images into plan runs, each padded with zeros up to its plan's size; which
    /// plan each chunk goes to is [`choose_plan`]'s choice.
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
        // The fixed plans: their index, batch size and timing.
        let fixed: Vec<(usize, usize, Option<f64>)> = self
            .plans
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.batch.map(|b| (k, b, p.us_per_image)))
            .collect();
        let sizes: Vec<(usize, Option<f64>)> = fixed.iter().map(|&(_, b, us)| (b, us)).collect();
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < n {
            let left = n - start;
            let pick = choose_plan(&sizes, left)
                .ok_or_else(|| Error::InvalidModel("the model has no plan".into()))?;
            let (index, size, _) = fixed[pick];
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

/// Which of the fixed plans `(batch, µs per image when timed)` the next `left` images go to.
///
/// When every plan was timed at load, the plan with the least time per image actually served
/// (`batch · µs / min(left, batch)`, padding counted as work), the larger on a tie: with plans
/// of 1, 2, 4 and 8 images that run an image in the same time, 7 images go as 4 + 2 + 1 rather
/// than as 8 with one image of zeros. Untimed, the smallest plan that holds them all, else the
/// largest.
pub(super) fn choose_plan(plans: &[(usize, Option<f64>)], left: usize) -> Option<usize> {
    let timed: Option<Vec<f64>> = plans.iter().map(|&(_, us)| us).collect();
    if let Some(us) = timed {
        let cost = |k: usize| {
            let b = plans[k].0;
            b as f64 * us[k] / left.min(b).max(1) as f64
        };
        return (0..plans.len()).min_by(|&a, &b| {
            cost(a)
                .total_cmp(&cost(b))
                .then(plans[b].0.cmp(&plans[a].0))
        });
    }
    let by_size = |k: &usize| plans[*k].0;
    (0..plans.len())
        .filter(|&k| plans[k].0 >= left)
        .min_by_key(by_size)
        .or_else(|| (0..plans.len()).max_by_key(by_size))
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

#[cfg(test)]
mod tests {
    use super::choose_plan;

    /// The batch sizes `choose_plan` sends `n` images to, in order.
    fn split(plans: &[(usize, Option<f64>)], mut n: usize) -> Vec<usize> {
        let mut runs = Vec::new();
        while n > 0 {
            let b = plans[choose_plan(plans, n).expect("a plan")].0;
            runs.push(b);
            n -= n.min(b);
        }
        runs
    }

    #[test]
    fn timed_plans_that_cost_the_same_per_image_are_never_padded() {
        let plans = [
            (1, Some(298.0)),
            (2, Some(296.0)),
            (4, Some(296.0)),
            (8, Some(296.0)),
        ];
        assert_eq!(split(&plans, 7), [4, 2, 1]);
        assert_eq!(split(&plans, 9), [8, 1]);
        assert_eq!(split(&plans, 16), [8, 8]);
        assert_eq!(split(&plans, 1), [1]);
    }

    #[test]
    fn a_plan_much_faster_per_image_is_worth_its_padding() {
        // 16 images in the time of 8 single runs: 9 images are cheaper padded to 16.
        let plans = [(1, Some(300.0)), (16, Some(150.0))];
        assert_eq!(split(&plans, 9), [16]);
        // 4 images: 16 · 150 / 4 = 600 µs each against 300 alone.
        assert_eq!(split(&plans, 4), [1, 1, 1, 1]);
    }

    #[test]
    fn untimed_plans_take_the_smallest_that_holds_the_rest() {
        let plans = [(1, None), (8, None), (32, None)];
        assert_eq!(split(&plans, 7), [8]);
        assert_eq!(split(&plans, 40), [32, 8]);
        assert_eq!(split(&[(16, None)], 3), [16]);
        assert_eq!(choose_plan(&[], 3), None);
    }
}
