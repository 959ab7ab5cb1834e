//! The Winograd convolution's layout change and transforms: the input split by column parity,
//! `Bᵀ P B` of every 4×4 input patch, and `Aᵀ M A` of every tile's products into the output (plus
//! the bias and the activation). Additions only, on vectors of [`L`] tiles.

use super::super::{Activation, Geometry};
use super::{L, Layout, Run, V8};

/// Copies the images into `q`, padded by one and with their columns split by parity.
pub(super) fn split_columns(g: &Geometry, lay: &Layout, x: &[f32], q: &mut [f32]) {
    let qw = lay.qw;
    for (plane, qc) in x
        .chunks_exact(g.h * g.w)
        .zip(q.chunks_exact_mut(lay.rows * 2 * qw))
    {
        for (y, src) in plane.chunks_exact(g.w).enumerate() {
            let (even, odd) = qc[(y + 1) * 2 * qw..][..2 * qw].split_at_mut(qw);
            // Source column x is padded column x + 1: odd at x / 2 for even x, even at
            // (x + 1) / 2 for odd x.
            for (j, pair) in src.chunks(2).enumerate() {
                odd[j] = pair[0];
                if let Some(&v) = pair.get(1) {
                    even[j + 1] = v;
                }
            }
        }
    }
}

#[inline(always)]
pub(super) fn load(s: &[f32], at: usize) -> V8 {
    let mut v = [0.0; L];
    v.copy_from_slice(&s[at..at + L]);
    v
}

#[inline(always)]
pub(super) fn add(a: V8, b: V8) -> V8 {
    let mut r = a;
    for (r, b) in r.iter_mut().zip(&b) {
        *r += b;
    }
    r
}

#[inline(always)]
pub(super) fn sub(a: V8, b: V8) -> V8 {
    let mut r = a;
    for (r, b) in r.iter_mut().zip(&b) {
        *r -= b;
    }
    r
}

// The transforms are written with plain loops and `#[inline(always)]` helpers, no closures:
// `std::array::from_fn` and `map` left their closures out of line, compiled without AVX2
// (measured: a third of the recognizer's time in 4-lane calls).

/// `Bᵀ d` for four values along one axis.
#[inline(always)]
fn b_t(d: [V8; 4]) -> [V8; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// `Aᵀ m` for four values along one axis.
#[inline(always)]
fn a_t(m: [V8; 4]) -> [V8; 2] {
    [add(add(m[0], m[1]), m[2]), sub(sub(m[1], m[2]), m[3])]
}

/// `Bᵀ P B` of every tile in tile rows `first..first + rows` (over the batch) into `v`, eight
/// tiles of a row at a time; a row's last store spills into the next row's first tiles, which
/// that row then writes.
#[inline(always)]
pub(super) fn input_transform(
    g: &Geometry,
    lay: &Layout,
    q: &[f32],
    first: usize,
    rows: usize,
    v: &mut [f32],
) {
    let (qw, image) = (lay.qw, lay.q_image(g));
    for ci in 0..g.c {
        for r in 0..rows {
            let (img, ty) = ((first + r) / lay.th, (first + r) % lay.th);
            for j0 in (0..lay.tw).step_by(L) {
                // The patch's rows 2ty..2ty+4, its columns transformed: padded columns
                // 2j, 2j+1, 2j+2, 2j+3 are even[j], odd[j], even[j+1], odd[j+1].
                let mut t = [[[0.0f32; L]; 4]; 4];
                for (dr, t) in t.iter_mut().enumerate() {
                    let at = img * image + (ci * lay.rows + 2 * ty + dr) * 2 * qw + j0;
                    *t = b_t([
                        load(q, at),
                        load(q, at + qw),
                        load(q, at + 1),
                        load(q, at + qw + 1),
                    ]);
                }
                // The columns of `t` across its rows (clippy's iterator form would be a closure).
                #[allow(clippy::needless_range_loop)]
                for b in 0..4 {
                    let col = b_t([t[0][b], t[1][b], t[2][b], t[3][b]]);
                    for (a, values) in col.iter().enumerate() {
                        let at = (a * 4 + b) * lay.vk + ci * lay.vs + r * lay.tw + j0;
                        v[at..at + L].copy_from_slice(values);
                    }
                }
            }
        }
    }
}

/// `Aᵀ M A` of every tile, plus the bias and the activation, into the output rows.
#[inline(always)]
pub(super) fn output_transform(
    run: &Run<'_>,
    m: &[f32],
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    let (g, lay) = (run.g, run.lay);
    let (h, w) = (g.h, g.w);
    let relu = run.act == Activation::Relu;
    for o in 0..g.o {
        let bias = run.bias[o];
        for r in 0..rows {
            let (img, ty) = ((first + r) / lay.th, (first + r) % lay.th);
            for j0 in (0..lay.tw).step_by(L) {
                let base = o * lay.ms + r * lay.tw + j0;
                let mut rr = [[[0.0f32; L]; 2]; 4];
                for (a, rr) in rr.iter_mut().enumerate() {
                    let k = base + 4 * a * lay.mk;
                    *rr = a_t([
                        load(m, k),
                        load(m, k + lay.mk),
                        load(m, k + 2 * lay.mk),
                        load(m, k + 3 * lay.mk),
                    ]);
                }
                // y[col][row]: rows 2ty, 2ty + 1; columns 2j and 2j + 1 of each tile j.
                let mut y = [[[0.0f32; L]; 2]; 2];
                for (col, y) in y.iter_mut().enumerate() {
                    *y = a_t([rr[0][col], rr[1][col], rr[2][col], rr[3][col]]);
                    // Whole vectors, the activation's test outside the lanes' loop, and a
                    // comparison rather than `f32::max` (whose NaN rule kept this loop scalar
                    // when compiled for AVX-512: 6% of the recognizer's time).
                    for y in y.iter_mut() {
                        for v in y.iter_mut() {
                            *v += bias;
                        }
                        if relu {
                            for v in y.iter_mut() {
                                *v = if *v > 0.0 { *v } else { 0.0 };
                            }
                        }
                    }
                }
                let x0 = 2 * j0;
                let n = (w - x0).min(2 * L);
                for (dy, row) in [(0, 0), (1, 1)] {
                    let oy = 2 * ty + dy;
                    if oy >= h {
                        break;
                    }
                    let mut line = [0.0f32; 2 * L];
                    for i in 0..L {
                        line[2 * i] = y[0][row][i];
                        line[2 * i + 1] = y[1][row][i];
                    }
                    let dst = ((img * g.o + o) * h + oy) * w + x0;
                    if n == 2 * L {
                        // A constant length: inlined, not a call to memmove.
                        out[dst..dst + 2 * L].copy_from_slice(&line);
                    } else {
                        out[dst..dst + n].copy_from_slice(&line[..n]);
                    }
                }
            }
        }
    }
}
