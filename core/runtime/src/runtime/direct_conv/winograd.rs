//! The 3×3, stride-1, padding-1 convolutions of many channels (the cloud recognizer's) as
//! Winograd's F(2×2, 3×3): each 2×2 output tile is `Aᵀ [(G W Gᵀ) ⊙ (Bᵀ P B)] A` over its 4×4
//! input patch `P`, so 16 multiplies per tile and channel pair replace 36. The 16 products
//! `(G W Gᵀ)ₖ ⊙ (Bᵀ P B)ₖ`, summed over input channels, are 16 matrix products (output
//! channels × input channels by input channels × tiles), run by the direct kernel's register
//! tile; the transforms are additions only.
//!
//! With AVX-512 (detected at run time) the products of whole groups of 64 tiles take a wider
//! register tile (`avx512.rs`: the recognizer 1.4–1.5× faster, docs/PERFORMANCE.md §1k).
//! [`conv3x3`] offers the kernel to the training side.
//!
//! Only where the products dominate: from [`MIN_CHANNELS`] input channels up (below it the
//! transforms cost more than they save, docs/PERFORMANCE.md §1f).
//!
//! Layouts (floats): the padded input with its columns split by parity, `q[img][c][row][2][qw]`
//! (`row` the padded row, `q[..][r][j]` the padded column `2j + r`); the transformed input
//! `v[k][c][tile]` and the products `m[k][o][tile]` for a block of tile rows. The planes' strides
//! are padded to an odd number of cache lines: at a power-of-two stride the 16 planes read
//! together fall into the same cache sets (measured: 1.5–2× slower).

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
mod avx512;
mod transforms;
mod weight_grad;

pub use weight_grad::{conv3x3_weight_grad, conv3x3_weight_grad_suits};

#[cfg(target_arch = "x86_64")]
use super::tile::Avx2Fma;
use super::tile::{Block, Portable, Tile};
use super::{Activation, Geometry, OB, T, kept_entry};
use transforms::{input_transform, output_transform, split_columns};

/// Fewest input channels for which a convolution takes this path.
pub(crate) const MIN_CHANNELS: usize = 32;
/// Tiles per block of tile rows, about (its transformed input and products stay in L2).
const BLOCK_TILES: usize = 128;
/// Lanes of the transforms' vectors.
const L: usize = 8;
/// Lanes of the transforms' vectors with AVX-512, where rows hold whole such vectors.
const WIDE_L: usize = 16;
/// Geometries whose scratch buffers a thread keeps.
const KEPT_SHAPES: usize = 8;

/// Whether `g` takes this path.
pub(crate) fn eligible(g: &Geometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == [1; 4] && g.c >= MIN_CHANNELS && g.o > 0
}

/// Length of [`transform_weights`]' output.
pub(crate) fn transformed_len(g: &Geometry) -> usize {
    16 * g.blocks() * g.c * OB
}

/// Weights `[o, c, 3, 3]` as `G W Gᵀ` (4×4 per channel pair), laid out `[k][o / OB][c][OB]`
/// with `k = 4a + b`, output channels padded with zeros to a multiple of [`OB`].
pub(crate) fn transform_weights(g: &Geometry, oihw: &[f32]) -> Vec<f32> {
    // `G v` for three values: G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]], additions
    // and halvings only (a training step transforms every layer's weights at every call).
    fn g3(v: [f32; 3]) -> [f32; 4] {
        let (even, odd) = (0.5 * (v[0] + v[2]), 0.5 * v[1]);
        [v[0], even + odd, even - odd, v[2]]
    }
    let blocks = g.blocks();
    let mut u = vec![0.0; transformed_len(g)];
    for (o, filters) in oihw.chunks_exact(g.c * 9).take(g.o).enumerate() {
        for (ci, w) in filters.chunks_exact(9).enumerate() {
            // Down the kernel's columns, then along the rows of the result.
            let cols = [
                g3([w[0], w[3], w[6]]),
                g3([w[1], w[4], w[7]]),
                g3([w[2], w[5], w[8]]),
            ];
            for a in 0..4 {
                let row = g3([cols[0][a], cols[1][a], cols[2][a]]);
                for (b, &v) in row.iter().enumerate() {
                    u[(((a * 4 + b) * blocks + o / OB) * g.c + ci) * OB + o % OB] = v;
                }
            }
        }
    }
    u
}

/// The sizes of one geometry's buffers.
#[derive(Clone, Copy)]
struct Layout {
    /// Tile rows and columns of one image.
    th: usize,
    tw: usize,
    /// Padded rows and the length of one parity's row in `q`.
    rows: usize,
    qw: usize,
    /// Tile rows per block.
    block_rows: usize,
    /// The widest vector of tiles the transforms may take ([`WIDE_L`] where the rows hold
    /// whole such vectors, else [`L`]); what the buffers leave room for.
    lanes: usize,
    /// Strides: a channel's tiles in `v` and an output channel's in `m`; a plane `k` of each.
    vs: usize,
    vk: usize,
    ms: usize,
    mk: usize,
}

