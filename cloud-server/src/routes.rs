//! The routes of the API, as data: path, method, and whether the bearer token guards them.
//! `app` serves exactly these, the middleware names them in errors, and the
//! OpenAPI document is checked against them.

use axum::http::Method;

/// Every route of the API. `app` registers exactly these, and the OpenAPI document is checked
/// against this list by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Classify,
    ClassifyBatch,
    Models,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

impl Route {
    pub(crate) const ALL: [Route; 7] = [
        Route::Classify,
        Route::ClassifyBatch,
        Route::Models,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::OpenApi,
    ];

    pub(crate) fn path(self) -> &'static str {
        match self {
            Route::Classify => "/v1/classify",
            Route::ClassifyBatch => "/v1/classify/batch",
            Route::Models => "/v1/models",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
        }
    }

    pub(crate) fn method(self) -> Method {
        match self {
            Route::Classify | Route::ClassifyBatch => Method::POST,
            _ => Method::GET,
        }
    }

    /// Whether the route sits behind the bearer token (the `/v1` API); the operational routes
    /// are open so that probes and scrapers need no secret.
    pub(crate) fn authenticated(self) -> bool {
        self.path().starts_with("/v1/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_unique_and_v1_is_authenticated() {
        for (i, a) in Route::ALL.iter().enumerate() {
            for b in &Route::ALL[i + 1..] {
                assert!(
                    (a.path(), a.method()) != (b.path(), b.method()),
                    "{a:?} {b:?}"
                );
            }
        }
        assert!(Route::Classify.authenticated() && Route::Models.authenticated());
        assert!(!Route::Healthz.authenticated() && !Route::Metrics.authenticated());
    }
}
