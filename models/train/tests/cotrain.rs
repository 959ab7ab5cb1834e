//! End to end on a tiny synthetic set: co-train, export, check tract against burn, resume,
//! perturb and classify files, and the input errors users hit first.

use scrim_train::data::DataSpec;
use scrim_train::run::RunDir;
use scrim_train::workflow::{self, TrainRequest};

mod common;
use common::{serial, tiny_request};

#[test]
fn train_export_resume_perturb_classify() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let summary = workflow::train_run(&tiny_request(&out, 3)).expect("train");
    // The export check ran and passed (≤ 1e-4), and the artifacts exist with manifests.
    assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
    assert!(summary.export_check.recognizer_max_abs_diff <= 1e-4);
    for f in [
        "perturber.onnx",
        "perturber.json",
        "recognizer.onnx",
        "recognizer.json",
        "config.json",
        "split.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let run = RunDir::open(&out).expect("open");
    assert_eq!(run.metrics().expect("metrics").len(), 3);
    // Both models carry the run's name and one fresh id, in their manifests and in their ONNX
    // metadata (with the labels), and they pair.
    let card = |onnx: &std::path::Path| {
        let m = scrim_core::Manifest::load_beside(onnx).expect("manifest");
        let meta = scrim_core::onnx_graph::metadata(&std::fs::read(onnx).expect("onnx"))
            .expect("metadata");
        assert_eq!(meta.get("scrim.run_id"), m.run_id.as_ref(), "{meta:?}");
        assert_eq!(meta.get("scrim.run_name"), m.run_name.as_ref(), "{meta:?}");
        (m, meta)
    };
    let (pm, _) = card(&run.perturber_onnx());
    let (rm, rmeta) = card(&run.recognizer_onnx());
    assert_eq!(pm.run_name.as_deref(), Some("run"));
    assert_eq!(pm.run_id.as_ref().map(String::len), Some(16));
    assert_eq!((&pm.run_name, &pm.run_id), (&rm.run_name, &rm.run_id));
    assert_eq!(
        rmeta.get("scrim.labels").map(String::as_str),
        Some(r#"["circle","square"]"#)
    );
    assert_eq!(
        scrim_core::manifest::check_pair(&pm, &rm).ok(),
        Some(scrim_core::manifest::Pairing::SameRun)
    );
    assert!(summary.mean_sigma > 0.0 && summary.mean_sigma < 1.0);
    assert!((0.0..=1.0).contains(&summary.test_perturbed.accuracy));

    // Resume to 4 epochs: one more metrics line, the config kept.
    let mut req = tiny_request(&out, 4);
    req.resume = true;
    workflow::train_run(&req).expect("resume");
    let metrics = run.metrics().expect("metrics");
    assert_eq!(
        metrics.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(run.load_config().expect("config").epochs, 4);

    // Perturb two files (one JPEG, one PNG of another size) and classify the results.
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).expect("mkdir");
    let img = image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 128])
    });
    img.save(inputs.join("a.png")).expect("png");
    img.save(inputs.join("b.jpg")).expect("jpg");
    let files = workflow::list_images(&inputs).expect("list");
    let written = uploads(
        workflow::perturb_files(
            &run.perturber_onnx(),
            &files,
            &dir.path().join("out"),
            Some(1),
        )
        .expect("perturb"),
    );
    assert_eq!(written.len(), 2);
    // Named after the inputs, with the extension .png: b.jpg → b.png.
    assert_eq!(written[1].file_name(), Some("b.png".as_ref()));
    let back = image::open(&written[0]).expect("open").to_rgb8();
    assert_eq!(
        back.dimensions(),
        (16, 16),
        "uploads are at the model's size"
    );
    let again = uploads(
        workflow::perturb_files(
            &run.perturber_onnx(),
            &files,
            &dir.path().join("out2"),
            Some(1),
        )
        .expect("perturb"),
    );
    assert_eq!(
        std::fs::read(&written[0]).ok(),
        std::fs::read(&again[0]).ok(),
        "seeded noise repeats"
    );
    let classified: Vec<_> =
        workflow::classify_files(&run.recognizer_onnx(), &written, &Default::default())
            .expect("classify")
            .into_iter()
            .map(|r| r.outcome.expect("an upload classifies"))
            .collect();
    assert_eq!(classified.len(), 2);
    let total: f32 = classified[0].labels.iter().map(|(_, s)| s).sum();
    assert!((total - 1.0).abs() < 1e-4);
    assert!(
        classified[0]
            .labels
            .iter()
            .all(|(l, _)| l == "circle" || l == "square")
    );
}

