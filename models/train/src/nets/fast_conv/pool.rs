//! 2×2 max pooling (stride 2, no padding) on flex, with a backward pass that writes each input
//! gradient where it belongs.
//!
//! burn-flex 0.22.1 pools under autodiff through `max_pool2d_with_indices` (an index per
//! output, as i64) and, backward, scatters the output gradient through those indices into a
//! zeroed input-sized buffer, element by element with a conversion per index: 14% of a
//! co-training step in `perf` (the recognizer pools three times, at 32, 16 and 8 px). Here the
//! forward keeps only its input (checkpointed), and the backward recomputes each window's
//! argmax and writes its gradient, one pass per image plane.
//!
//! Same values and gradients as burn's: a window's maximum is its first element unless a later
//! one is greater, and a NaN wins (the last NaN of the window), as in burn-flex's forward.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::kernels::{contiguous, tensor};
use super::{BURN_GENERIC, on_flex};

/// 2×2 max pooling with scrim's backward (see the module docs).
#[backend_extension(Flex, Autodiff)]
pub trait FastPoolBackend: Backend {
    /// `x [N, C, H, W]` → `[N, C, ⌊H/2⌋, ⌊W/2⌋]`, each the maximum of a 2×2 window.
    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Output planes per parallel task: a plane of the last pooling is 16 values.
const MIN_PLANES: usize = 16;

/// Which of a window's four values (row-major) burn picks: the first, unless a later one is
/// greater or NaN.
/// Without branches (selects): which value wins is data, and branches on it mispredict.
#[inline]
fn argmax(v: [f32; 4]) -> usize {
    let (mut best, mut max) = (0, v[0]);
    for (k, &x) in v.iter().enumerate().skip(1) {
        let wins = x > max || x.is_nan();
        best = if wins { k } else { best };
        max = if wins { x } else { max };
    }
    best
}

/// The window of output (y, x) in a plane `w` wide: its four input offsets, row-major.
fn window(w: usize, y: usize, x: usize) -> [usize; 4] {
    let top = 2 * y * w + 2 * x;
    [top, top + 1, top + w, top + w + 1]
}

fn forward(x: &FlexTensor) -> FlexTensor {
    let [n, c, h, w] = x.shape().dims();
    let (oh, ow) = (h / 2, w / 2);
    let x = contiguous(x);
    let xs = x.as_slice();
    let mut out = vec![0f32; n * c * oh * ow];
    if oh * ow > 0 {
        out.par_chunks_mut(oh * ow)
            .with_min_len(MIN_PLANES)
            .enumerate()
            .for_each(|(p, o)| {
                let plane = &xs[p * h * w..][..h * w];
                for (i, v) in o.iter_mut().enumerate() {
                    let at = window(w, i / ow, i % ow).map(|k| plane[k]);
                    *v = at[argmax(at)];
                }
            });
    }
    tensor(out, [n, c, oh, ow])
}

/// The input gradient: each output's gradient at its window's maximum, zero elsewhere (and in
/// a last row or column that no window covers).
fn backward(x: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let [n, c, h, w] = x.shape().dims();
    let (oh, ow) = (h / 2, w / 2);
    let (x, dy) = (contiguous(x), contiguous(dy));
    let (xs, dys) = (x.as_slice(), dy.as_slice());
    let mut dx = vec![0f32; n * c * h * w];
    if h * w > 0 && oh * ow > 0 {
        dx.par_chunks_mut(h * w)
            .with_min_len(MIN_PLANES)
            .enumerate()
            .for_each(|(p, d)| {
                let plane = &xs[p * h * w..][..h * w];
                let g = &dys[p * oh * ow..][..oh * ow];
                for (i, &gi) in g.iter().enumerate() {
                    let at = window(w, i / ow, i % ow);
                    d[at[argmax(at.map(|k| plane[k]))]] = gi;
                }
            });
    }
    tensor(dx, [n, c, h, w])
}

impl FastPoolBackend for Flex {
    fn max_pool2x2(x: FlexTensor) -> FlexTensor {
        forward(&x)
    }
}

#[derive(Debug)]
struct MaxPool2x2;

impl Backward<Flex, 1> for MaxPool2x2 {
    /// The input, checkpointed.
    type State = NodeId;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            let x = ckpt.retrieve_node_output::<FlexTensor>(ops.state);
            grads.register::<Flex>(node.id, backward(&x, &dy));
        }
    }
}

impl<C: CheckpointStrategy> FastPoolBackend for Autodiff<Flex, C> {
    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match MaxPool2x2
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                let y = forward(&x.into_primitive());
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(&x.into_primitive())),
        }
    }
}

/// `pool.forward(x)` through scrim's 2×2 max pooling when `pool` is one (kernel and stride 2,
/// no padding or dilation, floor mode) and `x` an f32 tensor on flex; burn's own otherwise.
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let two_by_two = pool.kernel_size == [2, 2]
        && pool.stride == [2, 2]
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(
            pool.padding,
            PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
        );
    if !two_by_two
        || BURN_GENERIC.load(std::sync::atomic::Ordering::Relaxed)
        || !on_flex(&x)
        || x.dtype() != DType::F32
    {
        return pool.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as FastPoolBackend>::max_pool2x2(
        x.into_dispatch(),
    ))
}
