//! The blocked chain's tiles with AVX-512 (detected at run time by the caller): one vector holds
//! 16 output channels, two of the layout's blocks of 8, and 32 registers hold tiles three
//! times the AVX2 tiles' size. The layout between layers is the AVX2 path's: a vector's lower
//! half is stored to one block, its upper half to the next.

use super::{CB, Geo, Layer, Region};

/// Output channels per vector.
pub(super) const LANES: usize = 16;
/// Bytes of packed weights a pass over a row reads: a row's tiles take their input channel
/// groups in passes whose weights stay in the first-level cache (48 KiB here) from tile to tile,
/// adding to the output the pass before stored. The bounded encoder's 32→48 layer (55 KiB of
/// weights) 0.17 → 0.15–0.16 ms in two passes; 16 KiB measured as 32.
const PASS_BYTES: usize = 32 << 10;

/// Which input channel groups one pass adds.
#[derive(Clone, Copy)]
struct Pass {
    groups: usize,
    /// Whether it starts from the bias (else from the output) and ends with the activation.
    first: bool,
    last: bool,
}

#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows_avx512(
    l: &Layer,
    geo: &Geo,
    region: Region,
    ov: usize,
    src: &[f32],
    packed: &[f32],
    bias: &[f32],
    dst: &mut [f32],
) {
    // SAFETY: the caller checked AVX-512F and the bounds every tile relies on.
    unsafe {
        if geo.blocked {
            by_shape::<true>(l, geo, region, ov, src, packed, bias, dst);
        } else {
            by_shape::<false>(l, geo, region, ov, src, packed, bias, dst);
        }
    }
}

/// [`rows`] compiled for the layer's tile shape and stride: `ov` blocks of 8 channels (6, 4
/// or 2, from [`Layer::ov`]) are `ov / 2` vectors.
///
/// # Safety
/// As [`rows`].
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
unsafe fn by_shape<const BLOCKED: bool>(
    l: &Layer,
    geo: &Geo,
    r: Region,
    ov: usize,
    src: &[f32],
    packed: &[f32],
    bias: &[f32],
    dst: &mut [f32],
) {
    // Pixels per tile: 12 or 16 accumulators. Tiles of 18 and 24 (three vectors by 6 or 8
    // pixels, two by 12) were slower, 24 twice as slow as AVX2: the compiler kept accumulators
    // on the stack, though 32 registers would hold them.
    // SAFETY: the caller's guarantee.
    unsafe {
        match (ov / 2, l.stride) {
            (3, 2) => rows::<3, 4, 2, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (3, _) => rows::<3, 4, 1, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (2, 2) => rows::<2, 8, 2, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (2, _) => rows::<2, 8, 1, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (_, 2) => rows::<1, 16, 2, BLOCKED>(l, geo, r, src, packed, bias, dst),
            _ => rows::<1, 16, 1, BLOCKED>(l, geo, r, src, packed, bias, dst),
        }
    }
}

