//! scrim-core's writer graphs with their direct computations (shared, not copied), and the graph
//! that patch-model encryption rewrites.
#![allow(dead_code)]

#[path = "../../../runtime/tests/support/graphs.rs"]
pub mod graphs;

use graphs::{Case, T};
use scrim_core::manifest::Manifest;
use scrim_core::{BlockTransform, ImageTensor, InputSpec, Scheme, SecretKey};

/// The classifier with its stem encrypted by a key (`model_crypt`): a graph rewritten on the
/// protobuf rather than written by the builder. Its reference undoes the patch transform and runs
/// the plain classifier.
pub fn encrypted_classifier() -> Case {
    let plain = graphs::classifier();
    let [c, h, w] = plain.input;
    let labels = (0..4).map(|i| format!("c{i}")).collect();
    let manifest = Manifest::recognizer("classifier", InputSpec::rgb(h, w), "test", labels);
    let key = SecretKey::from_bytes([9; 32]);
    let (onnx, _, _) = scrim_seal::model_crypt::encrypt_patch_model(&plain.onnx, &manifest, &key)
        .expect("the classifier has a patch stem");
    let t = BlockTransform::new(&key, Scheme::Patch, 4).expect("t");
    let reference = move |x: &T| {
        let img = ImageTensor::new([1, c, h, w], x.d.clone()).expect("shape");
        let d = t.invert(&img).expect("invert").into_data();
        (plain.reference)(&T { c, h, w, d })
    };
    Case {
        name: "encrypted_classifier",
        onnx,
        input: [c, h, w],
        outputs: vec!["logits"],
        reference: Box::new(reference),
    }
}
