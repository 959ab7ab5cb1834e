//! The server on either engine: `engine = "ort"` serves the same scores as tract (skipped, saying
//! so, where no onnxruntime library is at hand), and a misconfigured engine is refused at start.

mod common;

use axum::http::StatusCode;
use common::*;
use scrim_cloud::{AppState, ClassifyResponse, EngineKind};

async fn scores(config: &scrim_cloud::Config) -> Vec<(String, f32)> {
    let (_, app) = router(config);
    let reply = classify_png(&app, png(32, 32, 7)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let r: ClassifyResponse = serde_json::from_slice(&reply.body).expect("response");
    let mut out: Vec<(String, f32)> = r.labels.into_iter().map(|l| (l.label, l.score)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnxruntime_serves_the_scores_tract_serves() {
    let Some(library) = scrim_core::fixtures::onnxruntime_library() else {
        eprintln!(
            "skipped: no onnxruntime library (set SCRIM_ORT_LIBRARY, or SCRIM_PYTHON to a Python \
             with onnxruntime, as scripts/test does)"
        );
        return;
    };
    let (_dir, mut config) = fixture_config();
    let tract = scores(&config).await;
    config.engine = EngineKind::Ort;
    config.ort_library = Some(library);
    let ort = scores(&config).await;
    assert_eq!(tract.len(), ort.len());
    for ((a, p), (b, q)) in tract.iter().zip(&ort) {
        assert_eq!(a, b);
        assert!((p - q).abs() < 1e-4, "{a}: tract {p}, onnxruntime {q}");
    }
}

#[test]
fn the_ort_engine_needs_a_library_that_loads() {
    let (_dir, mut config) = fixture_config();
    config.engine = EngineKind::Ort;
    let err = AppState::new(&config).expect_err("no library given");
    assert!(err.to_string().contains("ort_library"), "{err}");
    config.ort_library = Some("/nowhere/libonnxruntime.so".into());
    let err = AppState::new(&config).expect_err("no such library");
    let want = if cfg!(feature = "ort") {
        "/nowhere/libonnxruntime.so"
    } else {
        "`ort` cargo feature"
    };
    assert!(err.to_string().contains(want), "{err}");
}
