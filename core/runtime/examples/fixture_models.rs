//! Writes the tiny untrained fixture models of `scrim_core::fixtures` to a folder, with their
//! manifests beside them: `perturber.onnx` + `perturber.json` and `recognizer.onnx` +
//! `recognizer.json`. Used by the SDK's Python test and handy for trying the server or the SDK
//! without training anything.
//!
//! `cargo run --release -p scrim-core --example fixture_models -- OUT_DIR [SIZE] [LABEL...]`
//! (defaults: SIZE 16, labels `cat dog bird`).

use scrim_core::fixtures;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: fixture_models OUT_DIR [SIZE] [LABEL...]")?;
    let size: usize = match args.next() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("SIZE must be a positive integer, got {s:?}"))?,
        None => 16,
    };
    let mut labels: Vec<String> = args.collect();
    if labels.is_empty() {
        labels = ["cat", "dog", "bird"].map(String::from).to_vec();
    }
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();

    let out = std::path::Path::new(&out);
    std::fs::create_dir_all(out)?;
    let (perturber, p_manifest) = fixtures::perturber(size, 0.3);
    let (recognizer, r_manifest) = fixtures::recognizer(size, &labels);
    for (name, onnx, manifest) in [
        ("perturber", perturber, p_manifest),
        ("recognizer", recognizer, r_manifest),
    ] {
        manifest.validate()?;
        let path = out.join(format!("{name}.onnx"));
        std::fs::write(&path, onnx)?;
        manifest.save(&scrim_core::Manifest::path_for(&path))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