/// The uploads written, failing the test on any file that failed.
fn uploads(results: Vec<workflow::FileResult<std::path::PathBuf>>) -> Vec<std::path::PathBuf> {
    results
        .into_iter()
        .map(|r| r.outcome.expect("every file perturbs"))
        .collect()
}

#[test]
fn input_errors_are_messages_not_panics() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = tiny_request(&dir.path().join("r"), 1);
    req.config.desired = "colour".into();
    let err = workflow::train_run(&req)
        .expect_err("unknown label")
        .to_string();
    assert!(err.contains("colour") && err.contains("shape"), "{err}");

    let req = TrainRequest::new(
        DataSpec::Utkface(dir.path().join("missing")),
        "gender",
        dir.path().join("r2"),
    );
    let err = workflow::train_run(&req).expect_err("missing").to_string();
    assert!(err.contains("does not exist"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let req = TrainRequest::new(
        DataSpec::Utkface(empty.clone()),
        "gender",
        dir.path().join("r3"),
    );
    let err = workflow::train_run(&req).expect_err("empty").to_string();
    assert!(err.contains("no images"), "{err}");

    let err = workflow::list_images(&empty)
        .expect_err("no images")
        .to_string();
    assert!(err.contains("no JPEG"), "{err}");
    let err = RunDir::open(&empty).expect_err("not a run").to_string();
    assert!(err.contains("not a training run"), "{err}");
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"nope").expect("write");
    std::fs::write(bad.with_extension("json"), b"{}").expect("write");
    let err = workflow::perturb_files(&bad, &[], &dir.path().join("o"), None)
        .expect_err("bad model")
        .to_string();
    assert!(err.contains("manifest"), "{err}");
}

#[test]
fn utkface_loader_skips_malformed_names() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image::RgbImage::from_fn(20, 20, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
    for name in [
        "25_0_1_2017.jpg.chip.jpg",
        "30_1_3_2017.jpg.chip.jpg",
        "61_1_2017.jpg.chip.jpg",
    ] {
        img.save_with_format(dir.path().join(name), image::ImageFormat::Jpeg)
            .expect("save");
    }
    std::fs::write(dir.path().join("40_0_0_2017.jpg.chip.jpg"), b"corrupt").expect("write");
    let ds = scrim_train::data::load(
        &DataSpec::Utkface(dir.path().to_path_buf()),
        &scrim_train::data::LoadOptions {
            size: 8,
            cache: false,
            progress: false,
        },
    )
    .expect("load");
    assert_eq!(
        ds.len(),
        2,
        "the malformed name and the corrupt file are skipped"
    );
    assert_eq!(ds.attribute("gender").expect("g").labels, vec![0, 1]);
    assert_eq!(ds.attribute("race").expect("r").labels, vec![1, 3]);
    assert_eq!(ds.attribute("age").expect("a").labels, vec![1, 2]);
}

#[test]
fn utility_constrained_lambda_follows_the_accuracy_target() {
    let _serial = serial();
    // Dual ascent on λ: a target the recognizer cannot reach (perfect accuracy) must lower λ
    // below its start, a target it beats easily (chance) must raise it. Tone standardisation
    // and suppression are on, so their ONNX export goes through the tract-vs-burn check too.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut last = Vec::new();
    for (name, target) in [("high", 0.999), ("low", 0.3)] {
        let mut req = tiny_request(&dir.path().join(name), 3);
        let c = &mut req.config;
        c.target_accuracy = Some(target);
        c.dual_rate = 4.0;
        c.perturber.standardize = true;
        c.perturber.gray = true;
        c.perturber.suppress = true;
        let summary = workflow::train_run(&req).expect("train");
        assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
        let metrics = RunDir::open(&dir.path().join(name))
            .expect("run")
            .metrics()
            .expect("metrics");
        last.push(metrics.last().expect("epochs").lambda);
    }
    assert!(
        last[0] < 0.2,
        "unreachable target: λ {} should fall below 0.2",
        last[0]
    );
    assert!(
        last[1] > 0.2,
        "easy target: λ {} should rise above 0.2",
        last[1]
    );
}

