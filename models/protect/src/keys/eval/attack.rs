//! The key-estimation attack on block-wise transforms (MaungMaung & Kiya): hill climbing on the
//! key, scored by a trained model's accuracy on labelled plain images.

use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scrim_core::{BlockTransform, Scheme};
use scrim_train::data::Dataset;
use scrim_train::{batch, keyed};
use serde::{Deserialize, Serialize};

use crate::keys::eval::fit::{Classify, accuracy};
use crate::{Error, Result};

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

/// The key-estimation attack (MaungMaung & Kiya): start from a random key, try swapping two key
/// entries, keep the swap when the accuracy on a labelled batch of plain images improves. For
/// shuffle the key is the permutation; for negative/positive the mask (a swap exchanges a set and
/// an unset position, keeping half set).
///
/// # Errors
/// [`Error::AttackScheme`] for a scheme other than shuffle and np.
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
            return Err(Error::AttackScheme(other));
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
