//! The batch modes and engines of `Model` agree: fixed-shape tract plans (padded partial batches,
//! chunked large ones) against the symbolic plan, pooled run states across threads, and
//! onnxruntime (the `ort` feature) against tract.

use scrim_core::{BatchMode, Engine, Error, ImageTensor, Model, fixtures};

/// `n` different images of side `size`, deterministic.
fn images(n: usize, size: usize) -> ImageTensor {
    let len = n * 3 * size * size;
    let data = (0..len)
        .map(|k| ((k * 7919 + 13) % 251) as f32 / 250.0)
        .collect();
    ImageTensor::new([n, 3, size, size], data).expect("images")
}

fn assert_close(a: &[scrim_core::Output], b: &[scrim_core::Output], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: number of outputs");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape, y.shape, "{what}: shapes");
        let worst = x
            .data
            .iter()
            .zip(&y.data)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "{what}: largest difference {worst}");
    }
}

#[test]
fn planned_batches_match_the_symbolic_plan_at_every_size() {
    let (onnx, manifest) = fixtures::recognizer(16, &["a", "b", "c"]);
    let dynamic = Model::load(&onnx, manifest.clone(), BatchMode::Dynamic).expect("dynamic");
    let planned = Model::load(&onnx, manifest, BatchMode::Planned { max: 6 }).expect("planned");
    let plans: Vec<_> = planned.kernels().iter().map(|k| k.batch).collect();
    assert_eq!(plans, [Some(1), Some(2), Some(4), Some(6)]);
    // 3 and 5 are padded (to 4 and 6), 13 runs as 6 + 6 + 1.
    for n in [1, 2, 3, 5, 6, 13] {
        let x = images(n, 16);
        let want = dynamic.run(&x).expect("dynamic run");
        let got = planned.run(&x).expect("planned run");
        assert_eq!(got[0].shape, [n, 3], "batch {n}");
        assert_close(&got, &want, &format!("batch {n}"));
    }
}

#[test]
fn a_planned_perturber_keeps_its_spatial_outputs() {
    let (onnx, manifest) = fixtures::perturber(8, 0.4);
    let single = Model::load(&onnx, manifest.clone(), BatchMode::Single).expect("single");
    let planned = Model::load(&onnx, manifest, BatchMode::Planned { max: 4 }).expect("planned");
    let x = images(3, 8);
    let got = planned.run(&x).expect("planned run");
    assert_eq!(got[0].shape, [3, 3, 8, 8]);
    let per_image = 3 * 8 * 8;
    for k in 0..3 {
        let one = ImageTensor::new(
            [1, 3, 8, 8],
            x.data()[k * per_image..(k + 1) * per_image].to_vec(),
        )
        .expect("image");
        let want = single.run(&one).expect("single run");
        let row = scrim_core::Output {
            shape: vec![1, 3, 8, 8],
            data: got[0].data[k * per_image..(k + 1) * per_image].to_vec(),
        };
        assert_close(&[row], &want, &format!("image {k}"));
    }
    // Each plan names the method of both convolutions.
    for plan in planned.kernels() {
        assert_eq!(plan.convolutions.len(), 2, "{plan:?}");
    }
}

#[test]
fn pooled_run_states_give_the_same_answers_from_many_threads() {
    let (onnx, manifest) = fixtures::recognizer(16, &["a", "b"]);
    let model = Model::load(&onnx, manifest, BatchMode::Planned { max: 4 }).expect("load");
    let inputs: Vec<ImageTensor> = (1..=4).map(|n| images(n, 16)).collect();
    let want: Vec<_> = inputs.iter().map(|x| model.run(x).expect("run")).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (model, inputs, want) = (&model, &inputs, &want);
            s.spawn(move || {
                for round in 0..25 {
                    let k = (t + round) % inputs.len();
                    let got = model.run(&inputs[k]).expect("run");
                    assert_eq!(
                        got, want[k],
                        "thread {t}, round {round}: a reused state differs"
                    );
                }
            });
        }
    });
}

#[test]
fn a_single_model_still_refuses_batches() {
    let (onnx, manifest) = fixtures::recognizer(16, &["a", "b"]);
    let model = Model::load(&onnx, manifest, BatchMode::Single).expect("load");
    let err = model.run(&images(2, 16)).expect_err("two images");
    assert!(matches!(err, Error::WrongSize { .. }), "{err}");
}

#[cfg(not(feature = "ort"))]
#[test]
fn onnxruntime_without_the_feature_is_a_clear_error() {
    let (onnx, manifest) = fixtures::recognizer(16, &["a", "b"]);
    let engine = Engine::Onnxruntime {
        library: "/nowhere/libonnxruntime.so".into(),
    };
    let err = Model::load_with(&onnx, manifest, BatchMode::Dynamic, &engine).expect_err("no ort");
    assert!(err.to_string().contains("`ort` cargo feature"), "{err}");
}

