//! The HTTP API: response types, handlers, and [`app`], which serves each [`Route`] with its
//! handler.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, Multipart, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use scrim_core::manifest::{KeyRequirement, Normalization};
use scrim_core::{InputSpec, Manifest, Role};
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::Principal;
use crate::batcher::Admission;
use crate::layers;
use crate::routes::Route;
use crate::state::{AppState, Limits, ModelSlot};
use crate::{Error, Result};

/// One label with its probability (softmax of the logits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// Class name from the manifest.
    pub label: String,
    /// Probability in `[0, 1]`; the scores of one image sum to 1.
    pub score: f32,
}

/// Response of `POST /v1/classify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResponse {
    /// Every label, best first.
    pub labels: Vec<LabelScore>,
    /// The manifest name of the model that answered.
    pub model: String,
    /// Server-side time for the request, in milliseconds.
    pub latency_ms: f64,
}

/// One image of a batch response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    /// The multipart field name of the image, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every label, best first.
    pub labels: Vec<LabelScore>,
}

/// Response of `POST /v1/classify/batch`: one result per part, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// Results in the order of the parts.
    pub results: Vec<BatchItem>,
    /// The manifest name of the model that answered.
    pub model: String,
    /// Server-side time for the request, in milliseconds.
    pub latency_ms: f64,
}

/// What `GET /v1/models` says about a model: the manifest's public fields, listed one by one so
/// that a field added to the manifest later is not published by accident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Manifest name (the `model` of classify responses).
    pub name: String,
    /// Always `recognizer`.
    pub role: Role,
    /// The desired task, e.g. `gender`.
    pub task: Option<String>,
    /// Class names, in logit order.
    pub labels: Vec<String>,
    /// The input size uploads must have.
    pub input: InputSpec,
    /// Normalisation the server applies to `[0, 1]` pixels.
    pub normalization: Normalization,
    /// The key-based transform uploads must go through, if any (the scheme, never a key).
    pub key: Option<KeyRequirement>,
    /// Manifest format version.
    pub format_version: u32,
    /// The training run the recognizer comes from (absent for models exported before run
    /// names existed).
    #[serde(default)]
    pub run_name: Option<String>,
    /// The run's id: the perturber co-trained with this recognizer carries the same one, so an
    /// app can check that it uploads through the right perturber. Absent for older models.
    #[serde(default)]
    pub run_id: Option<String>,
    /// The protection level served (0 = the model file as configured; for a selectively
    /// encrypted model, nothing restored).
    #[serde(default)]
    pub level: u32,
    /// The service tiers served this model.
    #[serde(default)]
    pub tiers: Vec<String>,
}

impl From<&Manifest> for ModelInfo {
    fn from(m: &Manifest) -> Self {
        Self {
            name: m.name.clone(),
            role: m.role,
            task: m.task.clone(),
            labels: m.labels.clone(),
            input: m.input,
            normalization: m.normalization.clone(),
            key: m.key.clone(),
            format_version: m.format_version,
            run_name: m.run_name.clone(),
            run_id: m.run_id.clone(),
            level: 0,
            tiers: Vec::new(),
        }
    }
}

/// One protection level the server serves (in `GET /v1/models`); never a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelInfo {
    /// The level ℓ (0 = nothing restored).
    pub level: u32,
    /// Number of levels M of the bundle, when the model is selectively encrypted.
    pub of: Option<usize>,
    /// The tiers served at this level.
    pub tiers: Vec<String>,
}

/// Response of `GET /v1/models`: the models the caller may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelsResponse {
    /// The model the caller is served (exactly one).
    pub models: Vec<ModelInfo>,
    /// Every level some caller is served, with its tiers (names only, never keys or tokens).
    #[serde(default)]
    pub levels: Vec<LevelInfo>,
}

/// The whole HTTP application. Tests drive it with `tower::ServiceExt::oneshot`; the server
/// serves it with `axum::serve`.
pub fn app(state: AppState) -> Router {
    let mut v1 = Router::new();
    let mut ops = Router::new();
    for route in Route::ALL {
        if route.authenticated() {
            v1 = v1.route(route.path(), endpoint(route, &state));
        } else {
            ops = ops.route(route.path(), endpoint(route, &state));
        }
    }
    let v1 = v1.route_layer(middleware::from_fn_with_state(
        state.clone(),
        layers::require_token,
    ));
    let mut router = v1.merge(ops);
    if let Some(page) = state.try_page() {
        router = router.merge(page.router());
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            layers::time_limit,
        ))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send + 'static>| {
                Error::Internal("a request handler panicked".into()).into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            layers::observe,
        ))
        .with_state(state)
}

