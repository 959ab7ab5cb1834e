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

use std::cell::RefCell;

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
        let at = match kept.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                if kept.len() == KEPT_SHAPES {
                    kept.remove(0);
                }
                kept.push((key, vec![0.0; g.c * g.channel_len()]));
                kept.len() - 1
            }
        };
        let scratch = &mut kept[at].1;
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

/// What every tile of one block of output channels reads.
#[derive(Clone, Copy)]
struct Block<'a> {
    /// The phase-split image, `cs` floats per channel.
    x: &'a [f32],
    /// The block's packed weights, `[c][taps][OB]`.
    weights: &'a [f32],
    /// Each tap's offset from a flat position.
    offsets: &'a [usize],
    /// Input channels.
    c: usize,
    /// Floats per channel in `x`.
    cs: usize,
    /// The block's `OB` biases.
    bias: &'a [f32],
}

impl Block<'_> {
    /// The tap offsets, as many as `TAPS` says (0: all of them), so that a tile's loop over
    /// them has a constant bound where the kernel size is compiled in.
    #[inline(always)]
    fn taps<const TAPS: usize>(&self) -> &[usize] {
        let taps = if TAPS == 0 { self.offsets.len() } else { TAPS };
        &self.offsets[..taps]
    }
}

/// One register tile: `OB` output channels (bias included) at `T` flat positions.
trait Tile {
    /// Sums over every channel `ci < c` and tap of `weights[(ci · taps + tap) · OB + lane] ·
    /// x[ci · cs + q + offsets[tap] + j]` for lane `< OB`, position `j < T`. `TAPS` is the
    /// number of taps, or 0 for `offsets.len()`.
    ///
    /// The caller guarantees `(c − 1) · cs + q + max(offsets) + T ≤ x.len()` and
    /// `weights.len() ≥ c · taps · OB` (the AVX2 tile reads without bounds checks).
    fn tile<const TAPS: usize>(b: &Block<'_>, q: usize) -> [[f32; T]; OB];
}

/// The portable tile, vectorised by the compiler.
struct Portable;

impl Tile for Portable {
    #[inline(always)]
    fn tile<const TAPS: usize>(b: &Block<'_>, q: usize) -> [[f32; T]; OB] {
        let (x, weights, c, cs, bias) = (b.x, b.weights, b.c, b.cs, b.bias);
        let offsets = b.taps::<TAPS>();
        let taps = offsets.len();
        let mut acc = [[0.0f32; T]; OB];
        for (a, &b) in acc.iter_mut().zip(bias) {
            *a = [b; T];
        }
        for ci in 0..c {
            let xc = &x[ci * cs + q..];
            let wc = &weights[ci * taps * OB..][..taps * OB];
            for (&off, w) in offsets.iter().zip(wc.chunks_exact(OB)) {
                let src = &xc[off..off + T];
                for (a, &wo) in acc.iter_mut().zip(w) {
                    for (aj, &xj) in a.iter_mut().zip(src) {
                        // Fused multiply-add is baseline on aarch64; elsewhere a multiply and an
                        // add (a software fused multiply-add would be slower).
                        *aj = if cfg!(target_arch = "aarch64") {
                            wo.mul_add(xj, *aj)
                        } else {
                            *aj + wo * xj
                        };
                    }
                }
            }
        }
        acc
    }
}

/// The AVX2 + FMA tile: `OB × 2` accumulators of eight lanes.
#[cfg(target_arch = "x86_64")]
struct Avx2Fma;

#[cfg(target_arch = "x86_64")]
impl Tile for Avx2Fma {
    #[inline(always)]
    fn tile<const TAPS: usize>(b: &Block<'_>, q: usize) -> [[f32; T]; OB] {
        // SAFETY: `Avx2Fma` is only used under `run_image_avx2_fma`, entered after AVX2 and FMA
        // were detected; the bounds are the caller's guarantee (checked in `image`).
        #[allow(unsafe_code)]
        unsafe {
            avx2_fma_tile::<TAPS>(b, q)
        }
    }
}

/// See [`Tile::tile`].
///
/// # Safety
/// The CPU has AVX2 and FMA, and the bounds of [`Tile::tile`] hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn avx2_fma_tile<const TAPS: usize>(b: &Block<'_>, q: usize) -> [[f32; T]; OB] {
    let (x, weights, c, cs, bias) = (b.x, b.weights, b.c, b.cs, b.bias);
    let offsets = b.taps::<TAPS>();
    let taps = offsets.len();
    use std::arch::x86_64::{
        __m256, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps,
        _mm256_storeu_ps,
    };
    const V: usize = T / 8;
    let mut acc: [[__m256; V]; OB] = [[_mm256_set1_ps(0.0); V]; OB];
    for (a, &b) in acc.iter_mut().zip(&bias[..OB]) {
        *a = [_mm256_set1_ps(b); V];
    }
    let (xp, wp) = (x.as_ptr(), weights.as_ptr());
    for ci in 0..c {
        let base = ci * cs + q;
        let wc = ci * taps * OB;
        for (tap, &off) in offsets.iter().enumerate() {
            // SAFETY: in bounds by the caller's guarantee (see the function's doc).
            let xs: [__m256; V] =
                std::array::from_fn(|v| unsafe { _mm256_loadu_ps(xp.add(base + off + 8 * v)) });
            for (lane, a) in acc.iter_mut().enumerate() {
                // SAFETY: as above.
                let w = unsafe { _mm256_broadcast_ss(&*wp.add(wc + tap * OB + lane)) };
                for (av, &xv) in a.iter_mut().zip(&xs) {
                    *av = _mm256_fmadd_ps(w, xv, *av);
                }
            }
        }
    }
    let mut tile = [[0.0f32; T]; OB];
    for (dst, a) in tile.iter_mut().zip(&acc) {
        for (v, &av) in a.iter().enumerate() {
            // SAFETY: `dst` holds `T = 8 · V` floats.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(8 * v), av) };
        }
    }
    tile
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

