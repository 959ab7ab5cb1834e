//! The blocked chain's tiles with explicit AVX2 + FMA (detected at run time by the caller).

use super::{CB, Geo, Layer, Region};

#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows_avx2(
    l: &Layer,
    geo: &Geo,
    region: Region,
    ov: usize,
    src: &[f32],
    packed: &[f32],
    bias: &[f32],
    dst: &mut [f32],
) {
    // SAFETY: the caller checked AVX2, FMA and the bounds every tile relies on.
    unsafe {
        if geo.blocked {
            by_shape::<true>(l, geo, region, ov, src, packed, bias, dst);
        } else {
            by_shape::<false>(l, geo, region, ov, src, packed, bias, dst);
        }
    }
}

/// [`rows`] compiled for the layer's tile shape and stride.
///
/// # Safety
/// As [`rows`].
#[target_feature(enable = "avx2,fma")]
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
    // Pixels per tile for each number of channel vectors: 8 or 9 accumulators. Tiles of 12
    // (3 × 4, 4 × 3, 2 × 6) left the compiler short of registers (spills to the stack in the
    // inner loop): the bounded encoder took 0.94 ms with them, 0.84–0.85 with these (the
    // runs interleaved in one process, docs/PERFORMANCE.md §1g).
    // SAFETY: the caller's guarantee.
    unsafe {
        match (ov, l.stride) {
            (4, 2) => rows::<4, 2, 2, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (4, _) => rows::<4, 2, 1, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (3, 2) => rows::<3, 3, 2, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (3, _) => rows::<3, 3, 1, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (2, 2) => rows::<2, 4, 2, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (2, _) => rows::<2, 4, 1, BLOCKED>(l, geo, r, src, packed, bias, dst),
            (_, 2) => rows::<1, 8, 2, BLOCKED>(l, geo, r, src, packed, bias, dst),
            _ => rows::<1, 8, 1, BLOCKED>(l, geo, r, src, packed, bias, dst),
        }
    }
}

/// Every output row of the region, block of output channels and tile of `P` pixels (then the
/// row's rest).
///
/// # Safety
/// AVX2 and FMA, and the bounds [`layer_conv`](super::layer_conv) checks.
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
unsafe fn rows<const OV: usize, const P: usize, const S: usize, const BLOCKED: bool>(
    l: &Layer,
    geo: &Geo,
    r: Region,
    src: &[f32],
    packed: &[f32],
    bias: &[f32],
    dst: &mut [f32],
) {
    let ow = l.out_w();
    let lanes = OV * CB;
    let block_len = geo.groups * 9 * geo.group * lanes;
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
                let x = xp.add(geo.at(S, oy, r.ox.0));
                let w = wp.add(ob * block_len);
                let b = bp.add(ob * lanes);
                let d = dp.add(ob * OV * geo.out_block + ((oy + 1) * (ow + 2) + 1 + r.ox.0) * CB);
                let (n, mut ox) = (r.ox.1 - r.ox.0, 0);
                while ox + P <= n {
                    tile::<OV, P, S, BLOCKED>(geo, x.add(ox * geo.pixel), w, b, d.add(ox * CB));
                    ox += P;
                }
                let (x, d) = (x.add(ox * geo.pixel), d.add(ox * CB));
                // The row's rest in one narrower tile (fewer accumulators, still independent).
                match n - ox {
                    0 => {}
                    1 => tile::<OV, 1, S, BLOCKED>(geo, x, w, b, d),
                    2 => tile::<OV, 2, S, BLOCKED>(geo, x, w, b, d),
                    3 => tile::<OV, 3, S, BLOCKED>(geo, x, w, b, d),
                    4 => tile::<OV, 4, S, BLOCKED>(geo, x, w, b, d),
                    5 => tile::<OV, 5, S, BLOCKED>(geo, x, w, b, d),
                    6 => tile::<OV, 6, S, BLOCKED>(geo, x, w, b, d),
                    7 => tile::<OV, 7, S, BLOCKED>(geo, x, w, b, d),
                    rest => {
                        for k in 0..rest {
                            tile::<OV, 1, S, BLOCKED>(
                                geo,
                                x.add(k * geo.pixel),
                                w,
                                b,
                                d.add(k * CB),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `OV · 8` output channels at `P` pixels of a row: `x` the input at the tile's first pixel
/// (its top-left tap), `w` the block's packed weights, `d` the output at the first pixel.
/// `BLOCKED`: the input is blocked (8 channels a pixel, the layout's strides compiled in), else
/// plain (the chain's first layer).
///
/// # Safety
/// AVX2 and FMA; every address read or written in bounds.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(unsafe_code)]
unsafe fn tile<const OV: usize, const P: usize, const S: usize, const BLOCKED: bool>(
    geo: &Geo,
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    d: *mut f32,
) {
    use std::arch::x86_64::{
        _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    // SAFETY: the caller's guarantee.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); OV]; P];
        for v in 0..OV {
            let b = _mm256_loadu_ps(bias.add(CB * v));
            for a in &mut acc {
                a[v] = b;
            }
        }
        let (pixel, group, channel) = if BLOCKED { (S * CB, CB, 1) } else { (S, 1, 0) };
        let mut w = w;
        for g in 0..geo.groups {
            let xg = x.add(g * geo.group_stride);
            for ky in 0..3 {
                let xr = xg.add(ky * geo.row_stride);
                for kx in 0..3 {
                    let xt = xr.add(kx * (pixel / S));
                    for c in 0..group {
                        let xc = xt.add(c * channel);
                        // Index loops, no iterators over the accumulators: they must stay in
                        // registers (an iterator form once left them in memory, 2× slower).
                        // Besides the accumulators, registers hold either the weights and one
                        // broadcast, or the broadcasts and one weight vector, whichever is less.
                        if OV < P {
                            let mut wv = [_mm256_setzero_ps(); OV];
                            #[allow(clippy::needless_range_loop)]
                            for v in 0..OV {
                                wv[v] = _mm256_loadu_ps(w.add(CB * v));
                            }
                            #[allow(clippy::needless_range_loop)]
                            for j in 0..P {
                                let b = _mm256_broadcast_ss(&*xc.add(j * pixel));
                                for v in 0..OV {
                                    acc[j][v] = _mm256_fmadd_ps(b, wv[v], acc[j][v]);
                                }
                            }
                        } else {
                            let mut bv = [_mm256_setzero_ps(); P];
                            #[allow(clippy::needless_range_loop)]
                            for j in 0..P {
                                bv[j] = _mm256_broadcast_ss(&*xc.add(j * pixel));
                            }
                            #[allow(clippy::needless_range_loop)]
                            for v in 0..OV {
                                let wv = _mm256_loadu_ps(w.add(CB * v));
                                #[allow(clippy::needless_range_loop)]
                                for j in 0..P {
                                    acc[j][v] = _mm256_fmadd_ps(bv[j], wv, acc[j][v]);
                                }
                            }
                        }
                        w = w.add(OV * CB);
                    }
                }
            }
        }
        let zero = _mm256_setzero_ps();
        for (j, a) in acc.iter().enumerate() {
            for (v, &av) in a.iter().enumerate() {
                let y = if geo.relu {
                    _mm256_max_ps(av, zero)
                } else {
                    av
                };
                _mm256_storeu_ps(d.add(v * geo.out_block + j * CB), y);
            }
        }
    }
}
