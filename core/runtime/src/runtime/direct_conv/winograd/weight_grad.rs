//! The weight gradient of the same convolutions by F(2×2, 3×3): with `U = G W Gᵀ` and
//! `V = Bᵀ P B` as in the forward, each tile's output is `Aᵀ (U ⊙ V) A`, so the gradient of the
//! weights is `dW = Gᵀ [Σ_tiles (A dY Aᵀ) ⊙ V] G`. The sum over tiles, for each of the 16
//! transform positions, is a matrix product (output channels × tiles by tiles × input
//! channels): 16 multiplies per tile and channel pair where the unrolled input's product takes
//! 36, the transforms additions only.
//!
//! The tiles are taken in groups of whole tile rows ([`GROUP_TILES`]): the group's transformed
//! input `v[k][c][tile]` (the forward's own transform) and transformed output gradient
//! `m[k][o][tile]` stay in L2 while the 16 products read them. The products keep the tiles in
//! the vector lanes (both operands are laid out that way) and add each lane sum into the
//! gradient at the end of a group.

use std::cell::RefCell;

use super::super::{Geometry, kept_entry};
#[cfg(target_arch = "x86_64")]
use super::avx512_fma;
use super::transforms::{
    add, input_transform, rows_per_vector, split_columns, sub, tile_row, wide_lanes,
};
use super::{KEPT_SHAPES, L, Layout, Scratch, WIDE_L, three_by_three};

/// Tiles per group, about: enough vectors of 16 tiles per lane sum that the sums cost little.
const GROUP_TILES: usize = 512;
/// Bytes of a group's transforms (`v` and `m`, all 16 positions) that stay in L2 (2 MiB per
/// core on the Intel host measured).
const L2_BUDGET: usize = 3 << 19;

