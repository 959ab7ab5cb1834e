#![cfg(unix)]
//! The try-a-photo page (`scrim-cloud serve --try-page`, files in `cloud-server/try-page/`).
//!
//! - Conformance: photos of several sizes go through scrim-core (decode, resize, the
//!   perturber's graph, the device path, one fixed noise draw) and through the page's
//!   `device.mjs` in node with the same decoded pixels, graph outputs and noise; the model
//!   inputs, the uploads' noiseless bases and σ, and the uploads must agree bit for bit, for
//!   every perturber kind. The graph also runs in onnxruntime-web (in node) on the page's
//!   normalised input, and its outputs must match tract's up to rounding.
//! - End to end: headless Chromium loads the page from a real scrim-cloud on loopback (behind a
//!   relay that records what the browser sends), a photo is picked, the page runs the perturber
//!   with onnxruntime-web and shows the server's labels; the server must have received one
//!   upload of the model's size and never the photo. A screenshot is saved (path printed).
//!
//! They need node, Chromium and the onnxruntime-web npm package (`.ci/run` installs them). When
//! one is missing the test says so and passes, unless `SCRIM_REQUIRE_PAGE_TESTS=1` (set by
//! `scripts/test`), which makes it fail.

mod cdp;
mod fixtures;
mod proxy;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use scrim_cloud::{ApiToken, Config};
use scrim_core::imaging::{self, DecodeLimits};
use scrim_core::{BatchMode, ImageTensor, Manifest, Model, NoiseSource, Perturber};

use fixtures::{Fixture, SIZE};

/// A tool the test needs, or `None` after saying why the test is skipped (a panic instead when
/// `SCRIM_REQUIRE_PAGE_TESTS=1`).
fn need<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_none() {
        let msg = format!(
            "{what} not found; install it as .ci/run does (apt-get install chromium nodejs npm; \
             scripts/fetch-onnxruntime-web)"
        );
        assert!(
            std::env::var("SCRIM_REQUIRE_PAGE_TESTS").as_deref() != Ok("1"),
            "{msg}"
        );
        // Straight to stderr, past the test harness's capture: a skip must be seen.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
    }
    found
}

fn on_path(names: &[&str], env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn ort_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SCRIM_CLOUD_TRY_PAGE_ORT")
        .map(PathBuf::from)
        .or_else(scrim_cloud::default_ort_dir)?;
    scrim_cloud::ORT_FILES
        .iter()
        .all(|f| dir.join(f).is_file())
        .then_some(dir)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn write_model(dir: &Path, name: &str, onnx: &[u8], manifest: &Manifest) -> PathBuf {
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, onnx).expect("write onnx");
    manifest
        .save(&Manifest::path_for(&path))
        .expect("write manifest");
    path
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What scrim-core computes for one photo, and the inputs the page gets.
struct CoreCase {
    rgb: image::RgbImage,
    x: ImageTensor,
    outputs: Vec<scrim_core::Output>,
    noise: Vec<f32>,
    base: scrim_core::UploadBase,
    upload: Vec<u8>,
}

fn core_case(p: &Fixture, photo: &[u8], seed: u64) -> CoreCase {
    let rgb = imaging::decode(photo, DecodeLimits::default()).expect("decode");
    let x = imaging::to_tensor(&rgb, p.manifest.input);
    let model = Model::load(&p.onnx, p.manifest.clone(), BatchMode::Single).expect("model");
    let outputs = model.run(&x).expect("run");
    let json = serde_json::to_string(&p.manifest).expect("json");
    // The noise: the first generator of a seeded source, drawn as `UploadBase::draw` draws.
    let perturber =
        Perturber::from_bytes(&p.onnx, &json, NoiseSource::seeded_for_tests(seed)).expect("p");
    let base = perturber.upload_base(&x).expect("base");
    let mut rng = NoiseSource::seeded_for_tests(seed).rng();
    let noise: Vec<f32> = (0..base.noise_len())
        .map(|_| perturber.noise_kind().sample(&mut rng))
        .collect();
    let upload = imaging::tensor_to_rgb(&base.draw_with(&noise).expect("draw"))
        .expect("rgb")
        .into_raw();
    // The same noise through the SDK's whole path: `draw_with` is what a phone uploads.
    let sdk = perturber.perturb(photo).expect("perturb");
    let sdk = imaging::decode(&sdk.png, DecodeLimits::default()).expect("decode upload");
    assert_eq!(
        sdk.as_raw(),
        &upload,
        "{}: draw_with differs from perturb",
        p.name
    );
    CoreCase {
        rgb,
        x,
        outputs,
        noise,
        base,
        upload,
    }
}

fn bits(path: &Path) -> Vec<u32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn tensor_bits(t: &ImageTensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// Values where 8-bit quantisation is easy to get wrong: every level's midpoint and its
/// neighbours a few ulps away, the ends, and the non-finite values.
fn quantize_probes() -> Vec<f32> {
    let mut v = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        -1.0,
        2.0,
        0.0,
        1.0,
    ];
    for k in 0..=256u32 {
        let mid = (k as f32 - 0.5) / 255.0;
        for d in -3i32..=3 {
            v.push(f32::from_bits(mid.to_bits().wrapping_add_signed(d)));
        }
    }
    v
}

fn first_difference<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at {i}: scrim-core {:?}, page {:?}",
            a[i], b[i]
        ),
        None => format!("lengths {} and {}", a.len(), b.len()),
    }
}