/// `x` floats rounded up to an odd number of 64-byte lines.
fn odd_lines(x: usize) -> usize {
    let lines = x.div_ceil(16);
    (lines + 1 - lines % 2) * 16
}

impl Layout {
    fn new(g: &Geometry) -> Self {
        Self::with_block(g, BLOCK_TILES)
    }

    /// The layout with about `block_tiles` tiles per block (whole tile rows, at least one).
    fn with_block(g: &Geometry, block_tiles: usize) -> Self {
        let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
        let block_rows = (block_tiles / tw).clamp(1, g.n * th);
        let lanes = if tw.is_multiple_of(WIDE_L) { WIDE_L } else { L };
        // One block's tiles, rounded up to whole register tiles, plus the spill of the last
        // row's stores.
        let tiles = (block_rows * tw).div_ceil(T) * T + lanes;
        let (vs, ms) = (odd_lines(tiles), odd_lines(tiles));
        Self {
            th,
            tw,
            rows: 2 * th + 2,
            qw: tw.div_ceil(lanes) * lanes + lanes,
            block_rows,
            lanes,
            vs,
            vk: odd_lines(g.c * vs),
            ms,
            mk: odd_lines(g.blocks() * OB * ms),
        }
    }

    fn q_image(&self, g: &Geometry) -> usize {
        g.c * self.rows * 2 * self.qw
    }
}

/// A thread's buffers for one geometry; `q`'s padding is zero and never written.
struct Scratch {
    key: Geometry,
    q: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
}

impl Scratch {
    /// Zeroed buffers for `g` laid out as `lay`.
    fn new(g: &Geometry, lay: &Layout) -> Self {
        Self {
            key: *g,
            q: vec![0.0; g.n * lay.q_image(g)],
            v: vec![0.0; 16 * lay.vk],
            m: vec![0.0; 16 * lay.mk],
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// Runs the convolution: `x` is `[n, c, h, w]`, `u` from [`transform_weights`], `bias` padded
/// to a multiple of [`OB`], `out` is `[n, o, h, w]`.
///
/// The caller checks the lengths; a mismatch panics on an assertion or a slice index.
pub(crate) fn conv2d(
    g: &Geometry,
    x: &[f32],
    u: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    // Any channel count computes (the threshold of `eligible` is about speed).
    assert!(
        eligible(&Geometry {
            c: MIN_CHANNELS,
            ..*g
        }) && g.c > 0
            && x.len() == g.n * g.c * g.h * g.w
            && u.len() == transformed_len(g)
            && bias.len() == g.blocks() * OB
            && out.len() == g.n * g.o * g.h * g.w,
        "Winograd convolution: buffers do not match {g:?}"
    );
    let lay = Layout::new(g);
    SCRATCH.with_borrow_mut(|kept| {
        let s = kept_entry(kept, KEPT_SHAPES, |s| s.key == *g, || Scratch::new(g, &lay));
        let run = Run {
            g,
            lay,
            u,
            bias,
            act,
        };
        #[cfg(target_arch = "x86_64")]
        if avx512_fma() {
            // SAFETY: the function only requires AVX-512F, AVX2 and FMA, detected just above.
            #[allow(unsafe_code)]
            unsafe {
                run_avx512(&run, x, s, out);
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the function only requires AVX2 and FMA, detected just above.
            #[allow(unsafe_code)]
            unsafe {
                run_avx2_fma(&run, x, s, out);
            }
            return;
        }
        run_all::<Portable, false>(&run, x, s, out);
    });
}

/// Whether this CPU has AVX-512F, AVX2 and FMA: what the AVX-512 forms require.
#[cfg(target_arch = "x86_64")]
fn avx512_fma() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512f") && has!("avx2") && has!("fma")
}

/// The geometry of a 3×3, stride-1, padding-1 convolution of `[n, c, h, w]` into `o` channels.
fn three_by_three([n, c, h, w]: [usize; 4], o: usize) -> Geometry {
    Geometry {
        n,
        c,
        h,
        w,
        o,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: [1; 4],
    }
}

/// A 3×3, stride-1, padding-1 convolution of `n` images `[n, c, h, w]` by weights `[o, c, 3, 3]`
/// (and a bias of length `o`, or none) into `out` (`[n, o, h, w]`), on this thread, by the
/// Winograd kernel the recognizer runs in tract, with AVX-512 where the CPU has it: for the
/// training side's convolutions (`scrim-train`'s `fast_conv`). Whether it is the fast path for
/// a shape is [`conv3x3_suits`]'s to say.
///
/// # Panics
/// If a length does not match the shape, or a side or channel count is zero.
pub fn conv3x3(
    [n, c, h, w]: [usize; 4],
    x: &[f32],
    weights: &[f32],
    o: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let g = three_by_three([n, c, h, w], o);
    assert!(
        g.is_valid() && h > 0 && w > 0 && weights.len() == o * c * 9,
        "conv3x3: weights of {} floats for {o} × {c} × 3 × 3",
        weights.len()
    );
    let mut padded = vec![0.0; g.blocks() * OB];
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            o,
            "conv3x3: a bias of {} for {o} channels",
            b.len()
        );
        padded[..o].copy_from_slice(b);
    }
    let u = transform_weights(&g, weights);
    conv2d(&g, x, &u, &padded, Activation::Identity, out);
}

/// Whether [`conv3x3`] is faster than a matrix-product convolution of `c` → `o` channels `w`
/// wide on this CPU: with AVX-512, at least 16 channels in and out, and either rows of at least
/// 16 (eight tiles, the transforms' vector width) or 64 input channels. Measured on an Intel
/// host with AVX-512 against `scrim-train`'s gemm convolutions, batch 64 (docs/PERFORMANCE.md
/// §1k, §1m): 16→16 at 32 px 3.0 → 2.1 ms, its input gradient 2.8 → 2.1; 32→64 at 16 px 4.2 →
/// 1.9, its input gradient (64→32) 4.9 → 1.8; at 8 px the forward 64→128 3.5 → 2.0–2.1 (§1m;
/// §1k had measured 3.8 → 4.0 and left it to gemm), its input gradient (128→64) 4.7 → 2.5; the
/// recognizer's first input gradient (32→3 at 32 px) slower (the transforms of 32 channels for
/// 3 outputs).
/// AVX2 hosts were not measured, so they keep the matrix products.
pub fn conv3x3_suits(c: usize, o: usize, w: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        c >= 16 && o >= 16 && (w >= 2 * L || c >= 64) && avx512_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (c, o, w);
        false
    }
}

