//! Fuzz targets: every place where Scrim reads bytes it did not write.
//!
//! Each target takes arbitrary bytes and must return without panicking, whatever they are: a
//! malformed input is an `Err`, never a crash. Some targets also check a property that must hold
//! for every input they accept (a block transform's inverse undoes it; a manifest that parses
//! writes JSON that parses back to the same manifest) and panic when it does not, which the fuzzer
//! reports as a crash.
//!
//! The libFuzzer harness in `libfuzzer/` (nightly, `cargo fuzz`) calls these functions; the
//! corpora it grows live in `corpus/<target>/` and replay as ordinary tests on stable
//! (`tests/replay.rs`). `scripts/fuzz` runs them all.

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request, header};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use scrim_core::{
    BatchMode, BlockTransform, DecodeLimits, ImageTensor, InputSpec, Manifest, Model, NoiseSource,
    Perturber, Scheme, SecretKey, imaging, onnx_graph,
};
use scrim_seal::LevelKey;
use scrim_seal::selective::{self, LayerSelection};
use tower::ServiceExt as _;

/// A fuzz target: arbitrary bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and its libFuzzer binary have.
pub const TARGETS: [(&str, Target); 7] = [
    ("image_decode", image_decode),
    ("manifest", manifest),
    ("onnx_model", onnx_model),
    ("key_files", key_files),
    ("sealed_bundle", sealed_bundle),
    ("block_transform", block_transform),
    ("server_request", server_request),
];

/// Side of the fixture models: small, so that every execution is fast.
const SIZE: usize = 8;
/// The server's pixel limit in the targets: low, so that the fuzzer cannot spend its time
/// decoding large images that the real limit would also let through.
const MAX_PIXELS: u64 = 1 << 20;
/// The bearer token the fuzzed server accepts.
pub const TOKEN: &str = "fuzz-token-0123456789";

/// Image bytes: the decoder with its limits, the resize to a model input, and the whole device
/// path (standardise, perturb, noise, quantise, encode) of a fixture perturber.
pub fn image_decode(data: &[u8]) {
    let limits = DecodeLimits {
        max_pixels: MAX_PIXELS,
    };
    let input = InputSpec::rgb(SIZE, SIZE);
    if let Ok(img) = imaging::decode(data, limits) {
        let t = imaging::to_tensor(&img, input);
        assert_eq!(t.shape(), [1, 3, SIZE, SIZE]);
    }
    let _ = imaging::decode_exact(data, input, limits);
    let _ = fixtures().perturber.perturb(data);
}

/// Manifest JSON: parsing and validation; what parses must survive a write and a read.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::from_json(text) {
        let json = serde_json::to_string(&m).expect("a parsed manifest serialises");
        let again = Manifest::from_json(&json).expect("a written manifest parses");
        assert_eq!(m, again, "manifest changed in a write and a read");
    }
}

/// ONNX bytes: the protobuf parser, loading into a recognizer and a perturber (with the size
/// limits checked before tract sees the graph), and one run of whatever loaded.
pub fn onnx_model(data: &[u8]) {
    let f = fixtures();
    let _ = onnx_graph::Graph::parse(data);
    if let Ok(model) = Model::load(data, f.recognizer_manifest.clone(), BatchMode::Single) {
        let _ = model.run(&ImageTensor::zeros([1, 3, SIZE, SIZE]));
    }
    if let Ok(p) = Perturber::from_bytes(data, &f.perturber_json, NoiseSource::seeded_for_tests(1))
    {
        let _ = p.perturb_tensor(&ImageTensor::zeros([1, 3, SIZE, SIZE]));
    }
}

/// Key files: the user's secret key and a service-level key.
pub fn key_files(data: &[u8]) {
    if let Ok(key) = SecretKey::from_file_bytes(data) {
        let again = SecretKey::from_file_bytes(&key.to_file_bytes()).expect("written key parses");
        assert_eq!(key.subkey("fuzz"), again.subkey("fuzz"), "key changed");
    }
    if let Ok(key) = LevelKey::from_bytes(data) {
        assert_eq!(key.to_bytes(), data, "a level key writes back other bytes");
    }
}