#[test]
fn the_page_computes_the_upload_scrim_core_computes_bit_for_bit() {
    let Some(node) = need("node", on_path(&["node", "nodejs"], "SCRIM_NODE")) else {
        return;
    };
    // onnxruntime-web too, for the graph's outputs (the rest needs node only).
    let ort = need("onnxruntime-web (scripts/fetch-onnxruntime-web)", ort_dir());
    let dir = tempfile::tempdir().expect("tempdir");
    // At the model's size, shrunk by non-integer factors, shrunk a lot, and enlarged.
    let photos = [(32, 32), (97, 61), (45, 80), (640, 480), (20, 27)];
    let mut cases = Vec::new();
    for p in fixtures::perturbers() {
        for (k, &(w, h)) in photos.iter().enumerate() {
            let photo = fixtures::photo(w, h, k as u32 + 1);
            let c = core_case(&p, &photo, 100 + k as u64);
            let case_dir = dir.path().join(format!("{}-{w}x{h}", p.name));
            std::fs::create_dir_all(&case_dir).expect("mkdir");
            let outputs: Vec<serde_json::Value> = c
                .outputs
                .iter()
                .map(|o| serde_json::json!({ "dims": o.shape }))
                .collect();
            let meta = serde_json::json!({
                "manifest": p.manifest, "width": w, "height": h, "outputs": outputs,
            });
            std::fs::write(case_dir.join("meta.json"), meta.to_string()).expect("meta");
            std::fs::write(case_dir.join("rgb.bin"), c.rgb.as_raw()).expect("rgb");
            for (i, o) in c.outputs.iter().enumerate() {
                std::fs::write(case_dir.join(format!("out-{i}.bin")), f32_bytes(&o.data))
                    .expect("out");
            }
            std::fs::write(case_dir.join("noise.bin"), f32_bytes(&c.noise)).expect("noise");
            std::fs::write(case_dir.join("model.onnx"), &p.onnx).expect("model");
            cases.push((case_dir, c));
        }
    }
    std::fs::write(
        dir.path().join("quantize-in.bin"),
        f32_bytes(&quantize_probes()),
    )
    .expect("probes");
    let run = Command::new(&node)
        .arg(repo().join("tests/js/conformance.mjs"))
        .arg(dir.path())
        .args(ort.iter())
        .output()
        .expect("run node");
    print!("{}", String::from_utf8_lossy(&run.stdout));
    assert!(
        run.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    for (case_dir, c) in &cases {
        let name = case_dir.file_name().unwrap_or_default().to_string_lossy();
        // Every stage, before rounding to bytes hides a difference: the model input, then the
        // upload's noiseless base and its σ, then the upload.
        for (stage, core, file) in [
            ("model inputs", tensor_bits(&c.x), "js-x.bin"),
            ("noiseless bases", tensor_bits(c.base.base()), "js-base.bin"),
            ("σ maps", tensor_bits(c.base.sigma()), "js-sigma.bin"),
        ] {
            let js = bits(&case_dir.join(file));
            assert!(
                core == js,
                "{name}: the {stage} differ; {}",
                first_difference(&core, &js)
            );
        }
        let js_upload = std::fs::read(case_dir.join("js-upload.bin")).expect("js upload");
        assert!(
            c.upload == js_upload,
            "{name}: the uploads differ; {}",
            first_difference(&c.upload, &js_upload)
        );
        if ort.is_some() {
            check_graph_outputs(&name, case_dir, &c.outputs);
        }
        let png = std::fs::read(case_dir.join("js-upload.png")).expect("js png");
        let decoded = imaging::decode_exact(
            &png,
            scrim_core::InputSpec::rgb(SIZE, SIZE),
            DecodeLimits::default(),
        )
        .expect("the page's PNG decodes in scrim-core at the model's size");
        let decoded = imaging::tensor_to_rgb(&decoded).expect("rgb").into_raw();
        assert!(
            decoded == c.upload,
            "{name}: the page's PNG is not its upload"
        );
    }
    let core_q: Vec<u8> = quantize_probes()
        .into_iter()
        .map(scrim_core::imaging::quantize)
        .collect();
    let js_q = std::fs::read(dir.path().join("quantize-out.bin")).expect("js quantize");
    assert!(
        core_q == js_q,
        "quantisation differs; {}",
        first_difference(&core_q, &js_q)
    );
    println!("{} cases agree bit for bit", cases.len());
}

/// onnxruntime-web's outputs (the page's runtime, fed the page's normalised input) against
/// tract's: the same outputs in the same order and shapes, values equal up to floating-point
/// rounding (NaN where tract has NaN). Bit-exactness is not expected from two runtimes.
fn check_graph_outputs(name: &str, case_dir: &Path, tract: &[scrim_core::Output]) {
    let dims: Vec<Vec<usize>> =
        serde_json::from_slice(&std::fs::read(case_dir.join("js-ort.json")).expect("js-ort.json"))
            .expect("dims");
    let shapes: Vec<Vec<usize>> = tract.iter().map(|o| o.shape.clone()).collect();
    assert_eq!(dims, shapes, "{name}: output shapes");
    for (k, o) in tract.iter().enumerate() {
        let js: Vec<f32> = bits(&case_dir.join(format!("js-ort-{k}.bin")))
            .into_iter()
            .map(f32::from_bits)
            .collect();
        for (i, (&a, &b)) in o.data.iter().zip(&js).enumerate() {
            let close = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-4 * a.abs().max(1.0);
            assert!(
                close,
                "{name}: output {k} value {i}: tract {a}, onnxruntime-web {b}"
            );
        }
    }
}

/// Where the test's screenshots go: `target/tmp/try-page/`.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("try-page");
    std::fs::create_dir_all(&dir).expect("output dir");
    dir
}

