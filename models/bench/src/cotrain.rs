//! Sections 2 and 5 (training): the co-training step of `scrim train` in burn against the same
//! step in PyTorch, and one co-training epoch against dataset size.

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::BenchOptions;
use super::device::median;
use super::python;
use crate::Result;
use scrim_train::batch;
use scrim_train::config::TrainConfig;
use scrim_train::cotrain::{Phase, Trainer};
use scrim_train::data::{self, DataSpec, Dataset, LoadOptions, SyntheticConfig};
use scrim_train::nets::{PerturberConfig, RecognizerConfig};

/// Section 2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CotrainReport {
    /// Images per step.
    pub batch: usize,
    /// Image side.
    pub size: usize,
    /// Timed steps.
    pub steps: usize,
    /// burn backend.
    pub backend: String,
    /// burn: median step, ms.
    pub burn_step_ms: f64,
    /// burn: median step with burn's own convolution (its generic backward), same run.
    #[serde(default)]
    pub burn_generic_step_ms: Option<f64>,
    /// burn: images per second at the median step.
    pub burn_images_per_sec: f64,
    /// PyTorch: median step, ms.
    pub torch_step_ms: Option<f64>,
    /// PyTorch version and threads.
    pub torch: Option<String>,
    /// burn / PyTorch step time: the median over rounds of each round's ratio (burn's steps,
    /// then PyTorch's right after).
    pub ratio: Option<f64>,
    /// That ratio in each round.
    #[serde(default)]
    pub ratio_rounds: Vec<f64>,
    /// Where the step's time goes: each convolution of the two networks alone.
    #[serde(default)]
    pub conv_layers: Vec<ConvLayerRow>,
}

/// One convolution of the co-trained networks, forward and backward (the gradients of its
/// input and of its weights), at the step's batch size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvLayerRow {
    /// `network in→out @side`.
    pub layer: String,
    /// burn: median ms.
    pub burn_ms: f64,
    /// PyTorch: median ms.
    pub torch_ms: Option<f64>,
    /// burn's own `Conv2d` (its generic backward) in the same run: median ms.
    #[serde(default)]
    pub burn_generic_ms: Option<f64>,
    /// burn / PyTorch: the median over rounds of each round's ratio.
    #[serde(default)]
    pub ratio: Option<f64>,
}

/// The 3×3 convolutions of the default perturber and recognizer at image side `size`:
/// (network, in, out, side of the layer's input).
fn conv_layers(size: usize) -> Vec<(&'static str, usize, usize, usize)> {
    let p = PerturberConfig::new();
    let mut layers = Vec::new();
    let mut cin = 3;
    for _ in 0..p.hidden_layers {
        layers.push(("perturber", cin, p.channels, size));
        cin = p.channels;
    }
    layers.push(("perturber", cin, 3, size));
    let (mut cin, mut side) = (3, size);
    for w in RecognizerConfig::new(2).widths {
        layers.push(("recognizer", cin, w, side));
        (cin, side) = (w, side / 2);
    }
    layers
}

/// Times each convolution's forward and backward in burn: the networks' `FastConv2d`, and
/// burn's own `Conv2d` (the generic backward) on the same weights and input.
fn burn_conv_layers(opts: &BenchOptions, device: &Device) -> Vec<ConvLayerRow> {
    conv_layers(opts.train_size)
        .into_iter()
        .map(|(net, cin, cout, side)| {
            let conv = scrim_train::nets::conv3(cin, cout, device);
            let generic: burn::nn::conv::Conv2d = conv.clone().into();
            let x = Tensor::<4>::random(
                [opts.batch_size, cin, side, side],
                burn::tensor::Distribution::Default,
                device,
            )
            .require_grad();
            let run = |forward: &dyn Fn(Tensor<4>) -> Tensor<4>, weight: &Tensor<4>| {
                let grads = forward(x.clone()).sum().backward();
                let w = weight.grad(&grads);
                let xg = x.grad(&grads);
                // Reading both gradients waits for them.
                let _ = w.map(|w| batch::to_vec(w.sum()));
                let _ = xg.map(|g| batch::to_vec(g.sum()));
                Ok(())
            };
            let (fast_ms, generic_ms) = super::device::each_alone_median_ms(
                opts.cotrain_steps,
                || run(&|x| conv.forward(x), &conv.weight.val()),
                || run(&|x| generic.forward(x), &generic.weight.val()),
            )
            .unwrap_or((f64::NAN, f64::NAN));
            ConvLayerRow {
                layer: format!("{net} {cin}→{cout} @{side}"),
                burn_ms: fast_ms,
                torch_ms: None,
                burn_generic_ms: Some(generic_ms),
                ratio: None,
            }
        })
        .collect()
}

