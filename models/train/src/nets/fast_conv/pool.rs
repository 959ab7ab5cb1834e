//! 2×2 max pooling (stride 2, no padding) on flex, with a backward pass that writes each input
//! gradient where it belongs.
//!
//! burn-flex 0.22.1 pools under autodiff through `max_pool2d_with_indices` (an index per
//! output, as i64) and, backward, scatters the output gradient through those indices into a
//! zeroed input-sized buffer, element by element with a conversion per index: 14% of a
//! co-training step in `perf` (the recognizer pools three times, at 32, 16 and 8 px). Here the
//! forward keeps one byte per window (which of its four values won), and the backward writes
//! each window's gradient from it, one pass per image plane. Both work a row of windows at a
//! time with selects, which vectorise, and write their outputs whole without zeroing them
//! first. Measured on an Intel host (docs/PERFORMANCE.md §2e): the forward at 32 px × 32
//! channels, batch 64, 0.98 → 0.22 ms; `cotrain_step_only` (30 steps, alternated) 2.34–2.53 →
//! 2.23–2.26 s with the rows, and 2.25–2.31 → 2.07–2.13 s with the indices in place of
//! recomputing the maxima from the kept input (a quarter of a byte per input value read instead
//! of four bytes).
//!
//! Same values and gradients as burn's: a window's maximum is its first element unless a later
//! one is greater, and a NaN wins (the last NaN of the window), as in burn-flex's forward.

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
use std::mem::MaybeUninit;

use super::kernels::{contiguous, tensor, written};
use super::{BURN_GENERIC, on_flex};

