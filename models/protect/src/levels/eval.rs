//! The accuracy-per-level experiment behind `scrim protect eval-levels`: for each importance
//! (PSS, random, |mean|) and ratio, protect the recognizer, restore every level 0..=M, and
//! measure test accuracy through tract.

use std::path::PathBuf;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use scrim_core::{BatchMode, Manifest, Model};
use scrim_seal::selective;
use scrim_train::data::{self, DataSpec, Dataset, LoadOptions};
use scrim_train::eval::{self, Accuracy, ClassifierConfig};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::dataset::random_subset;
use crate::files::{create_dir, read, write, write_json};
use crate::levels::importance::{Importance, PssConfig};
use crate::levels::rank::{protected_layers, rank_layers, selections};

/// What `scrim protect eval-levels` does.
#[derive(Debug, Clone)]
pub struct EvalLevelsRequest {
    /// Training images (for training the recognizer when no model is given, and for PSS).
    pub train: DataSpec,
    /// Test images.
    pub test: DataSpec,
    /// The label.
    pub attr: String,
    /// An existing recognizer ONNX (manifest beside it); trained here when `None`.
    pub model: Option<PathBuf>,
    /// Widths of the recognizer trained here (conv-BN-ReLU-pool blocks).
    pub widths: Vec<usize>,
    /// Training epochs of the recognizer trained here.
    pub epochs: usize,
    /// Training images used (a seeded random subset; 0 = all).
    pub train_limit: usize,
    /// Test images used (a seeded random subset; 0 = all).
    pub test_limit: usize,
    /// Image size.
    pub size: usize,
    /// Importances compared.
    pub importances: Vec<Importance>,
    /// Ratios R.
    pub ratios: Vec<f64>,
    /// Levels M.
    pub levels: usize,
    /// Conv layers protected (indices); all when `None`.
    pub layers: Option<Vec<usize>>,
    /// PSS gate training.
    pub pss: PssConfig,
    /// Seed of subsets, training, the random order and the DPRM draws (the experiment is
    /// reproducible; `scrim protect select` draws from the OS instead).
    pub seed: u64,
    /// Output folder (recognizer, `levels.json`, `levels.md`).
    pub out: PathBuf,
    /// Progress bars.
    pub progress: bool,
    /// Decoded-image cache.
    pub cache: bool,
}

/// One (importance, ratio) row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelRow {
    /// Importance.
    pub importance: Importance,
    /// Ratio R.
    pub ratio: f64,
    /// Kernels encrypted / kernels of the protected layers.
    pub encrypted_fraction: f64,
    /// Test accuracy at levels 0..=M.
    pub accuracy: Vec<f64>,
}

/// The whole experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelsReport {
    /// Test accuracy of the plain model.
    pub plain: f64,
    /// Majority-class rate of the test subset.
    pub majority: f64,
    /// Test images.
    pub test_images: usize,
    /// Training images.
    pub train_images: usize,
    /// Levels M.
    pub levels: usize,
    /// Protected layers: (initializer, kernels).
    pub layers: Vec<(String, usize)>,
    /// Seconds to rank kernels, per importance.
    pub rank_seconds: Vec<(Importance, f64)>,
    /// Seconds spent training the recognizer (0 when given).
    pub train_seconds: f64,
    /// Rows.
    pub rows: Vec<LevelRow>,
}

/// `limit` images of `ds` drawn with `seed`; `ds` as it is when the limit is 0 or not below its
/// size.
fn subset(ds: Dataset, limit: usize, seed: u64) -> Dataset {
    if limit == 0 || limit >= ds.len() {
        return ds;
    }
    random_subset(&ds, limit, seed)
}

