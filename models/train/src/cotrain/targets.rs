//! What a run trains toward: the desired and sensitive attributes, the sensitive class prior,
//! and the key-based transform in front of the recognizer.

use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::{Error, Result};

/// Indices of the desired and sensitive attributes in the dataset.
pub(crate) struct Targets {
    pub desired: usize,
    pub sensitive: Option<usize>,
    /// Further labels the attacker-free term removes ([`TrainConfig::also_hide`]).
    pub also_hide: Vec<usize>,
    pub prior: Vec<f32>,
    /// The key-based transform every recognizer input goes through (after the perturbation).
    pub keyed: Option<scrim_core::BlockTransform>,
}

/// The targets of `cfg` on `ds`; the sensitive prior is counted over the `train` indices.
///
/// # Errors
/// Unknown labels, `--adversarial` without `--sensitive`, an unreadable key file.
pub(crate) fn targets(cfg: &TrainConfig, ds: &Dataset, train: &[usize]) -> Result<Targets> {
    let pos = |name: &str| ds.attribute_index(name);
    let desired = pos(&cfg.desired)?;
    let sensitive = cfg.sensitive.as_deref().map(pos).transpose()?;
    let also_hide = cfg
        .also_hide
        .iter()
        .map(|l| pos(l))
        .collect::<Result<Vec<_>>>()?;
    if cfg.adversarial && sensitive.is_none() {
        return Err(Error::option("--adversarial", "needs --sensitive LABEL"));
    }
    let mut prior = Vec::new();
    if let Some(s) = sensitive {
        let a = &ds.attributes[s];
        let mut counts = vec![0f32; a.classes.len()];
        for &i in train {
            counts[a.labels[i] as usize] += 1.0;
        }
        let total: f32 = counts.iter().sum::<f32>().max(1.0);
        prior = counts.iter().map(|c| c / total).collect();
    }
    Ok(Targets {
        desired,
        sensitive,
        also_hide,
        prior,
        keyed: crate::keyed::load(cfg.block_key.as_ref())?,
    })
}
