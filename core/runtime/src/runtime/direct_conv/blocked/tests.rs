//! The blocked chain against the definition, layer by layer.

use super::super::tests::{reference, values};
use super::super::{Activation, Geometry};
use super::*;

/// The chain computed by the definition, one layer after another.
fn by_definition(layers: &[Layer], n: usize, x: &[f32], weights: &[Vec<f32>]) -> Vec<f32> {
    let mut x = x.to_vec();
    for (l, (w, b)) in layers.iter().zip(weights.iter().zip(biases(layers))) {
        let g = Geometry {
            n,
            c: l.c,
            h: l.h,
            w: l.w,
            o: l.o,
            kh: 3,
            kw: 3,
            stride: l.stride,
            pad: [1; 4],
        };
        let act = if l.relu {
            Activation::Relu
        } else {
            Activation::Identity
        };
        x = reference(&g, &x, w, &b, act);
    }
    x
}

fn biases(layers: &[Layer]) -> Vec<Vec<f32>> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| values(l.o, 100 + i as u32))
        .collect()
}

/// Layers from `(c, o, stride, relu)` on an `h × w` input.
fn chain(h: usize, w: usize, spec: &[(usize, usize, usize, bool)]) -> Vec<Layer> {
    let (mut h, mut w) = (h, w);
    spec.iter()
        .map(|&(c, o, stride, relu)| {
            let l = Layer {
                c,
                h,
                w,
                o,
                stride,
                relu,
            };
            (h, w) = (l.out_h(), l.out_w());
            l
        })
        .collect()
}

fn check(layers: &[Layer], n: usize) {
    let first = layers[0];
    let last = layers[layers.len() - 1];
    let x = values(n * first.c * first.h * first.w, 7);
    let weights: Vec<Vec<f32>> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| values(l.o * l.c * 9, 20 + i as u32))
        .collect();
    let want = by_definition(layers, n, &x, &weights);
    // Each instruction set with its own packing; one the CPU lacks runs the portable loops on
    // that packing.
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
        let packed: Vec<Vec<f32>> = layers
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(i, (l, w))| pack_weights_for(l, i == 0, w, isa))
            .collect();
        let mut got = vec![f32::NAN; n * last.o * last.out_h() * last.out_w()];
        // Twice: the second run reuses the thread's buffers, whose borders must still be zero.
        let b = biases(layers);
        let (w, b): (Vec<&[f32]>, Vec<&[f32]>) = packed
            .iter()
            .zip(&b)
            .map(|(w, b)| (w.as_slice(), b.as_slice()))
            .unzip();
        for _ in 0..2 {
            run_with(layers, n, &x, &w, &b, &mut got, isa);
        }
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(
                0.0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            );
        assert!(
            worst <= 1e-4,
            "{layers:?}, {isa:?}: largest difference {worst}"
        );
    }
}

#[test]
fn a_stride_two_encoder_matches_the_definition() {
    // The bounded encoder's shape, smaller: a plain 3-channel input, halvings to 16, 32, 48
    // and 24 channels (4, 3, 2 and 3 vectors per tile), a stride-1 layer at the end.
    let layers = chain(
        29,
        22,
        &[
            (3, 16, 2, true),
            (16, 32, 2, true),
            (32, 48, 2, true),
            (48, 24, 2, true),
            (24, 8, 1, false),
        ],
    );
    assert!(is_chain(&layers));
    check(&layers, 1);
    check(&layers, 2);
}

#[test]
fn odd_and_even_sides_stride_one_and_a_single_layer() {
    check(&chain(9, 14, &[(5, 8, 1, true), (8, 16, 1, false)]), 1);
    check(&chain(8, 7, &[(1, 24, 2, false)]), 3);
    check(&chain(1, 1, &[(2, 8, 2, true), (8, 8, 1, true)]), 1);
    // Every tail of a row (pixels left after the full tiles) for every tile shape: 8, 16, 24
    // and 32 output channels, rows of 5 to 15 pixels.
    for w in 5..=15 {
        check(
            &chain(
                3,
                w,
                &[(3, 8, 1, true), (8, 16, 1, false), (16, 24, 1, true)],
            ),
            1,
        );
        check(&chain(4, w, &[(2, 32, 1, true)]), 1);
    }
}

