//! The API's operational side through `app().oneshot(...)`: auth, overload and batching under
//! load, unknown routes, the model list, health and metrics, and the OpenAPI document.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use common::*;
use scrim_cloud::{ErrorCode, ModelsResponse};
use scrim_core::InputSpec;

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
    // One queue slot. An upload whose body is still arriving holds it (admission comes before
    // the body); a request that arrives meanwhile must be refused at once.
    let (_dir, mut config) = fixture_config();
    config.queue = 1;
    config.max_batch_images = 1;
    config.retry_after_secs = 7;
    let (_, app) = router(&config);
    let upload = png(32, 32, 1);
    let (request, stream) = streamed_post("/v1/classify", "image/png");
    stream.send(upload[..10].to_vec()).expect("send");
    let slow = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, request).await })
    };
    wait_for_queue_depth(&app, 1).await;
    let reply = classify_png(&app, png(32, 32, 1)).await;
    let message = reply.expect_error(ErrorCode::Overloaded);
    assert_eq!(reply.headers[header::RETRY_AFTER], "7", "{message}");
    let (ct, body) = multipart(&[("a", Some("image/png"), &png(32, 32, 1))]);
    let reply = send(&app, post("/v1/classify/batch", Some(&ct), body)).await;
    reply.expect_error(ErrorCode::Overloaded);
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    // The slow upload completes, and the slot comes back.
    stream.send(upload[10..].to_vec()).expect("send");
    drop(stream);
    assert_eq!(slow.await.expect("join").status, StatusCode::OK);
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
    // An upload whose body is still arriving counts as on its way, so the inference thread
    // holding the first of eight requests waits (up to max_wait) for the others: they must run
    // as one batch.
    let (_dir, mut config) = fixture_config();
    config.max_batch = 8;
    config.max_wait_ms = 500;
    let (_, app) = router(&config);
    let upload = png(32, 32, 9);
    let (request, stream) = streamed_post("/v1/classify", "image/png");
    stream.send(upload[..10].to_vec()).expect("send");
    let blocker = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, request).await })
    };
    wait_for_queue_depth(&app, 1).await;
    let uploads: Vec<Vec<u8>> = (0..8).map(|i| png(32, 32, i)).collect();
    let mut tasks = Vec::new();
    for bytes in uploads {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { classify_png(&app, bytes).await }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("join").status, StatusCode::OK);
    }
    let metrics = send(&app, get("/metrics")).await.text();
    stream.send(upload[10..].to_vec()).expect("send");
    drop(stream);
    assert_eq!(blocker.await.expect("join").status, StatusCode::OK);
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
    // The fixture, like models exported before run ids, has none: shown as null.
    assert_eq!((&m.run_name, &m.run_id), (&None, &None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_shows_the_run_name_and_id() {
    let (_dir, config) = fixture_config();
    let manifest = scrim_core::Manifest::path_for(&config.model);
    scrim_core::Manifest::load(&manifest)
        .expect("manifest")
        .with_run("utk-gender", "0123456789abcdef")
        .save(&manifest)
        .expect("save");
    let (_, app) = router(&config);
    let raw = send(&app, get("/v1/models")).await.json();
    assert_eq!(raw["models"][0]["run_name"], "utk-gender", "{raw}");
    assert_eq!(raw["models"][0]["run_id"], "0123456789abcdef", "{raw}");
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
