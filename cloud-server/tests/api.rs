//! The API through `app().oneshot(...)`: happy paths, every bad-input case, auth, overload,
//! timeouts, the operational routes and the OpenAPI document.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use common::*;
use scrim_cloud::{BatchResponse, ClassifyResponse, ErrorCode, ModelsResponse};
use scrim_core::{BatchMode, DecodeLimits, InputSpec, Model, imaging};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_png_and_jpeg_return_ranked_softmax_scores() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    for (bytes, ct) in [
        (png(32, 32, 1), "image/png"),
        (jpeg(32, 32, 2), "image/jpeg"),
    ] {
        let reply = send(&app, post("/v1/classify", Some(ct), bytes)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(
            reply.headers[header::CONTENT_TYPE]
                .to_str()
                .expect("ct")
                .starts_with("application/json")
        );
        let r: ClassifyResponse = serde_json::from_slice(&reply.body).expect("response");
        assert_eq!(r.model, "fixture-recognizer");
        assert!(r.latency_ms >= 0.0);
        let mut names: Vec<&str> = r.labels.iter().map(|l| l.label.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["cat", "dog", "owl"]);
        assert!(
            r.labels.windows(2).all(|w| w[0].score >= w[1].score),
            "best first: {r:?}"
        );
        let sum: f32 = r.labels.iter().map(|l| l.score).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_are_the_softmax_of_the_model_logits() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    let bytes = png(32, 32, 7);
    let r: ClassifyResponse =
        serde_json::from_slice(&classify_png(&app, bytes.clone()).await.body).expect("response");
    let model = Model::load_path(&config.model, BatchMode::Single).expect("model");
    let tensor = imaging::decode_exact(&bytes, InputSpec::rgb(32, 32), DecodeLimits::default())
        .expect("decode");
    let logits = model.run(&tensor).expect("run").remove(0).data;
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    for ls in &r.labels {
        let i = LABELS
            .iter()
            .position(|l| *l == ls.label)
            .expect("known label");
        let want = (logits[i] - max).exp() / z;
        assert!(
            (ls.score - want).abs() < 1e-5,
            "{}: {} vs {want}",
            ls.label,
            ls.score
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_returns_one_result_per_part_in_order() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    let images = [png(32, 32, 11), jpeg(32, 32, 12), png(32, 32, 13)];
    let (ct, body) = multipart(&[
        ("first", Some("image/png"), &images[0]),
        ("second", Some("image/jpeg"), &images[1]),
        ("third", Some("image/png"), &images[2]),
    ]);
    let reply = send(&app, post("/v1/classify/batch", Some(&ct), body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let batch: BatchResponse = serde_json::from_slice(&reply.body).expect("response");
    assert_eq!(batch.model, "fixture-recognizer");
    let names: Vec<_> = batch.results.iter().map(|r| r.name.as_deref()).collect();
    assert_eq!(names, [Some("first"), Some("second"), Some("third")]);
    for (item, (bytes, ct)) in batch.results.iter().zip([
        (&images[0], "image/png"),
        (&images[1], "image/jpeg"),
        (&images[2], "image/png"),
    ]) {
        let single = send(&app, post("/v1/classify", Some(ct), bytes.clone())).await;
        let single: ClassifyResponse = serde_json::from_slice(&single.body).expect("single");
        assert_eq!(item.labels.len(), single.labels.len());
        for (a, b) in item.labels.iter().zip(&single.labels) {
            assert_eq!(a.label, b.label);
            assert!((a.score - b.score).abs() < 1e-5);
        }
    }
}

/// Every bad input of the single-image route: a 4xx JSON error with its stable code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_single_uploads_get_stable_4xx_codes() {
    let (_dir, mut config) = fixture_config();
    config.max_body_bytes = 8 * 1024;
    config.max_pixels = 40 * 40;
    let (_, app) = router(&config);
    let big_png = png(48, 48, 3); // noisy: ~7 KB, under the body limit, over the pixel limit
    assert!(big_png.len() < 8 * 1024);
    let mut truncated = png(32, 32, 4);
    truncated.truncate(truncated.len() / 2);
    type Case = (
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        ErrorCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "text",
            Some("image/png"),
            b"definitely not an image".to_vec(),
            ErrorCode::InvalidImage,
            "PNG",
        ),
        (
            "empty",
            Some("image/png"),
            Vec::new(),
            ErrorCode::InvalidImage,
            "image",
        ),
        (
            "truncated",
            Some("image/png"),
            truncated,
            ErrorCode::InvalidImage,
            "image",
        ),
        (
            "gif",
            Some("image/gif"),
            b"GIF89a".to_vec(),
            ErrorCode::UnsupportedMediaType,
            "image/gif",
        ),
        (
            "json",
            Some("application/json"),
            b"{}".to_vec(),
            ErrorCode::UnsupportedMediaType,
            "image/png",
        ),
        (
            "no type",
            None,
            png(32, 32, 5),
            ErrorCode::UnsupportedMediaType,
            "Content-Type",
        ),
        (
            "small",
            Some("image/png"),
            png(16, 16, 6),
            ErrorCode::WrongSize,
            "32x32",
        ),
        (
            "not square",
            Some("image/jpeg"),
            jpeg(32, 24, 6),
            ErrorCode::WrongSize,
            "perturbed",
        ),
        (
            "too many pixels",
            Some("image/png"),
            big_png,
            ErrorCode::ImageTooLarge,
            "1600",
        ),
        (
            "too large",
            Some("image/png"),
            vec![0u8; 9 * 1024],
            ErrorCode::PayloadTooLarge,
            "8192",
        ),
    ];
    for (what, ct, body, code, needle) in cases {
        let reply = send(&app, post("/v1/classify", ct, body)).await;
        let message = reply.expect_error(code);
        assert!(
            message.contains(needle),
            "{what}: {message:?} should mention {needle:?}"
        );
    }
    // A declared Content-Length over the limit is refused too.
    let mut request = post("/v1/classify", Some("image/png"), vec![0u8; 20_000]);
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, 20_000.into());
    send(&app, request)
        .await
        .expect_error(ErrorCode::PayloadTooLarge);
    // After all that the server still serves.
    assert_eq!(
        classify_png(&app, png(32, 32, 8)).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_stable_4xx_codes_naming_the_image() {
    let (_dir, mut config) = fixture_config();
    config.max_batch_images = 3;
    config.max_batch_body_bytes = 64 * 1024;
    config.max_body_bytes = 16 * 1024;
    let (_, app) = router(&config);
    let good_png = png(32, 32, 1);
    let small_png = png(8, 8, 2);
    let noise_bytes = vec![7u8; 20 * 1024];
    let huge_bytes = vec![7u8; 70 * 1024];
    let (good, small, noise, huge): (&[u8], &[u8], &[u8], &[u8]) =
        (&good_png, &small_png, &noise_bytes, &huge_bytes);
    type Case<'a> = (&'a str, Vec<Part<'a>>, ErrorCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "wrong size",
            vec![
                ("a", Some("image/png"), good),
                ("b", Some("image/png"), small),
            ],
            ErrorCode::WrongSize,
            "image 1 (\"b\")",
        ),
        (
            "garbage",
            vec![("a", Some("image/png"), &b"nope"[..])],
            ErrorCode::InvalidImage,
            "image 0",
        ),
        (
            "part type",
            vec![("a", Some("text/plain"), good)],
            ErrorCode::UnsupportedMediaType,
            "text/plain",
        ),
        (
            "no part type",
            vec![("a", None, good)],
            ErrorCode::UnsupportedMediaType,
            "Content-Type",
        ),
        (
            "too many",
            vec![("a", Some("image/png"), good); 4],
            ErrorCode::PayloadTooLarge,
            "at most 3",
        ),
        (
            "part too big",
            vec![("a", Some("image/png"), noise)],
            ErrorCode::PayloadTooLarge,
            "16384",
        ),
        (
            "body too big",
            vec![("a", Some("image/png"), huge)],
            ErrorCode::PayloadTooLarge,
            "65536",
        ),
        ("empty", vec![], ErrorCode::InvalidImage, "no image"),
    ];
    for (what, parts, code, needle) in cases {
        let (ct, body) = multipart(&parts);
        let message = send(&app, post("/v1/classify/batch", Some(&ct), body))
            .await
            .expect_error(code);
        assert!(
            message.contains(needle),
            "{what}: {message:?} should mention {needle:?}"
        );
    }
    // Not multipart at all, and a malformed multipart body.
    send(
        &app,
        post("/v1/classify/batch", Some("image/png"), good.to_vec()),
    )
    .await
    .expect_error(ErrorCode::UnsupportedMediaType);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    send(
        &app,
        post("/v1/classify/batch", Some(&ct), b"--garbage".to_vec()),
    )
    .await
    .expect_error(ErrorCode::InvalidImage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_the_v1_routes_only() {
    let (dir, mut config) = fixture_config();
    let file = dir.path().join("tokens.txt");
    std::fs::write(&file, "# clients\nfile-token-1\n").expect("write");
    config.tokens_file = Some(file);
    config.tokens = vec![scrim_cloud::ApiToken::new("code-token-2")];
    let (state, app) = router(&config);
    assert!(state.auth_enabled());
    let image = || post("/v1/classify", Some("image/png"), png(32, 32, 1));
    let reply = send(&app, image()).await;
    reply.expect_error(ErrorCode::Unauthorized);
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    send(&app, with_token(image(), "wrong"))
        .await
        .expect_error(ErrorCode::Unauthorized);
    send(&app, with_token(image(), "file-token-"))
        .await
        .expect_error(ErrorCode::Unauthorized);
    send(&app, with_token(get("/v1/models"), "nope"))
        .await
        .expect_error(ErrorCode::Unauthorized);
    let (ct, body) = multipart(&[("a", Some("image/png"), &png(32, 32, 1))]);
    send(&app, post("/v1/classify/batch", Some(&ct), body.clone()))
        .await
        .expect_error(ErrorCode::Unauthorized);
    for token in ["file-token-1", "code-token-2"] {
        assert_eq!(
            send(&app, with_token(image(), token)).await.status,
            StatusCode::OK
        );
    }
    let batch = with_token(post("/v1/classify/batch", Some(&ct), body), "file-token-1");
    assert_eq!(send(&app, batch).await.status, StatusCode::OK);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(send(&app, get(open)).await.status, StatusCode::OK, "{open}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_with_retry_after() {
    // One queue slot. A huge (wrong-size) upload holds it while the inference thread decodes
    // it; a request that arrives meanwhile must be refused at once.
    let (_dir, mut config) = fixture_config();
    config.queue = 1;
    config.max_batch_images = 1;
    config.retry_after_secs = 7;
    config.max_pixels = 25_000_000;
    config.max_body_bytes = 8 << 20;
    let (_, app) = router(&config);
    let blocker = encode(&image::RgbImage::new(5000, 5000), image::ImageFormat::Png);
    let slow = {
        let app = app.clone();
        tokio::spawn(async move { classify_png(&app, blocker).await })
    };
    wait_for_queue_depth(&app, 1).await;
    let reply = classify_png(&app, png(32, 32, 1)).await;
    let message = reply.expect_error(ErrorCode::Overloaded);
    assert_eq!(reply.headers[header::RETRY_AFTER], "7", "{message}");
    let (ct, body) = multipart(&[("a", Some("image/png"), &png(32, 32, 1))]);
    let reply = send(&app, post("/v1/classify/batch", Some(&ct), body)).await;
    reply.expect_error(ErrorCode::Overloaded);
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    // The blocker itself ends as a client error, and the slot comes back.
    slow.await.expect("join").expect_error(ErrorCode::WrongSize);
    assert_eq!(
        classify_png(&app, png(32, 32, 1)).await.status,
        StatusCode::OK
    );
    let metrics = send(&app, get("/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            "scrim_http_requests_total{route=\"/v1/classify\",status=\"503\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&metrics, "scrim_queue_depth"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_only_200_or_503_and_memory_stays_bounded() {
    let (_dir, mut config) = fixture_config();
    config.queue = 2;
    config.max_batch_images = 2;
    config.max_batch = 2;
    let (_, app) = router(&config);
    let mut tasks = Vec::new();
    for i in 0..48 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            classify_png(&app, png(32, 32, i)).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let reply = task.await.expect("join");
        match reply.status {
            StatusCode::OK => ok += 1,
            _ => {
                reply.expect_error(ErrorCode::Overloaded);
                assert!(reply.headers.contains_key(header::RETRY_AFTER));
            }
        }
    }
    assert!(ok >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_queue_up_share_one_model_run() {
    // The single inference thread is kept busy decoding a huge (wrong-size) upload while eight
    // requests arrive; they must then run as one batch.
    let (_dir, mut config) = fixture_config();
    config.max_batch = 8;
    config.max_wait_ms = 500;
    config.max_pixels = 25_000_000;
    config.max_body_bytes = 8 << 20;
    let (_, app) = router(&config);
    let blocker = {
        let app = app.clone();
        let bytes = encode(&image::RgbImage::new(5000, 5000), image::ImageFormat::Png);
        tokio::spawn(async move { classify_png(&app, bytes).await })
    };
    wait_for_queue_depth(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let uploads: Vec<Vec<u8>> = (0..8).map(|i| png(32, 32, i)).collect();
    let mut tasks = Vec::new();
    for bytes in uploads {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { classify_png(&app, bytes).await }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("join").status, StatusCode::OK);
    }
    blocker
        .await
        .expect("join")
        .expect_error(ErrorCode::WrongSize);
    let metrics = send(&app, get("/metrics")).await.text();
    let runs = metric(&metrics, "scrim_batch_size_count").expect("count");
    let images = metric(&metrics, "scrim_batch_size_sum").expect("sum");
    assert_eq!(images, 8.0);
    assert!(
        runs < 8.0,
        "8 queued images in {runs} model runs: no batching\n{metrics}"
    );
}

/// Polls `/metrics` until `scrim_queue_depth` reaches `depth`.
async fn wait_for_queue_depth(app: &axum::Router, depth: usize) {
    for _ in 0..4000 {
        let metrics = send(app, get("/metrics")).await.text();
        if metric(&metrics, "scrim_queue_depth") == Some(depth as f64) {
            return;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    panic!("the queue never reached depth {depth}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_json_errors() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    let message = send(&app, get("/v2/classify"))
        .await
        .expect_error(ErrorCode::NotFound);
    assert!(message.contains("/v2/classify"), "{message}");
    let reply = send(&app, get("/v1/classify")).await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["error"]["code"], "not_found");
    assert!(
        reply.headers[header::ALLOW]
            .to_str()
            .expect("allow")
            .contains("POST")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_the_public_manifest_fields() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    let reply = send(&app, get("/v1/models")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let raw = reply.json();
    assert!(raw["models"][0].get("producer").is_none(), "{raw}");
    let models: ModelsResponse = serde_json::from_value(raw).expect("models");
    let m = &models.models[0];
    assert_eq!(m.name, "fixture-recognizer");
    assert_eq!(m.labels, LABELS);
    assert_eq!(m.input, InputSpec::rgb(32, 32));
    assert_eq!(m.task.as_deref(), Some("fixture"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let (_dir, config) = fixture_config();
    let (state, app) = router(&config);
    assert_eq!(send(&app, get("/healthz")).await.json()["status"], "ok");
    assert_eq!(send(&app, get("/readyz")).await.json()["status"], "ready");
    classify_png(&app, png(32, 32, 1)).await;
    classify_png(&app, png(8, 8, 1)).await;
    send(&app, get("/nowhere/12345")).await;
    let reply = send(&app, get("/metrics")).await;
    assert!(
        reply.headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    let text = reply.text();
    for (series, value) in [
        (
            "scrim_http_requests_total{route=\"/v1/classify\",status=\"200\"}",
            1.0,
        ),
        (
            "scrim_http_requests_total{route=\"/v1/classify\",status=\"400\"}",
            1.0,
        ),
        (
            "scrim_http_requests_total{route=\"unmatched\",status=\"404\"}",
            1.0,
        ),
        (
            "scrim_http_request_duration_seconds_count{route=\"/v1/classify\"}",
            2.0,
        ),
        ("scrim_batch_size_count", 1.0),
        ("scrim_queue_depth", 0.0),
        ("scrim_queue_capacity", 256.0),
        ("scrim_ready", 1.0),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series}\n{text}");
    }
    assert!(text.contains("# TYPE scrim_http_request_duration_seconds histogram"));
    assert!(!text.contains("12345"), "raw paths must not become labels");
    state.set_ready(false);
    let reply = send(&app, get("/readyz")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["status"], "draining");
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);
}

/// The OpenAPI document and the router agree: every documented operation is served, and every
/// other method on a documented path is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_in_sync_with_the_routes() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    let doc = send(&app, get("/openapi.json")).await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 7, "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, item) in paths {
        let documented: Vec<String> = item
            .as_object()
            .expect("item")
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            let request = axum::http::Request::builder()
                .method(method.clone())
                .uri(path.as_str())
                .body(axum::body::Body::empty())
                .expect("request");
            let status = send(&app, request).await.status;
            if documented.contains(&method.to_string()) {
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but answers {status}"
                );
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            }
        }
    }
}
