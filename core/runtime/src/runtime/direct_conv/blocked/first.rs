//! The chain's first layer, which reads the caller's plain image in place.

use super::{Geo, Isa, Layer, Region, layer_conv};

/// The first layer on one plain image `x` (`[c, h, w]`, no border): the output pixels whose
/// taps all fall inside the image straight from `x`, the others from `strip`, refilled for each
/// border row (`[c][3][w + 2]`: the three input rows a row of outputs reads, zero where they
/// fall outside) and each border column of the inner rows (`[c][h + 2][3]`).
pub(super) fn first_layer(
    l: &Layer,
    x: &[f32],
    strip: &mut [f32],
    packed: &[f32],
    bias: &[f32],
    dst: &mut [f32],
    isa: Isa,
) {
    let (s, h, w) = (l.stride, l.h, l.w);
    let (oh, ow) = (l.out_h(), l.out_w());
    // Output row `oy` reads input rows `s·oy − 1 ..= s·oy + 1`: inside for 1 ≤ oy ≤ (h − 2)/s.
    let inner = |n: usize, out: usize| (1, if n >= 2 { out.min((n - 2) / s + 1) } else { 1 });
    let (rows, cols) = (inner(h, oh), inner(w, ow));
    let rows = if rows.1 > rows.0 { rows } else { (0, 0) };
    let cols = if cols.1 > cols.0 { cols } else { (0, 0) };
    if rows.1 > rows.0 && cols.1 > cols.0 {
        // Output (oy, ox)'s first tap is input (s·oy − 1, s·ox − 1).
        let geo = Geo::plain(l, w, h, -(w as isize) - 1);
        let region = Region { oy: rows, ox: cols };
        layer_conv(l, &geo, region, x, packed, bias, dst, isa);
    }
    let tap = |o: usize, k: usize, n: usize| (s * o + k).checked_sub(1).filter(|&i| i < n);
    let border_rows = (0..oh).filter(|oy| !(rows.0..rows.1).contains(oy));
    for oy in border_rows {
        let wp = w + 2;
        for (c, plane) in x.chunks_exact(h * w).enumerate() {
            for k in 0..3 {
                // The whole row with its border: the strip is shared with the columns'.
                let row = &mut strip[(c * 3 + k) * wp..][..wp];
                row.fill(0.0);
                if let Some(r) = tap(oy, k, h) {
                    row[1..=w].copy_from_slice(&plane[r * w..][..w]);
                }
            }
        }
        // The strip's first row is this output row's first: cancel the row term.
        let geo = Geo::plain(l, wp, 3, -((oy * s * wp) as isize));
        let region = Region {
            oy: (oy, oy + 1),
            ox: (0, ow),
        };
        layer_conv(l, &geo, region, strip, packed, bias, dst, isa);
    }
    if rows.1 == rows.0 {
        return;
    }
    for ox in (0..ow).filter(|ox| !(cols.0..cols.1).contains(ox)) {
        let hp = h + 2;
        strip[..l.c * hp * 3].fill(0.0);
        for (c, plane) in x.chunks_exact(h * w).enumerate() {
            for r in 0..h {
                for k in 0..3 {
                    if let Some(i) = tap(ox, k, w) {
                        strip[(c * hp + r + 1) * 3 + k] = plane[r * w + i];
                    }
                }
            }
        }
        // Strip row `r` is input row `r − 1`; its first column this output column's first.
        let geo = Geo::plain(l, 3, hp, -((ox * s) as isize));
        let region = Region {
            oy: rows,
            ox: (ox, ox + 1),
        };
        layer_conv(l, &geo, region, strip, packed, bias, dst, isa);
    }
}