/// [`GROUP_TILES`], or half of it where only the half keeps the group's transforms in L2:
/// measured with `conv_parts` (batch 64), 32→64 @16 (6 KiB of transforms per tile) 2.45–2.63 →
/// 2.12–2.27 ms at 256 tiles; 16→16 @32, whose 512 fit, no faster at 256, and 64→128 @8, whose
/// 256 do not fit either, no faster (fewer tiles per lane sum: at 128–192 tiles every shape
/// was slower).
fn group_tiles(g: &Geometry) -> usize {
    let bytes = |tiles: usize| 16 * (g.o + g.c) * tiles * std::mem::size_of::<f32>();
    let half = GROUP_TILES / 2;
    if bytes(GROUP_TILES) > L2_BUDGET && bytes(half) <= L2_BUDGET {
        half
    } else {
        GROUP_TILES
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// The gradient of a 3×3, stride-1, padding-1 convolution's weights `[o, c, 3, 3]`, written to
/// `out`, from its `n` input images `x` (`[n, c, h, w]`) and the gradient of its output `dy`
/// (`[n, o, h, w]`), on this thread: for the training side's convolutions (`scrim-train`'s
/// `fast_conv`), which sum the gradients of chunks of images computed in parallel. Whether it
/// is the fast path for a shape is [`conv3x3_weight_grad_suits`]'s to say.
///
/// # Panics
/// If a length does not match the shape, or a side or channel count is zero.
pub fn conv3x3_weight_grad(
    [n, c, h, w]: [usize; 4],
    x: &[f32],
    dy: &[f32],
    o: usize,
    out: &mut [f32],
) {
    let g = three_by_three([n, c, h, w], o);
    assert!(
        g.is_valid()
            && h > 0
            && w > 0
            && x.len() == n * c * h * w
            && dy.len() == n * o * h * w
            && out.len() == o * c * 9,
        "conv3x3_weight_grad: buffers do not match [{n}, {c}, {h}, {w}] → {o} channels"
    );
    let lay = Layout::with_block(&g, group_tiles(&g));
    let mut du = vec![0.0f32; 16 * o * c];
    SCRATCH.with_borrow_mut(|kept| {
        let s = kept_entry(kept, KEPT_SHAPES, |s| s.key == g, || Scratch::new(&g, &lay));
        #[cfg(target_arch = "x86_64")]
        if avx512_fma() {
            // SAFETY: the function only requires AVX-512F, AVX2 and FMA, detected just above.
            #[allow(unsafe_code)]
            unsafe {
                groups_avx512(&g, &lay, x, dy, s, &mut du);
            }
            return;
        }
        groups::<false>(&g, &lay, x, dy, s, &mut du);
    });
    finish(o, c, &du, out);
}

/// Whether [`conv3x3_weight_grad`] is faster than the unrolled input's matrix product for a
/// convolution of `c` → `o` channels `w` wide on this CPU: with AVX-512 (its products' lane
/// sums), at least 16 channels in and out.
pub fn conv3x3_weight_grad_suits(c: usize, o: usize, w: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = w;
        c >= 16 && o >= 16 && avx512_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (c, o, w);
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn groups_avx512(
    g: &Geometry,
    lay: &Layout,
    x: &[f32],
    dy: &[f32],
    s: &mut Scratch,
    du: &mut [f32],
) {
    groups::<true>(g, lay, x, dy, s, du);
}

/// Every group's transforms and products into `du` (`[16][o][c]`); AVX-512's products when
/// `WIDE` (the caller has it).
#[inline(always)]
fn groups<const WIDE: bool>(
    g: &Geometry,
    lay: &Layout,
    x: &[f32],
    dy: &[f32],
    s: &mut Scratch,
    du: &mut [f32],
) {
    split_columns(g, lay, x, &mut s.q);
    let total = g.n * lay.th;
    let oc = g.o * g.c;
    for first in (0..total).step_by(lay.block_rows) {
        let rows = lay.block_rows.min(total - first);
        input_transform::<WIDE>(g, lay, &s.q, first, rows, &mut s.v);
        grad_transform::<WIDE>(g, lay, dy, first, rows, &mut s.m);
        let tiles = rows * lay.tw;
        for (k, duk) in du.chunks_exact_mut(oc).enumerate() {
            let (m, v) = (&s.m[k * lay.mk..], &s.v[k * lay.vk..]);
            #[cfg(target_arch = "x86_64")]
            if WIDE {
                // SAFETY: `WIDE` is only set under `groups_avx512`, entered after AVX-512F
                // was detected.
                #[allow(unsafe_code)]
                unsafe {
                    products_avx512(g, m, lay.ms, v, lay.vs, tiles, duk);
                }
                continue;
            }
            products(g, m, lay.ms, v, lay.vs, tiles, duk, [0, 0]);
        }
    }
}

/// `A x` along one axis of a tile: `A = [[1, 0], [1, 1], [1, −1], [0, −1]]`.
#[inline(always)]
fn a_col<const N: usize>(x0: [f32; N], x1: [f32; N]) -> [[f32; N]; 4] {
    let zero = [0.0; N];
    [x0, add(x0, x1), sub(x0, x1), sub(zero, x1)]
}

/// `A dY Aᵀ` of every tile in tile rows `first..first + rows` (over the batch) into
/// `m[k][o][tile]`, eight tiles at a time as the input's transform lays them out (of one row,
/// or of two rows of four), outputs past the image's edge read as zero.
/// AVX-512's permutation splits the columns by parity when `WIDE` (the caller has it).
#[inline(always)]
fn grad_transform<const WIDE: bool>(
    g: &Geometry,
    lay: &Layout,
    dy: &[f32],
    first: usize,
    rows: usize,
    m: &mut [f32],
) {
    if rows_per_vector(lay) == 2 {
        grad_transform_with::<WIDE, true, L>(g, lay, dy, first, rows, m);
    } else if wide_lanes::<WIDE>(lay) {
        grad_transform_with::<WIDE, false, WIDE_L>(g, lay, dy, first, rows, m);
    } else {
        grad_transform_with::<WIDE, false, L>(g, lay, dy, first, rows, m);
    }
}

/// [`grad_transform`] with two tile rows per vector when `PAIRS`, `N` tiles per vector.
#[inline(always)]
fn grad_transform_with<const WIDE: bool, const PAIRS: bool, const N: usize>(
    g: &Geometry,
    lay: &Layout,
    dy: &[f32],
    first: usize,
    rows: usize,
    m: &mut [f32],
) {
    let (h, w) = (g.h, g.w);
    let per = if PAIRS { 2 } else { 1 };
    // Output columns per half of a vector: a row's whole width when two rows share it.
    let span = 2 * N / per;
    for r in (0..rows).step_by(per) {
        let halves = [
            Some(tile_row(lay, first, r)),
            (PAIRS && r + 1 < rows).then(|| tile_row(lay, first, r + 1)),
        ];
        for o in 0..g.o {
            for j0 in (0..lay.tw).step_by(N) {
                let x0 = 2 * j0;
                let n = (w - x0).min(span);
                // d[row][parity]: rows 2ty and 2ty + 1, even and odd columns of the tiles.
                let mut d = [[[0.0f32; N]; 2]; 2];
                for (dr, d) in d.iter_mut().enumerate() {
                    // Room for the widest vector's columns; the first `2 * N` used.
                    let mut whole = [0.0f32; 2 * WIDE_L];
                    let line = &mut whole[..2 * N];
                    for (half, at) in halves.iter().enumerate().take(per) {
                        let Some((img, ty)) = *at else { break };
                        let y = 2 * ty + dr;
                        if y >= h {
                            continue;
                        }
                        let at = ((img * g.o + o) * h + y) * w + x0;
                        let dst = &mut line[half * span..];
                        // Constant lengths where they can be: inlined, not calls to memmove.
                        if n == 2 * N {
                            dst[..2 * N].copy_from_slice(&dy[at..at + 2 * N]);
                        } else if n == N {
                            dst[..N].copy_from_slice(&dy[at..at + N]);
                        } else {
                            dst[..n].copy_from_slice(&dy[at..at + n]);
                        }
                    }
                    *d = deinterleave::<WIDE, N>(line);
                }
                // Down the rows for each column parity, then along the columns.
                let cols = [a_col(d[0][0], d[1][0]), a_col(d[0][1], d[1][1])];
                // Both columns' row `a` (clippy's iterator form would be a closure).
                #[allow(clippy::needless_range_loop)]
                for a in 0..4 {
                    for (b, values) in a_col(cols[0][a], cols[1][a]).iter().enumerate() {
                        let at = (a * 4 + b) * lay.mk + o * lay.ms + r * lay.tw + j0;
                        m[at..at + N].copy_from_slice(values);
                    }
                }
            }
        }
    }
}

/// A line's even and odd values: `line` holds `2 * N` of them.
#[inline(always)]
fn deinterleave<const WIDE: bool, const N: usize>(line: &[f32]) -> [[f32; N]; 2] {
    let mut d = [[0.0f32; N]; 2];
    #[cfg(target_arch = "x86_64")]
    if WIDE && (N == L || N == WIDE_L) {
        // SAFETY: `WIDE` is only set under `groups_avx512`, entered after AVX-512F was
        // detected.
        #[allow(unsafe_code)]
        unsafe {
            deinterleave_avx512(&line[..2 * N], d.as_flattened_mut());
        }
        return d;
    }
    for i in 0..N {
        d[0][i] = line[2 * i];
        d[1][i] = line[2 * i + 1];
    }
    d
}

/// [`deinterleave`] by AVX-512 permutations: the 16 or 32 floats of `line` into their even
/// ones, then their odd ones, in `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn deinterleave_avx512(line: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{
        _mm512_loadu_ps, _mm512_permutex2var_ps, _mm512_permutexvar_ps, _mm512_setr_epi32,
        _mm512_storeu_ps,
    };
    assert!(
        out.len() == line.len() && (line.len() == 2 * L || line.len() == 2 * WIDE_L),
        "deinterleave: 16 or 32 floats"
    );
    let (src, dst) = (line.as_ptr(), out.as_mut_ptr());
    // SAFETY: AVX-512F is enabled for this function; both slices hold 16 or 32 floats, as
    // asserted, and each access below stays inside them.
    #[allow(unsafe_code)]
    unsafe {
        if line.len() == 2 * L {
            let order = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
            _mm512_storeu_ps(dst, _mm512_permutexvar_ps(order, _mm512_loadu_ps(src)));
        } else {
            // Indices 16-31 pick from the second vector.
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            let (a, b) = (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16)));
            _mm512_storeu_ps(dst, _mm512_permutex2var_ps(a, even, b));
            _mm512_storeu_ps(dst.add(16), _mm512_permutex2var_ps(a, odd, b));
        }
    }
}