/// Section 5 (training): one co-training epoch over a synthetic set of `images`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochGrowth {
    /// Training images.
    pub images: usize,
    /// Wall time of the epoch, s.
    pub seconds: f64,
    /// Images per second.
    pub images_per_sec: f64,
}

/// The trainer of `scrim train` with its defaults (λ, learning rates, networks) on the
/// synthetic `shape` task: the bench times [`Trainer::step`], the very step training repeats.
pub(crate) fn trainer(ds: &Dataset, device: &Device) -> Result<(Trainer, TrainConfig)> {
    let mut cfg = TrainConfig::for_data(&DataSpec::Synthetic(SyntheticConfig::default()), "shape");
    cfg.size = ds.size;
    cfg.recognizer.num_classes = ds.attribute("shape")?.classes.len();
    let all: Vec<usize> = (0..ds.len()).collect();
    Ok((Trainer::new(&cfg, ds, &all, device)?, cfg))
}

/// One co-training step at full λ.
pub(crate) fn step(t: &mut Trainer, cfg: &TrainConfig, ds: &Dataset, idx: &[usize]) {
    t.step(
        ds,
        idx,
        Phase::Cotrain,
        cfg.lambda,
        cfg.hsic,
        cfg.learning_rate,
    );
}

pub(crate) fn synthetic(count: usize, size: usize) -> Result<Dataset> {
    Ok(data::load(
        &DataSpec::Synthetic(SyntheticConfig { count, seed: 11 }),
        &LoadOptions {
            size,
            cache: false,
            progress: false,
        },
    )?)
}