/// Sealed restoration bundles: the public header, and restoring a protected fixture model from
/// a modified bundle with every level's key. A key opens only its own levels' segments, so a
/// bundle modified beyond them still restores that level; what it restores must then be exactly
/// the model the untouched bundle gives.
pub fn sealed_bundle(data: &[u8]) {
    let f = fixtures();
    let _ = scrim_seal::sealed::bundle_info(data);
    for (key, expected) in f.protected.keys.iter().zip(&f.restored) {
        if let Ok(model) = selective::restore(&f.protected.onnx, data, key) {
            assert!(
                model == *expected,
                "a modified bundle restored another level-{} model",
                key.level()
            );
        }
    }
    // A modified encrypted model with the true bundle: refused by its hash.
    if data != &f.protected.onnx[..] {
        let key = &f.protected.keys[0];
        assert!(selective::restore(data, &f.protected.bundle, key).is_err());
    }
}

/// Block transforms: any scheme, block size and image size the bytes pick; the inverse must
/// undo the transform, and inverting arbitrary data must not panic.
pub fn block_transform(data: &[u8]) {
    let [s, b, hb, wb, rest @ ..] = data else {
        return;
    };
    let scheme = Scheme::ALL[usize::from(*s) % Scheme::ALL.len()];
    let block = usize::from(*b % 9); // 0 and 9+ are refused by `new`; 0 tests that
    let Ok(t) = BlockTransform::new(&SecretKey::from_bytes([7; 32]), scheme, block) else {
        assert_eq!(block, 0, "block {block} refused");
        return;
    };
    let (h, w) = (
        block * (1 + usize::from(*hb % 4)),
        block * (1 + usize::from(*wb % 4)),
    );
    // Odd sizes too: they must be refused, not panic.
    let (h, w) = if *hb >= 128 { (h + 1, w) } else { (h, w) };
    let n = 3 * h * w;
    let pixels: Vec<u8> = if rest.is_empty() {
        vec![0; n]
    } else {
        rest.iter().copied().cycle().take(n).collect()
    };
    let even = h.is_multiple_of(block) && w.is_multiple_of(block);
    if scheme.is_8bit() {
        match t.apply_u8(&pixels, h, w) {
            Ok(y) => {
                let back = t
                    .invert_u8(&y, h, w)
                    .expect("inverse of a transformed image");
                assert_eq!(back, pixels, "{scheme} block {block}: inverse differs");
            }
            Err(_) => assert!(!even, "{scheme} refused a {h}x{w} image with block {block}"),
        }
        let _ = t.invert_u8(rest, h, w);
    } else {
        let x: Vec<f32> = pixels.iter().map(|&v| f32::from(v) / 255.0).collect();
        let Ok(x) = ImageTensor::new([1, 3, h, w], x) else {
            return;
        };
        match t.apply(&x) {
            Ok(y) => {
                let back = t.invert(&y).expect("inverse of a transformed image");
                assert_eq!(
                    back.data(),
                    x.data(),
                    "{scheme} block {block}: inverse differs"
                );
            }
            Err(_) => assert!(!even, "{scheme} refused a {h}x{w} image with block {block}"),
        }
        let y: Vec<f32> = rest
            .chunks(4)
            .filter(|c| c.len() == 4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .chain(std::iter::repeat(0.0))
            .take(n)
            .collect();
        if let Ok(y) = ImageTensor::new([1, 3, h, w], y) {
            let _ = t.invert(&y);
        }
    }
}

/// One HTTP request through the server's whole application (`scrim_cloud::app`): the first
/// bytes pick the route, the method, the content type and the credentials, the rest is the body.
/// Every answer must be a response with a JSON error or a success, never a panic (the server
/// catches handler panics and answers 500; this target fails on a 500 too).
pub fn server_request(data: &[u8]) {
    if let Some((path, status)) = server_status(data) {
        assert!(
            !(500..600).contains(&status) || status == 503,
            "{path}: status {status}"
        );
    }
}

/// The route and the status of the request that `data` describes ([`server_request`]), `None`
/// for fewer than three bytes.
pub fn server_status(data: &[u8]) -> Option<(&'static str, u16)> {
    let [r, ct, auth, rest @ ..] = data else {
        return None;
    };
    const PATHS: [&str; 9] = [
        "/v1/classify",
        "/v1/classify/batch",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/classify?tier=basic",
        "/nowhere",
    ];
    const TYPES: [Option<&str>; 7] = [
        None,
        Some("image/png"),
        Some("image/jpeg"),
        Some("application/octet-stream"),
        Some("multipart/form-data; boundary=X"),
        Some("multipart/form-data"),
        Some("application/json"),
    ];
    let path = PATHS[usize::from(*r) % PATHS.len()];
    let method = if r & 0x80 == 0 {
        Method::POST
    } else {
        Method::GET
    };
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = TYPES[usize::from(*ct) % TYPES.len()] {
        req = req.header(header::CONTENT_TYPE, t);
    }
    match auth % 3 {
        0 => req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}")),
        1 => req = req.header(header::AUTHORIZATION, "Bearer wrong"),
        _ => {}
    }
    let req = req
        .body(Body::from(rest.to_vec()))
        .expect("a request from fixed parts");
    let f = fixtures();
    let app = f.app.clone();
    let status = f.runtime.block_on(async {
        let resp = app.oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        // Read the whole body: a response that cannot be read is a defect too.
        let _ = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .expect("response body");
        status
    });
    Some((path, status.as_u16()))
}