/// `du[oi][ci] += Σ_t m[oi·ms + t] · v[ci·vs + t]` over `t < tiles`, for the output channels
/// and input channels from `from` on: the products of one transform position, portably.
#[allow(clippy::too_many_arguments)]
fn products(
    g: &Geometry,
    m: &[f32],
    ms: usize,
    v: &[f32],
    vs: usize,
    tiles: usize,
    du: &mut [f32],
    [o_from, c_from]: [usize; 2],
) {
    for oi in 0..g.o {
        let mo = &m[oi * ms..][..tiles];
        let first_c = if oi < o_from { c_from } else { 0 };
        for ci in first_c..g.c {
            let vc = &v[ci * vs..][..tiles];
            // Sixteen partial sums, which the compiler keeps in vector lanes.
            let mut acc = [0.0f32; 16];
            let (mc, vcc) = (mo.chunks_exact(16), vc.chunks_exact(16));
            let (mr, vr) = (mc.remainder(), vcc.remainder());
            for (a, b) in mc.zip(vcc) {
                for l in 0..16 {
                    acc[l] += a[l] * b[l];
                }
            }
            for (l, (a, b)) in mr.iter().zip(vr).enumerate() {
                acc[l] += a * b;
            }
            du[oi * g.c + ci] += acc.iter().sum::<f32>();
        }
    }
}

