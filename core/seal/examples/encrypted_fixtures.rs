//! Writes the classifier whose stem patch-model encryption rewrote on the protobuf, an input and
//! tract's outputs to a folder, beside the fixtures of scrim-core's `onnx_fixtures`, for the
//! onnxruntime / onnx.checker comparison in `tests/python/check_onnx.py`.
//!
//! `cargo run --release -p scrim-seal --example encrypted_fixtures -- OUT_DIR`

#[path = "../tests/support/mod.rs"]
mod support;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: encrypted_fixtures OUT_DIR")?;
    let out = std::path::Path::new(&out);
    std::fs::create_dir_all(out)?;
    support::graphs::write_fixture(&support::encrypted_classifier(), out)
}