/// What the targets share, built once per process.
struct Fixtures {
    perturber: Perturber,
    perturber_json: String,
    recognizer_manifest: Manifest,
    protected: selective::Protected,
    /// The model each level key restores from the untouched bundle.
    restored: Vec<Vec<u8>>,
    runtime: tokio::runtime::Runtime,
    /// The server's whole application, built once (a request takes a clone).
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(build_fixtures)
}

fn build_fixtures() -> Fixtures {
    let (p_onnx, p_manifest) = scrim_core::fixtures::perturber(SIZE, 0.5);
    let perturber_json = serde_json::to_string(&p_manifest).expect("manifest json");
    let perturber =
        Perturber::from_bytes(&p_onnx, &perturber_json, NoiseSource::seeded_for_tests(0))
            .expect("fixture perturber");
    let (r_onnx, recognizer_manifest) = scrim_core::fixtures::recognizer(SIZE, &["a", "b"]);

    let layer = selective::conv_layers(&r_onnx)
        .expect("conv layers")
        .into_iter()
        .next()
        .expect("the fixture recognizer has a convolution");
    let selection = LayerSelection::new(&layer.name, (0..layer.kernels()).collect());
    let protected =
        selective::protect(&r_onnx, &[selection], 2, &mut ChaCha20Rng::seed_from_u64(5))
            .expect("protect the fixture");
    let restored = protected
        .keys
        .iter()
        .map(|k| selective::restore(&protected.onnx, &protected.bundle, k).expect("restore"))
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let model: PathBuf = dir.path().join("recognizer.onnx");
    std::fs::write(&model, &r_onnx).expect("write model");
    recognizer_manifest
        .save(&Manifest::path_for(&model))
        .expect("write manifest");
    let mut config = scrim_cloud::Config::new(model);
    config.workers = 1;
    config.max_pixels = MAX_PIXELS;
    config.tokens = vec![scrim_cloud::ApiToken::new(TOKEN)];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let app = runtime
        .block_on(async { scrim_cloud::AppState::new(&config) })
        .map(scrim_cloud::app)
        .expect("server state");
    Fixtures {
        perturber,
        perturber_json,
        recognizer_manifest,
        protected,
        restored,
        runtime,
        app,
        _dir: dir,
    }
}

/// Valid inputs to start each target's corpus from (a fuzzer mutates these far more usefully
/// than random bytes). `scripts/fuzz` writes them into `corpus/<target>/` before it starts.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let f = fixtures();
    let png = |w: u32, h: u32| {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        imaging::encode_png(&img).expect("png")
    };
    match target {
        "image_decode" => vec![png(SIZE as u32, SIZE as u32), png(13, 5)],
        "manifest" => vec![
            f.perturber_json.clone().into_bytes(),
            serde_json::to_vec(&f.recognizer_manifest).expect("json"),
        ],
        "onnx_model" => vec![
            scrim_core::fixtures::recognizer(SIZE, &["a", "b"]).0,
            scrim_core::fixtures::perturber(SIZE, 0.5).0,
        ],
        "key_files" => vec![
            SecretKey::from_bytes([3; 32]).to_file_bytes().to_vec(),
            f.protected.keys[0].to_bytes(),
        ],
        "sealed_bundle" => vec![f.protected.bundle.clone()],
        "block_transform" => (0..4u8).map(|s| vec![s, 2, 1, 1, 9, 200, 31]).collect(),
        "server_request" => {
            let mut classify = vec![0, 1, 0];
            classify.extend(png(SIZE as u32, SIZE as u32));
            vec![classify, vec![0x82, 0, 0], vec![0x83, 0, 2]]
        }
        _ => Vec::new(),
    }
}
