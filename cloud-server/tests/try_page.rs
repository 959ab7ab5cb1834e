//! The try-a-photo page's routes (`--try-page`): off by default, fixed files with a strict
//! Content-Security-Policy, no path reaching the disk, and a perturber refused at start when it
//! does not belong with the recognizer. The page's behaviour in a browser is tested end to end
//! in `tests/tests/try_page/`.

mod common;

use std::path::{Path, PathBuf};

use axum::http::{StatusCode, header};
use common::*;
use scrim_cloud::{AppState, Error};

/// Stand-ins for onnxruntime-web's two files: the server serves them, it never runs them.
fn fake_ort(dir: &Path) -> PathBuf {
    let ort = dir.join("ort");
    std::fs::create_dir_all(&ort).expect("mkdir");
    for name in scrim_cloud::ORT_FILES {
        std::fs::write(ort.join(name), format!("stand-in for {name}")).expect("write");
    }
    ort
}

fn write_perturber(dir: &Path, name: &str, size: usize) -> PathBuf {
    let (onnx, manifest) = scrim_core::fixtures::perturber(size, 0.3);
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, onnx).expect("write");
    manifest
        .save(&scrim_core::Manifest::path_for(&path))
        .expect("manifest");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_off_by_default_and_serves_fixed_files_when_on() {
    let (dir, mut config) = fixture_config();
    let (_, app) = router(&config);
    assert_eq!(send(&app, get("/try/")).await.status, StatusCode::NOT_FOUND);

    config.try_page = Some(write_perturber(dir.path(), "perturber", SIZE));
    config.try_page_ort = Some(fake_ort(dir.path()));
    config.tokens = vec![scrim_cloud::ApiToken::new("page-test-token")];
    let (_, app) = router(&config);
    let redirect = send(&app, get("/try")).await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers[header::LOCATION], "/try/");
    for (path, kind) in [
        ("/try/", "text/html"),
        ("/try/app.js", "text/javascript"),
        ("/try/device.mjs", "text/javascript"),
        ("/try/style.css", "text/css"),
        ("/try/model/perturber.onnx", "application/octet-stream"),
        ("/try/model/perturber.json", "application/json"),
        ("/try/ort/ort.wasm.bundle.min.mjs", "text/javascript"),
        ("/try/ort/ort-wasm-simd-threaded.wasm", "application/wasm"),
    ] {
        // Public, like the app that ships the perturber: no token needed.
        let reply = send(&app, get(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let h = &reply.headers;
        assert!(
            h[header::CONTENT_TYPE]
                .to_str()
                .unwrap_or("")
                .starts_with(kind),
            "{path}"
        );
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("csp");
        assert!(csp.starts_with("default-src 'none'; script-src 'self' 'wasm-unsafe-eval';"));
        assert!(csp.contains("connect-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    }
    let html = send(&app, get("/try/")).await.text();
    assert!(html.contains(r#"<script type="module" src="app.js"></script>"#));
    assert!(!html.contains("<script>"), "no inline script");
    let manifest: scrim_core::Manifest =
        serde_json::from_slice(&send(&app, get("/try/model/perturber.json")).await.body)
            .expect("the served manifest parses");
    assert_eq!(manifest.role, scrim_core::Role::Perturber);
    // Nothing else: no listing, no traversal, no other file of the folders read.
    for path in [
        "/try/model/",
        "/try/ort/",
        "/try/ort/ort.min.js",
        "/try/../recognizer.onnx",
        "/try/model/recognizer.onnx",
        "/try/%2e%2e/recognizer.json",
    ] {
        let status = send(&app, get(path)).await.status;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // The API keeps its token.
    let reply = send(
        &app,
        post("/v1/classify", Some("image/png"), png(32, 32, 1)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn a_perturber_that_does_not_belong_is_refused_at_start() {
    let (dir, config) = fixture_config();
    let ort = fake_ort(dir.path());
    let start = |perturber: PathBuf, ort: &Path| {
        let mut c = config.clone();
        c.try_page = Some(perturber);
        c.try_page_ort = Some(ort.to_path_buf());
        match AppState::new(&c) {
            Ok(_) => panic!("started"),
            Err(Error::Config(msg)) => msg,
            Err(other) => panic!("not a config error: {other}"),
        }
    };
    let small = write_perturber(dir.path(), "small", SIZE / 2);
    let msg = start(small, &ort);
    assert!(
        msg.contains("--try-page") && msg.contains("3x16x16"),
        "{msg}"
    );
    let msg = start(config.model.clone(), &ort);
    assert!(msg.contains("Recognizer"), "{msg}");
    let msg = start(dir.path().join("missing.onnx"), &ort);
    assert!(
        msg.contains("missing.json") || msg.contains("missing.onnx"),
        "{msg}"
    );
    let good = write_perturber(dir.path(), "perturber", SIZE);
    let msg = start(good, &dir.path().join("no-ort-here"));
    assert!(msg.contains("fetch-onnxruntime-web"), "{msg}");
}
