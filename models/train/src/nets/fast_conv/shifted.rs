//! A 3×3 stride-1 convolution with padding 1 as nine matrix products over shifted views of one
//! padded copy of each image, without the unrolled matrix.
//!
//! With the image padded to `(h + 2) × (w + 2)`, the input under tap (ky, kx) of every output
//! position, laid out on rows of `w + 2`, is the padded plane read from `ky·(w + 2) + kx` on:
//! one contiguous run per channel. So `y = Σ_taps W_tap · view_tap` on an output grid two
//! columns wider than the image, whose two extra columns are dropped at the end. It moves a
//! ninth of the unrolling's bytes; each product's inner dimension is the input channels, so it
//! pays off only where those are many and the rows long ([`eligible`]). The weight gradient of
//! such a convolution is nine products over the same views ([`weight_grad`]), worth it only
//! where the output channels are few ([`weight_grad_eligible`]).

use burn::backend::ops::ConvOptions;
use rayon::prelude::*;

use super::kernels::{gemm_strided, summed};

/// Input channels from which the shifted path is taken (the products' inner dimension).
const MIN_CHANNELS: usize = 16;
/// Image width from which it is taken (the two extra columns cost `2 / w` of the products).
const MIN_WIDTH: usize = 32;

/// A 3×3 kernel, stride 1, padding 1, no dilation, one group: the geometry the views serve.
fn three_by_three_same(kernel: [usize; 2], options: &ConvOptions<2>) -> bool {
    kernel == [3, 3]
        && options.stride == [1, 1]
        && options.dilation == [1, 1]
        && options.groups == 1
        && options.padding == [(1, 1), (1, 1)]
}

/// Whether a convolution of `cin` channels at width `w` with `[cout, cin, kh, kw]` weights
/// takes this path.
pub(super) fn eligible(cin: usize, w: usize, kernel: [usize; 2], options: &ConvOptions<2>) -> bool {
    three_by_three_same(kernel, options) && cin >= MIN_CHANNELS && w >= MIN_WIDTH
}

/// Whether a convolution of `cin` → `cout` channels at width `w` takes Scrim's Winograd kernel
/// instead ([`winograd`]): where `scrim_core` says it is faster on this CPU.
pub(super) fn winograd_eligible(
    cin: usize,
    cout: usize,
    w: usize,
    kernel: [usize; 2],
    options: &ConvOptions<2>,
) -> bool {
    three_by_three_same(kernel, options) && scrim_core::runtime::conv3x3_suits(cin, cout, w)
}

/// [`conv`] by the inference side's Winograd kernel (`scrim_core::runtime::conv3x3`), one
/// chunk of images per thread.
pub(super) fn winograd(
    x: &[f32],
    [n, cin, h, w]: [usize; 4],
    weight: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0f32; n * cout * h * w];
    let per = n.div_ceil(rayon::current_num_threads().max(1)).max(1);
    y.par_chunks_mut(per * cout * h * w)
        .zip(x.par_chunks(per * cin * h * w))
        .for_each(|(yc, xc)| {
            let images = xc.len() / (cin * h * w);
            scrim_core::runtime::conv3x3([images, cin, h, w], xc, weight, cout, bias, yc);
        });
    y
}

/// Whether the weight gradient of a convolution of `cin` → `cout` channels at width `w` takes
/// Scrim's Winograd kernel ([`winograd_weight_grad`]): where `scrim_core` says it is faster.
pub(super) fn winograd_weight_grad_eligible(
    cin: usize,
    cout: usize,
    w: usize,
    kernel: [usize; 2],
    options: &ConvOptions<2>,
) -> bool {
    three_by_three_same(kernel, options)
        && scrim_core::runtime::conv3x3_weight_grad_suits(cin, cout, w)
}

