//! A 3×3 stride-1 convolution with padding 1 as nine matrix products over shifted views of one
//! padded copy of each image, without the unrolled matrix.
//!
//! With the image padded to `(h + 2) × (w + 2)`, the input under tap (ky, kx) of every output
//! position, laid out on rows of `w + 2`, is the padded plane read from `ky·(w + 2) + kx` on:
//! one contiguous run per channel. So `y = Σ_taps W_tap · view_tap` on an output grid two
//! columns wider than the image, whose two extra columns are dropped at the end. It moves a
//! ninth of the unrolling's bytes; each product's inner dimension is the input channels, so it
//! pays off only where those are many and the rows long ([`eligible`]).

use burn::backend::ops::ConvOptions;
use rayon::prelude::*;

use super::kernels::gemm_strided;

/// Input channels from which the shifted path is taken (the products' inner dimension).
const MIN_CHANNELS: usize = 16;
/// Image width from which it is taken (the two extra columns cost `2 / w` of the products).
const MIN_WIDTH: usize = 32;

/// Whether a convolution of `cin` channels at width `w` with `[cout, cin, kh, kw]` weights
/// takes this path.
pub(super) fn eligible(cin: usize, w: usize, kernel: [usize; 2], options: &ConvOptions<2>) -> bool {
    kernel == [3, 3]
        && options.stride == [1, 1]
        && options.dilation == [1, 1]
        && options.groups == 1
        && options.padding == [(1, 1), (1, 1)]
        && cin >= MIN_CHANNELS
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
