//! Scrim's direct convolution inside tract's graphs: a pass over the decluttered graph that
//! replaces each fixed-shape, float, NCHW convolution (one group, no dilation, one stride for
//! both axes) by [`ScrimConv`], which runs `direct_conv.rs` on pre-packed weights and applies a
//! following ReLU in the same pass. tract then optimises the rest of the graph as usual.
//!
//! Why: on x86-64, tract's own dense convolutions trail onnxruntime's by 2–4× on the perturbers'
//! small stride-2 encoders (docs/PERFORMANCE.md, §1c), whatever tract's settings.
//! [`set_direct_convolutions`] turns the pass off for A/B comparisons.

use std::sync::atomic::{AtomicBool, Ordering};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::math::Max;
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::direct_conv::{self, Activation, Geometry, winograd};
use super::scrim_chain;

/// An f32 tensor of `shape` for a kernel that stores every one of its elements (Scrim's
/// convolutions, chains and pooling), not zeroed first: zeroing every output was 4.5% of the
/// server's recognizer in `perf` (docs/PERFORMANCE.md §1l).
pub(crate) fn output_tensor(shape: &[usize]) -> TractResult<Tensor> {
    // SAFETY: every caller hands the tensor to a kernel that stores each element before the
    // tensor is read or returned, and any bit pattern is an f32. The kernels' tests check the
    // first half: they run on outputs filled with NaN (`direct_conv/tests.rs`,
    // `winograd/tests.rs`, `blocked/tests.rs`, `scrim_pool.rs`).
    #[allow(unsafe_code)]
    unsafe {
        Tensor::uninitialized::<f32>(shape)
    }
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether models loaded from now on in tract run their eligible convolutions through Scrim's
/// direct kernel (the default) or through tract's own. For benchmarks and A/B checks; models
/// already loaded keep what they were built with.
pub fn set_direct_convolutions(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether [`set_direct_convolutions`] left the pass on.
pub fn direct_convolutions() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A convolution with its weights packed for the direct kernel. Inputs: the image
/// `[n, c, h, w]`, the packed weights and the padded bias (both constants).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ScrimConv {
    geometry: Geometry,
    activation: Activation,
    /// Whether the weights are Winograd-transformed and the convolution runs as F(2×2, 3×3)
    /// (`direct_conv/winograd.rs`), or packed for the direct kernel.
    winograd: bool,
}

impl Op for ScrimConv {
    fn name(&self) -> StaticName {
        if self.winograd {
            "ScrimWinograd".into()
        } else {
            "ScrimConv".into()
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        Ok(vec![format!(
            "{}x{}x{}x{} -> {} channels, kernel {}x{}, stride {}, pad {:?}, {:?}",
            g.n, g.c, g.h, g.w, g.o, g.kh, g.kw, g.stride, g.pad, self.activation
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for ScrimConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.geometry;
        ensure!(
            inputs.len() == 3,
            "ScrimConv takes an image, weights and a bias"
        );
        let x = inputs[0].try_as_plain_ram()?.as_slice::<f32>()?;
        let packed = inputs[1].try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = inputs[2].try_as_plain_ram()?.as_slice::<f32>()?;
        let weights_len = if self.winograd {
            winograd::transformed_len(g)
        } else {
            g.packed_len()
        };
        ensure!(
            x.len() == g.n * g.c * g.h * g.w
                && packed.len() == weights_len
                && bias.len() == g.o.div_ceil(direct_conv::OB) * direct_conv::OB,
            "ScrimConv: inputs do not match {g:?}"
        );
        // Written in place: the kernels store every output element.
        let mut y = output_tensor(&g.out_shape())?;
        {
            let mut view = y.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut()?;
            if self.winograd {
                winograd::conv2d(g, x, packed, bias, self.activation, out);
            } else {
                direct_conv::conv2d(g, x, packed, bias, self.activation, out);
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for ScrimConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 3,
            "ScrimConv takes an image, weights and a bias"
        );
        Ok(tvec!(f32::fact(self.geometry.out_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            self.geometry.macs().to_dim()
        )))
    }

    as_op!();
}

/// Replaces every eligible convolution of a decluttered graph (and the ReLU that follows it,
/// if it is the convolution's only reader) by a [`ScrimConv`], or, where two or more follow one
/// another as a chain the blocked kernel runs, the whole chain by one [`ScrimChain`]. Returns
/// how many convolutions it replaced.
///
/// # Errors
/// tract's, when a patch cannot be applied.
pub(crate) fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut found = Vec::new();
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some((geometry, weights, bias)) = eligible(model, node, conv)? else {
            continue;
        };
        let relu = following_relu(model, node)?;
        found.push(Found {
            id,
            input: node.inputs[0],
            output: OutletId::new(relu.unwrap_or(id), 0),
            geometry,
            activation: if relu.is_some() {
                Activation::Relu
            } else {
                Activation::Identity
            },
            weights,
            bias,
        });
    }
    let mut replaced = 0;
    for run in scrim_chain::chains(model, &found)? {
        if let [one] = run.as_slice() {
            replace_one(model, &found[*one])?;
        } else {
            let chain: Vec<&Found> = run.iter().map(|&k| &found[k]).collect();
            scrim_chain::replace(model, &chain)?;
        }
        replaced += run.len();
    }
    Ok(replaced)
}

/// An eligible convolution: its node, input (as found, before any patch), the outlet it replaces (its ReLU's, if one was
/// fused), and what the kernels need.
pub(crate) struct Found {
    pub(crate) id: usize,
    pub(crate) input: OutletId,
    pub(crate) output: OutletId,
    pub(crate) geometry: Geometry,
    pub(crate) activation: Activation,
    /// `[o, c, kh, kw]`.
    pub(crate) weights: Vec<f32>,
    /// `[o]`.
    pub(crate) bias: Vec<f32>,
}

/// Replaces one convolution by a [`ScrimConv`].
fn replace_one(model: &mut TypedModel, f: &Found) -> TractResult<()> {
    let name = model.nodes()[f.id].name.clone();
    let geometry = f.geometry;
    let mut patch = TypedModelPatch::new("scrim-direct-conv");
    // The node's input as it is now: an earlier patch may have replaced what fed it.
    let x = patch.tap_model(model, model.nodes()[f.id].inputs[0])?;
    let winograd = winograd::eligible(&geometry);
    let packed = if winograd {
        winograd::transform_weights(&geometry, &f.weights)
    } else {
        direct_conv::pack_weights(&geometry, &f.weights)
    };
    let packed = patch.add_const(
        format!("{name}.scrim_weights"),
        Tensor::from_shape(&[packed.len()], &packed)?,
    )?;
    let bias = direct_conv::pad_bias(&geometry, &f.bias);
    let bias = patch.add_const(
        format!("{name}.scrim_bias"),
        Tensor::from_shape(&[bias.len()], &bias)?,
    )?;
    let y = patch.wire_node(
        format!("{name}.scrim"),
        ScrimConv {
            geometry,
            activation: f.activation,
            winograd,
        },
        &[x, packed, bias],
    )?[0];
    patch.shunt_outside(model, f.output, y)?;
    patch.apply(model)
}

/// A convolution the direct kernel runs: its geometry, weights (`[o, c, kh, kw]`) and bias (`[o]`).
type Eligible = (Geometry, Vec<f32>, Vec<f32>);

/// The convolution as the direct kernel runs it, or `None`.
fn eligible(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Eligible>> {
    let spec = &conv.pool_spec;
    if conv.q_params.is_some()
        || conv.group != 1
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.data_format != DataFormat::NCHW
        || spec.kernel_shape.len() != 2
        || spec.dilations().iter().any(|&d| d != 1)
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let strides = spec.strides();
    if strides[0] != strides[1] {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(&[n, c, h, w]) = input.shape.as_concrete() else {
        return Ok(None);
    };
    if input.datum_type != f32::datum_type() || c != spec.input_channels {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.clone(),
        model.outlet_fact(node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    let (o, kh, kw) = (
        spec.output_channels,
        spec.kernel_shape[0],
        spec.kernel_shape[1],
    );
    if kernel.datum_type() != f32::datum_type()
        || kernel.shape() != [o, c, kh, kw]
        || bias.datum_type() != f32::datum_type()
    {
        return Ok(None);
    }
    let bias: Vec<f32> = match bias.len() {
        0 => vec![0.0; o],
        1 => vec![bias.try_as_plain_ram()?.as_slice::<f32>()?[0]; o],
        len if len == o => bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        _ => return Ok(None),
    };
    let padding = spec.computed_padding(&[h, w]);
    let geometry = Geometry {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        stride: strides[0],
        pad: [
            padding[0].pad_before,
            padding[1].pad_before,
            padding[0].pad_after,
            padding[1].pad_after,
        ],
    };
    let tract_out: TVec<usize> = spec
        .output_shape(&[n, c, h, w])?
        .shape
        .iter()
        .copied()
        .collect();
    if !geometry.is_valid() || tract_out.as_slice() != geometry.out_shape() {
        return Ok(None);
    }
    Ok(Some((
        geometry,
        kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        bias,
    )))
}

/// The node after `conv` when it is its only reader and computes `max(x, 0)`.
fn following_relu(model: &TypedModel, conv: &TypedNode) -> TractResult<Option<usize>> {
    let [succ] = conv.outputs[0].successors.as_slice() else {
        return Ok(None);
    };
    let next = &model.nodes()[succ.node];
    let Some(bin) = next.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if !bin.0.is::<Max>() || next.inputs.len() != 2 {
        return Ok(None);
    }
    let other = next.inputs[1 - succ.slot];
    let zero = model
        .outlet_fact(other)?
        .konst
        .as_ref()
        .and_then(|k| k.as_uniform())
        .and_then(|u| u.cast_to_scalar::<f32>().ok())
        == Some(0.0);
    let same_shape = model.outlet_fact(OutletId::new(next.id, 0))?.shape
        == model.outlet_fact(OutletId::new(conv.id, 0))?.shape;
    Ok((zero && same_shape).then_some(next.id))
}