/// The weight gradient of [`conv`] (`[cout, cin, 3, 3]`) by the Winograd kernel
/// (`scrim_core::runtime::conv3x3_weight_grad`): each thread one chunk of images, their
/// gradients summed.
pub(super) fn winograd_weight_grad(
    x: &[f32],
    [n, cin, h, w]: [usize; 4],
    dy: &[f32],
    cout: usize,
) -> Vec<f32> {
    let len = cout * cin * 9;
    let per = n.div_ceil(rayon::current_num_threads().max(1)).max(1);
    x.par_chunks(per * cin * h * w)
        .zip(dy.par_chunks(per * cout * h * w))
        .map(|(xc, dyc)| {
            let images = xc.len() / (cin * h * w);
            let mut grad = vec![0f32; len];
            scrim_core::runtime::conv3x3_weight_grad([images, cin, h, w], xc, dyc, cout, &mut grad);
            grad
        })
        .reduce(|| vec![0f32; len], summed)
}

/// Output channels up to which the weight gradient takes this path. Its products are
/// `[cin × positions] · [positions × cout]`, far from gemm's register tile on both sides
/// where the unrolled path's are `[9·cin × positions] · [positions × cout]`: that one wins
/// unless `cout` is as thin as an image's three channels (docs/PERFORMANCE.md §1j: 16→3 at
/// 32 px 2.10 → 1.27 ms; 16→16 2.5 → 4.2, 3→16 0.6 → 1.2, 32→64 at 16 px 4.2 → 5.8).
const MAX_WG_OUTPUTS: usize = 4;

/// Whether the weight gradient of a convolution of `cin` → `cout` channels at width `w` takes
/// this path.
pub(super) fn weight_grad_eligible(
    cin: usize,
    cout: usize,
    w: usize,
    kernel: [usize; 2],
    options: &ConvOptions<2>,
) -> bool {
    three_by_three_same(kernel, options)
        && cin >= MIN_CHANNELS
        && cout <= MAX_WG_OUTPUTS
        && w >= MIN_WIDTH
}

/// `y[i] = W ∗ x[i] + b` for `x` `[n, cin, h, w]` and `weight` `[cout, cin, 3, 3]`, images in
/// parallel.
pub(super) fn conv(
    x: &[f32],
    [n, cin, h, w]: [usize; 4],
    weight: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let wp = w + 2;
    // Two floats of slack: the last tap's view of the last channel runs two past the plane.
    let plane = (h + 2) * wp + 2;
    let wide = h * wp;
    // taps[t][co][ci] = weight[co][ci][t].
    let mut taps = vec![0f32; 9 * cout * cin];
    for (t, tap) in taps.chunks_exact_mut(cout * cin).enumerate() {
        for (j, v) in tap.iter_mut().enumerate() {
            *v = weight[j * 9 + t];
        }
    }
    let mut y = vec![0f32; n * cout * h * w];
    let image = |(padded, acc): &mut (Vec<f32>, Vec<f32>), (i, yi): (usize, &mut [f32])| {
        for ci in 0..cin {
            let src = &x[(i * cin + ci) * h * w..][..h * w];
            let dst = &mut padded[ci * plane..][..plane];
            for r in 0..h {
                dst[(r + 1) * wp + 1..][..w].copy_from_slice(&src[r * w..][..w]);
            }
        }
        for (t, tap) in taps.chunks_exact(cout * cin).enumerate() {
            let view = &padded[(t / 3) * wp + t % 3..];
            // [cout × cin] · [cin × wide]: the view's rows are the channels' planes.
            let par = gemm::Parallelism::None;
            gemm_strided(
                acc,
                wide,
                t > 0,
                tap,
                [cin, 1],
                view,
                [plane, 1],
                [cout, wide, cin],
                par,
            );
        }
        for (co, out) in yi.chunks_exact_mut(h * w).enumerate() {
            let b = bias.map_or(0.0, |b| b[co]);
            for (r, row) in out.chunks_exact_mut(w).enumerate() {
                let from = &acc[co * wide + r * wp..][..w];
                row.iter_mut().zip(from).for_each(|(o, v)| *o = v + b);
            }
        }
    };
    // Borders and slack are zero once and never written.
    let buffers = || (vec![0f32; cin * plane], vec![0f32; cout * wide]);
    y.par_chunks_mut(cout * h * w)
        .enumerate()
        .for_each_init(buffers, image);
    y
}

