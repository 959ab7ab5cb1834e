//! Writes the ONNX writer's test graphs, an input and tract's outputs to a folder, for the
//! onnxruntime / onnx.checker comparison in `tests/python/check_onnx.py`.
//!
//! `cargo run --release -p scrim-core --example onnx_fixtures -- OUT_DIR`

#[path = "../tests/support/graphs.rs"]
mod graphs;

use scrim_core::manifest::Manifest;
use scrim_core::{BatchMode, ImageTensor, InputSpec, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: onnx_fixtures OUT_DIR")?;
    let out = std::path::Path::new(&out);
    std::fs::create_dir_all(out)?;
    for case in graphs::all() {
        let [c, h, w] = case.input;
        let n = 2;
        let input: Vec<f32> = graphs::values(7, n * c * h * w, 0.5)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        // Run in tract with a dynamic batch; the manifest role only decides the output check, so
        // use a recognizer manifest for the classifier and a perturber one for the stack.
        let manifest = if case.outputs[0] == "sigma" {
            let spec = scrim_core::manifest::PerturberSpec {
                sigma_max: 0.7,
                noise: scrim_core::NoiseKind::Gaussian,
                outputs: vec![
                    scrim_core::manifest::PerturberOutput::Sigma,
                    scrim_core::manifest::PerturberOutput::Shift,
                ],
                fill: 0.5,
                standardize: false,
            };
            Manifest::perturber(case.name, InputSpec::rgb(h, w), spec)
        } else {
            let labels = (0..4).map(|i| format!("c{i}")).collect();
            Manifest::recognizer(case.name, InputSpec::rgb(h, w), "test", labels)
        };
        let model = Model::load(&case.onnx, manifest, BatchMode::Dynamic)?;
        let outs = model.run(&ImageTensor::new([n, c, h, w], input.clone())?)?;
        std::fs::write(out.join(format!("{}.onnx", case.name)), &case.onnx)?;
        let fixture = serde_json::json!({
            "input_shape": [n, c, h, w],
            "input": input,
            "outputs": case.outputs.iter().zip(&outs).map(|(name, o)| serde_json::json!({
                "name": name, "shape": o.shape, "data": o.data,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(out.join(format!("{}.json", case.name)), fixture.to_string())?;
        println!(
            "wrote {}",
            out.join(format!("{}.onnx", case.name)).display()
        );
    }
    Ok(())
}
