//! Scrim's 2×2 max pooling inside tract's graphs: the pass that swaps convolutions for
//! [`super::scrim_conv::ScrimConv`] also swaps every fixed-shape, float, NCHW max pooling with a
//! 2×2 window, stride 2 and no padding (the recognizers' downsampling) for [`ScrimMaxPool`].
//!
//! Why: tract 0.23 vectorises only the stride-1 2×2 pooling; at stride 2 it visits each window
//! tap by tap with bounds checks, and on the server's recognizer that took about a quarter of
//! an image's inference time once the convolutions were Scrim's (docs/PERFORMANCE.md, §1e).
//! [`super::scrim_conv::set_direct_convolutions`] turns this pass off along with the other.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::MaxPool;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// A 2×2, stride-2, unpadded max pooling of `[n, c, h, w]` into `[n, c, h / 2, w / 2]` (a
/// last odd row or column is dropped, as ONNX's floor rounding does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ScrimMaxPool {
    shape: [usize; 4],
}

impl ScrimMaxPool {
    fn out_shape(&self) -> [usize; 4] {
        let [n, c, h, w] = self.shape;
        [n, c, h / 2, w / 2]
    }
}

impl Op for ScrimMaxPool {
    fn name(&self) -> StaticName {
        "ScrimMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let [n, c, h, w] = self.shape;
        Ok(vec![format!("{n}x{c}x{h}x{w}, window 2x2, stride 2")])
    }

    op_as_typed_op!();
}

impl EvalOp for ScrimMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "ScrimMaxPool takes one input");
        let x = inputs[0].try_as_plain_ram()?.as_slice::<f32>()?;
        let [n, c, h, w] = self.shape;
        ensure!(
            x.len() == n * c * h * w,
            "ScrimMaxPool: input does not match {:?}",
            self.shape
        );
        // Written in place: the kernel stores every output element.
        let mut y = super::scrim_conv::output_tensor(&self.out_shape())?;
        {
            let mut view = y.try_as_plain_ram_mut()?;
            max_pool_2x2(h, w, x, view.as_slice_mut()?);
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for ScrimMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "ScrimMaxPool takes one input");
        Ok(tvec!(f32::fact(self.out_shape())))
    }

    as_op!();
}

/// Replaces every eligible max pooling of a decluttered graph by a [`ScrimMaxPool`]. Returns
/// how many it replaced.
///
/// # Errors
/// tract's, when a patch cannot be applied.
pub(crate) fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let Some(pool) = node.op_as::<MaxPool>() else {
            continue;
        };
        let Some(shape) = eligible(model, node, pool)? else {
            continue;
        };
        let mut patch = TypedModelPatch::new("scrim-max-pool");
        let x = patch.tap_model(model, node.inputs[0])?;
        let y = patch.wire_node(format!("{}.scrim", node.name), ScrimMaxPool { shape }, &[x])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The input shape when [`ScrimMaxPool`] computes exactly what `pool` does, or `None`.
fn eligible(
    model: &TypedModel,
    node: &TypedNode,
    pool: &MaxPool,
) -> TractResult<Option<[usize; 4]>> {
    let spec = &pool.pool_spec;
    if pool.with_index_outputs.is_some()
        || spec.data_format != DataFormat::NCHW
        || spec.kernel_shape.as_slice() != [2, 2]
        || spec.strides().as_ref() != [2, 2]
        || spec.dilations().iter().any(|&d| d != 1)
        || node.inputs.len() != 1
    {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(&[n, c, h, w]) = input.shape.as_concrete() else {
        return Ok(None);
    };
    if input.datum_type != f32::datum_type() || h < 2 || w < 2 {
        return Ok(None);
    }
    let unpadded = spec
        .computed_padding(&[h, w])
        .iter()
        .all(|p| p.pad_before == 0 && p.pad_after == 0);
    let op = ScrimMaxPool {
        shape: [n, c, h, w],
    };
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    let same_output = output.shape.as_concrete() == Some(op.out_shape().as_slice());
    Ok((unpadded && same_output).then_some(op.shape))
}

/// 2×2 max pooling with stride 2 of `h × w` planes: `x` holds whole planes, `out` as many
/// `(h / 2) × (w / 2)` planes.
pub(crate) fn max_pool_2x2(h: usize, w: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the function only requires AVX2, detected on this CPU just above.
        #[allow(unsafe_code)]
        unsafe {
            max_pool_2x2_avx2(h, w, x, out);
        }
        return;
    }
    max_pool_2x2_planes(h, w, x, out);
}

/// The same loop compiled for AVX2, which the compiler vectorises with 8-lane shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_pool_2x2_avx2(h: usize, w: usize, x: &[f32], out: &mut [f32]) {
    max_pool_2x2_planes(h, w, x, out);
}

#[inline(always)]
fn max_pool_2x2_planes(h: usize, w: usize, x: &[f32], out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    for (plane, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
            let top = &plane[2 * oy * w..][..2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
            for ((d, a), b) in d
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                *d = a[0].max(a[1]).max(b[0].max(b[1]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(n: usize, h: usize, w: usize, x: &[f32]) -> Vec<f32> {
        let (oh, ow) = (h / 2, w / 2);
        let mut out = Vec::with_capacity(n * oh * ow);
        for p in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let at = |y: usize, x_: usize| x[(p * h + y) * w + x_];
                    let mut m = f32::NEG_INFINITY;
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        m = m.max(at(2 * oy + dy, 2 * ox + dx));
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_on_odd_and_even_sizes() {
        for (planes, h, w) in [(3, 4, 4), (2, 5, 7), (5, 32, 32), (1, 2, 19), (4, 9, 2)] {
            let x: Vec<f32> = (0..planes * h * w)
                .map(|k| ((k * 7919 + 13) % 101) as f32 - 50.0)
                .collect();
            let mut got = vec![f32::NAN; planes * (h / 2) * (w / 2)];
            max_pool_2x2(h, w, &x, &mut got);
            assert_eq!(got, reference(planes, h, w, &x), "{planes}x{h}x{w}");
            let mut portable = vec![f32::NAN; got.len()];
            max_pool_2x2_planes(h, w, &x, &mut portable);
            assert_eq!(portable, got, "{planes}x{h}x{w}: portable loop");
        }
    }
}
