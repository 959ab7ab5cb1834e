//! The model-protection table (`scrim protect eval`): accuracy of an unprotected recognizer, of
//! recognizers trained behind block-wise transforms (shuffle, negative/positive, FFX) with the
//! correct key, a wrong key and plain images, of a ConvMixer encrypted after training (same
//! columns), and of the key-estimation attack on shuffle and negative/positive.
//!
//! The block-wise models train on `keyed::apply(x)`, the same ops as `scrim train --block-key`.
//! The ConvMixer is exported to ONNX, encrypted by scrim-core and run in tract on images that
//! scrim-core's transform encrypted: the path a deployment takes.

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scrim_core::manifest::Manifest;
use scrim_core::{BatchMode, BlockTransform, Model, Scheme, SecretKey};
use serde::{Deserialize, Serialize};

use scrim_train::batch;
use crate::convmixer::{ConvMixer, ConvMixerConfig, convmixer_onnx};
use scrim_train::data::{self, DataSpec, Dataset, LoadOptions};
use scrim_train::keyed;
use scrim_train::nets::{Recognizer, RecognizerConfig};
use scrim_train::{Error, Result};

/// What `scrim protect eval` runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Training images (e.g. `imagefolder:cifar10-jpeg.tar.gz#train`).
    pub train: String,
    /// Test images (e.g. `imagefolder:cifar10-jpeg.tar.gz#test`).
    pub test: String,
    /// The label to learn (`class` for an ImageFolder).
    pub label: String,
    /// Image side.
    pub size: usize,
    /// Training images used (a seeded random subset; 0 = all).
    pub train_images: usize,
    /// Test images used (a seeded random subset; 0 = all).
    pub test_images: usize,
    /// Epochs per model.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate (Adam, cosine to a tenth).
    pub learning_rate: f64,
    /// Recognizer widths.
    pub widths: Vec<usize>,
    /// Block size of the block-wise transforms.
    pub block: usize,
    /// ConvMixer width.
    pub mixer_dim: usize,
    /// ConvMixer depth.
    pub mixer_depth: usize,
    /// ConvMixer patch size (= the key's block).
    pub mixer_patch: usize,
    /// Key-estimation attack: swaps tried.
    pub attack_iterations: usize,
    /// Key-estimation attack: labelled plain images the attacker scores guesses on.
    pub attack_batch: usize,
    /// Seed (subsets, initialisation, shuffling, attack).
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            train: "imagefolder:../shared/data/cifar10/cifar10-jpeg.tar.gz#train".into(),
            test: "imagefolder:../shared/data/cifar10/cifar10-jpeg.tar.gz#test".into(),
            label: "class".into(),
            size: 32,
            train_images: 10_000,
            test_images: 2_000,
            epochs: 4,
            batch_size: 64,
            learning_rate: 2e-3,
            widths: vec![32, 64, 128],
            block: 4,
            mixer_dim: 128,
            mixer_depth: 4,
            mixer_patch: 4,
            attack_iterations: 400,
            attack_batch: 256,
            seed: 7,
        }
    }
}

/// One key-estimation attack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttackResult {
    /// Swaps tried.
    pub iterations: usize,
    /// Swaps kept.
    pub accepted: usize,
    /// Attack-batch accuracy with the random starting key.
    pub batch_start: f64,
    /// Attack-batch accuracy with the final estimate.
    pub batch_end: f64,
    /// Test accuracy with the estimated key.
    pub test: f64,
    /// Key entries the estimate has right.
    pub entries_right: usize,
    /// Key entries.
    pub entries: usize,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Network.
    pub model: String,
    /// Protection (`none`, `shuffle`, `np`, `ffx`, `patch encryption`).
    pub protection: String,
    /// Test accuracy with the correct key (the unprotected model: on plain images).
    pub correct_key: f64,
    /// Test accuracy with a wrong key.
    pub wrong_key: Option<f64>,
    /// Test accuracy on plain images.
    pub plain_images: Option<f64>,
    /// The key-estimation attack.
    pub attack: Option<AttackResult>,
    /// Seconds spent training.
    pub train_seconds: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// What ran.
    pub config: EvalConfig,
    /// Images actually used.
    pub train_count: usize,
    /// Images actually used.
    pub test_count: usize,
    /// Chance level (1 / classes).
    pub chance: f64,
    /// The rows.
    pub rows: Vec<Row>,
    /// max |logits(encrypted model, encrypted images) − logits(plain model, plain images)| over
    /// the test set.
    pub convmixer_max_logit_diff: f32,
    /// Wall time.
    pub seconds: f64,
}

