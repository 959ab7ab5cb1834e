//! The middleware: the request time limit and metrics + logging of every route, and the bearer
//! token check of the `/v1` routes.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Error;
use crate::routes::Route;
use crate::state::AppState;

/// Bounds the whole request (body, queue, inference) by the configured timeout.
pub(crate) async fn time_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.limits().request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Timeout {
            timeout_ms: limit.as_millis() as u64,
        }
        .into_response(),
    }
}

/// Middleware for the `/v1` routes: resolves the caller or answers 401.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match state.auth().resolve(header) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Records metrics and a log line per request (route pattern, status, latency; never a body, a
/// query string or a header), and gives axum's bare 405 a JSON body.
pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED && !is_json(&response) {
        let allow = response.headers().get(header::ALLOW).cloned();
        let expected = Route::ALL
            .iter()
            .find(|r| r.path() == route)
            .map_or_else(String::new, |r| format!("; use {}", r.method()));
        let mut replaced = Error::NotFound(format!("{method} is not allowed on {route}{expected}"))
            .into_response();
        *replaced.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        if let Some(allow) = allow {
            replaced.headers_mut().insert(header::ALLOW, allow);
        }
        response = replaced;
    }
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    state.metrics().record_request(route, status, seconds);
    if status >= 500 {
        tracing::warn!(%method, route, status, latency_ms = seconds * 1e3, "request");
    } else {
        tracing::debug!(%method, route, status, latency_ms = seconds * 1e3, "request");
    }
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}
