//! The bounded-capacity release: co-trains, exports a version-2 manifest that states its bound,
//! and the device renders exactly the map burn trained with.

use scrim_core::{BatchMode, ImageTensor, Model, Perturber};
use scrim_train::nets::PerturberLayout;
use scrim_train::run::RunDir;
use scrim_train::workflow::{self, TrainRequest};

mod common;

fn request(out: &std::path::Path) -> TrainRequest {
    let mut req = common::tiny_request(out, 2);
    let c = &mut req.config;
    c.warmup_epochs = 0;
    c.perturber.layout = PerturberLayout::Bounded;
    c.perturber.release_side = 4;
    c.perturber.encoder_widths = vec![8, 8, 8];
    c.perturber.release_sigma = 0.2;
    // The training-only probe runs too; it must not reach the export.
    c.perturber.release_probe = 0.5;
    req
}

#[test]
fn a_bounded_release_trains_exports_and_renders_on_the_device_as_in_training() {
    let dir = tempfile::tempdir().expect("tempdir");
    let req = request(&dir.path().join("run"));
    let summary = workflow::train_run(&req).expect("train");
    assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
    // 4×4 grey cells, each seen 16 times, A 0.5, σ 0.2.
    let bits = summary.bits_per_upload.expect("bounded");
    let want = 16.0 * 0.5 * (1.0f64 + 16.0 * 0.25 / 0.04).log2();
    assert!((bits - want).abs() < 1e-3, "{bits} vs {want}");

    // Multiply-adds (tract's count, which adds the bias adds): the encoder's 3·8·9·64 +
    // 8·8·9·16 + 8·8·9·16 + 8·16 = 32,384; the recognizer's convolutions 3·8·9·256 + 8·16·9·64
    // = 129,024 plus its head.
    let [enc, rec] = summary.multiply_adds.expect("costs");
    assert!((32_384..=33_000).contains(&enc), "{enc}");
    assert!((129_024..=131_000).contains(&rec), "{rec}");

    let run = RunDir::open(&dir.path().join("run")).expect("run");
    let model = Model::load_path(&run.perturber_onnx(), BatchMode::Single).expect("load");
    assert_eq!(model.manifest().format_version, 2);
    let p = Perturber::new(model).expect("perturber");
    let r = *p.release().expect("release in the manifest");
    assert_eq!((r.side, r.channels), (4, 1));
    let x = ImageTensor::new(
        [1, 3, 16, 16],
        (0..3 * 256).map(|i| (i % 17) as f32 / 17.0).collect(),
    )
    .expect("image");
    assert!(
        p.maps(&x).is_err(),
        "a bounded release has no σ map of the photo"
    );

    // The device's noiseless upload is the map: grey, constant on each 4×4 cell, in 0.5 ± 0.5.
    let base = p.upload_base(&x).expect("render");
    let b = base.base().data();
    let plane = 16 * 16;
    assert_eq!(&b[..plane], &b[plane..2 * plane]);
    for y in 0..16 {
        for xx in 0..16 {
            assert_eq!(b[y * 16 + xx], b[(y / 4 * 4) * 16 + xx / 4 * 4]);
        }
    }
    assert!(base.sigma().data().iter().all(|&s| (s - 0.2).abs() < 1e-7));
    let upload = p.perturb_tensor(&x).expect("upload");
    assert_eq!(upload.shape(), [1, 3, 16, 16]);
}

#[test]
fn bounded_options_are_checked_with_their_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = request(&dir.path().join("run"));
    type Case = (fn(&mut TrainRequest), &'static str);
    let cases: [Case; 4] = [
        (|r| r.config.perturber.release_side = 3, "--release-side"),
        (
            |r| r.config.perturber.encoder_widths = vec![8, 8],
            "--encoder-widths",
        ),
        (|r| r.config.perturber.suppress = true, "--suppress"),
        (
            |r| r.config.perturber.release_amplitude = 0.7,
            "--release-amplitude",
        ),
    ];
    for (set, flag) in cases {
        let mut req = base.clone();
        set(&mut req);
        let e = workflow::train_run(&req).expect_err(flag).to_string();
        assert!(e.contains(flag), "{flag}: {e}");
    }
}

#[test]
fn a_pool_of_adversaries_of_every_kind_co_trains() {
    use scrim_train::cotrain::AdversaryKind;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = request(&dir.path().join("run"));
    let c = &mut req.config;
    c.sensitive = Some("texture".into());
    c.adversary_pool = vec![
        AdversaryKind::Cnn,
        AdversaryKind::Blur,
        AdversaryKind::Variance,
        AdversaryKind::Linear,
    ];
    c.adversary_widths = vec![4, 8];
    c.adversary_reset_epochs = 1;
    let summary = workflow::train_run(&req).expect("train");
    assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
    assert!(summary.test_perturbed.accuracy.is_finite());
    // Without a sensitive label the pool has nothing to learn: a one-line error.
    let mut bad = request(&dir.path().join("bad"));
    bad.config.adversary_pool = vec![AdversaryKind::Cnn];
    let e = workflow::train_run(&bad)
        .expect_err("no sensitive")
        .to_string();
    assert!(e.contains("--adversary-pool"), "{e}");
}
