//! A direct 2-D convolution for f32 NCHW images, register-blocked, with no im2col: Scrim's own
//! kernel for the small dense convolutions of its perturbers (see `scrim_conv.rs`, which puts it
//! in tract's graphs).
//!
//! The input is first copied into a padded scratch buffer split into its `stride × stride`
//! phases: padded pixel `(r, q)` of a channel goes to sub-image `(r mod s, q mod s)` at
//! `(r / s, q / s)`. Every tap of a strided convolution then reads one sub-image at stride 1,
//! and output pixel `(y, x)` of tap `(ky, kx)` sits at a fixed offset from `y · L + x` (`L` the
//! sub-images' row length). So the output is computed over flat positions `y · L + x`, as a
//! stride-1 convolution of any stride: a few columns per row (`x ≥ out_w`) are computed and
//! never stored, and small feature maps (7×7) fill whole register tiles.
//!
//! A tile is [`OB`] output channels by [`T`] flat positions held in registers: each tap loads
//! `T` inputs once and multiplies them by `OB` weights. The positions are visited in chunks of
//! [`CHUNK`] and, inside a chunk, every block of output channels in turn, so a chunk's input
//! stays in cache while all output channels read it. The padding of the scratch buffer is never
//! written after it is first zeroed, so each thread keeps one buffer per convolution shape (the
//! last [`KEPT_SHAPES`] shapes; each about the size of that convolution's input).
//!
//! On x86-64 with AVX2 and FMA (detected at run time) a tile is computed with explicit vector
//! instructions; elsewhere (aarch64's NEON included) by the portable loop, which the compiler
//! vectorises.
//!
//! 3×3 stride-1 convolutions of many channels take [`winograd`] instead, which runs its matrix
//! products through the same tiles.

use std::cell::RefCell;

pub(crate) mod blocked;
mod tile;
pub(crate) mod winograd;

#[cfg(target_arch = "x86_64")]
use tile::Avx2Fma;
use tile::{Block, Portable, Tile};