#[test]
fn finetune_epochs_train_the_recognizer_on_a_frozen_perturber() {
    let _serial = serial();
    // Two closing fine-tune epochs: the perturber must not move (its σ on the validation
    // images is a deterministic function of its weights), the recognizer must.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let mut req = tiny_request(&out, 5);
    req.config.finetune_epochs = 2;
    workflow::train_run(&req).expect("train");
    let metrics = RunDir::open(&out).expect("run").metrics().expect("metrics");
    let phases: Vec<&str> = metrics.iter().map(|m| m.phase.as_str()).collect();
    assert_eq!(
        phases,
        vec!["warmup", "cotrain", "cotrain", "finetune", "finetune"]
    );
    let sigma: Vec<f64> = metrics.iter().map(|m| m.mean_sigma).collect();
    assert!(
        (sigma[3] - sigma[2]).abs() < 1e-9 && (sigma[4] - sigma[2]).abs() < 1e-9,
        "σ moved during fine-tuning: {sigma:?}"
    );
    // The co-training epochs did move it, so the check above can fail.
    assert!(
        (sigma[2] - sigma[1]).abs() > 1e-6,
        "σ never moved: {sigma:?}"
    );
    assert!(metrics[4].train_loss.is_finite());

    // A fine-tune that leaves no co-training epoch is refused with a message.
    let mut bad = tiny_request(&dir.path().join("bad"), 3);
    bad.config.finetune_epochs = 2;
    let err = workflow::train_run(&bad).expect_err("no co-training epoch");
    assert!(err.to_string().contains("--finetune-epochs"), "{err}");
}

#[test]
fn distillation_keeps_its_teacher_across_resume() {
    let _serial = serial();
    // The teacher is the recognizer as warm-up left it: saved with the checkpoints from the
    // first co-training epoch on, unchanged afterwards, and reloaded by --resume.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let mut req = tiny_request(&out, 2);
    req.config.distill = 1.0;
    workflow::train_run(&req).expect("train");
    let outputs = |file: &str| recognizer_outputs(&out.join(file));
    let teacher = outputs("last-teacher.bpk");
    // The teacher is the recognizer as warm-up left it: the same seed stopped after warm-up.
    let warm = dir.path().join("warm");
    workflow::train_run(&tiny_request(&warm, 1)).expect("warm-up only");
    assert_eq!(
        teacher,
        recognizer_outputs(&warm.join("last-recognizer.bpk")),
        "the teacher moved after warm-up"
    );
    assert_ne!(
        teacher,
        outputs("last-recognizer.bpk"),
        "the recognizer trained on after warm-up"
    );

    let mut more = tiny_request(&out, 3);
    more.config.distill = 1.0;
    more.resume = true;
    workflow::train_run(&more).expect("resume");
    assert_eq!(
        outputs("last-teacher.bpk"),
        teacher,
        "the teacher is frozen and survives --resume"
    );
    let metrics = RunDir::open(&out).expect("run").metrics().expect("metrics");
    assert_eq!(metrics.len(), 3);
    assert!(metrics.iter().all(|m| m.train_loss.is_finite()));

    let mut bad = tiny_request(&dir.path().join("bad"), 2);
    bad.config.distill = 1.0;
    bad.config.warmup_epochs = 0;
    let err = workflow::train_run(&bad).expect_err("no warm-up, no teacher");
    assert!(err.to_string().contains("--distill"), "{err}");
}

/// A saved tiny recognizer's logits on one fixed input: weights compared through what they
/// compute (the files also hold ids that differ from save to save).
fn recognizer_outputs(file: &std::path::Path) -> Vec<f32> {
    use burn::module::Module;
    let device = scrim_train::backend::Backend::Flex
        .device()
        .expect("device");
    let net = scrim_train::nets::RecognizerConfig::new(2)
        .with_widths(vec![8, 16])
        .init(&device)
        .try_load_file(file)
        .expect("load");
    let x = burn::tensor::Tensor::<4>::ones([1, 3, 16, 16], &device).mul_scalar(0.3);
    net.forward(x)
        .into_data()
        .try_to_vec::<f32>()
        .expect("floats")
}