/// Every output row of the region, block of output channels and tile of `P` pixels (then the
/// row's rest in tiles of 8 and one narrower).
///
/// # Safety
/// AVX-512F, and the bounds [`layer_conv`](super::layer_conv) checks.
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
unsafe fn rows<const Z: usize, const P: usize, const S: usize, const BLOCKED: bool>(
    l: &Layer,
    geo: &Geo,
    r: Region,
    src: &[f32],
    packed: &[f32],
    bias: &[f32],
    dst: &mut [f32],
) {
    let ow = l.out_w();
    let lanes = Z * LANES;
    let group_len = 9 * geo.group * lanes;
    let block_len = geo.groups * group_len;
    let per_pass = (PASS_BYTES / (group_len * size_of::<f32>())).max(1);
    let (xp, wp, bp, dp) = (
        src.as_ptr(),
        packed.as_ptr(),
        bias.as_ptr(),
        dst.as_mut_ptr(),
    );
    for oy in r.oy.0..r.oy.1 {
        for ob in 0..l.o / lanes {
            // SAFETY: in bounds by the caller's check (`reach`, the packed and output lengths).
            unsafe {
                let b = bp.add(ob * lanes);
                let d =
                    dp.add(2 * ob * Z * geo.out_block + ((oy + 1) * (ow + 2) + 1 + r.ox.0) * CB);
                for g0 in (0..geo.groups).step_by(per_pass) {
                    let pass = Pass {
                        groups: per_pass.min(geo.groups - g0),
                        first: g0 == 0,
                        last: g0 + per_pass >= geo.groups,
                    };
                    let x = xp.add(geo.at(S, oy, r.ox.0) + g0 * geo.group_stride);
                    let w = wp.add(ob * block_len + g0 * group_len);
                    let (n, mut ox) = (r.ox.1 - r.ox.0, 0);
                    while ox + P <= n {
                        let (xt, dt) = (x.add(ox * geo.pixel), d.add(ox * CB));
                        tile::<Z, P, S, BLOCKED>(geo, pass, xt, w, b, dt);
                        ox += P;
                    }
                    while ox + 8 <= n {
                        let (xt, dt) = (x.add(ox * geo.pixel), d.add(ox * CB));
                        tile::<Z, 8, S, BLOCKED>(geo, pass, xt, w, b, dt);
                        ox += 8;
                    }
                    let (x, d) = (x.add(ox * geo.pixel), d.add(ox * CB));
                    match n - ox {
                        1 => tile::<Z, 1, S, BLOCKED>(geo, pass, x, w, b, d),
                        2 => tile::<Z, 2, S, BLOCKED>(geo, pass, x, w, b, d),
                        3 => tile::<Z, 3, S, BLOCKED>(geo, pass, x, w, b, d),
                        4 => tile::<Z, 4, S, BLOCKED>(geo, pass, x, w, b, d),
                        5 => tile::<Z, 5, S, BLOCKED>(geo, pass, x, w, b, d),
                        6 => tile::<Z, 6, S, BLOCKED>(geo, pass, x, w, b, d),
                        7 => tile::<Z, 7, S, BLOCKED>(geo, pass, x, w, b, d),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// `Z · 16` output channels at `P` pixels of a row: `x` the input at the tile's first pixel
/// (its top-left tap), `w` the block's packed weights, `d` the output at the first pixel.
/// `BLOCKED` as in the AVX2 tile.
///
/// # Safety
/// AVX-512F; every address read or written in bounds.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(unsafe_code)]
unsafe fn tile<const Z: usize, const P: usize, const S: usize, const BLOCKED: bool>(
    geo: &Geo,
    pass: Pass,
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    d: *mut f32,
) {
    use std::arch::x86_64::{
        _mm256_castpd_ps, _mm256_castps_pd, _mm256_loadu_ps, _mm256_storeu_ps, _mm512_castpd_ps,
        _mm512_castps_pd, _mm512_castps256_ps512, _mm512_castps512_ps256, _mm512_extractf64x4_pd,
        _mm512_fmadd_ps, _mm512_insertf64x4, _mm512_loadu_ps, _mm512_max_ps, _mm512_set1_ps,
        _mm512_setzero_ps,
    };
    // SAFETY: the caller's guarantee.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); Z]; P];
        if pass.first {
            for z in 0..Z {
                let b = _mm512_loadu_ps(bias.add(LANES * z));
                for a in &mut acc {
                    a[z] = b;
                }
            }
        } else {
            for (j, a) in acc.iter_mut().enumerate() {
                for (z, av) in a.iter_mut().enumerate() {
                    let at = d.add(2 * z * geo.out_block + j * CB);
                    let low = _mm512_castps256_ps512(_mm256_loadu_ps(at));
                    let high = _mm256_castps_pd(_mm256_loadu_ps(at.add(geo.out_block)));
                    *av = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(low), high, 1));
                }
            }
        }
        let (pixel, group, channel) = if BLOCKED { (S * CB, CB, 1) } else { (S, 1, 0) };
        let mut w = w;
        for g in 0..pass.groups {
            let xg = x.add(g * geo.group_stride);
            for ky in 0..3 {
                let xr = xg.add(ky * geo.row_stride);
                for kx in 0..3 {
                    let xt = xr.add(kx * (pixel / S));
                    for c in 0..group {
                        let xc = xt.add(c * channel);
                        // Index loops, as in the AVX2 tile: the accumulators stay in registers.
                        let mut wv = [_mm512_setzero_ps(); Z];
                        #[allow(clippy::needless_range_loop)]
                        for z in 0..Z {
                            wv[z] = _mm512_loadu_ps(w.add(LANES * z));
                        }
                        #[allow(clippy::needless_range_loop)]
                        for j in 0..P {
                            let b = _mm512_set1_ps(*xc.add(j * pixel));
                            for z in 0..Z {
                                acc[j][z] = _mm512_fmadd_ps(b, wv[z], acc[j][z]);
                            }
                        }
                        w = w.add(Z * LANES);
                    }
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for (j, a) in acc.iter().enumerate() {
            for (z, &av) in a.iter().enumerate() {
                let y = if geo.relu && pass.last {
                    _mm512_max_ps(av, zero)
                } else {
                    av
                };
                // Channels 16z..16z+8 belong to block 2z, the next eight to block 2z + 1.
                let low = _mm512_castps512_ps256(y);
                let high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(y), 1));
                let at = d.add(2 * z * geo.out_block + j * CB);
                _mm256_storeu_ps(at, low);
                _mm256_storeu_ps(at.add(geo.out_block), high);
            }
        }
    }
}
