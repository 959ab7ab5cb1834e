//! A deterministic, stratified train/validation/test split.
//!
//! Within each class of the stratifying attribute, images are ordered by a keyed hash of their
//! name and cut by the fractions. The same data, seed and fractions give the same split on any
//! machine, and adding images moves few existing ones.

use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use crate::{Error, Result};

/// Fractions of each class that go to validation and test; the rest trains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    /// Validation share.
    pub val: f64,
    /// Test share.
    pub test: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self {
            val: 0.1,
            test: 0.2,
        }
    }
}

/// Indices into a [`Dataset`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training images.
    pub train: Vec<usize>,
    /// Validation images (early stopping, checkpoint choice).
    pub val: Vec<usize>,
    /// Held-out test images.
    pub test: Vec<usize>,
}

impl Split {
    /// Splits `ds` stratified by `attribute`.
    ///
    /// # Errors
    /// [`Error::UnknownLabel`], [`Error::InvalidOption`] for bad fractions, [`Error::BadData`] for a split with an empty part.
    pub fn stratified(
        ds: &Dataset,
        attribute: &str,
        fractions: SplitFractions,
        seed: u64,
    ) -> Result<Self> {
        let attr = ds.attribute(attribute)?;
        let SplitFractions { val, test } = fractions;
        if !(0.0..1.0).contains(&val) || !(0.0..1.0).contains(&test) || val + test >= 1.0 {
            return Err(Error::option(
                "split fractions",
                format!("out of range: val {val}, test {test}"),
            ));
        }
        let mut split = Split {
            train: Vec::new(),
            val: Vec::new(),
            test: Vec::new(),
        };
        for class in 0..attr.classes.len() as u16 {
            let mut members: Vec<(u64, usize)> = (0..ds.len())
                .filter(|&i| attr.labels[i] == class)
                .map(|i| (hash(seed, &ds.names[i]), i))
                .collect();
            members.sort_unstable();
            let n = members.len();
            let n_test = (n as f64 * test).round() as usize;
            let n_val = (n as f64 * val).round() as usize;
            for (k, (_, i)) in members.into_iter().enumerate() {
                if k < n_test {
                    split.test.push(i);
                } else if k < n_test + n_val {
                    split.val.push(i);
                } else {
                    split.train.push(i);
                }
            }
        }
        for part in [&mut split.train, &mut split.val, &mut split.test] {
            part.sort_unstable();
        }
        if split.train.is_empty() || split.test.is_empty() || (val > 0.0 && split.val.is_empty()) {
            return Err(Error::data(
                format!("{} images", ds.len()),
                format!(
                    "too few to split into train/val/test ({} / {} / {})",
                    split.train.len(),
                    split.val.len(),
                    split.test.len()
                ),
            ));
        }
        Ok(split)
    }
}

fn hash(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final avalanche so that similar names do not sort together.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{self, SyntheticConfig};

    #[test]
    fn split_is_deterministic_stratified_and_disjoint() {
        let ds = synthetic::generate(
            &SyntheticConfig {
                count: 400,
                seed: 1,
            },
            16,
        );
        let a = Split::stratified(&ds, "shape", SplitFractions::default(), 7).expect("split");
        let b = Split::stratified(&ds, "shape", SplitFractions::default(), 7).expect("split");
        assert_eq!(a, b);
        let mut all: Vec<usize> = a
            .train
            .iter()
            .chain(&a.val)
            .chain(&a.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..400).collect::<Vec<_>>());
        assert!((a.test.len() as i64 - 80).abs() <= 2, "{}", a.test.len());
        // Stratified: the class balance of the test part follows the whole set.
        let attr = ds.attribute("shape").expect("attr");
        let share = |idx: &[usize]| {
            idx.iter().filter(|&&i| attr.labels[i] == 1).count() as f64 / idx.len() as f64
        };
        assert!((share(&a.test) - share(&(0..400).collect::<Vec<_>>())).abs() < 0.02);
        let c = Split::stratified(&ds, "shape", SplitFractions::default(), 8).expect("split");
        assert_ne!(a.test, c.test);
    }

    #[test]
    fn too_small_or_bad_fractions_fail() {
        let ds = synthetic::generate(&SyntheticConfig { count: 3, seed: 1 }, 8);
        assert!(Split::stratified(&ds, "shape", SplitFractions::default(), 1).is_err());
        let ds = synthetic::generate(
            &SyntheticConfig {
                count: 100,
                seed: 1,
            },
            8,
        );
        assert!(
            Split::stratified(
                &ds,
                "shape",
                SplitFractions {
                    val: 0.6,
                    test: 0.5
                },
                1
            )
            .is_err()
        );
        assert!(Split::stratified(&ds, "nope", SplitFractions::default(), 1).is_err());
    }
}