    /// The portable tile, whatever the machine has (`conv2d` picks AVX2 where it can).
    fn portable(
        g: &Geometry,
        x: &[f32],
        packed: &[f32],
        bias: &[f32],
        act: Activation,
    ) -> Vec<f32> {
        let [n, o, oh, ow] = g.out_shape();
        let mut out = vec![f32::NAN; n * o * oh * ow];
        let mut scratch = vec![0.0; g.c * g.channel_len()];
        for (xi, yi) in x
            .chunks_exact(g.c * g.h * g.w)
            .zip(out.chunks_exact_mut(o * oh * ow))
        {
            split_phases(g, xi, &mut scratch);
            let run = Run {
                g,
                scratch: &scratch,
                packed,
                bias,
                act,
            };
            dispatch_taps::<Portable>(&run, yi);
        }
        out
    }

    fn check(g: Geometry, act: Activation) {
        assert!(g.is_valid(), "{g:?}");
        let x = values(g.n * g.c * g.h * g.w, 1);
        let w = values(g.o * g.c * g.kh * g.kw, 2);
        let bias = values(g.o, 3);
        let (packed, padded_bias) = (pack_weights(&g, &w), pad_bias(&g, &bias));
        let want = reference(&g, &x, &w, &bias, act);
        // Twice through `conv2d`: the second run reuses the thread's scratch buffer.
        for run in 0..2 {
            let mut out = vec![f32::NAN; g.out_shape().iter().product()];
            conv2d(&g, &x, &packed, &padded_bias, act, &mut out);
            let slow = portable(&g, &x, &packed, &padded_bias, act);
            for (k, ((a, p), b)) in out.iter().zip(&slow).zip(&want).enumerate() {
                let tol = 1e-4 * (1.0 + b.abs());
                assert!(
                    (a - b).abs() <= tol && (p - b).abs() <= tol,
                    "{g:?} {act:?}, run {run}: at {k}: {a} (portable {p}) against {b}"
                );
            }
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
            // The bounded encoder's last two at 224 px: 14 → 7 at stride 2, then 7 × 7.
            (1, 48, 14, 14, 48, 3, 3, 2, [1, 1, 1, 1]),
            (2, 48, 7, 7, 48, 3, 3, 1, [1, 1, 1, 1]),
            // Odd left padding and odd widths at stride 2; stride 4.
            (1, 3, 9, 9, 5, 3, 3, 2, [1, 3, 0, 2]),
            (1, 2, 13, 17, 6, 3, 3, 4, [2, 2, 2, 2]),
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
