//! The direct convolution against its definition.

use super::*;

/// The definition, in f64.
pub(super) fn reference(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
) -> Vec<f32> {
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
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[((b * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
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

pub(super) fn values(len: usize, seed: u32) -> Vec<f32> {
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
fn portable(g: &Geometry, x: &[f32], packed: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
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
        // Rows wider than a tile, so whole tiles are stored row by row and others cross rows
        // (the first convolution of the bounded encoder and of the recognizer, small).
        (1, 3, 9, 70, 16, 3, 3, 2, [1, 1, 1, 1]),
        (2, 3, 6, 37, 7, 3, 3, 1, [1, 1, 1, 1]),
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
