//! A direct 2-D convolution for f32 NCHW images, register-blocked, with no im2col: Scrim's own
//! kernel for the small dense convolutions of its perturbers (see `scrim_conv.rs`, which puts it
//! in tract's graphs).
//!
//! The input is first copied into a padded scratch buffer in which every row is split into its
//! `stride` phases (column `j·s + φ` of the padded row goes to phase `φ`, index `j`), so that the
//! taps of a strided convolution read contiguous memory. The output is then computed in tiles of
//! [`OB`] output channels by [`T`] output columns held in registers: each tap loads `T` inputs
//! once and multiplies them by `OB` weights. Tiles and per-phase rows are padded so that no tile
//! needs a bounds case; the padding is zero and the extra columns are never stored.
//!
//! One function body serves every instruction set: it is compiled once per shape class (3×3
//! stride 1 and 2, 1×1 stride 1, and any other shape with its sizes read at run time) and, on
//! x86-64, once more with AVX2 and FMA enabled, chosen at run time. On aarch64 the baseline
//! (NEON, fused multiply-add) is what it compiles to.

use std::cell::RefCell;

/// Output channels per register tile.
pub(crate) const OB: usize = 8;
/// Output columns per register tile.
pub(crate) const T: usize = 8;

/// What the convolution applies to its output before storing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Activation {
    /// Nothing.
    Identity,
    /// `max(x, 0)`.
    Relu,
}

/// The shape of one convolution: input `[n, c, h, w]`, weights `[o, c, kh, kw]`, one stride for
/// both axes, no dilation, explicit padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: usize,
    /// Padding: top, left, bottom, right.
    pub(crate) pad: [usize; 4],
}

impl Geometry {
    fn padded_h(&self) -> usize {
        self.h + self.pad[0] + self.pad[2]
    }

    fn padded_w(&self) -> usize {
        self.w + self.pad[1] + self.pad[3]
    }

    /// Whether the kernel fits the padded input and the sizes are usable.
    pub(crate) fn is_valid(&self) -> bool {
        self.n > 0
            && self.c > 0
            && self.o > 0
            && self.kh > 0
            && self.kw > 0
            && self.stride > 0
            && self.padded_h() >= self.kh
            && self.padded_w() >= self.kw
    }

    /// Output height.
    pub(crate) fn out_h(&self) -> usize {
        (self.padded_h() - self.kh) / self.stride + 1
    }

    /// Output width.
    pub(crate) fn out_w(&self) -> usize {
        (self.padded_w() - self.kw) / self.stride + 1
    }

    /// Output shape `[n, o, out_h, out_w]`.
    pub(crate) fn out_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.out_h(), self.out_w()]
    }

    fn blocks(&self) -> usize {
        self.o.div_ceil(OB)
    }

    /// Length of one phase of one padded row in the scratch buffer: every tile's reads fit.
    fn phase_len(&self) -> usize {
        self.out_w().div_ceil(T) * T + (self.kw - 1) / self.stride + 1
    }

    /// Length of the packed weights ([`pack_weights`]).
    pub(crate) fn packed_len(&self) -> usize {
        self.blocks() * self.c * self.kh * self.kw * OB
    }

    /// Multiply-adds of one run.
    pub(crate) fn macs(&self) -> usize {
        self.n * self.o * self.out_h() * self.out_w() * self.c * self.kh * self.kw
    }
}

/// Weights `[o, c, kh, kw]` repacked as `[o / OB][c][kh][kw][OB]` (output channels padded with
/// zeros to a multiple of [`OB`]), so that one tap's `OB` weights are contiguous.
pub(crate) fn pack_weights(g: &Geometry, oihw: &[f32]) -> Vec<f32> {
    let mut packed = vec![0.0; g.packed_len()];
    let taps = g.kh * g.kw;
    for (o, filter) in oihw.chunks_exact(g.c * taps).take(g.o).enumerate() {
        let (block, lane) = (o / OB, o % OB);
        for (ct, &v) in filter.iter().enumerate() {
            packed[(block * g.c * taps + ct) * OB + lane] = v;
        }
    }
    packed
}

/// Bias `[o]` padded with zeros to a multiple of [`OB`].
pub(crate) fn pad_bias(g: &Geometry, bias: &[f32]) -> Vec<f32> {
    let mut padded = vec![0.0; g.blocks() * OB];
    padded[..bias.len().min(g.o)].copy_from_slice(&bias[..bias.len().min(g.o)]);
    padded
}