/// 2×2 max pooling with scrim's backward (see the module docs).
#[backend_extension(Flex, Autodiff)]
pub trait FastPoolBackend: Backend {
    /// `x [N, C, H, W]` → `[N, C, ⌊H/2⌋, ⌊W/2⌋]`, each the maximum of a 2×2 window.
    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Output planes per parallel task: a plane of the last pooling is 16 values.
const MIN_PLANES: usize = 16;

/// Whether `x` takes a window's maximum from `max`, scanning the window row-major: burn keeps
/// the first value unless a later one is greater, and a NaN wins.
#[inline(always)]
fn wins(x: f32, max: f32) -> bool {
    x > max || x.is_nan()
}

/// A window's maximum and its index (row-major) by burn's rule, from its two rows `a` and `b`.
/// Selects rather than branches, so the loops over a row vectorise (which value wins is data).
#[inline(always)]
fn window(a: &[f32], b: &[f32]) -> (f32, u8) {
    let (mut m, mut k) = (a[0], 0u8);
    for (v, i) in [(a[1], 1u8), (b[0], 2), (b[1], 3)] {
        let w = wins(v, m);
        m = if w { v } else { m };
        k = if w { i } else { k };
    }
    (m, k)
}

/// One row of windows, its two input rows `r0` and `r1` (each `2 · out.len()` long at least),
/// into `out`, and each window's index into `idx` for the backward pass.
#[inline(always)]
fn forward_row(r0: &[f32], r1: &[f32], out: &mut [MaybeUninit<f32>], idx: &mut [u8]) {
    let n = out.len();
    let (r0, r1, idx) = (&r0[..2 * n], &r1[..2 * n], &mut idx[..n]);
    let windows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
    for ((o, i), (a, b)) in out.iter_mut().zip(idx).zip(windows) {
        let (m, k) = window(a, b);
        o.write(m);
        *i = k;
    }
}

/// The input gradient of one row of windows: each output gradient `g` goes to its window's
/// maximum (`idx`) in `d0`/`d1` (the two input rows' gradients, written whole: a last column
/// that no window covers gets zero), zero to the window's other three.
#[inline(always)]
fn backward_row(idx: &[u8], g: &[f32], d0: &mut [MaybeUninit<f32>], d1: &mut [MaybeUninit<f32>]) {
    let n = 2 * g.len();
    let grads = d0[..n].chunks_exact_mut(2).zip(d1[..n].chunks_exact_mut(2));
    for (((da, db), &k), &gi) in grads.zip(&idx[..g.len()]).zip(g) {
        da[0].write(if k == 0 { gi } else { 0.0 });
        da[1].write(if k == 1 { gi } else { 0.0 });
        db[0].write(if k == 2 { gi } else { 0.0 });
        db[1].write(if k == 3 { gi } else { 0.0 });
    }
    for v in d0[n..].iter_mut().chain(d1[n..].iter_mut()) {
        v.write(0.0);
    }
}

/// Each window's index, for the backward pass: a quarter of a byte per input value, where the
/// input itself (kept to find the maxima again) would be four bytes, and read again.
#[derive(Debug, Clone)]
struct Indices {
    /// One per output, in its layout.
    k: Vec<u8>,
    /// The input's shape.
    shape: [usize; 4],
}

/// The pooled `x` and each window's index (a byte per output: an untracked forward, which
/// does not need them, costs a quarter more writes rather than a second form of the loop).
fn forward(x: &FlexTensor) -> (FlexTensor, Indices) {
    let [n, c, h, w] = x.shape().dims();
    let (oh, ow) = (h / 2, w / 2);
    let x = contiguous(x);
    let xs = x.as_slice();
    let mut k = vec![0u8; n * c * oh * ow];
    let out = written(n * c * oh * ow, |out| {
        if oh * ow == 0 {
            return;
        }
        out.par_chunks_mut(oh * ow)
            .with_min_len(MIN_PLANES)
            .zip(k.par_chunks_mut(oh * ow))
            .enumerate()
            .for_each(|(p, (o, i))| {
                let plane = &xs[p * h * w..][..h * w];
                let rows = o.chunks_exact_mut(ow).zip(i.chunks_exact_mut(ow));
                for (y, (row, idx)) in rows.enumerate() {
                    let r0 = &plane[2 * y * w..];
                    forward_row(r0, &r0[w..], row, idx);
                }
            });
    });
    let indices = Indices {
        k,
        shape: [n, c, h, w],
    };
    (tensor(out, [n, c, oh, ow]), indices)
}

/// The input gradient: each output's gradient at its window's maximum, zero elsewhere (and in
/// a last row or column that no window covers).
fn backward(indices: &Indices, dy: &FlexTensor) -> FlexTensor {
    let [n, c, h, w] = indices.shape;
    let (oh, ow) = (h / 2, w / 2);
    let dy = contiguous(dy);
    let (ks, dys) = (&indices.k, dy.as_slice());
    let dx = written(n * c * h * w, |dx| {
        if h * w == 0 {
            return;
        }
        dx.par_chunks_mut(h * w)
            .with_min_len(MIN_PLANES)
            .enumerate()
            .for_each(|(p, d)| {
                let g = &dys[p * oh * ow..][..oh * ow];
                let k = &ks[p * oh * ow..][..oh * ow];
                // Rows of windows; with no window (a side of 1) every row is the zero tail.
                for y in 0..oh {
                    let (d0, d1) = d[2 * y * w..].split_at_mut(w);
                    let (gy, ky) = (&g[y * ow..][..ow], &k[y * ow..][..ow]);
                    backward_row(ky, gy, d0, &mut d1[..w]);
                }
                // A last row that no window covers (odd height, or every row when oh = 0).
                for v in &mut d[2 * oh * w..] {
                    v.write(0.0);
                }
            });
    });
    tensor(dx, [n, c, h, w])
}

impl FastPoolBackend for Flex {
    fn max_pool2x2(x: FlexTensor) -> FlexTensor {
        forward(&x).0
    }
}

#[derive(Debug)]
struct MaxPool2x2;

impl Backward<Flex, 1> for MaxPool2x2 {
    /// Each window's index.
    type State = Indices;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, backward(&ops.state, &dy));
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
            OpsKind::Tracked(prep) => {
                let (y, indices) = forward(&x.into_primitive());
                prep.finish(indices, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(&x.into_primitive()).0),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The window's winner by burn's rule, one value at a time.
    fn reference(v: [f32; 4]) -> usize {
        let (mut best, mut max) = (0, v[0]);
        for (k, &x) in v.iter().enumerate().skip(1) {
            if x > max || x.is_nan() {
                (best, max) = (k, x);
            }
        }
        best
    }

    #[test]
    fn rows_pick_burns_winner_with_ties_and_nans() {
        // Every window of values drawn from {0, 1, NaN}: ties, NaN first, last, twice.
        let values = [0.0, 1.0, f32::NAN];
        let windows: Vec<[f32; 4]> = (0..81)
            .map(|i: usize| [0, 1, 2, 3].map(|k| values[i / 3usize.pow(k) % 3]))
            .collect();
        // One row of 81 windows plus an odd last column, as an odd-width plane has.
        let w = 2 * windows.len() + 1;
        let mut r0 = vec![7.0; w];
        let mut r1 = vec![7.0; w];
        for (x, v) in windows.iter().enumerate() {
            (r0[2 * x], r0[2 * x + 1], r1[2 * x], r1[2 * x + 1]) = (v[0], v[1], v[2], v[3]);
        }
        let mut out = vec![MaybeUninit::new(f32::INFINITY); windows.len()];
        let mut idx = vec![9u8; windows.len()];
        forward_row(&r0, &r1, &mut out, &mut idx);
        let g: Vec<f32> = (1..=windows.len()).map(|i| i as f32).collect();
        let mut d0 = vec![MaybeUninit::new(f32::NAN); w];
        let mut d1 = vec![MaybeUninit::new(f32::NAN); w];
        backward_row(&idx, &g, &mut d0, &mut d1);
        let read = |d: &[MaybeUninit<f32>]| -> Vec<f32> { d.iter().map(|v| init(*v)).collect() };
        let (d0, d1) = (read(&d0), read(&d1));
        for (x, v) in windows.iter().enumerate() {
            let k = reference(*v);
            let got = init(out[x]);
            assert!(
                got.to_bits() == v[k].to_bits() || (got.is_nan() && v[k].is_nan()),
                "window {v:?}: {got} for {}",
                v[k]
            );
            assert_eq!(usize::from(idx[x]), k, "window {v:?}");
            let grads = [d0[2 * x], d0[2 * x + 1], d1[2 * x], d1[2 * x + 1]];
            let mut want = [0.0; 4];
            want[k] = g[x];
            assert_eq!(grads, want, "window {v:?}");
        }
        assert_eq!((d0[w - 1], d1[w - 1]), (0.0, 0.0), "the uncovered column");
    }

    /// A value of a buffer that the test initialised whole (`MaybeUninit::new`) before the rows
    /// overwrote it.
    fn init(v: MaybeUninit<f32>) -> f32 {
        // SAFETY: every element these tests read was created with `MaybeUninit::new`.
        #[allow(unsafe_code)]
        unsafe {
            v.assume_init()
        }
    }
}