/// What every block of one run reads.
struct Run<'a> {
    g: &'a Geometry,
    lay: Layout,
    u: &'a [f32],
    bias: &'a [f32],
    act: Activation,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2_fma(run: &Run<'_>, x: &[f32], s: &mut Scratch, out: &mut [f32]) {
    run_all::<Avx2Fma, false>(run, x, s, out);
}

/// With the products of whole groups of [`avx512::TILES`] tiles in AVX-512, the rest in AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn run_avx512(run: &Run<'_>, x: &[f32], s: &mut Scratch, out: &mut [f32]) {
    run_all::<Avx2Fma, true>(run, x, s, out);
}

/// One run with `K`'s tiles, and AVX-512's for the products when `WIDE` (the caller has it).
#[inline(always)]
fn run_all<K: Tile, const WIDE: bool>(run: &Run<'_>, x: &[f32], s: &mut Scratch, out: &mut [f32]) {
    let (g, lay) = (run.g, run.lay);
    split_columns(g, &lay, x, &mut s.q);
    let total = g.n * lay.th;
    for first in (0..total).step_by(lay.block_rows) {
        let rows = lay.block_rows.min(total - first);
        input_transform::<WIDE>(g, &lay, &s.q, first, rows, &mut s.v);
        products::<K, WIDE>(run, &s.v, rows, &mut s.m);
        output_transform::<WIDE>(run, &s.m, first, rows, out);
    }
}

/// The 16 products `m[k] = U[k] · v[k]`, by the direct kernel's register tile (one tap); when
/// `WIDE`, whole groups of [`avx512::TILES`] tiles by AVX-512's.
#[inline(always)]
fn products<K: Tile, const WIDE: bool>(run: &Run<'_>, v: &[f32], rows: usize, m: &mut [f32]) {
    let (g, lay) = (run.g, run.lay);
    let used = (rows * lay.tw).div_ceil(T) * T;
    let blocks = g.blocks();
    let zero = [0.0f32; OB];
    // Tiles outer, output channels inner: a group of T tiles' transformed input (`c` lines
    // of 64 bytes) stays in L1 while every block of output channels reads it.
    for k in 0..16 {
        let x = &v[k * lay.vk..];
        #[cfg(not(target_arch = "x86_64"))]
        let wide_end = 0;
        #[cfg(target_arch = "x86_64")]
        let wide_end = if WIDE {
            used / avx512::TILES * avx512::TILES
        } else {
            0
        };
        #[cfg(target_arch = "x86_64")]
        if WIDE {
            let u = &run.u[k * blocks * g.c * OB..][..blocks * g.c * OB];
            // SAFETY: `WIDE` is only set under `run_avx512`, entered after AVX-512F was detected.
            #[allow(unsafe_code)]
            unsafe {
                avx512::products(
                    g.c,
                    blocks,
                    x,
                    lay.vs,
                    u,
                    &mut m[k * lay.mk..],
                    lay.ms,
                    wide_end,
                );
            }
        }
        for t0 in (wide_end..used).step_by(T) {
            for block in 0..blocks {
                let tile_input = Block {
                    x,
                    weights: &run.u[(k * blocks + block) * g.c * OB..][..g.c * OB],
                    offsets: &[0],
                    c: g.c,
                    cs: lay.vs,
                    bias: &zero,
                };
                let acc = K::tile::<1>(&tile_input, t0);
                for (lane, a) in acc.iter().enumerate() {
                    let at = k * lay.mk + (block * OB + lane) * lay.ms + t0;
                    m[at..at + T].copy_from_slice(a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