/// Section 2. With PyTorch, in `opts.rounds` rounds: burn's step and convolutions, then
/// PyTorch's right after (a fresh `cotrain_torch.py`), so that each ratio compares two
/// measurements that saw the same machine; the report gives medians over rounds and the median
/// of the rounds' ratios. Without it, burn's side once.
pub(crate) fn run(
    opts: &BenchOptions,
    python: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<CotrainReport> {
    let device = Device::flex().autodiff();
    device.seed(3);
    let ds = synthetic(opts.batch_size, opts.train_size)?;
    let idx: Vec<usize> = (0..ds.len()).collect();
    let (mut t, cfg) = trainer(&ds, &device)?;
    let torch = torch_reference(opts, python, notes);
    let rounds = if torch.is_some() {
        opts.rounds.max(1)
    } else {
        1
    };
    let t = std::cell::RefCell::new(&mut t);
    let (mut steps, mut generics, mut layers) = (Vec::new(), Vec::new(), Vec::new());
    let (mut torch_runs, mut torch_name) = (Vec::new(), None);
    for round in 0..rounds {
        // The step with `FastConv2d`, then the same step through burn's own convolution (its
        // generic backward): the before/after of issue #22, each timed alone as PyTorch is.
        let (step_ms, generic_ms) = super::device::each_alone_median_ms(
            opts.cotrain_steps,
            || {
                scrim_train::nets::use_burn_generic(false);
                step(&mut t.borrow_mut(), &cfg, &ds, &idx);
                Ok(())
            },
            || {
                scrim_train::nets::use_burn_generic(true);
                step(&mut t.borrow_mut(), &cfg, &ds, &idx);
                scrim_train::nets::use_burn_generic(false);
                Ok(())
            },
        )?;
        steps.push(step_ms);
        generics.push(generic_ms);
        layers.push(burn_conv_layers(opts, &device));
        let mut line = format!("[bench]   burn flex: {step_ms:.1} ms/step");
        if let Some((py, args)) = &torch {
            match python::run_script(
                py,
                &opts.out,
                "cotrain_torch.py",
                python::TORCH_SCRIPT,
                args,
            ) {
                Ok(json) => {
                    let ms = json["median_step_ms"].as_f64();
                    let layers_ms: Vec<Option<f64>> = json["layers_ms"]
                        .as_array()
                        .map(|a| a.iter().map(serde_json::Value::as_f64).collect())
                        .unwrap_or_default();
                    torch_name = Some(format!(
                        "PyTorch {} on {} threads",
                        json["version"].as_str().unwrap_or("?"),
                        json["threads"].as_u64().unwrap_or(0)
                    ));
                    line += &format!(
                        ", PyTorch {} ms/step",
                        ms.map_or("?".into(), |m| format!("{m:.1}"))
                    );
                    torch_runs.push((ms, layers_ms));
                }
                Err(e) => {
                    notes.push(format!("PyTorch reference failed: {e}"));
                    break;
                }
            }
        }
        if rounds > 1 {
            line += &format!(" (round {}/{rounds})", round + 1);
        }
        scrim_train::report::note(&line);
    }
    let step_ms = median(&steps);
    // Per-round ratios: round i's burn over round i's PyTorch.
    let paired = |burn: &dyn Fn(usize) -> f64, torch: &dyn Fn(usize) -> Option<f64>| {
        (0..torch_runs.len())
            .filter_map(|i| torch(i).filter(|m| *m > 0.0).map(|m| burn(i) / m))
            .collect::<Vec<f64>>()
    };
    let ratio_rounds = paired(&|i| steps[i], &|i| torch_runs[i].0);
    let mut conv_layers = layers.first().cloned().unwrap_or_default();
    for (j, row) in conv_layers.iter_mut().enumerate() {
        let col = |f: &dyn Fn(&ConvLayerRow) -> Option<f64>| -> Vec<f64> {
            layers.iter().filter_map(|l| l.get(j).and_then(f)).collect()
        };
        row.burn_ms = median(&col(&|r| Some(r.burn_ms)));
        row.burn_generic_ms = Some(median(&col(&|r| r.burn_generic_ms))).filter(|m| !m.is_nan());
        let torch_col: Vec<f64> = torch_runs
            .iter()
            .filter_map(|(_, l)| l.get(j).copied().flatten())
            .collect();
        row.torch_ms = (!torch_col.is_empty()).then(|| median(&torch_col));
        let r = paired(&|i| layers[i][j].burn_ms, &|i| {
            torch_runs[i].1.get(j).copied().flatten()
        });
        row.ratio = (!r.is_empty()).then(|| median(&r));
    }
    let torch_steps: Vec<f64> = torch_runs.iter().filter_map(|(m, _)| *m).collect();
    Ok(CotrainReport {
        batch: opts.batch_size,
        size: opts.train_size,
        steps: opts.cotrain_steps,
        backend: "flex".into(),
        burn_step_ms: step_ms,
        burn_generic_step_ms: Some(median(&generics)),
        burn_images_per_sec: opts.batch_size as f64 / (step_ms / 1e3),
        torch_step_ms: (!torch_steps.is_empty()).then(|| median(&torch_steps)),
        torch: torch_name,
        ratio: (!ratio_rounds.is_empty()).then(|| median(&ratio_rounds)),
        ratio_rounds,
        conv_layers,
    })
}

/// The Python and the arguments of `cotrain_torch.py`, when PyTorch is to be run and can be;
/// otherwise why not, in `notes`.
fn torch_reference<'a>(
    opts: &BenchOptions,
    python: Option<&'a Path>,
    notes: &mut Vec<String>,
) -> Option<(&'a Path, Vec<String>)> {
    if opts.smoke || !opts.torch {
        notes.push("PyTorch reference not run (pass --torch; never in smoke runs)".into());
        return None;
    }
    let Some(py) = python else {
        notes.push("PyTorch reference not run: no Python virtualenv".into());
        return None;
    };
    if let Err(why) = python::ensure_torch(py) {
        notes.push(format!("PyTorch reference not run: {why}"));
        return None;
    }
    let layers = conv_layers(opts.train_size);
    let args = torch_args(
        opts.cotrain_steps,
        opts.batch_size,
        opts.train_size,
        &layers,
    );
    Some((py, args))
}