/// A network the evaluation trains.
pub trait Classify: Module {
    /// Logits `[N, classes]` of images `[N, 3, H, W]`.
    fn logits(&self, x: Tensor<4>) -> Tensor<2>;
}
impl Classify for Recognizer {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}
impl Classify for ConvMixer {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}

/// Training settings shared by every model of the evaluation.
#[derive(Debug, Clone)]
pub struct Fit<'a> {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Seed.
    pub seed: u64,
    /// Index of the label attribute.
    pub attr: usize,
    /// Progress bar label, `None` for no bar.
    pub progress: Option<&'a str>,
}

/// Trains `model` (initialised on the autodiff `device`) on `ds`, every batch passed through `t`,
/// with random horizontal flips of the plain images. Returns the model in inference mode.
pub fn fit<M: Classify>(
    mut model: M,
    ds: &Dataset,
    t: Option<&BlockTransform>,
    f: &Fit<'_>,
    device: &Device,
) -> M {
    device.seed(f.seed);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut order: Vec<usize> = (0..ds.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(f.seed);
    let bar = scrim_train::report::bar(
        (f.epochs * ds.len()) as u64,
        f.progress.unwrap_or(""),
        f.progress.is_some(),
    );
    for epoch in 0..f.epochs {
        let tt = epoch as f64 / f.epochs.max(2).saturating_sub(1) as f64;
        let min = f.learning_rate * 0.1;
        let lr = min + 0.5 * (f.learning_rate - min) * (1.0 + (std::f64::consts::PI * tt).cos());
        order.shuffle(&mut rng);
        for idx in batch::chunks(&order, f.batch_size) {
            let mut x = batch::images(ds, idx, device);
            if rng.random_bool(0.5) {
                x = x.flip([3]);
            }
            let x = keyed::maybe_apply(t, x);
            let y = batch::labels(ds, f.attr, idx, device);
            let loss = loss_fn.forward(model.logits(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            bar.inc(idx.len() as u64);
        }
    }
    bar.finish();
    model.valid()
}

/// Test accuracy of a burn model on `ds` passed through `t`.
pub fn accuracy<M: Classify>(
    model: &M,
    ds: &Dataset,
    attr: usize,
    t: Option<&BlockTransform>,
    device: &Device,
) -> f64 {
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut hits = 0usize;
    for idx in all.chunks(500) {
        let x = keyed::maybe_apply(t, batch::images(ds, idx, device));
        let pred = batch::predictions(model.logits(x));
        hits += pred
            .iter()
            .zip(idx)
            .filter(|(p, i)| **p == ds.attributes[attr].labels[**i] as usize)
            .count();
    }
    hits as f64 / ds.len().max(1) as f64
}

/// The key-estimation attack (MaungMaung & Kiya): start from a random key, try swapping two key
/// entries, keep the swap when the accuracy on a labelled batch of plain images improves. For
/// shuffle the key is the permutation; for negative/positive the mask (a swap exchanges a set and
/// an unset position, keeping half set).
///
/// # Errors
/// [`Error::Input`] for a scheme other than shuffle and np.
#[allow(clippy::too_many_arguments)]
pub fn key_estimation_attack<M: Classify>(
    model: &M,
    truth: &BlockTransform,
    attack: &Dataset,
    test: &Dataset,
    attr: usize,
    iterations: usize,
    seed: u64,
    device: &Device,
) -> Result<AttackResult> {
    let block = truth.block();
    let l = truth.block_len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let idx: Vec<usize> = (0..attack.len()).collect();
    let x = batch::images(attack, &idx, device);
    let score = |t: &BlockTransform| -> f64 {
        let pred = batch::predictions(model.logits(keyed::apply(t, x.clone())));
        pred.iter()
            .zip(&attack.attributes[attr].labels)
            .filter(|(p, l)| **p == **l as usize)
            .count() as f64
            / attack.len().max(1) as f64
    };
    enum Guess {
        Perm(Vec<usize>),
        Mask(Vec<bool>),
    }
    let build = |g: &Guess| -> Result<BlockTransform> {
        Ok(match g {
            Guess::Perm(p) => BlockTransform::with_permutation(block, p.clone())?,
            Guess::Mask(m) => BlockTransform::with_mask(block, m.clone())?,
        })
    };
    let mut guess = match truth.scheme() {
        Scheme::Shuffle => {
            let mut p: Vec<usize> = (0..l).collect();
            p.shuffle(&mut rng);
            Guess::Perm(p)
        }
        Scheme::NegPos => {
            let mut m: Vec<bool> = (0..l).map(|i| i < l / 2).collect();
            m.shuffle(&mut rng);
            Guess::Mask(m)
        }
        other => {
            return Err(Error::Input(format!(
                "the key-estimation attack covers shuffle and np, not {other}"
            )));
        }
    };
    let start = score(&build(&guess)?);
    let mut best = start;
    let mut accepted = 0;
    for _ in 0..iterations {
        let (i, j) = match &guess {
            Guess::Perm(_) => {
                let i = rng.random_range(0..l);
                let mut j = rng.random_range(0..l - 1);
                if j >= i {
                    j += 1;
                }
                (i, j)
            }
            Guess::Mask(m) => {
                let on: Vec<usize> = (0..l).filter(|&k| m[k]).collect();
                let off: Vec<usize> = (0..l).filter(|&k| !m[k]).collect();
                (
                    on[rng.random_range(0..on.len())],
                    off[rng.random_range(0..off.len())],
                )
            }
        };
        match &mut guess {
            Guess::Perm(p) => p.swap(i, j),
            Guess::Mask(m) => m.swap(i, j),
        }
        let s = score(&build(&guess)?);
        if s > best {
            best = s;
            accepted += 1;
        } else {
            match &mut guess {
                Guess::Perm(p) => p.swap(i, j),
                Guess::Mask(m) => m.swap(i, j),
            }
        }
    }
    let estimate = build(&guess)?;
    let entries_right = match &guess {
        Guess::Perm(p) => p
            .iter()
            .zip(truth.permutation().unwrap_or_default())
            .filter(|(a, b)| a == b)
            .count(),
        Guess::Mask(m) => m
            .iter()
            .zip(truth.mask().unwrap_or_default())
            .filter(|(a, b)| a == b)
            .count(),
    };
    Ok(AttackResult {
        iterations,
        accepted,
        batch_start: start,
        batch_end: best,
        test: accuracy(model, test, attr, Some(&estimate), device),
        entries_right,
        entries: l,
    })
}

fn subset(ds: &Dataset, n: usize, seed: u64) -> Dataset {
    let mut idx: Vec<usize> = (0..ds.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    if n > 0 && n < idx.len() {
        idx.truncate(n);
    }
    ds.subset(&idx)
}

/// tract accuracy of `model` on `ds` passed through scrim-core's transform `t`, and the logits.
fn onnx_accuracy(
    model: &Model,
    ds: &Dataset,
    attr: usize,
    t: Option<&BlockTransform>,
) -> Result<(f64, Vec<f32>)> {
    let (logits, k) = scrim_train::eval::onnx_logits(model, ds, t)?;
    let hits = logits
        .chunks(k)
        .enumerate()
        .filter(|(i, row)| scrim_train::eval::argmax(row) == ds.attributes[attr].labels[*i] as usize)
        .count();
    Ok((hits as f64 / ds.len().max(1) as f64, logits))
}

/// Runs the evaluation with `key` (and a second, unrelated key as the wrong one).
///
/// # Errors
/// Data, model and key errors.
pub fn run(cfg: &EvalConfig, key: &SecretKey, progress: bool) -> Result<EvalReport> {
    let started = Instant::now();
    let load = |spec: &str| -> Result<Dataset> {
        let spec: DataSpec = spec.parse()?;
        data::load(
            &spec,
            &LoadOptions {
                size: cfg.size,
                cache: true,
                progress,
            },
        )
    };
    let train = subset(&load(&cfg.train)?, cfg.train_images, cfg.seed);
    let test = subset(&load(&cfg.test)?, cfg.test_images, cfg.seed ^ 1);
    let a = train.attribute(&cfg.label)?.clone();
    let attr = train
        .attributes
        .iter()
        .position(|b| b.name == a.name)
        .unwrap_or(0);
    if test.attribute(&cfg.label)?.classes != a.classes {
        return Err(Error::Input(
            "the train and test sets have different classes".into(),
        ));
    }
    let classes = a.classes.len();
    scrim_train::report::note(&format!(
        "protect eval: {} training and {} test images at {}x{}, {classes} classes",
        train.len(),
        test.len(),
        cfg.size,
        cfg.size
    ));
    let wrong = SecretKey::from_bytes(*key.subkey("scrim/eval/wrong-key"));
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    let fit_cfg = |label: &'static str| Fit {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        learning_rate: cfg.learning_rate,
        seed: cfg.seed,
        attr,
        progress: progress.then_some(label),
    };
    let recognizer = || {
        train_device.seed(cfg.seed);
        RecognizerConfig::new(classes)
            .with_widths(cfg.widths.clone())
            .init(&train_device)
    };
    let mut rows = Vec::new();

    let t0 = Instant::now();
    let plain = fit(
        recognizer(),
        &train,
        None,
        &fit_cfg("recognizer, no key"),
        &train_device,
    );
    rows.push(Row {
        model: format!("Recognizer {:?}", cfg.widths),
        protection: "none".into(),
        correct_key: accuracy(&plain, &test, attr, None, &device),
        wrong_key: None,
        plain_images: None,
        attack: None,
        train_seconds: t0.elapsed().as_secs_f64(),
    });
    scrim_train::report::note(&format!("{:?}", rows.last()));
    drop(plain);

    let attack_set = subset(&train, cfg.attack_batch, cfg.seed ^ 2);
    for scheme in [Scheme::Shuffle, Scheme::NegPos, Scheme::Ffx] {
        let t = BlockTransform::new(key, scheme, cfg.block)?;
        let w = BlockTransform::new(&wrong, scheme, cfg.block)?;
        let t0 = Instant::now();
        let label: &'static str = match scheme {
            Scheme::Shuffle => "recognizer, shuffle",
            Scheme::NegPos => "recognizer, np",
            _ => "recognizer, ffx",
        };
        let m = fit(
            recognizer(),
            &train,
            Some(&t),
            &fit_cfg(label),
            &train_device,
        );
        let train_seconds = t0.elapsed().as_secs_f64();
        let attack = match scheme {
            Scheme::Shuffle | Scheme::NegPos => Some(key_estimation_attack(
                &m,
                &t,
                &attack_set,
                &test,
                attr,
                cfg.attack_iterations,
                cfg.seed ^ 3,
                &device,
            )?),
            _ => None,
        };
        rows.push(Row {
            model: format!("Recognizer {:?}", cfg.widths),
            protection: format!("{scheme} (M={})", cfg.block),
            correct_key: accuracy(&m, &test, attr, Some(&t), &device),
            wrong_key: Some(accuracy(&m, &test, attr, Some(&w), &device)),
            plain_images: Some(accuracy(&m, &test, attr, None, &device)),
            attack,
            train_seconds,
        });
        scrim_train::report::note(&format!("{:?}", rows.last()));
    }

    // ConvMixer: trained on plain images, encrypted afterwards, run in tract.
    let t0 = Instant::now();
    train_device.seed(cfg.seed);
    let mixer = ConvMixerConfig::new(classes)
        .with_dim(cfg.mixer_dim)
        .with_depth(cfg.mixer_depth)
        .with_patch(cfg.mixer_patch)
        .init(&train_device);
    let mixer = fit(mixer, &train, None, &fit_cfg("convmixer"), &train_device);
    let train_seconds = t0.elapsed().as_secs_f64();
    let input = train.input();
    let onnx = convmixer_onnx(&mixer, input);
    let manifest = Manifest::recognizer("convmixer", input, &cfg.label, a.classes.clone());
    let (enc, enc_manifest, _) =
        scrim_core::model_crypt::encrypt_patch_model(&onnx, &manifest, key)?;
    let plain_model = Model::load(&onnx, manifest, BatchMode::Dynamic)?;
    let enc_model = Model::load(&enc, enc_manifest, BatchMode::Dynamic)?;
    let t = BlockTransform::new(key, Scheme::Patch, cfg.mixer_patch)?;
    let w = BlockTransform::new(&wrong, Scheme::Patch, cfg.mixer_patch)?;
    let (plain_acc, plain_logits) = onnx_accuracy(&plain_model, &test, attr, None)?;
    let (correct, enc_logits) = onnx_accuracy(&enc_model, &test, attr, Some(&t))?;
    let max_diff = plain_logits
        .iter()
        .zip(&enc_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    rows.push(Row {
        model: format!(
            "ConvMixer-{}/{} p={}",
            cfg.mixer_dim, cfg.mixer_depth, cfg.mixer_patch
        ),
        protection: "none".into(),
        correct_key: plain_acc,
        wrong_key: None,
        plain_images: None,
        attack: None,
        train_seconds,
    });
    rows.push(Row {
        model: format!(
            "ConvMixer-{}/{} p={}",
            cfg.mixer_dim, cfg.mixer_depth, cfg.mixer_patch
        ),
        protection: format!("patch encryption (p={})", cfg.mixer_patch),
        correct_key: correct,
        wrong_key: Some(onnx_accuracy(&enc_model, &test, attr, Some(&w))?.0),
        plain_images: Some(onnx_accuracy(&enc_model, &test, attr, None)?.0),
        attack: None,
        train_seconds: 0.0,
    });
    Ok(EvalReport {
        config: cfg.clone(),
        train_count: train.len(),
        test_count: test.len(),
        chance: 1.0 / classes as f64,
        rows,
        convmixer_max_logit_diff: max_diff,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The table as Markdown.
pub fn markdown(r: &EvalReport) -> String {
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let opt = |v: Option<f64>| v.map_or("—".to_string(), pct);
    let mut s = String::new();
    s.push_str("| model | protection | correct key | wrong key | plain images | key-estimation attack (test acc. with the estimate; batch acc. start → end; entries right) | training |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for row in &r.rows {
        let attack = row.attack.as_ref().map_or("—".to_string(), |a| {
            format!(
                "{} ({} → {} on {} swaps, {} kept; {}/{} entries right)",
                pct(a.test),
                pct(a.batch_start),
                pct(a.batch_end),
                a.iterations,
                a.accepted,
                a.entries_right,
                a.entries
            )
        });
        let correct = if row.protection == "none" {
            format!("{} (no key)", pct(row.correct_key))
        } else {
            pct(row.correct_key)
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} s |\n",
            row.model,
            row.protection,
            correct,
            opt(row.wrong_key),
            opt(row.plain_images),
            attack,
            row.train_seconds
        ));
    }
    s.push_str(&format!(
        "\nChance: {}. {} training / {} test images at {}x{}, {} epochs per model. ConvMixer: \
         max |logit difference| between the encrypted model on encrypted images and the plain \
         model on plain images over the test set: {:.2e}. Wall time {:.0} s.\n",
        pct(r.chance),
        r.train_count,
        r.test_count,
        r.config.size,
        r.config.size,
        r.config.epochs,
        r.convmixer_max_logit_diff,
        r.seconds
    ));
    s
}

/// Writes the table as Markdown to `out` (with the command that made it and the data), and the
/// full report as JSON beside it.
///
/// # Errors
/// I/O errors.
pub fn save(r: &EvalReport, out: &std::path::Path, command: &str) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let md = format!(
        "# Model access control with secret keys: measured\n\n\
         The table was generated by `scrim protect eval` with this command (rerun it to refresh).\n\n\
         Command: `{command}`\n\n\
         Data: train `{}`, test `{}` (seeded random subsets of {} and {} images), label `{}`.\n\n{}",
        r.config.train,
        r.config.test,
        r.train_count,
        r.test_count,
        r.config.label,
        markdown(r)
    );
    std::fs::write(out, md).map_err(|e| Error::io(out, e))?;
    let json = out.with_extension("json");
    let text = serde_json::to_string_pretty(r).unwrap_or_default();
    std::fs::write(&json, text + "\n").map_err(|e| Error::io(&json, e))
}
