//! The ONNX writer's graphs load in tract and match a direct computation.

mod support;

use scrim_core::{BatchMode, ImageTensor, InputSpec, Model};
use support::graphs::{self, manifest_for};

#[test]
fn tract_matches_direct_computation() {
    for case in graphs::all() {
        graphs::check_against_reference(&case);
    }
}

#[test]
fn wrong_input_size_is_rejected_with_both_sizes() {
    let case = graphs::classifier();
    let model = Model::load(&case.onnx, manifest_for(&case), BatchMode::Single).expect("load");
    let err = model
        .run(&ImageTensor::zeros([1, 3, 8, 8]))
        .expect_err("size");
    let msg = err.to_string();
    assert!(
        msg.contains("1x3x12x12") && msg.contains("1x3x8x8"),
        "{msg}"
    );
    let err = model
        .run(&ImageTensor::zeros([2, 3, 12, 12]))
        .expect_err("batch");
    assert!(matches!(err, scrim_core::Error::WrongSize { .. }), "{err}");
}

#[test]
fn a_prepared_input_runs_repeatedly_on_its_own_model_only() {
    let case = graphs::classifier();
    let model = Model::load(&case.onnx, manifest_for(&case), BatchMode::Single).expect("load");
    let data = graphs::values(5, 3 * 12 * 12, 1.0);
    let input = ImageTensor::new([1, 3, 12, 12], data).expect("shape");
    let prepared = model.prepare(&input).expect("prepare");
    let direct = model.run(&input).expect("run");
    assert_eq!(model.run_prepared(&prepared).expect("first"), direct);
    // A clone shares the plan; a second run gives the same answer.
    assert_eq!(
        model.clone().run_prepared(&prepared).expect("again"),
        direct
    );
    let other = Model::load(&case.onnx, manifest_for(&case), BatchMode::Single).expect("load");
    let err = other.run_prepared(&prepared).expect_err("foreign input");
    assert!(
        matches!(err, scrim_core::Error::InvalidArgument(_)),
        "{err}"
    );
    assert!(matches!(
        model.prepare(&ImageTensor::zeros([1, 3, 8, 8])),
        Err(scrim_core::Error::WrongSize { .. })
    ));
}

#[test]
fn manifest_and_graph_must_agree() {
    let case = graphs::classifier();
    // The classifier has 4 logits; a manifest with 3 labels must be refused at load time.
    let mut m = manifest_for(&case);
    m.labels.pop();
    let err = Model::load(&case.onnx, m, BatchMode::Single).expect_err("labels");
    assert!(err.to_string().contains("3 labels"), "{err}");
    // A manifest that declares another input size cannot run the graph.
    let mut m = manifest_for(&case);
    m.input = InputSpec::rgb(10, 10);
    let err = Model::load(&case.onnx, m, BatchMode::Single).expect_err("declared size");
    assert!(
        err.to_string().contains("Nx3x12x12") && err.to_string().contains("3x10x10"),
        "{err}"
    );
    // Garbage bytes are an InvalidModel error, not a panic.
    let err = Model::load(b"not onnx at all", manifest_for(&case), BatchMode::Single)
        .expect_err("garbage");
    assert!(matches!(err, scrim_core::Error::InvalidModel(_)), "{err}");
    // A perturber manifest whose output list does not match the graph.
    let case = graphs::conv_stack();
    let mut m = manifest_for(&case);
    if let Some(p) = m.perturber.as_mut() {
        p.outputs.truncate(1);
    }
    let err = Model::load(&case.onnx, m, BatchMode::Single).expect_err("outputs");
    assert!(err.to_string().contains("2 outputs"), "{err}");
}
