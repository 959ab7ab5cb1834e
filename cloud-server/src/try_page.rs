//! The try-a-photo page (`serve --try-page PERTURBER.onnx`, off by default): a static page under
//! `/try/` where the visitor's browser plays the phone. It runs the perturber with
//! onnxruntime-web, applies the device path of `try-page/device.mjs` (scrim-core's arithmetic,
//! checked bit for bit by `tests/tests/try_page/`) and posts only the upload to
//! `/v1/classify`, the same endpoint and the same bearer token as any client.
//!
//! Everything served is read once at start and held in memory under fixed names: the page's own
//! files (compiled in), the perturber and its manifest, and two files of the onnxruntime-web npm
//! package. No request path reaches the file system. Every response carries a strict
//! Content-Security-Policy (same-origin scripts, no inline script, WebAssembly allowed,
//! connections only to this origin).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use scrim_core::{BatchMode, Manifest, Model, Role};

use crate::{Error, Result};

/// The onnxruntime-web version the page is written and tested against
/// (`scripts/fetch-onnxruntime-web` installs it).
pub const ORT_VERSION: &str = "1.30.0";

/// The files of onnxruntime-web's `dist/` folder the page loads: the WebAssembly-only ES module
/// bundle and its WebAssembly binary.
pub const ORT_FILES: [&str; 2] = ["ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"];

/// Largest onnxruntime-web file read (the WebAssembly binary is about 14 MiB).
const MAX_ORT_BYTES: u64 = 64 << 20;

/// Where `scripts/fetch-onnxruntime-web` puts the package, under the home folder.
const DEFAULT_ORT_DIR: &str = ".cache/scrim/onnxruntime-web/node_modules/onnxruntime-web/dist";

const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
                   style-src 'self'; img-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's own files, compiled into the binary.
const PAGE: [(&str, &str, &str); 4] = [
    (
        "/try/",
        "text/html; charset=utf-8",
        include_str!("../try-page/index.html"),
    ),
    (
        "/try/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../try-page/app.js"),
    ),
    (
        "/try/device.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../try-page/device.mjs"),
    ),
    (
        "/try/style.css",
        "text/css; charset=utf-8",
        include_str!("../try-page/style.css"),
    ),
];

/// The default onnxruntime-web folder: `~/.cache/scrim/onnxruntime-web/node_modules/onnxruntime-web/dist`.
pub fn default_ort_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(DEFAULT_ORT_DIR))
}

/// The files of the page, loaded and checked at start.
#[derive(Clone)]
pub(crate) struct TryPage {
    /// `(path, content type, body)`.
    files: Arc<Vec<(String, &'static str, Bytes)>>,
}

impl std::fmt::Debug for TryPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&str> = self.files.iter().map(|(p, _, _)| p.as_str()).collect();
        f.debug_struct("TryPage").field("files", &paths).finish()
    }
}

impl TryPage {
    /// Loads the perturber at `perturber` (with its manifest beside it) and the onnxruntime-web
    /// files of `ort_dir`, and checks that the perturber belongs with `recognizer`: a
    /// perturber (not a recognizer), the same input size, the same training run when both name
    /// one, and a recognizer that needs no secret key (the page cannot hold one).
    ///
    /// # Errors
    /// [`Error::Config`] naming the file or the mismatch.
    pub(crate) fn load(perturber: &Path, ort_dir: &Path, recognizer: &Manifest) -> Result<Self> {
        let bad = |msg: String| Error::Config(format!("--try-page: {msg}"));
        let model = Model::load_path(perturber, BatchMode::Single)
            .map_err(|e| bad(format!("{}: {e}", perturber.display())))?;
        let manifest = model.manifest();
        if manifest.role != Role::Perturber {
            return Err(bad(format!(
                "{} is a {:?}; the page runs the perturber (perturber.onnx)",
                perturber.display(),
                manifest.role
            )));
        }
        if manifest.input != recognizer.input {
            return Err(bad(format!(
                "the perturber makes {} uploads, the recognizer takes {}",
                manifest.input.describe(),
                recognizer.input.describe()
            )));
        }
        scrim_core::manifest::check_pair(manifest, recognizer).map_err(|e| bad(e.to_string()))?;
        if let Some(key) = &recognizer.key {
            return Err(bad(format!(
                "the recognizer was trained behind a secret {} key, which a public page cannot apply",
                key.scheme
            )));
        }
        let onnx =
            scrim_core::read_file_limited(perturber, scrim_core::model_limits::MAX_MODEL_BYTES)
                .map_err(|e| bad(e.to_string()))?;
        let manifest_json =
            serde_json::to_vec(manifest).map_err(|e| bad(format!("manifest: {e}")))?;
        let mut files: Vec<(String, &'static str, Bytes)> = PAGE
            .iter()
            .map(|&(path, kind, body)| {
                (path.to_string(), kind, Bytes::from_static(body.as_bytes()))
            })
            .collect();
        files.push((
            "/try/model/perturber.onnx".into(),
            "application/octet-stream",
            Bytes::from(onnx),
        ));
        files.push((
            "/try/model/perturber.json".into(),
            "application/json",
            Bytes::from(manifest_json),
        ));
        for name in ORT_FILES {
            let path = ort_dir.join(name);
            let body = scrim_core::read_file_limited(&path, MAX_ORT_BYTES).map_err(|e| {
                bad(format!(
                    "{e}: the page needs onnxruntime-web {ORT_VERSION}'s dist folder \
                     (scripts/fetch-onnxruntime-web installs it; or pass --try-page-ort DIR)"
                ))
            })?;
            let kind = if name.ends_with(".wasm") {
                "application/wasm"
            } else {
                "text/javascript; charset=utf-8"
            };
            files.push((format!("/try/ort/{name}"), kind, Bytes::from(body)));
        }
        Ok(Self {
            files: Arc::new(files),
        })
    }

    /// The page's routes: `GET /try` (a redirect to `/try/`) and one route per file.
    pub(crate) fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let mut router =
            Router::new().route("/try", get(|| async { Redirect::permanent("/try/") }));
        for (path, kind, body) in self.files.iter() {
            let (kind, body) = (*kind, body.clone());
            router = router.route(path, get(move || async move { serve(kind, body) }));
        }
        router
    }
}

fn serve(kind: &'static str, body: Bytes) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
