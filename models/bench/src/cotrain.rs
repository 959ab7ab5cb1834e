//! Sections 2 and 5 (training): the co-training step of `scrim train` in burn against the same
//! step in PyTorch, and one co-training epoch against dataset size.

use std::path::Path;
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::BenchOptions;
use super::python;
use scrim_train::batch;
use scrim_train::data::{self, DataSpec, Dataset, LoadOptions, SyntheticConfig};
use scrim_train::nets::{Perturber, PerturberConfig, Recognizer, RecognizerConfig};
use scrim_train::train::perturb;
use scrim_train::{Error, Result};

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
    /// burn: images per second at the median step.
    pub burn_images_per_sec: f64,
    /// PyTorch: median step, ms.
    pub torch_step_ms: Option<f64>,
    /// PyTorch version and threads.
    pub torch: Option<String>,
    /// burn / PyTorch step time.
    pub ratio: Option<f64>,
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

/// Times each convolution's forward and backward in burn.
fn burn_conv_layers(opts: &BenchOptions, device: &Device) -> Vec<ConvLayerRow> {
    conv_layers(opts.train_size)
        .into_iter()
        .map(|(net, cin, cout, side)| {
            let conv = scrim_train::nets::conv3(cin, cout, device);
            let x = Tensor::<4>::random(
                [opts.batch_size, cin, side, side],
                burn::tensor::Distribution::Default,
                device,
            )
            .require_grad();
            let burn_ms = super::device::median_ms(opts.cotrain_steps, || {
                let grads = conv.forward(x.clone()).sum().backward();
                let w = conv.weight.grad(&grads);
                let xg = x.grad(&grads);
                // Reading both gradients waits for them.
                let _ = w.map(|w| batch::to_vec(w.sum()));
                let _ = xg.map(|g| batch::to_vec(g.sum()));
                Ok(())
            })
            .unwrap_or(f64::NAN);
            ConvLayerRow {
                layer: format!("{net} {cin}→{cout} @{side}"),
                burn_ms,
                torch_ms: None,
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

/// The networks and optimisers of one co-training run, as `scrim train` builds them.
struct Cotrainer {
    p: Perturber,
    c: Recognizer,
    opt_p: ModuleOptimizer,
    opt_c: ModuleOptimizer,
    desired: usize,
}

const LAMBDA: f64 = 0.05;
const LR: f64 = 2e-3;
const PERTURBER_LR_SCALE: f64 = 2.0;

impl Cotrainer {
    fn new(ds: &Dataset, device: &Device) -> Result<Self> {
        let desired = ds
            .attributes
            .iter()
            .position(|a| a.name == "shape")
            .ok_or_else(|| Error::Input("synthetic set without `shape`".into()))?;
        Ok(Self {
            p: PerturberConfig::new().init(device),
            c: RecognizerConfig::new(2).init(device),
            opt_p: AdamConfig::new().init(),
            opt_c: AdamConfig::new().init(),
            desired,
        })
    }

    /// One co-training step, the computation of `train::train` after warm-up (non-adversarial):
    /// perturb with reparameterised noise and 8-bit STE, `CE − λ·mean log σ`, Adam on both.
    fn step(&mut self, ds: &Dataset, idx: &[usize], device: &Device) -> f32 {
        let x = batch::images(ds, idx, device);
        let y = batch::labels(ds, self.desired, idx, device);
        let out = self.p.forward(x.clone());
        let xp = perturb(x, &out, scrim_core::NoiseKind::Gaussian);
        let logits = self.c.forward(xp);
        let loss = CrossEntropyLossConfig::new()
            .init(device)
            .forward(logits, y)
            + out.log_sigma.mean().mul_scalar(-LAMBDA);
        let mut grads = loss.backward();
        let gp = GradientsParams::from_module(&mut grads, &self.p);
        self.p = self.opt_p.step(LR * PERTURBER_LR_SCALE, self.p.clone(), gp);
        let gc = GradientsParams::from_module(&mut grads, &self.c);
        self.c = self.opt_c.step(LR, self.c.clone(), gc);
        // Reading the loss waits for the step to finish, as the training loop does.
        batch::to_vec(loss).first().copied().unwrap_or(f32::NAN)
    }
}

fn synthetic(count: usize, size: usize) -> Result<Dataset> {
    data::load(
        &DataSpec::Synthetic(SyntheticConfig { count, seed: 11 }),
        &LoadOptions {
            size,
            cache: false,
            progress: false,
        },
    )
}

/// Section 2.
pub(crate) fn run(
    opts: &BenchOptions,
    python: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<CotrainReport> {
    let device = Device::flex().autodiff();
    device.seed(3);
    let ds = synthetic(opts.batch_size, opts.train_size)?;
    let idx: Vec<usize> = (0..ds.len()).collect();
    let mut t = Cotrainer::new(&ds, &device)?;
    let step_ms = super::device::median_ms(opts.cotrain_steps, || {
        t.step(&ds, &idx, &device);
        Ok(())
    })?;
    let mut report = CotrainReport {
        batch: opts.batch_size,
        size: opts.train_size,
        steps: opts.cotrain_steps,
        backend: "flex".into(),
        burn_step_ms: step_ms,
        burn_images_per_sec: opts.batch_size as f64 / (step_ms / 1e3),
        torch_step_ms: None,
        torch: None,
        ratio: None,
        conv_layers: burn_conv_layers(opts, &device),
    };
    scrim_train::report::note(&format!("[bench]   burn flex: {step_ms:.1} ms/step"));
    if opts.smoke || !opts.torch {
        notes.push("PyTorch reference not run (pass --torch; never in smoke runs)".into());
        return Ok(report);
    }
    let Some(py) = python else {
        notes.push("PyTorch reference not run: no Python virtualenv".into());
        return Ok(report);
    };
    if let Err(why) = python::ensure_torch(py) {
        notes.push(format!("PyTorch reference not run: {why}"));
        return Ok(report);
    }
    let p = PerturberConfig::new();
    let widths = RecognizerConfig::new(2)
        .widths
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        opts.cotrain_steps.to_string(),
        opts.batch_size.to_string(),
        opts.train_size.to_string(),
        p.channels.to_string(),
        p.hidden_layers.to_string(),
        widths,
        "2".into(),
        conv_layers(opts.train_size)
            .iter()
            .map(|(_, cin, cout, side)| format!("{cin}:{cout}:{side}"))
            .collect::<Vec<_>>()
            .join(","),
    ];
    match python::run_script(
        py,
        &opts.out,
        "cotrain_torch.py",
        python::TORCH_SCRIPT,
        &args,
    ) {
        Ok(json) => {
            report.torch_step_ms = json["median_step_ms"].as_f64();
            report.torch = Some(format!(
                "PyTorch {} on {} threads",
                json["version"].as_str().unwrap_or("?"),
                json["threads"].as_u64().unwrap_or(0)
            ));
            report.ratio = report
                .torch_step_ms
                .filter(|m| *m > 0.0)
                .map(|m| step_ms / m);
            let torch_layers = json["layers_ms"].as_array().cloned().unwrap_or_default();
            for (row, ms) in report.conv_layers.iter_mut().zip(torch_layers) {
                row.torch_ms = ms.as_f64();
            }
        }
        Err(e) => notes.push(format!("PyTorch reference failed: {e}")),
    }
    Ok(report)
}

/// Section 5 (training): one co-training epoch (batches of `batch_size`) per dataset size.
pub(crate) fn epoch_growth(opts: &BenchOptions) -> Result<Vec<EpochGrowth>> {
    let device = Device::flex().autodiff();
    device.seed(5);
    let mut rows = Vec::new();
    for &count in &opts.epoch_counts {
        let ds = synthetic(count, opts.train_size)?;
        let order: Vec<usize> = (0..ds.len()).collect();
        let mut t = Cotrainer::new(&ds, &device)?;
        // One unmeasured step, so allocation and first-use costs stay out of the epoch.
        t.step(&ds, &order[..opts.batch_size.min(order.len())], &device);
        let started = Instant::now();
        for idx in batch::chunks(&order, opts.batch_size) {
            t.step(&ds, idx, &device);
        }
        let seconds = started.elapsed().as_secs_f64();
        scrim_train::report::note(&format!("[bench]   epoch of {count} images: {seconds:.2} s"));
        rows.push(EpochGrowth {
            images: count,
            seconds,
            images_per_sec: count as f64 / seconds.max(1e-9),
        });
    }
    Ok(rows)
}
