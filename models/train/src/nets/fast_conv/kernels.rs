//! The convolution and its gradients on flex tensors (f32, dilation 1), all on one unrolling
//! (im2col) of one image at a time and gemm, the matrix product flex itself links:
//!
//! - forward: per image and group, `y = W · col(x)`, images in parallel; a 3×3 stride-1
//!   convolution with padding 1 over at least 16 channels and 32 columns takes nine products
//!   over shifted views of the padded image instead (`shifted`, no unrolled matrix), and on
//!   CPUs with AVX-512 one of at least 16 channels in and out the inference side's Winograd kernel
//!   (`shifted::winograd`, where `scrim_core::runtime::conv3x3_suits` says so);
//! - weight gradient: per image and group, `dW += dY · col(x)ᵀ`, accumulated per thread, the
//!   threads' sums added at the end (a thin-output 3×3 stride-1 one over shifted views instead,
//!   `shifted::weight_grad`);
//! - input gradient: the forward above on the output gradient (spread onto the stride-1 grid
//!   with zeros when strided) with the weights flipped and transposed per group;
//! - bias gradient: the output gradient summed.
//!
//! Anything else (other dtypes, dilation, padding wider than the kernel) goes to flex's forward
//! and burn's generic backward, which these functions reproduce to within rounding.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::{DType, Flex, TensorMetadata};
use burn::tensor::{Shape, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Whether the fast kernels cover this convolution (the caller falls back to burn otherwise).
pub(super) fn supported(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> bool {
    let [_, _, kh, kw] = dims4(weight);
    x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && options.dilation == [1, 1]
        && options.padding[0].0 < kh
        && options.padding[0].1 < kh
        && options.padding[1].0 < kw
        && options.padding[1].1 < kw
}

/// The forward convolution: per image, the input unrolled and one matrix product per group
/// (flex's own for other dtypes and dilations).
pub(super) fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: ConvOptions<2>,
) -> FlexTensor {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 || options.dilation != [1, 1] {
        return <Flex as ModuleOps<Flex>>::conv2d(x, weight, bias, options);
    }
    let [n, cin, h, w] = dims4(&x);
    let [cout, cin_g, kh, kw] = dims4(&weight);
    let [(pt, pb), (pl, pr)] = options.padding;
    let [sh, sw] = options.stride;
    let ho = (h + pt + pb - kh) / sh + 1;
    let wo = (w + pl + pr - kw) / sw + 1;
    let geom = Unroll {
        cin_g,
        h,
        w,
        kh,
        kw,
        ho,
        wo,
        stride: options.stride,
        pad: [pt, pl],
    };
    let (x, weight) = (contiguous(&x), contiguous(&weight));
    let bias = bias.map(|b| contiguous(&b));
    if super::shifted::winograd_eligible(cin, cout, w, [kh, kw], &options) {
        let bias = bias.as_ref().map(Contiguous::as_slice);
        let y =
            super::shifted::winograd(x.as_slice(), [n, cin, h, w], weight.as_slice(), cout, bias);
        return tensor(y, [n, cout, ho, wo]);
    }
    if super::shifted::eligible(cin, w, [kh, kw], &options) {
        let bias = bias.as_ref().map(Contiguous::as_slice);
        let y = super::shifted::conv(x.as_slice(), [n, cin, h, w], weight.as_slice(), cout, bias);
        return tensor(y, [n, cout, ho, wo]);
    }
    let y = geom.conv(
        x.as_slice(),
        n,
        cin,
        weight.as_slice(),
        cout,
        options.groups,
        bias.as_ref().map(Contiguous::as_slice),
    );
    tensor(y, [n, cout, ho, wo])
}

/// The gradient of the convolution's input `x` (shape `x_shape`).
pub(super) fn input_grad(
    x_shape: [usize; 4],
    weight: FlexTensor,
    dy: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    let [n, cin, h, w] = x_shape;
    let [cout, cin_g, kh, kw] = dims4(&weight);
    let [_, _, ho, wo] = dims4(&dy);
    let groups = options.groups;
    let cout_g = cout / groups;
    let [sh, sw] = options.stride;

    // W'[g·cin_g + ci, co, ky, kx] = W[g·cout_g + co, ci, kh−1−ky, kw−1−kx].
    let wt = contiguous(&weight);
    let src = wt.as_slice();
    let mut flipped = vec![0f32; src.len()];
    for g in 0..groups {
        for co in 0..cout_g {
            for ci in 0..cin_g {
                let from = (((g * cout_g + co) * cin_g) + ci) * kh * kw;
                let to = (((g * cin_g + ci) * cout_g) + co) * kh * kw;
                for k in 0..kh * kw {
                    flipped[to + k] = src[from + kh * kw - 1 - k];
                }
            }
        }
    }
    let flipped = tensor(flipped, [cin, cout_g, kh, kw]);

    // A strided convolution's output gradient, spread back onto the stride-1 grid with zeros.
    let (dy, hd, wd) = if [sh, sw] == [1, 1] {
        (dy, ho, wo)
    } else {
        let (hd, wd) = ((ho - 1) * sh + 1, (wo - 1) * sw + 1);
        let dyc = contiguous(&dy);
        let src = dyc.as_slice();
        let mut dilated = vec![0f32; n * cout * hd * wd];
        dilated
            .par_chunks_mut(hd * wd)
            .zip(src.par_chunks(ho * wo))
            .for_each(|(dst, src)| {
                for oy in 0..ho {
                    for ox in 0..wo {
                        dst[oy * sh * wd + ox * sw] = src[oy * wo + ox];
                    }
                }
            });
        (tensor(dilated, [n, cout, hd, wd]), hd, wd)
    };
    // Stride-1 "full" convolution: the leading padding is k−1−p; the trailing one makes the
    // output exactly the input's size (rows no window reached get zero).
    let (pt, pl) = (options.padding[0].0, options.padding[1].0);
    let top = kh - 1 - pt;
    let left = kw - 1 - pl;
    let bottom = (h + kh - 1) as isize - (hd + top) as isize;
    let right = (w + kw - 1) as isize - (wd + left) as isize;
    let (Ok(bottom), Ok(right)) = (usize::try_from(bottom), usize::try_from(right)) else {
        unreachable!("trailing padding beyond the kernel is excluded by `supported`")
    };
    let grad = forward(
        dy,
        flipped,
        None,
        ConvOptions::new_with_padding([1, 1], [(top, bottom), (left, right)], [1, 1], groups),
    );
    debug_assert_eq!(dims4(&grad), x_shape);
    grad
}

/// The gradient of the convolution's weights (shape `weight_shape`): by the Winograd kernel
/// where [`super::shifted::winograd_weight_grad_eligible`], over shifted views where
/// [`super::shifted::weight_grad_eligible`], else over the unrolled input.
pub(super) fn weight_grad(
    x: FlexTensor,
    dy: FlexTensor,
    weight_shape: [usize; 4],
    options: ConvOptions<2>,
) -> FlexTensor {
    let [n, cin, h, w] = dims4(&x);
    let [cout, _, kh, kw] = weight_shape;
    let path = if super::shifted::winograd_weight_grad_eligible(cin, cout, w, [kh, kw], &options) {
        super::shifted::winograd_weight_grad
    } else if super::shifted::weight_grad_eligible(cin, cout, w, [kh, kw], &options) {
        super::shifted::weight_grad
    } else {
        return weight_grad_unrolled(x, dy, weight_shape, options);
    };
    let (x, dy) = (contiguous(&x), contiguous(&dy));
    let grad = path(x.as_slice(), [n, cin, h, w], dy.as_slice(), cout);
    tensor(grad, weight_shape)
}

/// The weight gradient over the unrolled input, for any geometry `supported` covers.
pub(super) fn weight_grad_unrolled(
    x: FlexTensor,
    dy: FlexTensor,
    weight_shape: [usize; 4],
    options: ConvOptions<2>,
) -> FlexTensor {
    let [n, cin, h, w] = dims4(&x);
    let [cout, cin_g, kh, kw] = weight_shape;
    let [_, _, ho, wo] = dims4(&dy);
    let groups = options.groups;
    let cout_g = cout / groups;
    let k = cin_g * kh * kw;
    let p = ho * wo;
    let geom = Unroll {
        cin_g,
        h,
        w,
        kh,
        kw,
        ho,
        wo,
        stride: options.stride,
        pad: [options.padding[0].0, options.padding[1].0],
    };
    let x = contiguous(&x);
    let dy = contiguous(&dy);
    let (xs, dys) = (x.as_slice(), dy.as_slice());

    // One image: unroll each group's input and accumulate col · dY_gᵀ, the transposed
    // gradient `[k × cout_g]`, into `acc` (transposed back once at the end). In this order
    // gemm repacks the small operand, dY_g, for its kernel; `dY_g · colᵀ` made it repack the
    // whole unrolled input, k·p values, for every image (a tenth of a co-training step).
    let image = |acc: &mut [f32], col: &mut [f32], i: usize, par: gemm::Parallelism| {
        for g in 0..groups {
            let xg = &xs[(i * cin + g * cin_g) * h * w..][..cin_g * h * w];
            geom.unroll(xg, col);
            let dyg = &dys[(i * cout + g * cout_g) * p..][..cout_g * p];
            let dst = &mut acc[g * cout_g * k..][..cout_g * k];
            // [k × p] · [p × cout_g]: `col` row-major, `dY_g` read transposed.
            gemm_strided(
                dst,
                cout_g,
                true,
                col,
                [p, 1],
                dyg,
                [1, p],
                [k, cout_g, p],
                par,
            );
        }
    };
    let threads = rayon::current_num_threads();
    let acc = if n >= threads && threads > 1 {
        (0..n)
            .into_par_iter()
            .fold(
                || (vec![0f32; cout * k], vec![0f32; k * p]),
                |(mut acc, mut col), i| {
                    image(&mut acc, &mut col, i, gemm::Parallelism::None);
                    (acc, col)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(|| vec![0f32; cout * k], summed)
    } else {
        let (mut acc, mut col) = (vec![0f32; cout * k], vec![0f32; k * p]);
        for i in 0..n {
            image(&mut acc, &mut col, i, gemm::Parallelism::Rayon(0));
        }
        acc
    };
    // Each group's [k × cout_g] block back to the weights' [cout_g × k].
    let mut grad = vec![0f32; cout * k];
    for g in 0..groups {
        let (src, dst) = (
            &acc[g * cout_g * k..][..cout_g * k],
            &mut grad[g * cout_g * k..],
        );
        for (j, row) in src.chunks_exact(cout_g).enumerate() {
            for (co, v) in row.iter().enumerate() {
                dst[co * k + j] = *v;
            }
        }
    }
    tensor(grad, weight_shape)
}

/// The gradient of the bias: the output gradient summed over images and positions.
pub(super) fn bias_grad(dy: FlexTensor) -> FlexTensor {
    let [n, c, h, w] = dims4(&dy);
    let dy = contiguous(&dy);
    let src = dy.as_slice();
    let sums = (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n)
                .map(|i| super::norm::row_sum(&src[(i * c + ch) * h * w..][..h * w], |v| v))
                .sum::<f64>() as f32
        })
        .collect();
    tensor(sums, [c])
}

/// One group of one image, unrolled: `col[(ci·kh + ky)·kw + kx][oy·wo + ox]` is the input
/// under kernel tap (ky, kx) of output position (oy, ox), zero in the padding.
struct Unroll {
    cin_g: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    stride: [usize; 2],
    pad: [usize; 2],
}

impl Unroll {
    /// `y[i] = Σ_g W_g · col_g(x[i]) + b`, images in parallel.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        x: &[f32],
        n: usize,
        cin: usize,
        weight: &[f32],
        cout: usize,
        groups: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let (h, w, p) = (self.h, self.w, self.ho * self.wo);
        let (cin_g, cout_g) = (self.cin_g, cout / groups);
        let k = cin_g * self.kh * self.kw;
        let mut y = vec![0f32; n * cout * p];
        let image = |col: &mut Vec<f32>, i: usize, yi: &mut [f32], par: gemm::Parallelism| {
            for g in 0..groups {
                self.unroll(&x[(i * cin + g * cin_g) * h * w..][..cin_g * h * w], col);
                let dst = &mut yi[g * cout_g * p..][..cout_g * p];
                let wg = &weight[g * cout_g * k..][..cout_g * k];
                // [cout_g × k] · [k × p], all row-major.
                gemm_strided(dst, p, false, wg, [k, 1], col, [p, 1], [cout_g, p, k], par);
            }
            if let Some(b) = bias {
                for (row, b) in yi.chunks_mut(p).zip(b) {
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
        };
        let threads = rayon::current_num_threads();
        if n >= threads && threads > 1 {
            y.par_chunks_mut(cout * p).enumerate().for_each_init(
                || vec![0f32; k * p],
                |col, (i, yi)| image(col, i, yi, gemm::Parallelism::None),
            );
        } else {
            let mut col = vec![0f32; k * p];
            for (i, yi) in y.chunks_mut(cout * p).enumerate() {
                image(&mut col, i, yi, gemm::Parallelism::Rayon(0));
            }
        }
        y
    }

    fn unroll(&self, x: &[f32], col: &mut [f32]) {
        let Self {
            cin_g,
            h,
            w,
            kh,
            kw,
            ho,
            wo,
            stride: [sh, sw],
            pad: [pt, pl],
        } = *self;
        for ci in 0..cin_g {
            let plane = &x[ci * h * w..][..h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut col[((ci * kh + ky) * kw + kx) * ho * wo..][..ho * wo];
                    // Output columns whose tap lands inside the image: ox·sw + kx − pl ∈ [0, w).
                    let ox0 = (pl.saturating_sub(kx)).div_ceil(sw).min(wo);
                    let ox1 = ((w + pl).saturating_sub(kx)).div_ceil(sw).min(wo).max(ox0);
                    for oy in 0..ho {
                        let out = &mut row[oy * wo..][..wo];
                        let iy = (oy * sh + ky) as isize - pt as isize;
                        if iy < 0 || iy >= h as isize {
                            out.fill(0.0);
                            continue;
                        }
                        let line = &plane[iy as usize * w..][..w];
                        out[..ox0].fill(0.0);
                        out[ox1..].fill(0.0);
                        let ix0 = ox0 * sw + kx - pl;
                        if sw == 1 {
                            out[ox0..ox1].copy_from_slice(&line[ix0..ix0 + (ox1 - ox0)]);
                        } else {
                            for (o, v) in
                                out[ox0..ox1].iter_mut().zip(line[ix0..].iter().step_by(sw))
                            {
                                *o = *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`: `dst` row-major with row stride `dst_rs`, `lhs` and
/// `rhs` with [row, column] strides; `accumulate` adds to `dst` instead of overwriting it.
#[allow(unsafe_code, clippy::too_many_arguments)]
pub(super) fn gemm_strided(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    [lhs_rs, lhs_cs]: [usize; 2],
    rhs: &[f32],
    [rhs_rs, rhs_cs]: [usize; 2],
    [m, n, k]: [usize; 3],
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs + 1
    };
    assert!(dst.len() >= last(dst_rs, 1, m, n) && dst_rs >= n);
    assert!(k == 0 || lhs.len() >= last(lhs_rs, lhs_cs, m, k));
    assert!(k == 0 || rhs.len() >= last(rhs_rs, rhs_cs, k, n));
    let i = |v: usize| v as isize;
    // SAFETY: every element the strides address lies inside its slice (asserted above), `dst`
    // is borrowed mutably and alone, and gemm touches nothing else. This is the one place the
    // workspace's `unsafe_code = "deny"` is lifted: gemm only has a raw-pointer interface, and
    // burn-flex calls it the same way.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            i(dst_rs),
            accumulate,
            lhs.as_ptr(),
            i(lhs_cs),
            i(lhs_rs),
            rhs.as_ptr(),
            i(rhs_cs),
            i(rhs_rs),
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// A contiguous f32 view of a flex tensor.
pub(super) struct Contiguous(FlexTensor);

impl Contiguous {
    pub(super) fn as_slice(&self) -> &[f32] {
        let n = self.0.layout().num_elements();
        let start = self.0.layout().start_offset();
        &self.0.storage::<f32>()[start..start + n]
    }
}

pub(super) fn contiguous(t: &FlexTensor) -> Contiguous {
    Contiguous(t.to_contiguous())
}

/// `a + b`, element by element: per-thread partial gradients summed in a rayon `reduce`.
pub(super) fn summed(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
    a
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    t.shape().dims()
}

/// A vector of `len` values, each written by `fill` (which must write every one) without
/// zeroing them first: the activations and gradients of a training step are megabytes, and a
/// zeroing pass costs as much as a pass that computes them.
pub(super) fn written(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    let spare = &mut v.spare_capacity_mut()[..len];
    fill(spare);
    // SAFETY: `fill` wrote all `len` values (each caller writes every element of its chunks).
    #[allow(unsafe_code)]
    unsafe {
        v.set_len(len);
    }
    v
}

pub(super) fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    let t = FlexTensor::from_data(TensorData::new(data, Shape::new(shape)));
    debug_assert!(t.layout() == &Layout::contiguous(Shape::new(shape)));
    t
}