/// The handler of a route, with its body limit.
fn endpoint(route: Route, state: &AppState) -> MethodRouter<AppState> {
    let limits = state.limits();
    match route {
        Route::Classify => post(classify).layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        Route::ClassifyBatch => {
            post(classify_batch).layer(DefaultBodyLimit::max(limits.max_batch_body_bytes))
        }
        Route::Models => get(models),
        Route::Healthz => get(healthz),
        Route::Readyz => get(readyz),
        Route::Metrics => get(metrics),
        Route::OpenApi => get(openapi),
    }
}

async fn classify(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Result<Json<ClassifyResponse>> {
    let started = Instant::now();
    let slot = state.slot(principal.level)?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    check_image_type(content_type)?;
    // Admission before the body: a request holds a queue slot while its body arrives, so the
    // bodies held in memory are bounded by `queue`, not by the number of connections.
    let admission = slot.batcher.admit(1)?;
    // From here until its image is queued, a batch being assembled waits for this request.
    let arrival = slot.batcher.arrival();
    let limits = state.limits();
    let bytes = within_body_timeout(limits, Bytes::from_request(request, &state))
        .await?
        .map_err(|e| body_error(&e, limits.max_body_bytes))?;
    let mut results = slot.batcher.run(admission, vec![bytes], arrival).await?;
    let logits = results
        .pop()
        .unwrap_or_else(|| Err(Error::Internal("no result".into())))?;
    Ok(Json(ClassifyResponse {
        labels: rank(&slot.manifest.labels, &logits),
        model: slot.manifest.name.clone(),
        latency_ms: millis(started),
    }))
}

async fn classify_batch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Result<Json<BatchResponse>> {
    let started = Instant::now();
    let slot = state.slot(principal.level)?;
    // One slot before any byte of the body is read, one more before each further part: the
    // images held in memory are bounded by `queue`, not by the number of connections.
    let mut admission = slot.batcher.admit(1)?;
    let arrival = slot.batcher.arrival();
    let limits = state.limits();
    let read = read_parts(&state, slot, &mut admission, request);
    let (names, uploads) = within_body_timeout(limits, read).await??;
    let results = slot.batcher.run(admission, uploads, arrival).await?;
    let mut items = Vec::with_capacity(results.len());
    for (index, (name, result)) in names.into_iter().zip(results).enumerate() {
        let logits = result.map_err(|e| e.in_part(index, name.as_deref()))?;
        items.push(BatchItem {
            name,
            labels: rank(&slot.manifest.labels, &logits),
        });
    }
    Ok(Json(BatchResponse {
        results: items,
        model: slot.manifest.name.clone(),
        latency_ms: millis(started),
    }))
}

/// Reads the images of a multipart batch body, taking one more queue slot before each image
/// after the first.
async fn read_parts(
    state: &AppState,
    slot: &ModelSlot,
    admission: &mut Admission,
    request: Request,
) -> Result<(Vec<Option<String>>, Vec<Bytes>)> {
    let limits = state.limits();
    let mut multipart = Multipart::from_request(request, state).await.map_err(|_| {
        Error::UnsupportedMediaType(
            "send multipart/form-data with one image/png or image/jpeg part per image".into(),
        )
    })?;
    let mut names: Vec<Option<String>> = Vec::new();
    let mut uploads: Vec<Bytes> = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(e.status(), limits.max_batch_body_bytes))?;
        let Some(field) = field else { break };
        let index = uploads.len();
        if index >= limits.max_batch_images {
            return Err(Error::PayloadTooLarge(format!(
                "too many images: at most {} per batch request",
                limits.max_batch_images
            )));
        }
        let name = field.name().map(str::to_owned);
        check_image_type(field.content_type()).map_err(|e| e.in_part(index, name.as_deref()))?;
        if index > 0 {
            slot.batcher.admit_more(admission, 1)?;
        }
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), limits.max_batch_body_bytes))?;
        if bytes.len() > limits.max_body_bytes {
            return Err(Error::PayloadTooLarge(format!(
                "the image is {} bytes, the limit is {} bytes",
                bytes.len(),
                limits.max_body_bytes
            ))
            .in_part(index, name.as_deref()));
        }
        names.push(name);
        uploads.push(bytes);
    }
    if uploads.is_empty() {
        return Err(Error::InvalidImage(
            "the batch holds no image: send one multipart part per image".into(),
        ));
    }
    Ok((names, uploads))
}

