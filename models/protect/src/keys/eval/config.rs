//! What `scrim protect eval` runs: data, training budget, networks, attack.

use serde::{Deserialize, Serialize};

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
