//! Dataset helpers the experiments share: seeded random subsets and label lookup.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use scrim_train::data::Dataset;

use crate::Result;

/// `n` images of `ds` drawn at random with `seed`, in the drawn order; all of them, shuffled,
/// when `n` is 0 or at least `ds.len()`.
pub(crate) fn random_subset(ds: &Dataset, n: usize, seed: u64) -> Dataset {
    let mut idx: Vec<usize> = (0..ds.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    if n > 0 && n < idx.len() {
        idx.truncate(n);
    }
    ds.subset(&idx)
}

/// The position in `ds.attributes` of the label `name` (with scrim-train's aliases, e.g. `age`).
///
/// # Errors
/// scrim-train's input error, listing the labels, for an unknown name.
pub(crate) fn attribute_index(ds: &Dataset, name: &str) -> Result<usize> {
    let name = &ds.attribute(name)?.name;
    Ok(ds
        .attributes
        .iter()
        .position(|a| &a.name == name)
        .unwrap_or(0))
}
