//! Model access control with secret keys, through the `scrim` binary and the library: key files,
//! block-wise transforms of image files, ConvMixer encryption (exact on trained weights), training
//! behind a key, and a tiny `protect eval`.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use scrim_core::manifest::Manifest;
use scrim_core::{BatchMode, BlockTransform, ImageTensor, Model, Scheme, SecretKey};
use scrim_protect::convmixer::{ConvMixerConfig, convmixer_onnx};
use scrim_protect::keys::eval::{Fit, fit};
use scrim_train::batch;
use scrim_train::data::{Attribute, DataSpec, Dataset, SyntheticConfig};
use scrim_train::eval::argmax;

fn scrim(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scrim"))
        .arg("--quiet")
        .args(args)
        .output()
        .expect("run scrim");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Four colour classes (red, green, blue, yellow) with noise: learnable in a few steps, and
/// destroyed by shuffling values across channels.
fn colours(n: usize, size: usize, seed: u32) -> Dataset {
    let mut r = seed | 1;
    let mut next = move || {
        r ^= r << 13;
        r ^= r >> 17;
        r ^= r << 5;
        r
    };
    let base: [[u8; 3]; 4] = [[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]];
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let c = i % 4;
        for level in base[c] {
            for _ in 0..size * size {
                let noise = (next() % 81) as i32 - 40;
                images.push((i32::from(level) + noise).clamp(0, 255) as u8);
            }
        }
        labels.push(c as u16);
    }
    Dataset {
        size,
        images,
        names: (0..n).map(|i| format!("{i}.png")).collect(),
        attributes: vec![Attribute {
            name: "class".into(),
            classes: ["red", "green", "blue", "yellow"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            labels,
        }],
    }
}

/// Every image of `ds` as one scrim-core batch in `[0, 1]`.
fn tensor(ds: &Dataset, device: &Device) -> ImageTensor {
    let all: Vec<usize> = (0..ds.len()).collect();
    batch::to_image_tensor(batch::images(ds, &all, device))
}

/// The class of each row of `k` logits.
fn predictions(logits: &[f32], k: usize) -> Vec<usize> {
    logits.chunks(k).map(argmax).collect()
}

#[test]
fn key_files_and_transforms_through_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("keys/a.key");
    let (ok, out) = scrim(&["keygen", "--out", s(&key)]);
    assert!(ok, "{out}");
    assert_eq!(std::fs::metadata(&key).expect("key").len(), 45);
    let (ok, out) = scrim(&["keygen", "--out", s(&key)]);
    assert!(!ok && out.contains("already exists"), "{out}");

    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let img = image::RgbImage::from_fn(12, 8, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, (x * y) as u8])
    });
    img.save(input.join("a.png")).expect("png");

    // Malformed key files are clear errors.
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, &std::fs::read(&key).expect("read")[..30]).expect("write");
    let enc = dir.path().join("enc");
    let (ok, out) = scrim(&[
        "protect",
        "transform",
        "--key",
        s(&bad),
        "--scheme",
        "np",
        "--input",
        s(&input),
        "--output",
        s(&enc),
    ]);
    assert!(
        !ok && out.contains("truncated key file") && out.contains("bad.key"),
        "{out}"
    );
    let (ok, out) = scrim(&[
        "protect",
        "transform",
        "--key",
        s(&key),
        "--scheme",
        "rot13",
        "--input",
        s(&input),
        "--output",
        s(&enc),
    ]);
    assert!(!ok && out.contains("unknown block scheme"), "{out}");
    let (ok, out) = scrim(&[
        "protect",
        "transform",
        "--key",
        s(&key),
        "--scheme",
        "np",
        "--block",
        "5",
        "--input",
        s(&input),
        "--output",
        s(&enc),
    ]);
    assert!(
        !ok && out.contains("divisible by the block size 5"),
        "{out}"
    );

    for scheme in ["shuffle", "np", "ffx", "patch"] {
        let enc = dir.path().join(format!("enc-{scheme}"));
        let dec = dir.path().join(format!("dec-{scheme}"));
        let (ok, out) = scrim(&[
            "protect",
            "transform",
            "--key",
            s(&key),
            "--scheme",
            scheme,
            "--block",
            "4",
            "--input",
            s(&input),
            "--output",
            s(&enc),
        ]);
        assert!(ok, "{out}");
        let (ok, out) = scrim(&[
            "protect",
            "transform",
            "--key",
            s(&key),
            "--scheme",
            scheme,
            "--block",
            "4",
            "--input",
            s(&enc),
            "--output",
            s(&dec),
            "--inverse",
        ]);
        assert!(ok, "{out}");
        let back = image::open(dec.join("a.png")).expect("open").to_rgb8();
        assert_eq!(back, img, "{scheme}");
    }
}

