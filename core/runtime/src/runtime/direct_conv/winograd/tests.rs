//! The Winograd convolution against the definition.

use super::*;

/// The definition, with padding 1 and stride 1.
fn reference(g: &Geometry, x: &[f32], w: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
    let mut out = vec![0.0; g.n * g.o * g.h * g.w];
    for img in 0..g.n {
        for o in 0..g.o {
            for oy in 0..g.h {
                for ox in 0..g.w {
                    let mut s = f64::from(bias[o]);
                    for c in 0..g.c {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (oy + ky, ox + kx);
                                if iy == 0 || ix == 0 || iy > g.h || ix > g.w {
                                    continue;
                                }
                                let xv = x[((img * g.c + c) * g.h + iy - 1) * g.w + ix - 1];
                                let wv = w[((o * g.c + c) * 3 + ky) * 3 + kx];
                                s += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    let s = s as f32;
                    out[((img * g.o + o) * g.h + oy) * g.w + ox] = match act {
                        Activation::Identity => s,
                        Activation::Relu => s.max(0.0),
                    };
                }
            }
        }
    }
    out
}

/// The largest difference, infinite where a value is NaN (never written).
fn max_error(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(
            0.0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|k| (((k * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0)
        .collect()
}

/// One code path of a run.
type Path = fn(&Run<'_>, &[f32], &mut Scratch, &mut [f32]);

#[test]
fn matches_the_definition_on_odd_even_and_batched_shapes() {
    // (n, c, h, w, o): odd sides, rows longer than 8 tiles, partial output-channel blocks,
    // several images, blocks of tile rows that span images.
    for (n, c, h, w, o) in [
        (1, 32, 16, 16, 64),
        (3, 32, 7, 9, 6),
        (2, 33, 21, 5, 5),
        (1, 40, 35, 34, 9),
        (5, 64, 8, 8, 12),
        // Blocks of 128 tiles and more (two whole groups of AVX-512's 64) and a remainder.
        (9, 32, 16, 16, 8),
        (11, 64, 8, 8, 4),
        // Two tile rows of four per vector, an odd number of them (the last vector half
        // empty), and rows whose second output row is past the edge.
        (3, 32, 5, 7, 8),
        (1, 32, 3, 8, 16),
        // Rows of whole 16-tile vectors with AVX-512 (32 and 64 columns), and 31 columns,
        // whose last tile's second column is past the edge.
        (2, 32, 7, 32, 5),
        (1, 32, 4, 64, 3),
        (2, 32, 5, 31, 4),
    ] {
        let g = Geometry {
            n,
            c,
            h,
            w,
            o,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: [1; 4],
        };
        assert!(eligible(&g));
        let x = values(n * c * h * w, 1);
        let wts: Vec<f32> = values(o * c * 9, 2).iter().map(|v| v * 0.2).collect();
        let bias = values(o, 3);
        let mut padded_bias = bias.clone();
        padded_bias.resize(g.blocks() * OB, 0.0);
        let u = transform_weights(&g, &wts);
        for act in [Activation::Identity, Activation::Relu] {
            let want = reference(&g, &x, &wts, &bias, act);
            let mut got = vec![f32::NAN; want.len()];
            conv2d(&g, &x, &u, &padded_bias, act, &mut got);
            let err = max_error(&got, &want);
            assert!(err < 1e-4, "{g:?} {act:?}: max error {err}");
            // Twice on the kept buffers: the padding is still zero.
            conv2d(&g, &x, &u, &padded_bias, act, &mut got);
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
        }
        // The narrower code paths, whatever this CPU has (`conv2d` took the widest): the
        // portable loops, and AVX2 alone where the CPU has it.
        let lay = Layout::new(&g);
        let mut s = Scratch::new(&g, &lay);
        let run = Run {
            g: &g,
            lay,
            u: &u,
            bias: &padded_bias,
            act: Activation::Relu,
        };
        let want = reference(&g, &x, &wts, &bias, Activation::Relu);
        let mut paths: Vec<(&str, Path)> = vec![("portable", run_all::<Portable, false>)];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            paths.push(("avx2", |run, x, s, out| {
                // SAFETY: AVX2 and FMA were detected before this path was listed.
                #[allow(unsafe_code)]
                unsafe {
                    run_avx2_fma(run, x, s, out);
                }
            }));
        }
        for (name, path) in paths {
            let mut got = vec![f32::NAN; g.n * g.o * h * w];
            path(&run, &x, &mut s, &mut got);
            assert!(
                got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4),
                "{g:?}: {name}"
            );
        }
    }
}

#[test]
fn only_wide_three_by_three_stride_one_convolutions_qualify() {
    let g = Geometry {
        n: 1,
        c: 32,
        h: 8,
        w: 8,
        o: 8,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: [1; 4],
    };
    assert!(eligible(&g));
    assert!(!eligible(&Geometry { c: 16, ..g }));
    assert!(!eligible(&Geometry { stride: 2, ..g }));
    assert!(!eligible(&Geometry { pad: [0; 4], ..g }));
    assert!(!eligible(&Geometry { kh: 5, kw: 5, ..g }));
}

#[test]
fn the_public_entry_takes_any_channel_count_and_an_optional_bias() {
    // Below the inference path's 32 channels too (exact, only not the fast choice there).
    for (n, c, h, w, o, with_bias) in [(2, 3, 5, 7, 6, false), (1, 40, 9, 4, 3, true)] {
        let g = Geometry {
            n,
            c,
            h,
            w,
            o,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: [1; 4],
        };
        let x = values(n * c * h * w, 4);
        let wts = values(o * c * 9, 5);
        let bias = if with_bias {
            values(o, 6)
        } else {
            vec![0.0; o]
        };
        let want = reference(&g, &x, &wts, &bias, Activation::Identity);
        let mut got = vec![f32::NAN; want.len()];
        conv3x3(
            [n, c, h, w],
            &x,
            &wts,
            o,
            with_bias.then_some(&bias[..]),
            &mut got,
        );
        let err = max_error(&got, &want);
        assert!(err < 1e-4, "{g:?}: max error {err}");
    }
}
