//! A perturber whose graph outputs NaN is an error, not a silent black or saturated upload.

use scrim_core::fixtures;
use scrim_core::onnx::GraphBuilder;
use scrim_core::{BatchMode, ImageTensor, Model, NoiseSource, Perturber};

/// σ = x / x: NaN where the image is 0, 1 elsewhere.
fn nan_perturber(size: usize) -> Perturber {
    let mut g = GraphBuilder::new("nan_perturber");
    let x = g.image_input("image", 3, size, size);
    let s = g.div(&x, &x);
    g.output(&s, "sigma");
    let manifest = fixtures::sigma_perturber_manifest("nan-perturber", size, 0.5);
    let model = Model::load(&g.finish(), manifest, BatchMode::Single).expect("load");
    Perturber::with_noise(model, NoiseSource::seeded_for_tests(1)).expect("perturber")
}

#[test]
fn a_non_finite_sigma_map_is_refused() {
    let p = nan_perturber(8);
    let mut data = vec![0.5f32; 3 * 8 * 8];
    // One black pixel in one channel: one NaN in the σ map.
    data[17] = 0.0;
    let x = ImageTensor::new([1, 3, 8, 8], data).expect("tensor");
    let err = p.perturb_tensor(&x).expect_err("NaN σ");
    assert!(
        err.to_string().contains("1 non-finite values"),
        "unexpected error: {err}"
    );
    assert!(p.maps(&x).is_err(), "the maps are refused as well");
    // The same perturber on an image with no zero is fine: the check is on values, not graphs.
    let fine = ImageTensor::new([1, 3, 8, 8], vec![0.5; 3 * 8 * 8]).expect("tensor");
    let y = p.perturb_tensor(&fine).expect("finite σ");
    assert!(y.data().iter().all(|v| v.is_finite()));
}