#[test]
fn encrypted_convmixer_is_exact_and_useless_without_the_key() {
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    train_device.seed(1);
    let train = colours(256, 16, 3);
    let test = colours(64, 16, 9);
    let cfg = ConvMixerConfig::new(4)
        .with_dim(16)
        .with_depth(2)
        .with_patch(4)
        .with_kernel(3);
    let model = fit(
        cfg.init(&train_device),
        &train,
        None,
        &Fit {
            epochs: 3,
            batch_size: 32,
            learning_rate: 5e-3,
            seed: 1,
            attr: 0,
            progress: None,
        },
        &train_device,
    );
    let dir = tempfile::tempdir().expect("tmp");
    let plain_path = dir.path().join("convmixer.onnx");
    std::fs::write(&plain_path, convmixer_onnx(&model, train.input())).expect("write");
    let mut manifest = Manifest::recognizer(
        "convmixer",
        train.input(),
        "class",
        train.attributes[0].classes.clone(),
    );
    // Per-channel normalisation is folded into the encrypted stem; exercise it.
    manifest.normalization.mean = vec![0.5, 0.4, 0.3];
    manifest.normalization.std = vec![0.3, 0.25, 0.2];
    let manifest_path = Manifest::path_for(&plain_path);
    manifest.save(&manifest_path).expect("manifest");

    // Fixed keys, so the test is deterministic (`keygen` is tested above).
    let key = dir.path().join("k.key");
    SecretKey::from_bytes([21; 32]).save_new(&key).expect("key");
    let enc_path: PathBuf = dir.path().join("enc/convmixer.onnx");
    let (ok, out) = scrim(&[
        "protect",
        "encrypt-model",
        "--model",
        s(&plain_path),
        "--key",
        s(&key),
        "--out",
        s(&enc_path),
    ]);
    assert!(ok, "{out}");
    let enc_manifest = Manifest::load(&Manifest::path_for(&enc_path)).expect("manifest");
    let req = enc_manifest.key.clone().expect("key requirement");
    assert_eq!((req.scheme.as_str(), req.block), ("patch", 4));
    let json = std::fs::read_to_string(Manifest::path_for(&enc_path)).expect("json");
    let secret = SecretKey::load(&key).expect("key");
    assert!(!json.contains("SCRIMKEY"));

    let plain = Model::load_path(&plain_path, BatchMode::Dynamic).expect("plain");
    let enc = Model::load_path(&enc_path, BatchMode::Dynamic).expect("enc");
    let x = tensor(&test, &device);
    let t = BlockTransform::new(&secret, Scheme::Patch, 4).expect("t");
    let want = plain.run(&x).expect("run").remove(0).data;
    let got = enc
        .run(&t.apply(&x).expect("apply"))
        .expect("run")
        .remove(0)
        .data;
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 1e-4, "max |diff| {diff}");
    let truth: Vec<usize> = test.attributes[0]
        .labels
        .iter()
        .map(|&l| l as usize)
        .collect();
    let acc = |p: &[usize]| p.iter().zip(&truth).filter(|(a, b)| a == b).count();
    let plain_pred = predictions(&want, 4);
    assert!(
        acc(&plain_pred) >= 60,
        "the plain model learned: {}/64",
        acc(&plain_pred)
    );

    let wrong = BlockTransform::new(&SecretKey::from_bytes([22; 32]), Scheme::Patch, 4).expect("t");
    for (what, input) in [
        ("plain images", x.clone()),
        ("wrong key", wrong.apply(&x).expect("a")),
    ] {
        let pred = predictions(&enc.run(&input).expect("run")[0].data, 4);
        let differ = pred.iter().zip(&plain_pred).filter(|(a, b)| a != b).count();
        eprintln!("{what}: {differ}/64 predictions differ");
        assert!(differ > 32, "{what}: only {differ}/64 predictions differ");
    }
}

