//! Kernel importance for selective encryption: PSS (learned hard-concrete L0 gates), and the
//! random and |kernel mean| baselines.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scrim_core::manifest::Normalization;
use scrim_core::onnx_graph::Graph;
use scrim_seal::selective::ConvLayer;
use serde::{Deserialize, Serialize};

use scrim_train::batch;
use scrim_train::data::Dataset;

use crate::dataset::attribute_index;
use crate::levels::net::OnnxNet;
use crate::{Error, Result};

/// How kernels are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Importance {
    /// Probabilistic selection strategy: a hard-concrete L0 gate per kernel, trained with the
    /// network frozen; importance = learned `log α`.
    Pss,
    /// A uniformly random order (the paper's random baseline).
    Random,
    /// |mean of the kernel| descending.
    Mean,
}

impl std::str::FromStr for Importance {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pss" => Ok(Self::Pss),
            "random" => Ok(Self::Random),
            "mean" => Ok(Self::Mean),
            _ => Err(Error::UnknownImportance(s.to_string())),
        }
    }
}

impl std::fmt::Display for Importance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pss => "pss",
            Self::Random => "random",
            Self::Mean => "mean",
        })
    }
}

/// Gate training for PSS (Louizos et al.'s hard concrete; γ = −0.1, ζ = 1.1, β = 2/3).
#[derive(Config, Debug)]
pub struct PssConfig {
    /// Optimiser steps per layer.
    #[config(default = 120)]
    pub steps: usize,
    /// Images per step.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Adam learning rate on `log α`.
    #[config(default = 0.05)]
    pub learning_rate: f64,
    /// λ₀, weight of `Σ P(gate ≠ 0)` in the loss.
    #[config(default = 0.002)]
    pub l0: f64,
    /// Initial `log α` (2 ≈ gates open with probability 0.97).
    #[config(default = 2.0)]
    pub init_log_alpha: f64,
    /// Seed of batch order and gate noise.
    #[config(default = 11)]
    pub seed: u64,
}

const GAMMA: f64 = -0.1;
const ZETA: f64 = 1.1;
const BETA: f64 = 2.0 / 3.0;
const LOG_ALPHA_MIN: f64 = -4.605_170_185_988_091; // ln 0.01
const LOG_ALPHA_MAX: f64 = 4.605_170_185_988_091; // ln 100

/// Kernels of `layer` by decreasing score, ties broken by decreasing kernel L2 norm and then by
/// index (so the order is total and reproducible).
pub fn rank(scores: &[f32], weights: &[f32], kernel_len: usize) -> Vec<usize> {
    let norm = |i: usize| {
        weights[i * kernel_len..(i + 1) * kernel_len]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
    };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then(norm(b).total_cmp(&norm(a)))
            .then(a.cmp(&b))
    });
    idx
}

/// |mean of each kernel|.
pub fn mean_scores(weights: &[f32], kernel_len: usize) -> Vec<f32> {
    weights
        .chunks(kernel_len.max(1))
        .map(|k| (k.iter().sum::<f32>() / k.len() as f32).abs())
        .collect()
}

/// Uniform random scores from a seeded generator.
pub fn random_scores(kernels: usize, seed: u64) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..kernels).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut s = vec![0.0; kernels];
    for (rank, i) in idx.into_iter().enumerate() {
        s[i] = (kernels - rank) as f32;
    }
    s
}

/// PSS: trains one hard-concrete gate per kernel of `layer` with every weight of the network
/// frozen, on `CE + λ₀ Σ sigmoid(log α − β log(−γ/ζ))`, `log α` clamped to [ln 0.01, ln 100]
/// after every Adam step. Returns the learned `log α` per kernel (`f · C + c`).
///
/// # Errors
/// [`Error::PssUnsupported`] when the model cannot be rebuilt in burn; scrim-train's input error
/// for an unknown attribute.
#[allow(clippy::too_many_arguments)]
pub fn pss_scores(
    graph: &Graph,
    norm: &Normalization,
    layer: &ConvLayer,
    ds: &Dataset,
    attr: &str,
    cfg: &PssConfig,
    device: &Device,
    progress: bool,
) -> Result<Vec<f32>> {
    let ad = device.clone().autodiff();
    let net = OnnxNet::new(graph, norm, &ad)?;
    let attr_idx = attribute_index(ds, attr)?;
    let [f, c, _, _] = layer.shape;
    let n = f * c;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut la = vec![cfg.init_log_alpha as f32; n];
    let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let lr = cfg.learning_rate as f32;
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let shift = (BETA * (-GAMMA / ZETA).ln()) as f32;
    let mut order: Vec<usize> = (0..ds.len()).collect();
    let mut pos = order.len();
    let bar = scrim_train::report::bar(cfg.steps as u64, &format!("PSS {}", layer.name), progress);
    for step in 1..=cfg.steps {
        if pos + cfg.batch_size > order.len() {
            order.shuffle(&mut rng);
            pos = 0;
        }
        let idx = &order[pos..(pos + cfg.batch_size).min(order.len())];
        pos += cfg.batch_size;
        let x = batch::images(ds, idx, &ad);
        let y = batch::labels(ds, attr_idx, idx, &ad);
        let log_alpha =
            Tensor::<2>::from_data(TensorData::new(la.clone(), [f, c]), &ad).require_grad();
        let u: Vec<f32> = (0..n)
            .map(|_| rng.random_range(1e-6f32..1.0 - 1e-6))
            .collect();
        let u = Tensor::<2>::from_data(TensorData::new(u, [f, c]), &ad);
        let logit = u.clone().log() - u.neg().add_scalar(1.0).log();
        let s = activation::sigmoid((logit + log_alpha.clone()).div_scalar(BETA));
        let z = s
            .mul_scalar(ZETA - GAMMA)
            .add_scalar(GAMMA)
            .clamp(0.0, 1.0)
            .reshape([f, c, 1, 1]);
        let logits = net.forward(x, Some((&layer.name, z)))?;
        let ce = loss_fn.forward(logits, y);
        let l0 = activation::sigmoid(log_alpha.clone().sub_scalar(shift)).sum();
        let loss = ce + l0.mul_scalar(cfg.l0);
        let grads = loss.backward();
        let g = log_alpha
            .grad(&grads)
            .map(batch::to_vec)
            .ok_or(Error::NoGateGradient)?;
        let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for i in 0..n {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            la[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            la[i] = la[i].clamp(LOG_ALPHA_MIN as f32, LOG_ALPHA_MAX as f32);
        }
        bar.inc(1);
    }
    bar.finish();
    Ok(la)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_rank_as_documented() {
        // Kernels of 2 values: means 0.5, -2, 1 → |mean| order 1, 2, 0.
        let w = [0.5, 0.5, -2.0, -2.0, 1.0, 1.0];
        let s = mean_scores(&w, 2);
        assert_eq!(rank(&s, &w, 2), vec![1, 2, 0]);
        // Ties go to the larger kernel.
        let w = [0.1, 0.1, 3.0, 3.0];
        assert_eq!(rank(&[1.0, 1.0], &w, 2), vec![1, 0]);
        let r = random_scores(100, 3);
        let mut sorted = rank(&r, &[0.0; 200], 2);
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(r, random_scores(100, 3));
    }
}