/// `dW = Σ_i dY[i] ⋆ x[i]` for a 3×3 stride-1 convolution with padding 1, as `[cout, cin, 3,
/// 3]`: nine matrix products over shifted views, each over a whole chunk of images at once.
///
/// A chunk's images are laid one under the other on rows of `w + 1` (one zero column per row,
/// serving as the right border of a row and the left of the next), with one zero row between
/// images (the bottom border of one, the top of the next). The output gradient is laid on the
/// same grid, zero at the border positions, so `dW_tap = view_tap · dYᵀ` over the whole chunk:
/// one product per tap with the chunk's positions as the inner dimension.
pub(super) fn weight_grad(
    x: &[f32],
    [n, cin, h, w]: [usize; 4],
    dy: &[f32],
    cout: usize,
) -> Vec<f32> {
    if n == 0 {
        return vec![0f32; cout * cin * 9];
    }
    let wp = w + 1;
    let chunks = rayon::current_num_threads().clamp(1, n);
    let per = n.div_ceil(chunks);
    // Positions of a chunk of `m` images, then the slack the last taps read past them.
    let grid = |m: usize| (m * (h + 1) + 1) * wp;
    let stride = grid(per) + 2 * wp + 2;
    let lay = |dst: &mut [f32], src: &[f32], channels: usize, m: usize, first: usize| {
        // dst[c][(i·(h+1) + 1 + r)·wp + 1 + col] = src[first + i][c][r][col].
        for i in 0..m {
            for c in 0..channels {
                let plane = &src[((first + i) * channels + c) * h * w..][..h * w];
                let base = c * stride + (i * (h + 1) + 1) * wp + 1;
                for (r, row) in plane.chunks_exact(w).enumerate() {
                    dst[base + r * wp..][..w].copy_from_slice(row);
                }
            }
        }
    };
    let chunk = |k: usize| {
        let first = k * per;
        let m = per.min(n - first);
        let mut xs = vec![0f32; cin * stride];
        // Read from `wp + 1` on, the output gradient sits one row up and one column left of its
        // input pixel, so tap (ky, kx) reads the input `ky·wp + kx` past the output position.
        let mut ds = vec![0f32; cout * stride + wp + 1];
        lay(&mut xs, x, cin, m, first);
        lay(&mut ds, dy, cout, m, first);
        let ds = &ds[wp + 1..];
        let positions = grid(m) - wp - 1;
        let mut acc = vec![0f32; 9 * cin * cout];
        for (t, dst) in acc.chunks_exact_mut(cin * cout).enumerate() {
            let view = &xs[(t / 3) * wp + t % 3..];
            // [cin × positions] · [positions × cout].
            gemm_strided(
                dst,
                cout,
                false,
                view,
                [stride, 1],
                ds,
                [1, stride],
                [cin, cout, positions],
                gemm::Parallelism::None,
            );
        }
        acc
    };
    let acc = (0..n.div_ceil(per))
        .into_par_iter()
        .map(chunk)
        .reduce(|| vec![0f32; 9 * cin * cout], summed);
    // acc[t][ci][co] → dW[co][ci][t].
    let mut grad = vec![0f32; cout * cin * 9];
    for (t, tap) in acc.chunks_exact(cin * cout).enumerate() {
        for (ci, row) in tap.chunks_exact(cout).enumerate() {
            for (co, v) in row.iter().enumerate() {
                grad[(co * cin + ci) * 9 + t] = *v;
            }
        }
    }
    grad
}
