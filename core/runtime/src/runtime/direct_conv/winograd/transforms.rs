//! The Winograd convolution's layout change and transforms: the input split by column parity,
//! `Bᵀ P B` of every 4×4 input patch, and `Aᵀ M A` of every tile's products into the output (plus
//! the bias and the activation). Additions only, on vectors of [`L`] tiles, or of
//! [`WIDE_L`] where AVX-512 is there to hold them and the rows come in whole such vectors
//! ([`wide_lanes`]).

use super::super::{Activation, Geometry};
use super::{L, Layout, Run, WIDE_L};

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
pub(super) fn load<const N: usize>(s: &[f32], at: usize) -> [f32; N] {
    let mut v = [0.0; N];
    v.copy_from_slice(&s[at..at + N]);
    v
}

#[inline(always)]
pub(super) fn add<const N: usize>(a: [f32; N], b: [f32; N]) -> [f32; N] {
    let mut r = a;
    for (r, b) in r.iter_mut().zip(&b) {
        *r += b;
    }
    r
}

#[inline(always)]
pub(super) fn sub<const N: usize>(a: [f32; N], b: [f32; N]) -> [f32; N] {
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
fn b_t<const N: usize>(d: [[f32; N]; 4]) -> [[f32; N]; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// `Aᵀ m` for four values along one axis.
#[inline(always)]
fn a_t<const N: usize>(m: [[f32; N]; 4]) -> [[f32; N]; 2] {
    [add(add(m[0], m[1]), m[2]), sub(sub(m[1], m[2]), m[3])]
}

/// Tile rows per vector of [`L`] tiles: two where a row holds exactly half a vector (8-px
/// images, the recognizer's last convolution), whose lanes would otherwise be half empty.
#[inline(always)]
pub(super) fn rows_per_vector(lay: &Layout) -> usize {
    if lay.tw == L / 2 { 2 } else { 1 }
}

/// Whether the transforms take vectors of [`WIDE_L`] tiles: with AVX-512 (`WIDE`, the caller
/// has it) and rows of whole such vectors (32-px images and every multiple: the perturber's
/// hidden 16→16 layer in training); measured in docs/PERFORMANCE.md §1n.
#[inline(always)]
pub(super) fn wide_lanes<const WIDE: bool>(lay: &Layout) -> bool {
    WIDE && lay.lanes == WIDE_L
}

/// Where tile row `r` of a block starting at `first` lies: its image and its row of tiles.
#[inline(always)]
pub(super) fn tile_row(lay: &Layout, first: usize, r: usize) -> (usize, usize) {
    ((first + r) / lay.th, (first + r) % lay.th)
}

/// Half a vector from `s` at `a`, the other half at `b` (zeros for none).
#[inline(always)]
fn load_halves<const N: usize>(s: &[f32], a: usize, b: Option<usize>) -> [f32; N] {
    let h = N / 2;
    let mut v = [0.0; N];
    v[..h].copy_from_slice(&s[a..a + h]);
    if let Some(b) = b {
        v[h..].copy_from_slice(&s[b..b + h]);
    }
    v
}

/// A vector of `q` at `at` (offset `d` from each row's start), or two half rows.
#[inline(always)]
fn load_tiles<const N: usize>(
    q: &[f32],
    at: usize,
    second: Option<usize>,
    pairs: bool,
    d: usize,
) -> [f32; N] {
    if pairs {
        load_halves(q, at + d, second.map(|b| b + d))
    } else {
        load(q, at + d)
    }
}

/// `Bᵀ P B` of every tile in tile rows `first..first + rows` (over the batch) into `v`, eight
/// (or [`WIDE_L`], [`wide_lanes`]) tiles at a time: of one row (a row's last store spills into
/// the next row's first tiles, which that row then writes), or of two rows of four
/// ([`rows_per_vector`]). AVX-512 is the caller's when `WIDE`.
#[inline(always)]
pub(super) fn input_transform<const WIDE: bool>(
    g: &Geometry,
    lay: &Layout,
    q: &[f32],
    first: usize,
    rows: usize,
    v: &mut [f32],
) {
    // Each layout its own loop: a run-time test in the loads cost 1-in-10 elsewhere.
    if rows_per_vector(lay) == 2 {
        input_transform_with::<true, L>(g, lay, q, first, rows, v);
    } else if wide_lanes::<WIDE>(lay) {
        input_transform_with::<false, WIDE_L>(g, lay, q, first, rows, v);
    } else {
        input_transform_with::<false, L>(g, lay, q, first, rows, v);
    }
}

/// [`input_transform`] with two tile rows per vector when `PAIRS`, `N` tiles per vector.
#[inline(always)]
fn input_transform_with<const PAIRS: bool, const N: usize>(
    g: &Geometry,
    lay: &Layout,
    q: &[f32],
    first: usize,
    rows: usize,
    v: &mut [f32],
) {
    let (qw, image) = (lay.qw, lay.q_image(g));
    let (per, pairs) = (if PAIRS { 2 } else { 1 }, PAIRS);
    for ci in 0..g.c {
        for r in (0..rows).step_by(per) {
            let row_at = |r: usize| {
                let (img, ty) = tile_row(lay, first, r);
                img * image + (ci * lay.rows + 2 * ty) * 2 * qw
            };
            let (at0, at1) = (row_at(r), (pairs && r + 1 < rows).then(|| row_at(r + 1)));
            for j0 in (0..lay.tw).step_by(N) {
                // The patch's rows 2ty..2ty+4, its columns transformed: padded columns
                // 2j, 2j+1, 2j+2, 2j+3 are even[j], odd[j], even[j+1], odd[j+1].
                let mut t = [[[0.0f32; N]; 4]; 4];
                for (dr, t) in t.iter_mut().enumerate() {
                    let d = dr * 2 * qw + j0;
                    let (a, b) = (at0, at1);
                    *t = b_t([
                        load_tiles(q, a, b, pairs, d),
                        load_tiles(q, a, b, pairs, d + qw),
                        load_tiles(q, a, b, pairs, d + 1),
                        load_tiles(q, a, b, pairs, d + qw + 1),
                    ]);
                }
                // The columns of `t` across its rows (clippy's iterator form would be a closure).
                #[allow(clippy::needless_range_loop)]
                for b in 0..4 {
                    let col = b_t([t[0][b], t[1][b], t[2][b], t[3][b]]);
                    for (a, values) in col.iter().enumerate() {
                        let at = (a * 4 + b) * lay.vk + ci * lay.vs + r * lay.tw + j0;
                        v[at..at + N].copy_from_slice(values);
                    }
                }
            }
        }
    }
}

/// `Aᵀ M A` of every tile, plus the bias and the activation, into the output rows (tiles laid
/// out as [`input_transform`] lays them).
#[inline(always)]
pub(super) fn output_transform<const WIDE: bool>(
    run: &Run<'_>,
    m: &[f32],
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    if rows_per_vector(&run.lay) == 2 {
        output_transform_with::<true, L>(run, m, first, rows, out);
    } else if wide_lanes::<WIDE>(&run.lay) {
        output_transform_with::<false, WIDE_L>(run, m, first, rows, out);
    } else {
        output_transform_with::<false, L>(run, m, first, rows, out);
    }
}

/// [`output_transform`] with two tile rows per vector when `PAIRS`, `N` tiles per vector.
#[inline(always)]
fn output_transform_with<const PAIRS: bool, const N: usize>(
    run: &Run<'_>,
    m: &[f32],
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    let (g, lay) = (run.g, run.lay);
    let (h, w) = (g.h, g.w);
    let relu = run.act == Activation::Relu;
    let per = if PAIRS { 2 } else { 1 };
    for o in 0..g.o {
        let bias = run.bias[o];
        for r in (0..rows).step_by(per) {
            // The tile rows of the vector's halves (one row: the whole vector).
            let halves = [
                Some(tile_row(&lay, first, r)),
                (PAIRS && r + 1 < rows).then(|| tile_row(&lay, first, r + 1)),
            ];
            for j0 in (0..lay.tw).step_by(N) {
                let base = o * lay.ms + r * lay.tw + j0;
                let mut rr = [[[0.0f32; N]; 2]; 4];
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
                let mut y = [[[0.0f32; N]; 2]; 2];
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
                // Output columns per half: a row's whole width when two rows share the vector.
                let span = 2 * N / per;
                let n = (w - x0).min(span);
                // Both columns' output row `dy` (clippy's iterator form would be a closure).
                #[allow(clippy::needless_range_loop)]
                for dy in 0..2 {
                    // Room for the widest vector's two columns; the first `2 * N` used.
                    let mut whole = [0.0f32; 2 * WIDE_L];
                    let line = &mut whole[..2 * N];
                    for i in 0..N {
                        line[2 * i] = y[0][dy][i];
                        line[2 * i + 1] = y[1][dy][i];
                    }
                    for (half, at) in halves.iter().enumerate().take(per) {
                        let Some((img, ty)) = *at else { break };
                        let oy = 2 * ty + dy;
                        if oy >= h {
                            continue;
                        }
                        let dst = ((img * g.o + o) * h + oy) * w + x0;
                        if n == 2 * N {
                            // A constant length: inlined, not a call to memmove.
                            out[dst..dst + 2 * N].copy_from_slice(line);
                        } else {
                            out[dst..dst + n].copy_from_slice(&line[half * span..][..n]);
                        }
                    }
                }
            }
        }
    }
}
