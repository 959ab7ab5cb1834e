//! Running the whole evaluation: the unprotected recognizer, the recognizers behind each
//! block-wise transform (with the key-estimation attack), and the ConvMixer encrypted after
//! training and run in tract.

use std::time::Instant;

use burn::prelude::*;
use scrim_core::manifest::Manifest;
use scrim_core::{BatchMode, BlockTransform, Model, Scheme, SecretKey};
use scrim_train::data::{self, DataSpec, Dataset, LoadOptions};
use scrim_train::nets::RecognizerConfig;
use scrim_train::report::note;

use crate::convmixer::{ConvMixerConfig, convmixer_onnx};
use crate::dataset::{attribute_index, random_subset};
use crate::keys::eval::attack::key_estimation_attack;
use crate::keys::eval::config::EvalConfig;
use crate::keys::eval::fit::{Fit, accuracy, fit};
use crate::keys::eval::table::{EvalReport, Row, percent};
use crate::{Error, Result};

/// Runs the evaluation with `key` (and a second, unrelated key as the wrong one).
///
/// # Errors
/// Data, model and key errors.
pub fn run(cfg: &EvalConfig, key: &SecretKey, progress: bool) -> Result<EvalReport> {
    let started = Instant::now();
    let load = |spec: &str| -> Result<Dataset> {
        let spec: DataSpec = spec.parse()?;
        Ok(data::load(
            &spec,
            &LoadOptions {
                size: cfg.size,
                cache: true,
                progress,
            },
        )?)
    };
    let train = random_subset(&load(&cfg.train)?, cfg.train_images, cfg.seed);
    let test = random_subset(&load(&cfg.test)?, cfg.test_images, cfg.seed ^ 1);
    let attr = attribute_index(&train, &cfg.label)?;
    let a = train.attributes[attr].clone();
    if test.attribute(&cfg.label)?.classes != a.classes {
        return Err(Error::ClassMismatch);
    }
    let classes = a.classes.len();
    note(&format!(
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
    let row = Row {
        model: format!("Recognizer {:?}", cfg.widths),
        protection: "none".into(),
        correct_key: accuracy(&plain, &test, attr, None, &device),
        wrong_key: None,
        plain_images: None,
        attack: None,
        train_seconds: t0.elapsed().as_secs_f64(),
    };
    note_row(&row);
    rows.push(row);
    drop(plain);

    let attack_set = random_subset(&train, cfg.attack_batch, cfg.seed ^ 2);
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
        let row = Row {
            model: format!("Recognizer {:?}", cfg.widths),
            protection: format!("{scheme} (M={})", cfg.block),
            correct_key: accuracy(&m, &test, attr, Some(&t), &device),
            wrong_key: Some(accuracy(&m, &test, attr, Some(&w), &device)),
            plain_images: Some(accuracy(&m, &test, attr, None, &device)),
            attack,
            train_seconds,
        };
        note_row(&row);
        rows.push(row);
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
        scrim_seal::model_crypt::encrypt_patch_model(&onnx, &manifest, key)?;
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

/// Reports a finished row: accuracies in %, the attack's result where there is one.
fn note_row(row: &Row) {
    let key = if row.protection == "none" {
        "without a key"
    } else {
        "with the key"
    };
    let mut text = format!(
        "protect eval: {}, {}: {} {key}",
        row.model,
        row.protection,
        percent(row.correct_key)
    );
    if let (Some(w), Some(p)) = (row.wrong_key, row.plain_images) {
        text.push_str(&format!(
            ", {} with a wrong key, {} on plain images",
            percent(w),
            percent(p)
        ));
    }
    if let Some(a) = &row.attack {
        text.push_str(&format!(
            ", {} with the estimated key ({}/{} entries right)",
            percent(a.test),
            a.entries_right,
            a.entries
        ));
    }
    note(&format!("{text} ({:.0} s training)", row.train_seconds));
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
        .filter(|(i, row)| {
            scrim_train::eval::argmax(row) == ds.attributes[attr].labels[*i] as usize
        })
        .count();
    Ok((hits as f64 / ds.len().max(1) as f64, logits))
}
