//! The Winograd products with AVX-512 (detected at run time by the caller): a register tile of
//! [`OB`] output channels by [`TILES`] tiles, four vectors of 16 per channel, where the
//! direct kernel's AVX2 tile holds [`OB`] by 16 in eight vectors of 8.

use super::super::OB;

/// Tiles per register tile.
pub(super) const TILES: usize = 64;

/// `m[(b·OB + lane)·ms + t] = Σ_ci u[(b·c + ci)·OB + lane] · x[ci·vs + t]` for every block
/// `b < blocks`, `lane < OB` and tile `t < end` (a multiple of [`TILES`]): the products of one
/// Winograd plane, tiles outer and output channels inner as in the AVX2 loop.
///
/// # Panics
/// If `end` is not a multiple of [`TILES`] or a buffer is too short for it.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) fn products(
    c: usize,
    blocks: usize,
    x: &[f32],
    vs: usize,
    u: &[f32],
    m: &mut [f32],
    ms: usize,
    end: usize,
) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps};
    if end == 0 || c == 0 || blocks == 0 {
        return;
    }
    assert!(
        end.is_multiple_of(TILES)
            && end <= vs
            && end <= ms
            && (c - 1) * vs + end <= x.len()
            && u.len() >= blocks * c * OB
            && (blocks * OB - 1) * ms + end <= m.len(),
        "Winograd products: buffers do not match"
    );
    let (xp, up, mp) = (x.as_ptr(), u.as_ptr(), m.as_mut_ptr());
    for t0 in (0..end).step_by(TILES) {
        for block in 0..blocks {
            // SAFETY: AVX-512F is enabled for this function (the caller detected it); every
            // read and write is inside the lengths asserted above.
            #[allow(unsafe_code)]
            unsafe {
                let w = up.add(block * c * OB);
                let mut acc = [[_mm512_set1_ps(0.0); 4]; OB];
                for ci in 0..c {
                    let xs = xp.add(ci * vs + t0);
                    let xv = [
                        _mm512_loadu_ps(xs),
                        _mm512_loadu_ps(xs.add(16)),
                        _mm512_loadu_ps(xs.add(32)),
                        _mm512_loadu_ps(xs.add(48)),
                    ];
                    // Index loops: the accumulators must stay in registers.
                    #[allow(clippy::needless_range_loop)]
                    for lane in 0..OB {
                        let b = _mm512_set1_ps(*w.add(ci * OB + lane));
                        for v in 0..4 {
                            acc[lane][v] = _mm512_fmadd_ps(b, xv[v], acc[lane][v]);
                        }
                    }
                }
                for (lane, a) in acc.iter().enumerate() {
                    let at = mp.add((block * OB + lane) * ms + t0);
                    for (v, &av) in a.iter().enumerate() {
                        _mm512_storeu_ps(at.add(16 * v), av);
                    }
                }
            }
        }
    }
}
