//! Selective encryption with service levels: restoration is exact per level, keys and bundles
//! authenticate, and DPRM keeps each layer's weight statistics.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use scrim_core::{BatchMode, ImageTensor, InputSpec, Manifest, Model};
use scrim_seal::selective::{self, LayerSelection};
use scrim_seal::{Error, LevelKey};

/// A small conv net with two protectable layers (16×3 and 64×16 kernels), weights from a seed.
fn plain_model() -> Vec<u8> {
    use scrim_core::onnx::{Conv, GraphBuilder};
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut w = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| rand::Rng::random_range(&mut rng, -0.5f32..0.5))
            .collect()
    };
    let (w1, w2, fc) = (w(16 * 3 * 9), w(64 * 16 * 9), w(64 * 3));
    let mut g = GraphBuilder::new("sel");
    let x = g.image_input("image", 3, 8, 8);
    let h = g.conv(&x, Conv::new(&w1, [16, 3, 3, 3]).pad(1));
    let h = g.relu(&h);
    let h = g.conv(&h, Conv::new(&w2, [64, 16, 3, 3]).pad(1));
    let h = g.relu(&h);
    let h = g.global_avg_pool(&h);
    let h = g.flatten(&h);
    let y = g.linear(&h, &fc, [64, 3], None);
    g.output(&y, "logits");
    g.finish()
}

fn selections(plain: &[u8], ratio: f64, seed: u64) -> Vec<LayerSelection> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    selective::conv_layers(plain)
        .expect("layers")
        .iter()
        .map(|l| {
            let mut idx: Vec<usize> = (0..l.kernels()).collect();
            idx.shuffle(&mut rng);
            idx.truncate(selective::selection_size(l.kernels(), ratio));
            LayerSelection::new(&l.name, idx)
        })
        .collect()
}