/// The arguments of `cotrain_torch.py` for the default networks: `steps` timed steps of `batch`
/// images at `size` px, then `layers` (network, in, out, side) timed alone.
pub(crate) fn torch_args(
    steps: usize,
    batch: usize,
    size: usize,
    layers: &[(&str, usize, usize, usize)],
) -> Vec<String> {
    let p = PerturberConfig::new();
    let widths = RecognizerConfig::new(2)
        .widths
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    vec![
        steps.to_string(),
        batch.to_string(),
        size.to_string(),
        p.channels.to_string(),
        p.hidden_layers.to_string(),
        widths,
        "2".into(),
        layers
            .iter()
            .map(|(_, cin, cout, side)| format!("{cin}:{cout}:{side}"))
            .collect::<Vec<_>>()
            .join(","),
    ]
}

/// Section 5 (training): one co-training epoch (batches of `batch_size`) per dataset size.
pub(crate) fn epoch_growth(opts: &BenchOptions) -> Result<Vec<EpochGrowth>> {
    let device = Device::flex().autodiff();
    device.seed(5);
    let mut rows = Vec::new();
    for &count in &opts.epoch_counts {
        let ds = synthetic(count, opts.train_size)?;
        let order: Vec<usize> = (0..ds.len()).collect();
        let (mut t, cfg) = trainer(&ds, &device)?;
        // One unmeasured step, so allocation and first-use costs stay out of the epoch.
        step(
            &mut t,
            &cfg,
            &ds,
            &order[..opts.batch_size.min(order.len())],
        );
        let started = Instant::now();
        for idx in batch::chunks(&order, opts.batch_size) {
            step(&mut t, &cfg, &ds, idx);
        }
        let seconds = started.elapsed().as_secs_f64();
        scrim_train::report::note(&format!(
            "[bench]   epoch of {count} images: {seconds:.2} s"
        ));
        rows.push(EpochGrowth {
            images: count,
            seconds,
            images_per_sec: count as f64 / seconds.max(1e-9),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section 2 alone, burn's side (the full bench also needs Python and the server):
    /// `cargo test --release --workspace -p … -- --ignored cotrain_section --nocapture`
    /// prints the report's JSON.
    #[test]
    #[ignore = "a benchmark: minutes of CPU"]
    fn cotrain_section() {
        scrim_train::allocator::tune_for_training();
        let opts = BenchOptions {
            torch: false,
            ..BenchOptions::default()
        };
        let mut notes = Vec::new();
        let report = run(&opts, None, &mut notes).expect("section 2");
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }

    /// The co-training step alone, 30 times, for a profiler:
    /// `perf record -g <scrim_bench test binary> --ignored cotrain_step_only`.
    #[test]
    #[ignore = "a profiling target"]
    fn cotrain_step_only() {
        // As the `scrim` command does; SCRIM_BENCH_GLIBC_DEFAULTS=1 profiles malloc's defaults.
        if std::env::var_os("SCRIM_BENCH_GLIBC_DEFAULTS").is_none() {
            scrim_train::allocator::tune_for_training();
        }
        let device = Device::flex().autodiff();
        device.seed(3);
        let ds = synthetic(64, 32).expect("data");
        let idx: Vec<usize> = (0..ds.len()).collect();
        let (mut t, cfg) = trainer(&ds, &device).expect("trainer");
        // SCRIM_BENCH_GENERIC_CONV=1 profiles the step with burn's own convolution and batch norm.
        scrim_train::nets::use_burn_generic(std::env::var_os("SCRIM_BENCH_GENERIC_CONV").is_some());
        for _ in 0..30 {
            step(&mut t, &cfg, &ds, &idx);
        }
    }

    /// Section 2's convolutions alone, printed, for a profiler:
    /// `perf record -g <scrim_bench test binary> --ignored conv_layers_only`.
    #[test]
    #[ignore = "a profiling target"]
    fn conv_layers_only() {
        scrim_train::allocator::tune_for_training();
        let device = Device::flex().autodiff();
        device.seed(3);
        let opts = BenchOptions {
            cotrain_steps: 10,
            ..BenchOptions::default()
        };
        for row in burn_conv_layers(&opts, &device) {
            println!(
                "{}: {:.2} ms (burn generic {:.2})",
                row.layer,
                row.burn_ms,
                row.burn_generic_ms.unwrap_or(f64::NAN)
            );
        }
    }
}