#[test]
fn the_page_perturbs_in_headless_chromium_and_sends_only_the_upload() {
    let Some(chromium) = need(
        "chromium",
        on_path(
            &["chromium", "chromium-browser", "google-chrome"],
            "SCRIM_CHROMIUM",
        ),
    ) else {
        return;
    };
    let Some(ort) = need("onnxruntime-web (scripts/fetch-onnxruntime-web)", ort_dir()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = ["cat", "dog", "bird"];
    let (r_onnx, r_manifest) = scrim_core::fixtures::recognizer(SIZE, &labels);
    let recognizer = write_model(dir.path(), "recognizer", &r_onnx, &r_manifest);
    // A photo much larger than the upload, with fine grain, as a file the visitor picks.
    let photo = fixtures::photo(400, 300, 7);
    let photo_path = dir.path().join("photo.png");
    std::fs::write(&photo_path, &photo).expect("photo");

    let kinds = fixtures::perturbers();
    for p in kinds.iter().filter(|p| p.name != "noise-sigma") {
        let perturber = write_model(dir.path(), p.name, &p.onnx, &p.manifest);
        let mut config = Config::new(&recognizer);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.try_page = Some(perturber);
        config.try_page_ort = Some(ort.clone());
        // The bounded release's page authenticates with a token typed into its field.
        let token = (p.name == "bounded-grey").then_some("page-token-42");
        config.tokens = token.map(ApiToken::new).into_iter().collect();
        let server = scrim_cloud::spawn(config).expect("server");
        let relay = proxy::Recorder::start(server.addr).expect("relay");

        let mut browser = cdp::Browser::start(&chromium).expect("chromium");
        let url = format!("http://{}/try/", relay.addr);
        browser
            .call("Page.navigate", serde_json::json!({ "url": url }))
            .expect("navigate");
        let state = browser
            .wait_state(&["ready", "error"], Duration::from_secs(120))
            .expect("page loads");
        let status = browser.eval("document.getElementById('status').textContent");
        assert_eq!(state, "ready", "{}: {status:?}; {:?}", p.name, browser.log);
        if let Some(token) = token {
            browser
                .eval(&format!(
                    "document.getElementById('token').value = '{token}'"
                ))
                .expect("token");
        }
        browser
            .set_files("#photo", std::slice::from_ref(&photo_path))
            .expect("pick the photo");
        let state = browser
            .wait_state(&["done", "error"], Duration::from_secs(120))
            .expect("page answers");
        let status = browser
            .eval("document.getElementById('status').textContent")
            .expect("status");
        assert_eq!(state, "done", "{}: {status}; {:?}", p.name, browser.log);
        let shown = browser
            .eval("[...document.querySelectorAll('#labels li')].map(li => li.textContent)")
            .expect("labels");
        let shown: Vec<String> = serde_json::from_value(shown).expect("label list");
        assert_eq!(shown.len(), labels.len(), "{}: {shown:?}", p.name);
        for line in &shown {
            assert!(
                labels.iter().any(|l| line.starts_with(&format!("{l} "))),
                "{}: label line {line:?}",
                p.name
            );
        }
        let shot = output_dir().join(format!("{}.png", p.name));
        let png = browser.screenshot().expect("screenshot");
        let img = image::load_from_memory(&png).expect("the screenshot is a PNG");
        assert!(img.width() >= 600 && img.height() >= 400, "screenshot size");
        std::fs::write(&shot, &png).expect("save screenshot");
        println!(
            "{}: labels {shown:?}; screenshot {}",
            p.name,
            shot.display()
        );
        drop(browser);

        // What reached the server: the page's files, and one upload of the model's size.
        let requests = relay.requests();
        let posts: Vec<&proxy::Request> = requests.iter().filter(|r| r.method != "GET").collect();
        assert_eq!(posts.len(), 1, "{}: {requests:?}", p.name);
        let post = posts[0];
        assert_eq!(post.path, "/v1/classify");
        assert_eq!(post.header("content-type"), Some("image/png"));
        assert_eq!(
            post.header("authorization"),
            token.map(|t| format!("Bearer {t}")).as_deref()
        );
        let upload = imaging::decode_exact(
            &post.body,
            scrim_core::InputSpec::rgb(SIZE, SIZE),
            DecodeLimits::default(),
        )
        .expect("the body is a PNG of the model's size");
        assert_eq!(upload.shape(), [1, 3, SIZE, SIZE]);
        for r in requests.iter().filter(|r| r.method == "GET") {
            assert!(
                r.path.starts_with("/try") || r.path == "/favicon.ico",
                "{}: unexpected request {} {}",
                p.name,
                r.method,
                r.path
            );
        }
        // The photo never left the page: no stream holds any 64-byte piece of its file.
        let sent = relay.sent();
        for start in (0..photo.len() - 64).step_by(photo.len() / 16) {
            let piece = &photo[start..start + 64];
            assert!(
                sent.iter().all(|s| proxy::find(s, piece).is_none()),
                "{}: bytes {start}..{} of the photo were sent",
                p.name,
                start + 64
            );
        }
        server.shutdown();
    }
}
