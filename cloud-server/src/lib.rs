//! # scrim-cloud
//!
//! The service operator's half of Scrim: an HTTP server (axum) that classifies images perturbed
//! on the device, with a recognizer ONNX model run by scrim-core (tract).
//!
//! - Concurrent requests are grouped into dynamic micro-batches and run on a dedicated inference
//!   pool; a bounded queue answers 503 + `Retry-After` when full.
//! - Every bad input gets a 4xx JSON error with a stable [`ErrorCode`].
//! - Optional bearer tokens, request timeouts, Prometheus metrics, graceful shutdown.
//! - Service tiers for a selectively encrypted model: each tier's tokens are served the model
//!   restored with that tier's level key (restored once, at start).
//!
//! The binary (`scrim-cloud serve`, `scrim-cloud bench`, `scrim-cloud soak`) is a thin layer over
//! this library; tests drive [`app`] with `tower::ServiceExt::oneshot`, and tests of other crates
//! start a real server with [`spawn`]:
//!
//! ```no_run
//! # fn main() -> scrim_cloud::Result<()> {
//! let mut config = scrim_cloud::Config::new("runs/demo/recognizer.onnx");
//! config.listen = ([127, 0, 0, 1], 0).into();
//! let server = scrim_cloud::spawn(config)?;
//! println!("POST your perturbed PNGs to {}/v1/classify", server.url());
//! server.shutdown();
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod batcher;
pub mod bench;
pub mod cli;
mod client;
mod config;
mod connection;
mod error;
mod layers;
mod load;
mod metrics;
mod openapi;
mod routes;
mod server;
pub mod soak;
mod state;
mod tokens;
mod try_page;
mod upload;

pub use api::{
    BatchItem, BatchResponse, ClassifyResponse, LabelScore, LevelInfo, ModelInfo, ModelsResponse,
    app,
};
pub use config::{Config, EngineKind, TierConfig};
pub use error::{Error, ErrorBody, ErrorCode, ErrorResponse, Result};
pub use server::{RunningServer, run, serve, spawn};
pub use state::AppState;
pub use tokens::{ApiToken, TOKENS_ENV};
pub use try_page::{ORT_FILES, ORT_VERSION, default_ort_dir};
