//! The Winograd weight gradient against the definition.

use super::*;

/// The definition: `dW[o][c][ky][kx] = Σ dY[o][y][x] · x[c][y + ky − 1][x + kx − 1]`.
fn reference([n, c, h, w]: [usize; 4], x: &[f32], dy: &[f32], o: usize) -> Vec<f32> {
    let mut out = vec![0.0; o * c * 9];
    for oi in 0..o {
        for ci in 0..c {
            for ky in 0..3 {
                for kx in 0..3 {
                    let mut s = 0.0f64;
                    for img in 0..n {
                        for y in 0..h {
                            for xx in 0..w {
                                let (iy, ix) = (y + ky, xx + kx);
                                if iy == 0 || ix == 0 || iy > h || ix > w {
                                    continue;
                                }
                                let xv = x[((img * c + ci) * h + iy - 1) * w + ix - 1];
                                let dv = dy[((img * o + oi) * h + y) * w + xx];
                                s += f64::from(xv) * f64::from(dv);
                            }
                        }
                    }
                    out[((oi * c + ci) * 3 + ky) * 3 + kx] = s as f32;
                }
            }
        }
    }
    out
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|k| (((k * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0)
        .collect()
}

#[test]
fn matches_the_definition_on_odd_even_and_batched_shapes() {
    // (n, c, h, w, o): odd sides and channel counts outside whole register tiles, one
    // pixel, rows longer than eight tiles over several groups, the recognizer's shapes.
    for [n, c, h, w, o] in [
        [2, 5, 5, 7, 6],
        [1, 4, 1, 1, 4],
        [3, 16, 8, 8, 16],
        [2, 8, 33, 35, 12],
        [3, 16, 32, 32, 16],
        [5, 32, 16, 16, 64],
        [4, 64, 8, 8, 128],
        [3, 8, 5, 7, 8],
        [1, 16, 3, 8, 16],
        // Rows of whole 16-tile vectors (64 columns), and 31 columns.
        [2, 16, 5, 64, 16],
        [2, 16, 5, 31, 20],
    ] {
        let shape = [n, c, h, w];
        let x = values(n * c * h * w, 1);
        let dy = values(n * o * h * w, 2);
        let want = reference(shape, &x, &dy, o);
        // The largest gradient, for a relative bound: sums of up to n·h·w products.
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let mut got = vec![f32::NAN; o * c * 9];
        conv3x3_weight_grad(shape, &x, &dy, o, &mut got);
        // The portable products too, whatever this CPU has.
        let g = three_by_three(shape, o);
        let lay = Layout::with_block(&g, group_tiles(&g));
        let mut du = vec![0.0; 16 * o * c];
        groups::<false>(&g, &lay, &x, &dy, &mut Scratch::new(&g, &lay), &mut du);
        let mut portable = vec![f32::NAN; o * c * 9];
        finish(o, c, &du, &mut portable);
        for (name, got) in [("dispatched", &got), ("portable", &portable)] {
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(
                    0.0f32,
                    |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
                );
            assert!(
                err <= 1e-5 * scale,
                "{name} {shape:?} → {o}: error {err} (largest gradient {scale})"
            );
        }
    }
}

#[test]
fn groups_are_halved_only_where_the_half_fits_in_l2() {
    let tiles = |c, o| group_tiles(&three_by_three([64, c, 16, 16], o));
    // 2 KiB of transforms per tile: 512 tiles fit.
    assert_eq!(tiles(16, 16), GROUP_TILES);
    // 6 KiB per tile: 512 do not fit, 256 do.
    assert_eq!(tiles(32, 64), GROUP_TILES / 2);
    // 12 KiB per tile: neither fits, so the fewer lane sums of 512.
    assert_eq!(tiles(64, 128), GROUP_TILES);
}

#[test]
#[should_panic(expected = "buffers do not match")]
fn refuses_buffers_of_the_wrong_length() {
    let mut out = vec![0.0; 4 * 4 * 9];
    conv3x3_weight_grad([1, 4, 4, 4], &[0.0; 64], &[0.0; 63], 4, &mut out);
}
