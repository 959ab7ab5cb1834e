//! Scrim's direct convolution inside tract (`runtime/scrim_conv.rs`) computes what tract's own
//! convolutions compute, on a graph that mixes every case: stride 2 and 1, 3×3, 5×5 and 1×1
//! kernels, with and without bias and a following ReLU, and a grouped convolution that stays
//! tract's (as does the 1×1, which tract's declutter turns into a matrix product first); and
//! Scrim's 2×2 stride-2 max pooling (`runtime/scrim_pool.rs`) on odd and even maps; and the
//! Winograd form of wide 3×3 convolutions (`direct_conv/winograd.rs`); and chains of stride-2
//! convolutions run by the blocked kernel (`runtime/scrim_chain.rs`). The tests switch the
//! process-wide pass off and on, so they hold [`PASS`] while they load models.

use scrim_core::fixtures;
use scrim_core::manifest::Manifest;
use scrim_core::onnx::{Conv, GraphBuilder};
use scrim_core::{BatchMode, ImageTensor, Model, set_direct_convolutions};

/// Held by a test while it switches the pass and loads its models.
static PASS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn values(seed: u32, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// A perturber whose σ map (at a quarter of the input's side, rounded down) comes out of five
/// convolutions and a max pooling.
fn mixed_graph(size: usize) -> (Vec<u8>, Manifest) {
    let w1 = values(1, 16 * 3 * 9, 0.6);
    let b1 = values(2, 16, 0.2);
    let w2 = values(3, 20 * 16 * 9, 0.3);
    let w3 = values(4, 20 * 20 * 25, 0.1);
    let b3 = values(5, 20, 0.2);
    let w4 = values(6, 12 * 20, 0.4);
    let b4 = values(7, 12, 0.1);
    let w5 = values(8, 3 * 4 * 9, 4.0);
    let mut g = GraphBuilder::new("direct_conv_check");
    let x = g.image_input("image", 3, size, size);
    let h = g.conv(&x, Conv::new(&w1, [16, 3, 3, 3]).bias(&b1).stride(2).pad(1));
    let h = g.relu(&h);
    let h = g.conv(&h, Conv::new(&w2, [20, 16, 3, 3]).pad(1));
    let h = g.conv(&h, Conv::new(&w3, [20, 20, 5, 5]).bias(&b3).pad(2));
    let h = g.relu(&h);
    let h = g.conv(&h, Conv::new(&w4, [12, 20, 1, 1]).bias(&b4));
    let h = g.relu(&h);
    let h = g.conv(&h, Conv::new(&w5, [3, 4, 3, 3]).pad(1).groups(3));
    let h = g.max_pool(&h, 2, 2, 0);
    let s = g.sigmoid(&h);
    g.output(&s, "sigma");
    (
        g.finish(),
        fixtures::sigma_perturber_manifest("direct-conv-check", size, 1.0),
    )
}

fn images(n: usize, size: usize) -> ImageTensor {
    let data = (0..n * 3 * size * size)
        .map(|k| ((k * 7919 + 13) % 251) as f32 / 250.0)
        .collect();
    ImageTensor::new([n, 3, size, size], data).expect("images")
}

/// The graph loaded twice, planned up to `max` images: with tract's own convolutions and with
/// Scrim's. The caller holds [`PASS`].
fn load_both(onnx: &[u8], manifest: &Manifest, max: usize) -> (Model, Model) {
    set_direct_convolutions(false);
    let tract = Model::load(onnx, manifest.clone(), BatchMode::Planned { max })
        .expect("tract's convolutions");
    set_direct_convolutions(true);
    let scrim =
        Model::load(onnx, manifest.clone(), BatchMode::Planned { max }).expect("Scrim's kernels");
    (tract, scrim)
}

/// Each plan's convolution methods, without their details.
fn methods(model: &Model) -> Vec<(Option<usize>, Vec<String>)> {
    model
        .kernels()
        .into_iter()
        .map(|plan| {
            let names = plan
                .convolutions
                .iter()
                .map(|(_, m)| m.split('(').next().unwrap_or(m).trim().to_string())
                .collect();
            (plan.batch, names)
        })
        .collect()
}

/// Both models on `n` images of side `size`: the same output of shape `[n, 3, side, side]`
/// within 1e-5, and an output that varies (a check that could not fail otherwise).
fn assert_same(tract: &Model, scrim: &Model, n: usize, size: usize, side: usize) {
    let x = images(n, size);
    let want = tract.run(&x).expect("tract run");
    let got = scrim.run(&x).expect("Scrim run");
    assert_eq!(got[0].shape, [n, 3, side, side]);
    let worst = got[0]
        .data
        .iter()
        .zip(&want[0].data)
        .map(|(a, b)| (a - b).abs())
        .fold(
            0.0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        );
    assert!(
        worst <= 1e-5,
        "size {size}, batch {n}: largest difference {worst}"
    );
    let spread = want[0].data.iter().fold(0.0f32, |m, v| m.max(*v))
        - want[0].data.iter().fold(1.0f32, |m, v| m.min(*v));
    assert!(spread > 0.05, "the check graph's output varies ({spread})");
}

#[test]
fn the_direct_convolution_matches_tracts_own() {
    let _pass = PASS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for size in [10, 20, 36] {
        let (onnx, manifest) = mixed_graph(size);
        let (tract, direct) = load_both(&onnx, &manifest, 2);
        for plan in direct.kernels() {
            assert_eq!(
                plan.pools
                    .iter()
                    .map(|(_, m)| m.as_str())
                    .collect::<Vec<_>>(),
                ["ScrimMaxPool"],
                "size {size}: the max pooling is Scrim's"
            );
        }
        for (batch, methods) in methods(&direct) {
            let direct_count = methods.iter().filter(|m| *m == "ScrimConv").count();
            assert_eq!(
                direct_count, 3,
                "size {size}, batch {batch:?}: the 3×3 and 5×5 convolutions run directly, the \
                 grouped one stays tract's: {methods:?}"
            );
        }
        for plan in tract.kernels() {
            assert!(
                plan.convolutions.iter().all(|(_, m)| !m.contains("Scrim")),
                "switched off, no convolution is Scrim's"
            );
            assert!(
                plan.pools.iter().all(|(_, m)| !m.contains("Scrim")),
                "switched off, no pooling is Scrim's"
            );
        }

        for n in [1, 2, 3] {
            assert_same(&tract, &direct, n, size, size.div_ceil(2) / 2);
        }
    }
}

/// A perturber whose σ map comes through two wide 3×3 stride-1 convolutions (the Winograd
/// path, with and without a ReLU after it) after a narrow one (the direct kernel).
fn wide_graph(size: usize) -> (Vec<u8>, Manifest) {
    let w1 = values(11, 32 * 3 * 9, 0.6);
    let w2 = values(12, 40 * 32 * 9, 0.1);
    let b2 = values(13, 40, 0.2);
    let w3 = values(14, 36 * 40 * 9, 0.1);
    let w4 = values(15, 3 * 36, 3.0);
    let mut g = GraphBuilder::new("winograd_check");
    let x = g.image_input("image", 3, size, size);
    let h = g.conv(&x, Conv::new(&w1, [32, 3, 3, 3]).pad(1));
    let h = g.relu(&h);
    let h = g.conv(&h, Conv::new(&w2, [40, 32, 3, 3]).bias(&b2).pad(1));
    let h = g.relu(&h);
    let h = g.conv(&h, Conv::new(&w3, [36, 40, 3, 3]).pad(1));
    let h = g.conv(&h, Conv::new(&w4, [3, 36, 1, 1]));
    let s = g.sigmoid(&h);
    g.output(&s, "sigma");
    (
        g.finish(),
        fixtures::sigma_perturber_manifest("winograd-check", size, 1.0),
    )
}

#[test]
fn wide_three_by_three_convolutions_run_as_winograd_and_match_tracts_own() {
    let _pass = PASS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for size in [7, 16, 19] {
        let (onnx, manifest) = wide_graph(size);
        let (tract, scrim) = load_both(&onnx, &manifest, 4);
        for (batch, methods) in methods(&scrim) {
            assert_eq!(
                methods,
                ["ScrimConv", "ScrimWinograd", "ScrimWinograd"],
                "size {size}, batch {batch:?} (the 1×1 is a matrix product in tract)"
            );
        }
        for n in [1, 3, 4] {
            assert_same(&tract, &scrim, n, size, size);
        }
    }
}

/// A perturber in the shape of the bounded encoder: stride-2 halvings to 16, 24 and 32
/// channels (the last without a ReLU), a wide stride-1 layer, a 1×1 head.
fn encoder_graph(size: usize) -> (Vec<u8>, Manifest) {
    let w1 = values(21, 16 * 3 * 9, 1.5);
    let b1 = values(22, 16, 0.2);
    let w2 = values(23, 24 * 16 * 9, 0.6);
    let w3 = values(24, 32 * 24 * 9, 0.5);
    let b3 = values(25, 32, 0.2);
    let w4 = values(26, 32 * 32 * 9, 0.4);
    let w5 = values(27, 3 * 32, 4.0);
    let mut g = GraphBuilder::new("chain_check");
    let x = g.image_input("image", 3, size, size);
    let h = g.conv(&x, Conv::new(&w1, [16, 3, 3, 3]).bias(&b1).pad(1).stride(2));
    let h = g.relu(&h);
    let h = g.conv(&h, Conv::new(&w2, [24, 16, 3, 3]).pad(1).stride(2));
    let h = g.relu(&h);
    let h = g.conv(
        &h,
        Conv::new(&w3, [32, 24, 3, 3]).bias(&b3).pad(1).stride(2),
    );
    let h = g.conv(&h, Conv::new(&w4, [32, 32, 3, 3]).pad(1));
    let h = g.relu(&h);
    let h = g.conv(&h, Conv::new(&w5, [3, 32, 1, 1]));
    let s = g.sigmoid(&h);
    g.output(&s, "sigma");
    (
        g.finish(),
        fixtures::sigma_perturber_manifest("chain-check", size, 1.0),
    )
}

#[test]
fn stride_two_chains_run_blocked_and_match_tracts_own() {
    let _pass = PASS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Odd maps on the way (5 → 3 → 2 → 1, 40 → 20 → 10 → 5); the σ map must divide the input.
    for size in [5, 24, 40] {
        let (onnx, manifest) = encoder_graph(size);
        let (tract, scrim) = load_both(&onnx, &manifest, 3);
        for (batch, methods) in methods(&scrim) {
            assert_eq!(
                methods,
                ["ScrimChain", "ScrimWinograd"],
                "size {size}, batch {batch:?}: the three halvings in one chain, the wide layer \
                 Winograd's"
            );
        }
        let side = size.div_ceil(2).div_ceil(2).div_ceil(2);
        for n in [1, 2, 3] {
            assert_same(&tract, &scrim, n, size, side);
        }
    }
}
