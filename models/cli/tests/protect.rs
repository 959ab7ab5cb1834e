//! Selective encryption with service levels on a tiny trained recognizer: the burn rebuild used by
//! PSS matches tract, and the `scrim protect` commands select, decrypt and refuse tampering.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use scrim_core::onnx_graph::Graph;
use scrim_core::{BatchMode, Manifest, Model};
use scrim_protect::levels::net::OnnxNet;
use scrim_train::data::{self, DataSpec, LoadOptions, SyntheticConfig};
use scrim_train::eval::{ClassifierConfig, train_classifier};
use scrim_train::{batch, export};

const SIZE: usize = 16;

/// Trains a 2-block recognizer on 240 synthetic images and writes `recognizer.onnx` + manifest.
fn tiny_recognizer(dir: &Path) -> (PathBuf, data::Dataset) {
    let spec = DataSpec::Synthetic(SyntheticConfig {
        count: 240,
        seed: 5,
    });
    let ds = data::load(
        &spec,
        &LoadOptions {
            size: SIZE,
            cache: false,
            progress: false,
        },
    )
    .expect("data");
    let device = Device::flex();
    let cfg = ClassifierConfig::new()
        .with_widths(vec![8, 16])
        .with_epochs(2);
    let trained =
        train_classifier(&ds, &ds, "shape", &cfg, None, &device, "t", false).expect("train");
    let attr = ds.attribute("shape").expect("shape");
    let manifest = Manifest::recognizer("tiny", ds.input(), "shape", attr.classes.clone());
    let path = dir.join("recognizer.onnx");
    std::fs::write(&path, export::recognizer_onnx(&trained.model, ds.input())).expect("write");
    manifest.save(&Manifest::path_for(&path)).expect("manifest");
    (path, ds)
}

fn scrim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scrim"))
        .arg("--quiet")
        .args(args)
        .output()
        .expect("run scrim")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_burn_rebuild_matches_tract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, ds) = tiny_recognizer(dir.path());
    let bytes = std::fs::read(&path).expect("read");
    let manifest = Manifest::load(&Manifest::path_for(&path)).expect("manifest");
    let device = Device::flex();
    let net = OnnxNet::new(
        &Graph::parse(&bytes).expect("graph"),
        &manifest.normalization,
        &device,
    )
    .expect("rebuild");
    let idx: Vec<usize> = (0..16).collect();
    let x = batch::images(&ds, &idx, &device);
    let burn = batch::to_vec(net.forward(x.clone(), None).expect("forward"));
    let model = Model::load(&bytes, manifest, BatchMode::Dynamic).expect("tract");
    let tract = &model.run(&batch::to_image_tensor(x)).expect("run")[0].data;
    let diff = burn
        .iter()
        .zip(tract)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "burn vs tract: {diff}");
}

#[test]
fn select_decrypt_and_tampering_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, _) = tiny_recognizer(dir.path());
    let model_s = model.to_str().expect("utf-8");
    let out = dir.path().join("protected");
    let out_s = out.to_str().expect("utf-8");
    let stdout = ok(&scrim(&[
        "protect",
        "select",
        "--model",
        model_s,
        "--data",
        "synthetic:240",
        "--importance",
        "pss",
        "--pss-steps",
        "4",
        "--ratio",
        "0.1",
        "--levels",
        "3",
        "--out",
        out_s,
    ]));
    assert!(stdout.contains("3 levels"), "{stdout}");
    for f in [
        "encrypted.onnx",
        "encrypted.json",
        "bundle.scrimlv",
        "level-1.key",
        "level-2.key",
        "level-3.key",
        "protection.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let report = std::fs::read_to_string(out.join("protection.json")).expect("report");
    assert!(report.contains("\"selected\""), "{report}");
    let plain = std::fs::read(&model).expect("plain");
    let decrypt = |key: &str, bundle: &Path, to: &str| {
        scrim(&[
            "protect",
            "decrypt",
            "--model",
            out.join("encrypted.onnx").to_str().expect("utf-8"),
            "--bundle",
            bundle.to_str().expect("utf-8"),
            "--key",
            out.join(key).to_str().expect("utf-8"),
            "--out",
            dir.path().join(to).to_str().expect("utf-8"),
        ])
    };
    let bundle = out.join("bundle.scrimlv");
    ok(&decrypt("level-3.key", &bundle, "full.onnx"));
    assert_eq!(
        std::fs::read(dir.path().join("full.onnx")).expect("full"),
        plain,
        "the full key restores the plain model bit for bit"
    );
    assert!(dir.path().join("full.json").is_file());
    ok(&decrypt("level-1.key", &bundle, "l1.onnx"));
    assert_ne!(
        std::fs::read(dir.path().join("l1.onnx")).expect("l1"),
        plain
    );
    // Tampered bundle: a clear authentication error, non-zero exit.
    let mut bytes = std::fs::read(&bundle).expect("bundle");
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let tampered = dir.path().join("tampered.scrimlv");
    std::fs::write(&tampered, bytes).expect("write");
    let o = decrypt("level-3.key", &tampered, "bad.onnx");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("authentication failed"), "{err}");
    // The baselines need no data.
    for imp in ["random", "mean"] {
        let o = dir.path().join(imp);
        ok(&scrim(&[
            "protect",
            "select",
            "--model",
            model_s,
            "--importance",
            imp,
            "--ratio",
            "0.2",
            "--levels",
            "2",
            "--out",
            o.to_str().expect("utf-8"),
        ]));
        assert!(o.join("level-2.key").is_file());
    }
    // PSS without data is refused with a hint.
    let o = scrim(&["protect", "select", "--model", model_s, "--out", out_s]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --data"));
    // Level keys are never overwritten: a second run into the same folder is refused and
    // leaves the first run's keys in place.
    let key_before = std::fs::read(out.join("level-1.key")).expect("key");
    let o = scrim(&[
        "protect",
        "select",
        "--model",
        model_s,
        "--importance",
        "random",
        "--out",
        out_s,
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("level-1.key")).expect("key"),
        key_before
    );
}