/// Output channels per register tile.
pub(crate) const OB: usize = 4;
/// Flat output positions per register tile (two 8-lane vectors).
pub(crate) const T: usize = 16;
/// Flat output positions per cache chunk (a multiple of [`T`]).
const CHUNK: usize = 256;
/// Convolution shapes whose scratch buffers a thread keeps.
const KEPT_SHAPES: usize = 16;

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

    /// Rows of one phase sub-image.
    fn sub_h(&self) -> usize {
        self.padded_h().div_ceil(self.stride)
    }

    /// Row length `L` of one phase sub-image; output `(y, x)` is flat position `y · L + x`.
    fn sub_w(&self) -> usize {
        self.padded_w().div_ceil(self.stride)
    }

    fn sub_len(&self) -> usize {
        self.sub_h() * self.sub_w()
    }

    /// One channel in the scratch buffer: its `s²` sub-images, then room for the reads of the
    /// last tile past them (`out_h + (kh − 1) / s ≤ sub_h` bounds the rest).
    fn channel_len(&self) -> usize {
        self.stride * self.stride * self.sub_len() + (self.kw - 1) / self.stride + T
    }

    /// Flat output positions of one image.
    fn positions(&self) -> usize {
        self.out_h() * self.sub_w()
    }

    /// Offset of each tap `(ky, kx)` from the flat position it contributes to.
    fn tap_offsets(&self) -> Vec<usize> {
        let (s, l, sub) = (self.stride, self.sub_w(), self.sub_len());
        (0..self.kh)
            .flat_map(|ky| (0..self.kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| ((ky % s) * s + kx % s) * sub + (ky / s) * l + kx / s)
            .collect()
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

/// The entry of `kept` that `matches`, else a new one from `make` (the oldest dropped once
/// `limit` are kept): the thread-local scratch buffers of the kernels, one per shape.
pub(crate) fn kept_entry<E>(
    kept: &mut Vec<E>,
    limit: usize,
    matches: impl Fn(&E) -> bool,
    make: impl FnOnce() -> E,
) -> &mut E {
    let at = match kept.iter().position(matches) {
        Some(at) => at,
        None => {
            if kept.len() >= limit {
                kept.remove(0);
            }
            kept.push(make());
            kept.len() - 1
        }
    };
    &mut kept[at]
}

thread_local! {
    /// The phase-split scratch buffers of this thread, one per convolution shape (most recent
    /// last), with their padding zero.
    static SCRATCH: RefCell<Vec<(Geometry, Vec<f32>)>> = const { RefCell::new(Vec::new()) };
}

/// Runs the convolution: `x` is `[n, c, h, w]`, `packed` from [`pack_weights`], `bias` from
/// [`pad_bias`], `out` is `[n, o, out_h, out_w]`.
///
/// The caller checks the lengths ([`Geometry::is_valid`], the tensors' shapes): a mismatch
/// panics on a slice index or an assertion rather than reading out of bounds.
pub(crate) fn conv2d(
    g: &Geometry,
    x: &[f32],
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    SCRATCH.with_borrow_mut(|kept| {
        let key = Geometry { n: 1, ..*g };
        let scratch = &mut kept_entry(
            kept,
            KEPT_SHAPES,
            |(k, _)| *k == key,
            || (key, vec![0.0; g.c * g.channel_len()]),
        )
        .1;
        let image_in = g.c * g.h * g.w;
        let [_, o, oh, ow] = g.out_shape();
        let image_out = o * oh * ow;
        for (xi, yi) in x
            .chunks_exact(image_in)
            .zip(out.chunks_exact_mut(image_out))
        {
            split_phases(g, xi, scratch);
            let run = Run {
                g,
                scratch,
                packed,
                bias,
                act,
            };
            run_image(&run, yi);
        }
    });
}

/// Copies one image into `scratch` (zero where padding), split into phase sub-images.
fn split_phases(g: &Geometry, x: &[f32], scratch: &mut [f32]) {
    let (s, l, sub, cs) = (g.stride, g.sub_w(), g.sub_len(), g.channel_len());
    let [top, left, ..] = g.pad;
    for (c, plane) in x.chunks_exact(g.h * g.w).enumerate() {
        for (y, src) in plane.chunks_exact(g.w).enumerate() {
            let r = y + top;
            // Sub-image (r mod s, 0), row r / s; sub-image (r mod s, φ) is φ · sub further.
            let row = c * cs + (r % s) * s * sub + (r / s) * l;
            match s {
                1 => scratch[row + left..][..g.w].copy_from_slice(src),
                2 => {
                    let (even, odd) = scratch[row..][..sub + l].split_at_mut(sub);
                    split_pairs(src, left, &mut even[..l], &mut odd[..l]);
                }
                _ => {
                    for phase in 0..s {
                        let dst = &mut scratch[row + phase * sub..][..l];
                        // Padded column j·s + φ is source column j·s + φ − left.
                        let first_j = left.saturating_sub(phase).div_ceil(s);
                        let first_src = first_j * s + phase - left;
                        for (d, v) in dst[first_j..]
                            .iter_mut()
                            .zip(src.iter().skip(first_src).step_by(s))
                        {
                            *d = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Stride 2: source column `x` is padded column `x + left`, so it goes to `even` or `odd` at
/// `(x + left) / 2`. Pairs of columns go out together, which the compiler vectorises.
fn split_pairs(src: &[f32], left: usize, even: &mut [f32], odd: &mut [f32]) {
    let mut rest = src;
    if left % 2 == 1
        && let Some((&first, tail)) = src.split_first()
    {
        odd[left / 2] = first;
        rest = tail;
    }
    let j0 = left.div_ceil(2);
    let pairs = rest.chunks_exact(2);
    let last = pairs.remainder().first().copied();
    let n = rest.len() / 2;
    for ((pair, e), o) in pairs.zip(&mut even[j0..j0 + n]).zip(&mut odd[j0..j0 + n]) {
        *e = pair[0];
        *o = pair[1];
    }
    if let Some(v) = last {
        even[j0 + n] = v;
    }
}

/// One image's convolution: the geometry, the image split into phases, the packed weights,
/// the padded bias and the activation.
#[derive(Clone, Copy)]
struct Run<'a> {
    g: &'a Geometry,
    scratch: &'a [f32],
    packed: &'a [f32],
    bias: &'a [f32],
    act: Activation,
}

/// One image through the convolution, choosing the tile code for this machine and the loop
/// bounds for the kernel size.
fn run_image(run: &Run<'_>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the function only requires AVX2 and FMA, detected on this CPU just above.
        #[allow(unsafe_code)]
        unsafe {
            run_image_avx2_fma(run, out);
        }
        return;
    }
    dispatch_taps::<Portable>(run, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_image_avx2_fma(run: &Run<'_>, out: &mut [f32]) {
    dispatch_taps::<Avx2Fma>(run, out);
}

/// The kernel sizes compiled with their tap count as a constant; others read it at run time.
#[inline(always)]
fn dispatch_taps<K: Tile>(run: &Run<'_>, out: &mut [f32]) {
    match run.g.kh * run.g.kw {
        9 => image::<K, 9>(run, out),
        1 => image::<K, 1>(run, out),
        25 => image::<K, 25>(run, out),
        _ => image::<K, 0>(run, out),
    }
}

/// The convolution of one image from its phase-split `scratch`, tile by tile.
#[inline(always)]
fn image<K: Tile, const TAPS: usize>(run: &Run<'_>, out: &mut [f32]) {
    let Run {
        g,
        scratch,
        packed,
        bias,
        act,
    } = *run;
    let (oh, ow, l, cs) = (g.out_h(), g.out_w(), g.sub_w(), g.channel_len());
    let positions = g.positions();
    let offsets = g.tap_offsets();
    let taps = offsets.len();
    assert!(TAPS == 0 || TAPS == taps, "{TAPS} taps compiled for {taps}");
    let block_weights = g.c * taps * OB;
    // The guarantee of `Tile::tile` for the last tile, hence every tile.
    let last_tile = (positions - 1) / T * T;
    let reach = offsets.iter().max().copied().unwrap_or(0);
    assert!(
        (g.c - 1) * cs + last_tile + reach + T <= scratch.len()
            && packed.len() == g.blocks() * block_weights
            && bias.len() == g.blocks() * OB
            && out.len() == g.o * oh * ow,
        "direct convolution: buffers do not match {g:?}"
    );
    for chunk in (0..positions).step_by(CHUNK) {
        let chunk_end = (chunk + CHUNK).min(positions);
        for (block, (weights, bias)) in packed
            .chunks_exact(block_weights)
            .zip(bias.chunks_exact(OB))
            .enumerate()
        {
            let lanes = OB.min(g.o - block * OB);
            let tile_input = Block {
                x: scratch,
                weights,
                offsets: &offsets,
                c: g.c,
                cs,
                bias,
            };
            for q in (chunk..chunk_end).step_by(T) {
                let acc = K::tile::<TAPS>(&tile_input, q);
                // Store the tile's positions row by row, skipping columns x ≥ out_w.
                let (mut y, mut x) = (q / l, q % l);
                let mut at = 0;
                while at < T && q + at < positions {
                    let run = (T - at).min(l - x);
                    if x < ow {
                        let n = run.min(ow - x);
                        for (lane, a) in acc.iter().enumerate().take(lanes) {
                            let oc = block * OB + lane;
                            let dst = &mut out[(oc * oh + y) * ow + x..][..n];
                            let src = &a[at..at + n];
                            match act {
                                Activation::Identity => dst.copy_from_slice(src),
                                Activation::Relu => {
                                    for (d, v) in dst.iter_mut().zip(src) {
                                        *d = v.max(0.0);
                                    }
                                }
                            }
                        }
                    }
                    at += run;
                    x = 0;
                    y += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