/// [`products`] with AVX-512: register tiles of four output by four input channels, sixteen
/// tiles per vector; the channels beyond the last whole register tile portably.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn products_avx512(
    g: &Geometry,
    m: &[f32],
    ms: usize,
    v: &[f32],
    vs: usize,
    tiles: usize,
    du: &mut [f32],
) {
    use std::arch::x86_64::{
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_reduce_add_ps,
        _mm512_setzero_ps,
    };
    if tiles == 0 {
        return;
    }
    assert!(
        (g.o - 1) * ms + tiles <= m.len()
            && (g.c - 1) * vs + tiles <= v.len()
            && du.len() >= g.o * g.c,
        "Winograd weight-gradient products: buffers do not match"
    );
    let (o4, c4) = (g.o / 4 * 4, g.c / 4 * 4);
    let whole = tiles / 16 * 16;
    // The last vector's lanes that hold tiles (none past `tiles` is read).
    let tail = ((1u32 << (tiles - whole)) - 1) as u16;
    let (mp, vp) = (m.as_ptr(), v.as_ptr());
    for ob in (0..o4).step_by(4) {
        for cb in (0..c4).step_by(4) {
            // SAFETY: AVX-512F is enabled for this function (the caller detected it); every
            // full load reads tiles `t..t + 16 ≤ whole ≤ tiles` of a row inside the lengths
            // asserted above, and the masked one only the lanes below `tiles`.
            #[allow(unsafe_code)]
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 4]; 4];
                // Written out, not `array::map`: its closures were left out of line (5% of a
                // convolution's backward in calls).
                let (m0, v0) = (mp.add(ob * ms), vp.add(cb * vs));
                for t in (0..whole).step_by(16) {
                    let a = [
                        _mm512_loadu_ps(m0.add(t)),
                        _mm512_loadu_ps(m0.add(ms + t)),
                        _mm512_loadu_ps(m0.add(2 * ms + t)),
                        _mm512_loadu_ps(m0.add(3 * ms + t)),
                    ];
                    let b = [
                        _mm512_loadu_ps(v0.add(t)),
                        _mm512_loadu_ps(v0.add(vs + t)),
                        _mm512_loadu_ps(v0.add(2 * vs + t)),
                        _mm512_loadu_ps(v0.add(3 * vs + t)),
                    ];
                    for i in 0..4 {
                        for j in 0..4 {
                            acc[i][j] = _mm512_fmadd_ps(a[i], b[j], acc[i][j]);
                        }
                    }
                }
                if tail != 0 {
                    let (m0, v0) = (m0.add(whole), v0.add(whole));
                    let a = [
                        _mm512_maskz_loadu_ps(tail, m0),
                        _mm512_maskz_loadu_ps(tail, m0.add(ms)),
                        _mm512_maskz_loadu_ps(tail, m0.add(2 * ms)),
                        _mm512_maskz_loadu_ps(tail, m0.add(3 * ms)),
                    ];
                    let b = [
                        _mm512_maskz_loadu_ps(tail, v0),
                        _mm512_maskz_loadu_ps(tail, v0.add(vs)),
                        _mm512_maskz_loadu_ps(tail, v0.add(2 * vs)),
                        _mm512_maskz_loadu_ps(tail, v0.add(3 * vs)),
                    ];
                    for i in 0..4 {
                        for j in 0..4 {
                            acc[i][j] = _mm512_fmadd_ps(a[i], b[j], acc[i][j]);
                        }
                    }
                }
                for (i, row) in acc.iter().enumerate() {
                    for (j, &a) in row.iter().enumerate() {
                        du[(ob + i) * g.c + cb + j] += _mm512_reduce_add_ps(a);
                    }
                }
            }
        }
    }
    if o4 < g.o || c4 < g.c {
        // The pairs outside the register tiles: rows from `o4` on entirely, and the columns
        // from `c4` on of the rows before it.
        products(g, m, ms, v, vs, tiles, du, [o4, c4]);
    }
}

/// `dW = Gᵀ dU G` of every channel pair: `du` `[16][o][c]` into `out` `[o][c][3][3]`.
fn finish(o: usize, c: usize, du: &[f32], out: &mut [f32]) {
    const GM: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    for (pair, w) in out.chunks_exact_mut(9).enumerate().take(o * c) {
        for i in 0..3 {
            for j in 0..3 {
                let mut s = 0.0;
                for (a, ga) in GM.iter().enumerate() {
                    for (b, gb) in GM.iter().enumerate() {
                        s += ga[i] * du[(a * 4 + b) * o * c + pair] * gb[j];
                    }
                }
                w[i * 3 + j] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests;
