//! Each perturber layout trains, exports and loads on a tiny synthetic set: half and quarter
//! resolution, separable and depthwise convolutions, the global view.

use scrim_train::run::RunDir;
use scrim_train::workflow;

mod common;
use common::{serial, tiny_request};

#[test]
fn half_resolution_perturber_trains_and_exports() {
    let _serial = serial();
    // σ at half resolution (stride-2 first conv, nearest upsampling): trains, and its ONNX
    // export passes the same tract-vs-burn check as the default architecture.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = tiny_request(&dir.path().join("run"), 2);
    req.config.perturber.downsample = 2;
    let summary = workflow::train_run(&req).expect("train");
    assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
    assert!(summary.mean_sigma.is_finite());
}

/// Co-trains two epochs at 1/4 resolution with the perturber options `set`. Returns the
/// temporary directory (the run lives as long as it), the summary and the run.
fn train_quarter_res(
    set: impl FnOnce(&mut scrim_train::nets::PerturberConfig),
) -> (tempfile::TempDir, workflow::TrainSummary, RunDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = tiny_request(&dir.path().join("run"), 2);
    req.config.perturber.downsample = 4;
    set(&mut req.config.perturber);
    let summary = workflow::train_run(&req).expect("train");
    let run = RunDir::open(&dir.path().join("run")).expect("run");
    (dir, summary, run)
}

/// `(group, kernel side, padding)` of every `Conv` node of a run's perturber ONNX, in graph
/// order.
fn conv_groups(run: &RunDir) -> Vec<(i64, usize, usize)> {
    let onnx = std::fs::read(run.perturber_onnx()).expect("onnx");
    let graph = scrim_core::onnx_graph::Graph::parse(&onnx).expect("parse onnx");
    graph
        .nodes
        .iter()
        .filter(|n| n.op == "Conv")
        .map(|n| {
            let k = n.ints("kernel_shape").expect("kernel_shape")[0];
            let pad = n.ints("pads").map_or(0, |p| p[0]);
            (n.int("group", 1), k, pad)
        })
        .collect()
}

#[test]
fn separable_quarter_resolution_perturber_trains_and_exports() {
    let _serial = serial();
    // The depthwise-separable layout at 1/4 resolution, with a learned shift and suppression so
    // every head (σ, μ, k) goes through the export check.
    let (_dir, summary, run) = train_quarter_res(|p| {
        p.layout = scrim_train::nets::PerturberLayout::Separable;
        p.shift_max = 0.1;
        p.suppress = true;
    });
    assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
    assert!(summary.mean_sigma.is_finite());
    // Stem 3→8 (4×4, stride 4, unpadded), two depthwise layers over 8 channels, 1×1 σ and μ heads.
    assert_eq!(
        conv_groups(&run),
        vec![(1, 4, 0), (8, 3, 1), (8, 3, 1), (1, 1, 0), (1, 1, 0)]
    );
}

#[test]
fn global_view_perturber_trains_and_exports() {
    let _serial = serial();
    // The global view with the UTKFace recipe's transforms and a learned shift: encoder to a
    // 4×4 bottleneck, skip at half resolution, 1×1 heads; σ, μ and k pass the export check
    // (the device expands the half-resolution maps).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = tiny_request(&dir.path().join("run"), 2);
    let p = &mut req.config.perturber;
    p.layout = scrim_train::nets::PerturberLayout::Global;
    p.release_side = 4;
    p.encoder_widths = vec![8, 8, 8, 8];
    p.standardize = true;
    p.gray = true;
    p.suppress = true;
    p.shift_max = 0.1;
    let summary = workflow::train_run(&req).expect("train");
    assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
    assert!(summary.mean_sigma > 0.0 && summary.mean_sigma < 1.0);
    let run = RunDir::open(&dir.path().join("run")).expect("run");
    // Two stride-2 convs to 4×4, two at 4×4, the 1×1 skip, then the 1×1 σ and μ heads.
    assert_eq!(
        conv_groups(&run),
        vec![
            (1, 3, 1),
            (1, 3, 1),
            (1, 3, 1),
            (1, 3, 1),
            (1, 1, 0),
            (1, 1, 0),
            (1, 1, 0)
        ]
    );
    // The maps leave the graph at half resolution.
    let model = scrim_core::Model::load_path(&run.perturber_onnx(), scrim_core::BatchMode::Single)
        .expect("load");
    let x = scrim_core::ImageTensor::new([1, 3, 16, 16], vec![0.25; 3 * 256]).expect("image");
    let outs = model.run(&x).expect("run");
    assert_eq!(outs[0].shape, vec![1, 3, 8, 8]);
}

#[test]
fn depthwise_quarter_resolution_perturber_trains_and_exports() {
    let _serial = serial();
    // The fully depthwise layout with the UTKFace recipe's device transforms (tone
    // standardisation and suppression) and a learned shift: σ, the shift (learned in the graph
    // plus standardisation on the device) and k all pass the export check, and every
    // convolution in the graph is grouped by colour channel.
    let (_dir, summary, run) = train_quarter_res(|p| {
        p.layout = scrim_train::nets::PerturberLayout::Depthwise;
        p.standardize = true;
        p.gray = true;
        p.suppress = true;
        p.shift_max = 0.1;
    });
    assert!(summary.export_check.perturber_max_abs_diff <= 1e-4);
    assert!(summary.mean_sigma > 0.0 && summary.mean_sigma < 1.0);
    // Stem (4×4, stride 4, unpadded), two depthwise layers, the σ and μ heads, all per
    // channel. Tone standardisation is not in the graph: the manifest asks the device for it,
    // and the export check above compared burn with the device's maps (native
    // standardisation included).
    assert_eq!(
        conv_groups(&run),
        vec![(3, 4, 0), (3, 3, 1), (3, 3, 1), (3, 3, 1), (3, 3, 1)]
    );
    let manifest =
        scrim_core::Manifest::load(&scrim_core::Manifest::path_for(&run.perturber_onnx()))
            .expect("manifest");
    let spec = manifest.perturber.expect("perturber section");
    assert!(spec.standardize);
    assert_eq!(
        spec.outputs,
        vec![
            scrim_core::manifest::PerturberOutput::Sigma,
            scrim_core::manifest::PerturberOutput::Shift,
            scrim_core::manifest::PerturberOutput::Keep
        ]
    );
}