/// Bounds reading a body by `body_timeout`: an admitted request holds a queue slot meanwhile.
async fn within_body_timeout<T>(
    limits: Limits,
    read: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(limits.body_timeout, read)
        .await
        .map_err(|_| Error::BodyTimeout {
            timeout_ms: limits.body_timeout.as_millis() as u64,
        })
}

async fn models(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<ModelsResponse>> {
    let slot = state.slot(principal.level)?;
    let mut info = ModelInfo::from(&slot.manifest);
    info.level = slot.level.0;
    info.tiers = slot.tiers.clone();
    let levels = state
        .slots()
        .filter(|s| state.auth().serves(s.level))
        .map(|s| LevelInfo {
            level: s.level.0,
            of: state.levels_total(),
            tiers: s.tiers.clone(),
        })
        .collect();
    Ok(Json(ModelsResponse {
        models: vec![info],
        levels,
    }))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "draining" })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        state.render_metrics(),
    )
        .into_response()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn not_found(method: Method, uri: Uri) -> Error {
    Error::NotFound(format!(
        "no route for {method} {}; the API is described at GET /openapi.json",
        uri.path()
    ))
}

/// Accepts the upload types the SDK sends. Parameters (`; charset=…`) are ignored.
fn check_image_type(content_type: Option<&str>) -> Result<()> {
    let essence = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match essence.as_deref() {
        Some("image/png" | "image/jpeg") => Ok(()),
        Some(other) => Err(Error::UnsupportedMediaType(format!(
            "content type {other:?} is not accepted; send image/png or image/jpeg"
        ))),
        None => Err(Error::UnsupportedMediaType(
            "no Content-Type: send image/png or image/jpeg".into(),
        )),
    }
}

fn body_error(rejection: &BytesRejection, limit: usize) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge(format!("the body exceeds the limit of {limit} bytes"))
    } else {
        Error::InvalidImage(format!("cannot read the body: {}", rejection.body_text()))
    }
}

fn multipart_error(status: StatusCode, limit: usize) -> Error {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge(format!("the body exceeds the limit of {limit} bytes"))
    } else {
        Error::InvalidImage("malformed multipart/form-data body".into())
    }
}

/// Softmax of the logits, paired with the labels, best first.
pub(crate) fn rank(labels: &[String], logits: &[f32]) -> Vec<LabelScore> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut out: Vec<LabelScore> = labels
        .iter()
        .zip(&exp)
        .map(|(label, e)| {
            let score = e / sum;
            LabelScore {
                label: label.clone(),
                score: if score.is_finite() { score } else { 0.0 },
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

fn millis(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rank_is_a_sorted_softmax() {
        let ranked = rank(&labels(&["a", "b", "c"]), &[0.0, 2.0, 1.0]);
        let order: Vec<&str> = ranked.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
        let sum: f32 = ranked.iter().map(|l| l.score).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        let e = [1.0f32, 2.0_f32.exp(), 1.0_f32.exp()];
        assert!((ranked[0].score - e[1] / e.iter().sum::<f32>()).abs() < 1e-6);
        // Large logits do not overflow.
        let ranked = rank(&labels(&["x", "y"]), &[1000.0, 999.0]);
        assert!(
            ranked.iter().all(|l| l.score.is_finite() && l.score > 0.0),
            "{ranked:?}"
        );
    }

    #[test]
    fn content_types() {
        for ok in ["image/png", "image/jpeg", "IMAGE/PNG", "image/jpeg; q=1"] {
            assert!(check_image_type(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            Some("image/gif"),
            Some("application/octet-stream"),
            Some("text/plain"),
            None,
        ] {
            let e = check_image_type(bad).expect_err("rejected");
            assert_eq!(e.code(), crate::ErrorCode::UnsupportedMediaType);
        }
    }
}
