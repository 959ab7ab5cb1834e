//! Small, deterministic models built with the ONNX writer, for tests, examples and benchmarks
//! of crates that must not depend on burn (the SDK, the server). They are not trained: their
//! weights are fixed pseudo-random values, so they run and give stable outputs.

use crate::manifest::{InputSpec, Manifest, PerturberOutput, PerturberSpec};
use crate::noise::NoiseKind;
use crate::onnx::{Conv, GraphBuilder};

fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A perturber: two 3×3 convs → `σ_max · sigmoid`, on `size × size` images.
pub fn perturber(size: usize, sigma_max: f32) -> (Vec<u8>, Manifest) {
    let c = 8;
    let w1 = values(1, c * 3 * 9, 0.3);
    let w2 = values(2, 3 * c * 9, 0.3);
    let b2 = vec![-1.0f32; 3];
    let mut g = GraphBuilder::new("fixture_perturber");
    let x = g.image_input("image", 3, size, size);
    let h = g.conv(&x, Conv::new(&w1, [c, 3, 3, 3]).pad(1));
    let h = g.relu(&h);
    let z = g.conv(&h, Conv::new(&w2, [3, c, 3, 3]).bias(&b2).pad(1));
    let s = g.sigmoid(&z);
    let s = g.scale(&s, sigma_max);
    g.output(&s, "sigma");
    (
        g.finish(),
        sigma_perturber_manifest("fixture-perturber", size, sigma_max),
    )
}

/// The manifest of a perturber graph named `name` whose one output is a σ map (Gaussian noise,
/// grey fill, no standardisation), on `size × size` images.
pub fn sigma_perturber_manifest(name: &str, size: usize, sigma_max: f32) -> Manifest {
    let spec = PerturberSpec {
        sigma_max,
        noise: NoiseKind::Gaussian,
        outputs: vec![PerturberOutput::Sigma],
        fill: 0.5,
        standardize: false,
        release: None,
        erase: None,
    };
    Manifest::perturber(name, InputSpec::rgb(size, size), spec)
}

/// A recognizer: strided conv → ReLU → global average pool → linear, with `labels.len()` logits.
pub fn recognizer(size: usize, labels: &[&str]) -> (Vec<u8>, Manifest) {
    let (c, k) = (8, labels.len());
    let w1 = values(3, c * 3 * 16, 0.4);
    let b1 = values(4, c, 0.1);
    let fc = values(5, c * k, 1.0);
    let fb = values(6, k, 0.1);
    let mut g = GraphBuilder::new("fixture_recognizer");
    let x = g.image_input("image", 3, size, size);
    let h = g.conv(&x, Conv::new(&w1, [c, 3, 4, 4]).bias(&b1).stride(4));
    let h = g.relu(&h);
    let h = g.global_avg_pool(&h);
    let h = g.flatten(&h);
    let y = g.linear(&h, &fc, [c, k], Some(&fb));
    g.output(&y, "logits");
    let labels = labels.iter().map(|s| s.to_string()).collect();
    (
        g.finish(),
        Manifest::recognizer(
            "fixture-recognizer",
            InputSpec::rgb(size, size),
            "fixture",
            labels,
        ),
    )
}

/// A bounded release (`crate::release`): the map is a grey `side × side` average of the image
/// (average pooling, scaled around 0.5), Gaussian noise σ, amplitude 0.5; manifest version 2.
pub fn bounded_perturber(size: usize, side: usize, sigma: f32) -> (Vec<u8>, Manifest) {
    let f = size / side;
    let w = vec![1.0f32 / 3.0; 3];
    let mut g = GraphBuilder::new("fixture_bounded");
    let x = g.image_input("image", 3, size, size);
    let pooled = g.avg_pool(&x, f, f, 0);
    let grey = g.conv(&pooled, Conv::new(&w, [1, 3, 1, 1]));
    let centred = g.offset(&grey, -0.5);
    let t = g.tanh(&centred);
    let t = g.scale(&t, 0.5);
    let map = g.offset(&t, 0.5);
    g.output(&map, "map");
    let release = crate::release::BoundedRelease::new(side, 1, 0.5, sigma, size);
    (
        g.finish(),
        Manifest::perturber(
            "fixture-bounded",
            InputSpec::rgb(size, size),
            PerturberSpec::bounded(release, 0.5),
        ),
    )
}

/// The onnxruntime shared library for tests of [`crate::Engine::Onnxruntime`]:
/// `SCRIM_ORT_LIBRARY`, else the one inside the onnxruntime package of `SCRIM_PYTHON` or of
/// scripts/test's virtualenv (`~/.cache/scrim/venv`); PyPI's wheel ships it under
/// `onnxruntime/capi/`. `None` when there is none (tests then skip, saying so).
pub fn onnxruntime_library() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os("SCRIM_ORT_LIBRARY") {
        return Some(PathBuf::from(p));
    }
    let python = std::env::var_os("SCRIM_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/scrim/venv/bin/python"))
        })
        .filter(|p| p.is_file())?;
    onnxruntime_library_of(&python)
}

/// The onnxruntime shared library inside `python`'s onnxruntime package (PyPI's wheel ships it
/// under `onnxruntime/capi/`), `None` when that Python has none.
pub fn onnxruntime_library_of(python: &std::path::Path) -> Option<std::path::PathBuf> {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import glob, os, onnxruntime; d = os.path.dirname(onnxruntime.__file__); \
             print('\\n'.join(sorted(glob.glob(os.path.join(d, 'capi', 'libonnxruntime.so*')) \
             + glob.glob(os.path.join(d, 'capi', 'libonnxruntime*.dylib')))))",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
}