#[test]
fn every_row_tail_of_the_wide_tiles() {
    // The AVX-512 tiles: 16 pixels of one vector, 12 of two, 8 of three, then tiles of 8 and one
    // narrower; rows of 1 to 35 pixels, the first layer plain, the others blocked.
    for w in 1..=35 {
        check(
            &chain(
                2,
                w,
                &[(3, 16, 1, true), (16, 32, 1, false), (32, 48, 1, true)],
            ),
            1,
        );
    }
}

/// The bounded encoder at 224 px, each layer timed alone with AVX2's and AVX-512's tiles
/// (medians of 200 runs, three interleaved rounds): `cargo test --release -p scrim-core --lib
/// -- --ignored chain_layers --nocapture`. Checks that both give the same output.
#[test]
#[ignore = "a benchmark"]
fn chain_layers() {
    let layers = chain(
        224,
        224,
        &[
            (3, 16, 2, true),
            (16, 32, 2, true),
            (32, 48, 2, true),
            (48, 48, 2, true),
            (48, 48, 2, true),
            (48, 48, 1, true),
        ],
    );
    let x = values(3 * 224 * 224, 7);
    let b = biases(&layers);
    let bs: Vec<&[f32]> = b.iter().map(Vec::as_slice).collect();
    let mut outputs = Vec::new();
    for round in 0..3 {
        for isa in [Isa::Avx2, Isa::Avx512] {
            let packed: Vec<Vec<f32>> = layers
                .iter()
                .enumerate()
                .map(|(i, l)| pack_weights_for(l, i == 0, &values(l.o * l.c * 9, 3), isa))
                .collect();
            let w: Vec<&[f32]> = packed.iter().map(Vec::as_slice).collect();
            let mut s = Scratch::new(&layers);
            let mut times = vec![Vec::new(); layers.len()];
            for _ in 0..200 {
                for (i, l) in layers.iter().enumerate() {
                    let t = std::time::Instant::now();
                    let (done, rest) = s.inputs.split_at_mut(i + 1);
                    let dst = rest.first_mut().unwrap_or(&mut s.output);
                    if i == 0 {
                        first_layer(l, &x, &mut s.strip, w[i], bs[i], dst, isa);
                    } else {
                        let all = Region {
                            oy: (0, l.out_h()),
                            ox: (0, l.out_w()),
                        };
                        layer_conv(l, &Geo::blocked(l), all, &done[i], w[i], bs[i], dst, isa);
                    }
                    times[i].push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let mut line = format!("round {round}, {isa:?} (ms):");
            for t in &mut times {
                t.sort_by(f64::total_cmp);
                line += &format!(" {:.3}", t[t.len() / 2]);
            }
            println!(
                "{line}; all {:.3}",
                times.iter().map(|t| t[t.len() / 2]).sum::<f64>()
            );
            outputs.push(s.output.clone());
        }
    }
    let worst = outputs[0]
        .iter()
        .zip(&outputs[1])
        .map(|(a, b)| (a - b).abs())
        .fold(
            0.0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        );
    assert!(worst <= 1e-3, "AVX2 and AVX-512 differ by {worst}");
}

#[test]
fn the_first_layer_reads_the_image_in_place_at_every_small_side() {
    // The first layer takes its inner pixels from the caller's image and its border rows and
    // columns from strips: sides 1 to 7 (no inner pixels at all, one inner row or column, odd
    // sides whose last output row or column reads past the image), both strides.
    for h in 1..=7 {
        for w in 1..=7 {
            for stride in [1, 2] {
                check(&chain(h, w, &[(3, 16, stride, true), (16, 8, 2, false)]), 2);
            }
        }
    }
}

#[test]
fn chains_that_do_not_fit_are_refused() {
    let ok = chain(16, 16, &[(3, 16, 2, true), (16, 16, 2, true)]);
    assert!(is_chain(&ok));
    let mut odd_channels = ok.clone();
    odd_channels[1].o = 12;
    assert!(!is_chain(&odd_channels));
    let mut stride_three = ok.clone();
    stride_three[0].stride = 3;
    assert!(!is_chain(&stride_three));
    let mut broken = ok;
    broken[1].h += 1;
    assert!(!is_chain(&broken));
    assert!(!is_chain(&[]));
}