#[test]
fn training_behind_a_key_records_the_requirement() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("k.key");
    assert!(scrim(&["keygen", "--out", s(&key)]).0);
    let out = dir.path().join("run");
    let data = DataSpec::Synthetic(SyntheticConfig {
        count: 160,
        seed: 2,
    });
    let mut req = scrim_train::workflow::TrainRequest::new(data, "shape", out.clone());
    let c = &mut req.config;
    c.size = 16;
    c.epochs = 2;
    c.warmup_epochs = 1;
    c.lambda_ramp_epochs = 1;
    c.batch_size = 32;
    c.recognizer.widths = vec![8, 16];
    c.perturber.channels = 8;
    c.block_key =
        Some(scrim_train::keyed::BlockKeyConfig::new(s(&key).into(), "np".into()).with_block(4));
    req.draws = 1;
    let summary = scrim_train::workflow::train_run(&req).expect("train");
    assert!((0.0..=1.0).contains(&summary.test_perturbed.accuracy));
    let m = Manifest::load(&out.join("recognizer.json")).expect("manifest");
    let k = m.key.expect("key requirement");
    assert_eq!((k.scheme.as_str(), k.block), ("np", 4));
    // The perturber needs no key; the config names the key file, never the key.
    assert!(
        Manifest::load(&out.join("perturber.json"))
            .expect("p")
            .key
            .is_none()
    );
    let config = std::fs::read_to_string(out.join("config.json")).expect("config");
    assert!(
        config.contains("k.key") && config.contains("\"np\""),
        "{config}"
    );

    // A block size that does not divide the image is an input error.
    let mut bad = req.clone();
    bad.out = dir.path().join("run2");
    if let Some(b) = bad.config.block_key.as_mut() {
        b.block = 3;
    }
    let err = scrim_train::workflow::train_run(&bad)
        .expect_err("block 3")
        .to_string();
    assert!(err.contains("--block 3"), "{err}");
}

#[test]
fn protect_eval_runs_on_a_tiny_image_folder() {
    let dir = tempfile::tempdir().expect("tmp");
    for (split, n, seed) in [("train", 48, 1), ("test", 16, 2)] {
        let ds = colours(n, 8, seed);
        for i in 0..ds.len() {
            let class = &ds.attributes[0].classes[ds.attributes[0].labels[i] as usize];
            let d = dir.path().join(split).join(class);
            std::fs::create_dir_all(&d).expect("mkdir");
            ds.rgb(i).save(d.join(format!("{i}.png"))).expect("png");
        }
    }
    let md = dir.path().join("out/table.md");
    let train = format!("imagefolder:{}#train", s(dir.path()));
    let test = format!("imagefolder:{}#test", s(dir.path()));
    let (ok, out) = scrim(&[
        "protect",
        "eval",
        "--train",
        &train,
        "--test",
        &test,
        "--size",
        "8",
        "--train-images",
        "0",
        "--test-images",
        "0",
        "--epochs",
        "1",
        "--widths",
        "4,8",
        "--mixer-dim",
        "8",
        "--mixer-depth",
        "1",
        "--attack-iterations",
        "5",
        "--attack-batch",
        "16",
        "--out",
        s(&md),
    ]);
    assert!(ok, "{out}");
    let table = std::fs::read_to_string(&md).expect("md");
    for needle in [
        "shuffle (M=4)",
        "np (M=4)",
        "ffx (M=4)",
        "patch encryption (p=4)",
        "Command: `",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(md.with_extension("json")).expect("json"))
            .expect("parse");
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(6));
    assert!(json["convmixer_max_logit_diff"].as_f64().unwrap_or(1.0) <= 1e-4);
}