#[test]
fn hsic_term_trains_exports_and_needs_a_sensitive_label() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = tiny_request(&dir.path().join("run"), 3);
    req.config.sensitive = Some("texture".into());
    req.config.hsic = 2.0;
    let summary = workflow::train_run(&req).expect("train with --hsic");
    assert!((0.0..=1.0).contains(&summary.test_perturbed.accuracy));
    let metrics = RunDir::open(&dir.path().join("run"))
        .expect("run")
        .metrics()
        .expect("metrics");
    assert!(metrics.iter().all(|m| m.train_loss.is_finite()));

    let mut bad = tiny_request(&dir.path().join("bad"), 2);
    bad.config.hsic = 2.0;
    let err = workflow::train_run(&bad).expect_err("--hsic without --sensitive");
    assert!(err.to_string().contains("--hsic"), "{err}");
    bad.config.sensitive = Some("texture".into());
    bad.config.hsic = f64::NAN;
    let err = workflow::train_run(&bad).expect_err("NaN weight");
    assert!(err.to_string().contains("--hsic"), "{err}");
    // --also-hide names labels of the data.
    bad.config.hsic = 2.0;
    bad.config.also_hide = vec!["age".into()];
    let err = workflow::train_run(&bad).expect_err("no label \"age\" in the synthetic data");
    assert!(err.to_string().contains("age"), "{err}");
}

#[test]
fn a_concept_erasure_trains_exports_and_the_device_leaves_no_class_mean_apart() {
    let _serial = serial();
    // `--erase`: fitted on the training split, in burn's forward pass and in the manifest,
    // applied by scrim-core after the tone transform. The export check compares the two shifts,
    // and on the device the erased training images of both textures have the same mean.
    for standardize in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("run");
        let mut req = tiny_request(&out, 2);
        req.config.sensitive = Some("texture".into());
        let p = &mut req.config.perturber;
        p.erase = true;
        p.standardize = standardize;
        p.gray = standardize;
        p.suppress = standardize;
        let summary = workflow::train_run(&req).expect("train");
        assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
        let run = RunDir::open(&out).expect("open");
        let model =
            scrim_core::Model::load_path(&run.perturber_onnx(), scrim_core::BatchMode::Single)
                .expect("load");
        let erase = model
            .manifest()
            .perturber
            .as_ref()
            .and_then(|p| p.erase.clone())
            .expect("the manifest carries the erasure");
        assert_eq!(model.manifest().format_version, 3);
        assert_eq!(
            (
                erase.label.as_str(),
                erase.rank,
                erase.channels,
                erase.values()
            ),
            if standardize {
                ("texture", 1, 1, 256)
            } else {
                ("texture", 1, 3, 768)
            }
        );
        let perturber = scrim_core::Perturber::new(model).expect("perturber");
        let ds = scrim_train::data::load(
            &req.data,
            &scrim_train::data::LoadOptions {
                size: req.config.size,
                cache: false,
                progress: false,
            },
        )
        .expect("data");
        let attr = ds.attribute_index("texture").expect("texture");
        let split = run.load_split().expect("split");
        let mut sums = [vec![0.0f64; 768], vec![0.0f64; 768]];
        let mut counts = [0usize; 2];
        for &i in &split.train {
            let x = ds.image_tensor(i).expect("image");
            let maps = perturber.maps(&x).expect("maps");
            let shift = maps.shift.expect("the erasure is a shift");
            let label = usize::from(ds.attributes[attr].labels[i]);
            counts[label] += 1;
            for (s, (a, b)) in sums[label]
                .iter_mut()
                .zip(x.data().iter().zip(shift.data()))
            {
                *s += f64::from(a + b);
            }
        }
        let gap = sums[0]
            .iter()
            .zip(&sums[1])
            .map(|(a, b)| (a / counts[0] as f64 - b / counts[1] as f64).abs())
            .fold(0.0f64, f64::max);
        assert!(
            gap < 2e-3,
            "standardize {standardize}: class means differ by {gap}"
        );
    }
    // Without a sensitive label there is nothing to erase.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = tiny_request(&dir.path().join("run"), 2);
    req.config.perturber.erase = true;
    let err = workflow::train_run(&req).expect_err("no sensitive label");
    assert!(err.to_string().contains("--sensitive"), "{err}");
}