/// Runs the experiment and writes `levels.json` and `levels.md` into `req.out`.
///
/// # Errors
/// Data, training, model and I/O errors.
pub fn eval_levels(req: &EvalLevelsRequest) -> Result<LevelsReport> {
    create_dir(&req.out)?;
    let opts = LoadOptions {
        size: req.size,
        cache: req.cache,
        progress: req.progress,
    };
    let train = subset(data::load(&req.train, &opts)?, req.train_limit, req.seed);
    let test = subset(data::load(&req.test, &opts)?, req.test_limit, req.seed + 1);
    let attr = train.attribute(&req.attr)?.clone();
    let device = scrim_train::backend::Backend::Flex.device()?;
    let started = Instant::now();
    let (onnx, manifest, train_seconds) = match &req.model {
        Some(path) => {
            let bytes = read(path)?;
            (bytes, Manifest::load_beside(path)?, 0.0)
        }
        None => {
            // 90% to train, 10% to pick the best epoch.
            let mut idx: Vec<usize> = (0..train.len()).collect();
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(req.seed + 2));
            let nval = (train.len() / 10).max(1);
            let (val, fit) = (train.subset(&idx[..nval]), train.subset(&idx[nval..]));
            let cfg = ClassifierConfig::new()
                .with_widths(req.widths.clone())
                .with_epochs(req.epochs)
                .with_patience(req.epochs)
                .with_seed(req.seed);
            let trained = eval::train_classifier(
                &fit,
                &val,
                &req.attr,
                &cfg,
                None,
                &device,
                "training recognizer",
                req.progress,
            )?;
            let input = train.input();
            let manifest =
                Manifest::recognizer("scrim-recognizer", input, &attr.name, attr.classes.clone());
            let bytes = scrim_train::export::recognizer_onnx(&trained.model, input);
            let path = req.out.join("recognizer.onnx");
            write(&path, &bytes)?;
            manifest.save(&Manifest::path_for(&path))?;
            (bytes, manifest, started.elapsed().as_secs_f64())
        }
    };
    let accuracy = |bytes: &[u8]| -> Result<Accuracy> {
        let model = Model::load(bytes, manifest.clone(), BatchMode::Dynamic)?;
        Ok(eval::onnx_accuracy(&model, &test, &req.attr)?)
    };
    let plain = accuracy(&onnx)?.accuracy;
    let all: Vec<usize> = (0..test.len()).collect();
    let majority = test.attribute(&req.attr)?.majority_rate(&all);
    let layers = protected_layers(&onnx, req.layers.as_deref())?;
    let total: usize = layers.iter().map(|l| l.kernels()).sum();
    let mut rows = Vec::new();
    let mut rank_seconds = Vec::new();
    for &importance in &req.importances {
        let t = Instant::now();
        let ranked = rank_layers(
            &onnx,
            &manifest,
            &layers,
            importance,
            Some((&train, req.attr.as_str())),
            &req.pss,
            req.seed,
            &device,
            req.progress,
        )?;
        rank_seconds.push((importance, t.elapsed().as_secs_f64()));
        for &ratio in &req.ratios {
            let sel = selections(&ranked, ratio);
            let mut rng = ChaCha20Rng::seed_from_u64(req.seed + 3);
            let p = selective::protect(&onnx, &sel, req.levels, &mut rng)?;
            let mut acc = vec![accuracy(&p.onnx)?.accuracy];
            for key in &p.keys {
                acc.push(accuracy(&selective::restore(&p.onnx, &p.bundle, key)?)?.accuracy);
            }
            let selected: usize = sel.iter().map(|s| s.ranked.len()).sum();
            rows.push(LevelRow {
                importance,
                ratio,
                encrypted_fraction: selected as f64 / total as f64,
                accuracy: acc,
            });
        }
    }
    let report = LevelsReport {
        plain,
        majority,
        test_images: test.len(),
        train_images: train.len(),
        levels: req.levels,
        layers: layers
            .iter()
            .map(|l| (l.name.clone(), l.kernels()))
            .collect(),
        rank_seconds,
        train_seconds,
        rows,
    };
    write_json(&req.out.join("levels.json"), &report, "")?;
    write(&req.out.join("levels.md"), markdown(&report))?;
    Ok(report)
}

/// The report as a Markdown table (accuracy in %, one row per importance and ratio).
pub fn markdown(r: &LevelsReport) -> String {
    let mut s = format!(
        "plain model: {:.1}% on {} test images (majority class {:.1}%); {} training images; \
         protected layers: {}\n\n",
        100.0 * r.plain,
        r.test_images,
        100.0 * r.majority,
        r.train_images,
        r.layers
            .iter()
            .map(|(n, k)| format!("{n} ({k} kernels)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.push_str("| importance | ratio R | encrypted kernels |");
    for l in 0..=r.levels {
        s.push_str(&format!(" level {l} |"));
    }
    s.push_str("\n|---|---|---|");
    for _ in 0..=r.levels {
        s.push_str("---|");
    }
    s.push('\n');
    for row in &r.rows {
        s.push_str(&format!(
            "| {} | {} | {:.1}% |",
            row.importance,
            row.ratio,
            100.0 * row.encrypted_fraction
        ));
        for a in &row.accuracy {
            s.push_str(&format!(" {:.1} |", 100.0 * a));
        }
        s.push('\n');
    }
    s
}