fn kernels_equal(a: &[f32], b: &[f32], k: usize, i: usize) -> bool {
    a[i * k..(i + 1) * k]
        .iter()
        .zip(&b[i * k..(i + 1) * k])
        .all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn level_counts_follow_the_paper() {
    assert_eq!(selective::selection_size(2048, 0.02), 41);
    assert_eq!(selective::selection_size(10, 5.0), 10);
    // S = 100, M = 5: a_m = ⌊(0.6 + 0.08 (m+1)) · 100⌋.
    assert_eq!(selective::level_counts(100, 5), vec![68, 76, 84, 92, 100]);
    assert_eq!(selective::level_counts(7, 1), vec![7]);
    for s in 0..60 {
        for m in 1..8 {
            let a = selective::level_counts(s, m);
            assert!(a.windows(2).all(|w| w[0] <= w[1]), "{s} {m} {a:?}");
            assert_eq!(a[m - 1], s);
        }
    }
}

#[test]
fn each_level_restores_exactly_its_prefix_and_the_full_key_the_plain_model() {
    let plain = plain_model();
    let sel = selections(&plain, 0.2, 1);
    let levels = 4;
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let p = selective::protect(&plain, &sel, levels, &mut rng).expect("protect");
    assert_eq!(p.keys.len(), levels);
    let layers = selective::conv_layers(&plain).expect("layers");
    for key in &p.keys {
        let restored = selective::restore(&p.onnx, &p.bundle, key).expect("restore");
        for (layer, s) in layers.iter().zip(&sel) {
            let k = layer.kernel_len();
            let w0 = selective::initializer(&plain, &layer.name).expect("plain");
            let we = selective::initializer(&p.onnx, &layer.name).expect("encrypted");
            let wr = selective::initializer(&restored, &layer.name).expect("restored");
            let a = selective::level_counts(s.ranked.len(), levels)[key.level() - 1];
            for (rank, &i) in s.ranked.iter().enumerate() {
                assert!(!kernels_equal(&w0, &we, k, i), "kernel {i} not encrypted");
                if rank < a {
                    assert!(kernels_equal(&w0, &wr, k, i), "level {}: {i}", key.level());
                } else {
                    assert!(kernels_equal(&we, &wr, k, i), "level {}: {i}", key.level());
                }
            }
            for i in (0..layer.kernels()).filter(|i| !s.ranked.contains(i)) {
                assert!(kernels_equal(&w0, &we, k, i) && kernels_equal(&w0, &wr, k, i));
            }
        }
        if key.level() == levels {
            assert_eq!(
                restored, plain,
                "the full key gives the plain model, bit for bit"
            );
        }
    }
}

#[test]
fn encrypted_and_restored_models_load_and_run() {
    let plain = plain_model();
    let sel = selections(&plain, 0.3, 3);
    let p = selective::protect(&plain, &sel, 2, &mut ChaCha20Rng::seed_from_u64(4)).expect("p");
    let manifest = Manifest::recognizer(
        "sel",
        InputSpec::rgb(8, 8),
        "t",
        vec!["a".into(), "b".into(), "c".into()],
    );
    let x = ImageTensor::new(
        [1, 3, 8, 8],
        (0..192).map(|i| (i % 7) as f32 / 7.0).collect(),
    )
    .expect("x");
    let run = |bytes: &[u8]| {
        Model::load(bytes, manifest.clone(), BatchMode::Single)
            .expect("load")
            .run(&x)
            .expect("run")[0]
            .data
            .clone()
    };
    let y_plain = run(&plain);
    let y_enc = run(&p.onnx);
    assert_ne!(y_plain, y_enc);
    let full = selective::restore(&p.onnx, &p.bundle, &p.keys[1]).expect("full");
    assert_eq!(run(&full), y_plain);
}

#[test]
fn wrong_keys_and_tampered_bundles_fail_authentication() {
    let plain = plain_model();
    let sel = selections(&plain, 0.1, 5);
    let p = selective::protect(&plain, &sel, 3, &mut ChaCha20Rng::seed_from_u64(6)).expect("p");
    // A key file of the same bundle with other key bytes.
    let mut bytes = p.keys[2].to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    let wrong = LevelKey::from_bytes(&bytes).expect("parse");
    let err = selective::restore(&p.onnx, &p.bundle, &wrong).expect_err("wrong key");
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    // A flipped bit in the last ciphertext.
    let mut bundle = p.bundle.clone();
    let n = bundle.len();
    bundle[n - 20] ^= 0x01;
    let err = selective::restore(&p.onnx, &bundle, &p.keys[2]).expect_err("tampered");
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    // A level-1 key does not reach the tampered level 3.
    selective::restore(&p.onnx, &bundle, &p.keys[0]).expect("level 1 is intact");
    // A key of another protection of the same model.
    let q = selective::protect(&plain, &sel, 3, &mut ChaCha20Rng::seed_from_u64(7)).expect("q");
    let err = selective::restore(&p.onnx, &p.bundle, &q.keys[2]).expect_err("other");
    assert!(matches!(err, Error::InvalidKey(_)), "{err}");
    // The bundle of another encrypted model.
    let err = selective::restore(&q.onnx, &p.bundle, &p.keys[2]).expect_err("other model");
    assert!(matches!(err, Error::InvalidKey(_)), "{err}");
    // Garbage key files are refused clearly.
    let err = LevelKey::from_bytes(b"hello").expect_err("garbage");
    assert!(err.to_string().contains("not a Scrim level key"), "{err}");
}

/// DPRM tolerances: with 20% of a 1024-kernel layer encrypted (random selection), every kernel
/// position keeps its mean within 0.05 standard deviations and its standard deviation within 5%;
/// and the replacement values themselves have the layer's per-position mean (within 4 standard
/// errors) and standard deviation (within 20%).
#[test]
fn dprm_keeps_per_position_statistics() {
    let plain = plain_model();
    let sel = selections(&plain, 0.2, 8);
    let p = selective::protect(&plain, &sel, 2, &mut ChaCha20Rng::seed_from_u64(9)).expect("p");
    let layer = &selective::conv_layers(&plain).expect("layers")[1];
    let k = layer.kernel_len();
    let w0 = selective::initializer(&plain, &layer.name).expect("plain");
    let we = selective::initializer(&p.onnx, &layer.name).expect("enc");
    let before = selective::position_stats(&w0, k);
    let after = selective::position_stats(&we, k);
    for ((m0, s0), (m1, s1)) in before.iter().zip(&after) {
        assert!((m0 - m1).abs() <= 0.05 * s0, "mean {m0} → {m1} (s {s0})");
        assert!((s0 - s1).abs() <= 0.05 * s0, "std {s0} → {s1}");
    }
    let chosen = &sel[1].ranked;
    let drawn: Vec<f32> = chosen
        .iter()
        .flat_map(|&i| we[i * k..(i + 1) * k].to_vec())
        .collect();
    let stats = selective::position_stats(&drawn, k);
    let se = 1.0 / (chosen.len() as f32).sqrt();
    for ((m0, s0), (m, s)) in before.iter().zip(&stats) {
        assert!((m - m0).abs() <= 4.0 * se * s0, "draw mean {m} vs {m0}");
        assert!((s - s0).abs() <= 0.2 * s0, "draw std {s} vs {s0}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// For any ratio, number of levels and selection order: level ℓ restores exactly the
    /// a_{ℓ-1} first kernels of each layer's selection, and level M the plain model bit for bit.
    #[test]
    fn restore_inverts_protect_level_by_level(
        ratio in 0.0f64..0.6,
        levels in 1usize..7,
        seed in 0u64..1000,
    ) {
        let plain = plain_model();
        let sel = selections(&plain, ratio, seed);
        let p = selective::protect(&plain, &sel, levels, &mut ChaCha20Rng::seed_from_u64(seed))
            .expect("protect");
        let layers = selective::conv_layers(&plain).expect("layers");
        for key in &p.keys {
            let restored = selective::restore(&p.onnx, &p.bundle, key).expect("restore");
            for (layer, s) in layers.iter().zip(&sel) {
                let k = layer.kernel_len();
                let w0 = selective::initializer(&plain, &layer.name).expect("plain");
                let wr = selective::initializer(&restored, &layer.name).expect("restored");
                let a = selective::level_counts(s.ranked.len(), levels)[key.level() - 1];
                let restored_now: Vec<usize> = s
                    .ranked
                    .iter()
                    .copied()
                    .filter(|&i| kernels_equal(&w0, &wr, k, i))
                    .collect();
                proptest::prop_assert_eq!(&restored_now[..], &s.ranked[..a]);
            }
            if key.level() == levels {
                proptest::prop_assert_eq!(&restored, &plain);
            }
        }
    }
}
