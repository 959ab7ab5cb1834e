//! Which conv layers to protect and their kernels in order of importance, the step that
//! [`select`](super::select()) and the accuracy-per-level experiment share.

use burn::prelude::Device;
use scrim_core::Manifest;
use scrim_core::onnx_graph::Graph;
use scrim_seal::selective::{self, ConvLayer, LayerSelection};
use scrim_train::data::Dataset;

use crate::levels::importance::{self, Importance, PssConfig};
use crate::{Error, Result};

/// Every kernel of one conv layer, most important first.
#[derive(Debug, Clone)]
pub struct RankedLayer {
    /// The layer.
    pub layer: ConvLayer,
    /// All kernel indices by decreasing importance.
    pub order: Vec<usize>,
}

/// The conv layers to protect: `indices` into [`selective::conv_layers`] (all when `None`).
///
/// # Errors
/// [`Error::NoConvLayer`] for a model without protectable conv layers, [`Error::NoSuchLayer`] for
/// an index out of range.
pub fn protected_layers(onnx: &[u8], indices: Option<&[usize]>) -> Result<Vec<ConvLayer>> {
    let all = selective::conv_layers(onnx)?;
    if all.is_empty() {
        return Err(Error::NoConvLayer);
    }
    match indices {
        None => Ok(all),
        Some(idx) => idx
            .iter()
            .map(|&i| {
                all.get(i).cloned().ok_or(Error::NoSuchLayer {
                    index: i,
                    count: all.len(),
                })
            })
            .collect(),
    }
}

/// Ranks every kernel of each layer by `importance`. PSS needs `data` (images at the model's
/// input size and the label `attr`); the baselines need none.
///
/// # Errors
/// [`Error::PssNeedsData`] for PSS without data, [`Error::PssUnsupported`] on a model it cannot
/// rebuild.
#[allow(clippy::too_many_arguments)]
pub fn rank_layers(
    onnx: &[u8],
    manifest: &Manifest,
    layers: &[ConvLayer],
    importance: Importance,
    data: Option<(&Dataset, &str)>,
    pss: &PssConfig,
    seed: u64,
    device: &Device,
    progress: bool,
) -> Result<Vec<RankedLayer>> {
    let graph = Graph::parse(onnx)?;
    layers
        .iter()
        .enumerate()
        .map(|(li, layer)| {
            let w = &graph
                .initializers
                .get(&layer.name)
                .ok_or_else(|| Error::MissingInitializer(layer.name.clone()))?
                .values;
            let k = layer.kernel_len();
            let scores = match importance {
                Importance::Random => {
                    importance::random_scores(layer.kernels(), seed.wrapping_add(li as u64))
                }
                Importance::Mean => importance::mean_scores(w, k),
                Importance::Pss => {
                    let (ds, attr) = data.ok_or(Error::PssNeedsData)?;
                    importance::pss_scores(
                        &graph,
                        &manifest.normalization,
                        layer,
                        ds,
                        attr,
                        pss,
                        device,
                        progress,
                    )?
                }
            };
            Ok(RankedLayer {
                layer: layer.clone(),
                order: importance::rank(&scores, w, k),
            })
        })
        .collect()
}

/// The top `⌊N · ratio⌋ + 1` kernels of every ranked layer.
pub fn selections(ranked: &[RankedLayer], ratio: f64) -> Vec<LayerSelection> {
    ranked
        .iter()
        .map(|r| {
            let s = selective::selection_size(r.layer.kernels(), ratio);
            LayerSelection::new(&r.layer.name, r.order[..s].to_vec())
        })
        .collect()
}