thread_local! {
    /// The padded, phase-split input of the convolution running on this thread.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs the convolution: `x` is `[n, c, h, w]`, `packed` from [`pack_weights`], `bias` from
/// [`pad_bias`], `out` is `[n, o, out_h, out_w]`.
///
/// The caller checks the lengths ([`Geometry::is_valid`], the tensors' shapes): a mismatch
/// panics on a slice index rather than reading out of bounds.
pub(crate) fn conv2d(
    g: &Geometry,
    x: &[f32],
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    SCRATCH.with_borrow_mut(|scratch| {
        let image_in = g.c * g.h * g.w;
        let [_, o, oh, ow] = g.out_shape();
        let image_out = o * oh * ow;
        for (xi, yi) in x
            .chunks_exact(image_in)
            .zip(out.chunks_exact_mut(image_out))
        {
            split_phases(g, xi, scratch);
            run_image(g, scratch, packed, bias, act, yi);
        }
    });
}

/// Copies one image into `scratch`, padded and split into stride phases: row `r` (padded) of
/// channel `c`, phase `φ`, index `j` holds the padded image at column `j·s + φ`.
fn split_phases(g: &Geometry, x: &[f32], scratch: &mut Vec<f32>) {
    let (hp, s, l) = (g.padded_h(), g.stride, g.phase_len());
    let [top, left, ..] = g.pad;
    scratch.clear();
    scratch.resize(g.c * hp * s * l, 0.0);
    for (c, plane) in x.chunks_exact(g.h * g.w).enumerate() {
        for (y, src) in plane.chunks_exact(g.w).enumerate() {
            let row = &mut scratch[(c * hp + y + top) * s * l..][..s * l];
            for (phase, dst) in row.chunks_exact_mut(l).enumerate() {
                // Padded column j·s + φ is source column j·s + φ − left.
                let first_j = left.saturating_sub(phase).div_ceil(s);
                let first_src = first_j * s + phase - left;
                if first_src >= g.w {
                    continue;
                }
                let count = (g.w - first_src).div_ceil(s).min(l - first_j);
                if s == 1 {
                    dst[first_j..first_j + count]
                        .copy_from_slice(&src[first_src..first_src + count]);
                } else {
                    for (d, v) in dst[first_j..first_j + count]
                        .iter_mut()
                        .zip(src[first_src..].iter().step_by(s))
                    {
                        *d = *v;
                    }
                }
            }
        }
    }
}

/// One image through the convolution, choosing the compiled variant for this machine and shape.
fn run_image(
    g: &Geometry,
    scratch: &[f32],
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the function only requires AVX2 and FMA, detected on this CPU just above.
        #[allow(unsafe_code)]
        unsafe {
            run_image_avx2_fma(g, scratch, packed, bias, act, out);
        }
        return;
    }
    // Fused multiply-add is baseline on aarch64; elsewhere without FMA, a multiply and an add.
    dispatch_shape::<{ cfg!(target_arch = "aarch64") }>(g, scratch, packed, bias, act, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_image_avx2_fma(
    g: &Geometry,
    scratch: &[f32],
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    dispatch_shape::<true>(g, scratch, packed, bias, act, out);
}

/// The shapes compiled with their sizes as constants; others read them at run time.
#[inline(always)]
fn dispatch_shape<const FMA: bool>(
    g: &Geometry,
    scratch: &[f32],
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    match (g.kh, g.kw, g.stride) {
        (3, 3, 1) => tiles::<FMA>(g, 3, 3, 1, scratch, packed, bias, act, out),
        (3, 3, 2) => tiles::<FMA>(g, 3, 3, 2, scratch, packed, bias, act, out),
        (1, 1, 1) => tiles::<FMA>(g, 1, 1, 1, scratch, packed, bias, act, out),
        (kh, kw, s) => tiles::<FMA>(g, kh, kw, s, scratch, packed, bias, act, out),
    }
}

/// The convolution of one image, tile by tile. `kh`, `kw` and `s` repeat the geometry's so that
/// each call site above, inlined, compiles with them as constants.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tiles<const FMA: bool>(
    g: &Geometry,
    kh: usize,
    kw: usize,
    s: usize,
    scratch: &[f32],
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    let (oh, ow, l) = (g.out_h(), g.out_w(), g.phase_len());
    let row_stride = s * l;
    let chan_stride = g.padded_h() * row_stride;
    let block_weights = g.c * kh * kw * OB;
    for (block, (weights, bias)) in packed
        .chunks_exact(block_weights)
        .zip(bias.chunks_exact(OB))
        .enumerate()
    {
        let lanes = OB.min(g.o - block * OB);
        for oy in 0..oh {
            for ox in (0..ow).step_by(T) {
                let mut acc = [[0.0f32; T]; OB];
                for (a, &b) in acc.iter_mut().zip(bias) {
                    *a = [b; T];
                }
                let origin = oy * s * row_stride + ox;
                for c in 0..g.c {
                    let input = &scratch[c * chan_stride + origin..];
                    let taps = &weights[c * kh * kw * OB..][..kh * kw * OB];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let at = ky * row_stride + (kx % s) * l + kx / s;
                            let src = &input[at..at + T];
                            let w = &taps[(ky * kw + kx) * OB..][..OB];
                            for (a, &wo) in acc.iter_mut().zip(w) {
                                for (aj, &xj) in a.iter_mut().zip(src) {
                                    *aj = if FMA {
                                        wo.mul_add(xj, *aj)
                                    } else {
                                        *aj + wo * xj
                                    };
                                }
                            }
                        }
                    }
                }
                let width = T.min(ow - ox);
                for (lane, a) in acc.iter().enumerate().take(lanes) {
                    let dst = &mut out[((block * OB + lane) * oh + oy) * ow + ox..][..width];
                    match act {
                        Activation::Identity => dst.copy_from_slice(&a[..width]),
                        Activation::Relu => {
                            for (d, v) in dst.iter_mut().zip(a) {
                                *d = v.max(0.0);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in f64.
    fn reference(g: &Geometry, x: &[f32], w: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
        let [n, o, oh, ow] = g.out_shape();
        let mut out = vec![0.0; n * o * oh * ow];
        for b in 0..n {
            for oc in 0..o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = f64::from(bias.get(oc).copied().unwrap_or(0.0));
                        for c in 0..g.c {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride + ky) as isize - g.pad[0] as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((b * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                    let wv = w[((oc * g.c + c) * g.kh + ky) * g.kw + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        let v = acc as f32;
                        out[((b * o + oc) * oh + oy) * ow + ox] = match act {
                            Activation::Identity => v,
                            Activation::Relu => v.max(0.0),
                        };
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn check(g: Geometry, act: Activation) {
        assert!(g.is_valid(), "{g:?}");
        let x = values(g.n * g.c * g.h * g.w, 1);
        let w = values(g.o * g.c * g.kh * g.kw, 2);
        let bias = values(g.o, 3);
        let mut out = vec![f32::NAN; g.out_shape().iter().product()];
        conv2d(
            &g,
            &x,
            &pack_weights(&g, &w),
            &pad_bias(&g, &bias),
            act,
            &mut out,
        );
        let want = reference(&g, &x, &w, &bias, act);
        for (k, (a, b)) in out.iter().zip(&want).enumerate() {
            let tol = 1e-4 * (1.0 + b.abs());
            assert!(
                (a - b).abs() <= tol,
                "{g:?} {act:?}: at {k}: {a} against {b}"
            );
        }
    }

    #[test]
    fn matches_the_definition_on_odd_shapes() {
        let shapes = [
            // The bounded encoder's first convolution, small.
            (1, 3, 17, 19, 16, 3, 3, 2, [1, 1, 1, 1]),
            (2, 5, 9, 7, 7, 3, 3, 1, [1, 1, 1, 1]),
            (1, 4, 8, 8, 20, 1, 1, 1, [0, 0, 0, 0]),
            (1, 3, 11, 13, 9, 5, 5, 2, [2, 2, 2, 2]),
            (1, 2, 10, 10, 3, 3, 3, 3, [0, 1, 2, 0]),
            (3, 6, 7, 30, 8, 3, 3, 2, [0, 0, 1, 1]),
            (1, 1, 3, 3, 1, 3, 3, 1, [0, 0, 0, 0]),
            (1, 16, 4, 4, 48, 2, 3, 1, [1, 0, 0, 2]),
        ];
        for (n, c, h, w, o, kh, kw, stride, pad) in shapes {
            let g = Geometry {
                n,
                c,
                h,
                w,
                o,
                kh,
                kw,
                stride,
                pad,
            };
            check(g, Activation::Identity);
            check(g, Activation::Relu);
        }
    }

    #[test]
    fn rejects_kernels_larger_than_the_padded_input() {
        let g = Geometry {
            n: 1,
            c: 1,
            h: 2,
            w: 2,
            o: 1,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: [0; 4],
        };
        assert!(!g.is_valid());
        assert!(Geometry { pad: [1; 4], ..g }.is_valid());
    }
}
