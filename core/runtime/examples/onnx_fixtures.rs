//! Writes the ONNX writer's test graphs, an input and tract's outputs to a folder, for the
//! onnxruntime / onnx.checker comparison in `tests/python/check_onnx.py`. (scrim-seal's
//! `encrypted_fixtures` adds the graph that patch-model encryption rewrites.)
//!
//! `cargo run --release -p scrim-core --example onnx_fixtures -- OUT_DIR`

#[path = "../tests/support/graphs.rs"]
mod graphs;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: onnx_fixtures OUT_DIR")?;
    let out = std::path::Path::new(&out);
    std::fs::create_dir_all(out)?;
    for case in graphs::all() {
        graphs::write_fixture(&case, out)?;
    }
    Ok(())
}
