//! Chains of convolutions in tract's graphs that Scrim's blocked kernel runs as one op
//! ([`ScrimChain`], `direct_conv/blocked.rs`): two or more 3×3 convolutions of padding 1 and
//! stride 2 with output channels in multiples of 8, each read only by the next (the
//! perturbers' encoders). Their activations stay in the kernel's channel-blocked layout from
//! one to the next, which the per-convolution [`ScrimConv`] cannot do: each of those reads and
//! writes NCHW.
//!
//! Stride-1 convolutions stay [`ScrimConv`]s: the direct kernel reads their inputs as
//! contiguous vectors and ran two-layer stride-1 chains (3→16→16 at 56–224 px) 12% faster than
//! the blocked kernel (docs/PERFORMANCE.md §1g); the wide ones take the Winograd path.
//!
//! [`ScrimConv`]: super::scrim_conv::ScrimConv

use std::sync::atomic::{AtomicBool, Ordering};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::direct_conv::blocked::{self, CB, Layer};
use super::direct_conv::{Activation, winograd};
use super::scrim_conv::Found;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether models loaded from now on run chains of stride-2 convolutions through the blocked
/// kernel (the default) or each convolution through the direct kernel. For benchmarks and A/B
/// checks, like [`set_direct_convolutions`](super::set_direct_convolutions), which turns both
/// off; models already loaded keep what they were built with.
pub fn set_blocked_chains(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// A chain of convolutions run by the blocked kernel. Inputs: the image `[n, c, h, w]`, then
/// for each layer its packed weights and its bias (constants).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ScrimChain {
    n: usize,
    layers: Vec<Layer>,
}

impl ScrimChain {
    fn out_shape(&self) -> [usize; 4] {
        let last = self.layers[self.layers.len() - 1];
        [self.n, last.o, last.out_h(), last.out_w()]
    }
}

impl Op for ScrimChain {
    fn name(&self) -> StaticName {
        "ScrimChain".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self
            .layers
            .iter()
            .map(|l| {
                format!(
                    "{}x{}x{} -> {} channels, 3x3, stride {}, relu {}",
                    l.c, l.h, l.w, l.o, l.stride, l.relu
                )
            })
            .collect())
    }

    op_as_typed_op!();
}

impl EvalOp for ScrimChain {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let layers = &self.layers;
        ensure!(
            inputs.len() == 1 + 2 * layers.len(),
            "ScrimChain takes an image and two constants per layer"
        );
        let first = layers[0];
        let x = inputs[0].try_as_plain_ram()?.as_slice::<f32>()?;
        let mut weights = Vec::with_capacity(layers.len());
        let mut biases = Vec::with_capacity(layers.len());
        for (i, (l, pair)) in layers.iter().zip(inputs[1..].chunks_exact(2)).enumerate() {
            let w = pair[0].try_as_plain_ram()?.as_slice::<f32>()?;
            let b = pair[1].try_as_plain_ram()?.as_slice::<f32>()?;
            ensure!(
                w.len() == l.packed_len(i == 0) && b.len() == l.o,
                "ScrimChain: the constants of layer {i} do not match {l:?}"
            );
            weights.push(w);
            biases.push(b);
        }
        ensure!(
            x.len() == self.n * first.c * first.h * first.w,
            "ScrimChain: the image does not match {first:?}"
        );
        // Written in place: the kernel stores every output element.
        let mut y = super::scrim_conv::output_tensor(&self.out_shape())?;
        {
            let mut view = y.try_as_plain_ram_mut()?;
            blocked::run(layers, self.n, x, &weights, &biases, view.as_slice_mut()?);
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for ScrimChain {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 + 2 * self.layers.len(),
            "ScrimChain takes an image and two constants per layer"
        );
        Ok(tvec!(f32::fact(self.out_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let macs: usize = self.layers.iter().map(|l| l.macs()).sum();
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            (self.n * macs).to_dim()
        )))
    }

