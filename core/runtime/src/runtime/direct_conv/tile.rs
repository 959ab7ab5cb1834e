//! The register tiles of the direct convolution: `OB` output channels by `T` flat positions,
//! computed by a portable loop the compiler vectorises, or with explicit AVX2 + FMA.

use super::{OB, T};

/// What every tile of one block of output channels reads.
#[derive(Clone, Copy)]
pub(super) struct Block<'a> {
    /// The phase-split image, `cs` floats per channel.
    pub(super) x: &'a [f32],
    /// The block's packed weights, `[c][taps][OB]`.
    pub(super) weights: &'a [f32],
    /// Each tap's offset from a flat position.
    pub(super) offsets: &'a [usize],
    /// Input channels.
    pub(super) c: usize,
    /// Floats per channel in `x`.
    pub(super) cs: usize,
    /// The block's `OB` biases.
    pub(super) bias: &'a [f32],
}

impl Block<'_> {
    /// The tap offsets, as many as `TAPS` says (0: all of them), so that a tile's loop over
    /// them has a constant bound where the kernel size is compiled in.
    #[inline(always)]
    pub(super) fn taps<const TAPS: usize>(&self) -> &[usize] {
        let taps = if TAPS == 0 { self.offsets.len() } else { TAPS };
        &self.offsets[..taps]
    }
}

/// One register tile: `OB` output channels (bias included) at `T` flat positions.
pub(super) trait Tile {
    /// Sums over every channel `ci < c` and tap of `weights[(ci · taps + tap) · OB + lane] ·
    /// x[ci · cs + q + offsets[tap] + j]` for lane `< OB`, position `j < T`. `TAPS` is the
    /// number of taps, or 0 for `offsets.len()`.
    ///
    /// The caller guarantees `(c − 1) · cs + q + max(offsets) + T ≤ x.len()` and
    /// `weights.len() ≥ c · taps · OB` (the AVX2 tile reads without bounds checks).
    fn tile<const TAPS: usize>(b: &Block<'_>, q: usize) -> [[f32; T]; OB];
}

/// The portable tile, vectorised by the compiler.
pub(super) struct Portable;

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
pub(super) struct Avx2Fma;

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