#[cfg(feature = "ort")]
mod onnxruntime {
    use super::*;
    fn engine() -> Option<Engine> {
        match fixtures::onnxruntime_library() {
            Some(library) => Some(Engine::Onnxruntime { library }),
            None => {
                eprintln!(
                    "skipped: no onnxruntime library (set SCRIM_ORT_LIBRARY, or SCRIM_PYTHON to \
                     a Python with onnxruntime, as scripts/test does)"
                );
                None
            }
        }
    }

    #[test]
    fn onnxruntime_matches_tract_on_recognizers_and_perturbers() {
        let Some(engine) = engine() else { return };
        let (onnx, manifest) = fixtures::recognizer(16, &["a", "b", "c"]);
        let tract = Model::load(&onnx, manifest.clone(), BatchMode::Dynamic).expect("tract");
        let ort = Model::load_with(&onnx, manifest, BatchMode::Planned { max: 8 }, &engine)
            .expect("onnxruntime");
        assert_eq!(ort.engine().name(), "onnxruntime");
        assert!(
            ort.kernels().is_empty(),
            "onnxruntime reports no tract plans"
        );
        for n in [1, 3, 11] {
            let x = images(n, 16);
            assert_close(
                &ort.run(&x).expect("ort run"),
                &tract.run(&x).expect("tract run"),
                &format!("recognizer, batch {n}"),
            );
        }
        let (onnx, manifest) = fixtures::perturber(8, 0.4);
        let tract = Model::load(&onnx, manifest.clone(), BatchMode::Single).expect("tract");
        let ort = Model::load_with(&onnx, manifest, BatchMode::Single, &engine).expect("ort");
        let x = images(1, 8);
        assert_close(
            &ort.run(&x).expect("ort run"),
            &tract.run(&x).expect("tract run"),
            "perturber",
        );
        let err = ort.run(&images(2, 8)).expect_err("single takes one image");
        assert!(matches!(err, Error::WrongSize { .. }), "{err}");
        let prepared = tract.prepare(&x).expect("prepare");
        let err = ort
            .run_prepared(&prepared)
            .expect_err("another model's input");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn a_missing_library_is_a_clear_error() {
        let (onnx, manifest) = fixtures::recognizer(16, &["a", "b"]);
        let engine = Engine::Onnxruntime {
            library: "/nowhere/libonnxruntime.so".into(),
        };
        let err =
            Model::load_with(&onnx, manifest, BatchMode::Dynamic, &engine).expect_err("no lib");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(
            err.to_string().contains("/nowhere/libonnxruntime.so"),
            "{err}"
        );
    }
}

#[test]
fn a_tuned_model_keeps_batch_one_and_only_the_plans_that_beat_it() {
    let (onnx, manifest) = fixtures::recognizer(16, &["a", "b", "c"]);
    let dynamic = Model::load(&onnx, manifest.clone(), BatchMode::Dynamic).expect("dynamic");
    let tuned = Model::load(&onnx, manifest, BatchMode::Tuned { max: 8 }).expect("tuned");
    let choices = tuned.plan_choices();
    let sizes: Vec<usize> = choices.iter().map(|c| c.batch).collect();
    assert_eq!(sizes, [1, 2, 4, 8], "every plan is timed");
    let one = &choices[0];
    assert!(one.kept && one.us_per_image > 0.0, "{one:?}");
    for c in &choices[1..] {
        assert!(c.us_per_image > 0.0, "{c:?}");
        assert_eq!(
            c.kept,
            c.us_per_image < one.us_per_image,
            "{c:?} against {one:?}"
        );
    }
    // The plans that run are exactly the kept ones, and every batch size gives what the
    // symbolic plan gives, however few plans were kept.
    let running: Vec<Option<usize>> = tuned.kernels().iter().map(|k| k.batch).collect();
    let kept: Vec<Option<usize>> = choices
        .iter()
        .filter(|c| c.kept)
        .map(|c| Some(c.batch))
        .collect();
    assert_eq!(running, kept);
    for n in [1, 3, 8, 11] {
        let x = images(n, 16);
        let want = dynamic.run(&x).expect("dynamic run");
        let got = tuned.run(&x).expect("tuned run");
        assert_eq!(got[0].shape, [n, 3], "batch {n}");
        assert_close(&got, &want, &format!("batch {n}"));
    }
    // Only a tuned tract model is timed.
    let (onnx, manifest) = fixtures::recognizer(16, &["a", "b"]);
    let planned = Model::load(&onnx, manifest, BatchMode::Planned { max: 4 }).expect("planned");
    assert!(planned.plan_choices().is_empty());
}