    as_op!();
}

/// The layer the blocked kernel runs for `f`, or `None`.
fn layer(f: &Found) -> Option<Layer> {
    let g = &f.geometry;
    let fits = g.kh == 3
        && g.kw == 3
        && g.pad == [1; 4]
        && g.stride == 2
        && g.o.is_multiple_of(CB)
        && !winograd::eligible(g);
    fits.then_some(Layer {
        c: g.c,
        h: g.h,
        w: g.w,
        o: g.o,
        stride: g.stride,
        relu: f.activation == Activation::Relu,
    })
}

/// `found` (in evaluation order) as runs of indices: each chain of two or more convolutions
/// the blocked kernel runs, every other convolution alone.
///
/// # Errors
/// tract's, if the graph has no outputs declared.
pub(crate) fn chains(model: &TypedModel, found: &[Found]) -> TractResult<Vec<Vec<usize>>> {
    let outputs = model.output_outlets()?;
    // next[k]: the convolution that alone reads what k writes, both run by the blocked kernel.
    let mut next = vec![None; found.len()];
    for (k, f) in found.iter().enumerate() {
        if layer(f).is_none() || outputs.contains(&f.output) {
            continue;
        }
        let [only] = model.nodes()[f.output.node].outputs[f.output.slot]
            .successors
            .as_slice()
        else {
            continue;
        };
        next[k] = found.iter().position(|g| {
            g.id == only.node && only.slot == 0 && g.input == f.output && layer(g).is_some()
        });
    }
    let mut follows = vec![false; found.len()];
    for &b in next.iter().flatten() {
        follows[b] = true;
    }
    let mut runs = Vec::new();
    for start in (0..found.len()).filter(|&k| !follows[k]) {
        let mut run = vec![start];
        while let Some(b) = next[run[run.len() - 1]] {
            run.push(b);
        }
        let layers: Option<Vec<Layer>> = run.iter().map(|&k| layer(&found[k])).collect();
        let on = ENABLED.load(Ordering::Relaxed);
        if on && run.len() >= 2 && layers.is_some_and(|l| blocked::is_chain(&l)) {
            runs.push(run);
        } else {
            runs.extend(run.into_iter().map(|k| vec![k]));
        }
    }
    Ok(runs)
}

/// Replaces `chain` (from [`chains`]) by one [`ScrimChain`].
///
/// # Errors
/// tract's, when the patch cannot be applied; an error if `chain` is not a chain.
pub(crate) fn replace(model: &mut TypedModel, chain: &[&Found]) -> TractResult<()> {
    let layers: Vec<Layer> = chain
        .iter()
        .map(|f| layer(f))
        .collect::<Option<_>>()
        .context("not a chain of the blocked kernel")?;
    let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
        bail!("an empty chain");
    };
    let name = model.nodes()[first.id].name.clone();
    let mut patch = TypedModelPatch::new("scrim-blocked-chain");
    // The first node's input as it is now: an earlier patch may have replaced what fed it.
    let mut inputs = tvec![patch.tap_model(model, model.nodes()[first.id].inputs[0])?];
    for (i, (f, l)) in chain.iter().zip(&layers).enumerate() {
        let packed = blocked::pack_weights(l, i == 0, &f.weights);
        inputs.push(patch.add_const(
            format!("{name}.scrim_chain_weights_{i}"),
            Tensor::from_shape(&[packed.len()], &packed)?,
        )?);
        inputs.push(patch.add_const(
            format!("{name}.scrim_chain_bias_{i}"),
            Tensor::from_shape(&[f.bias.len()], &f.bias)?,
        )?);
    }
    let op = ScrimChain {
        n: first.geometry.n,
        layers,
    };
    let y = patch.wire_node(format!("{name}.scrim_chain"), op, &inputs)?[0];
    patch.shunt_outside(model, last.output, y)?;
    patch.apply(model)
}
