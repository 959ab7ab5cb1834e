//! Shared helpers for the integration tests: fixture models on disk, images, requests.
#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use image::{ImageFormat, RgbImage};
use scrim_cloud::{AppState, Config, ErrorCode, ErrorResponse};
use serde_json::Value;
use tower::ServiceExt as _;

pub const SIZE: usize = 32;
pub const LABELS: [&str; 3] = ["cat", "dog", "owl"];

/// Writes the fixture recognizer (`recognizer.onnx` + `recognizer.json`) into `dir`.
pub fn write_fixture(dir: &Path, size: usize) -> PathBuf {
    let (onnx, manifest) = scrim_core::fixtures::recognizer(size, &LABELS);
    let path = dir.join("recognizer.onnx");
    std::fs::write(&path, onnx).expect("write onnx");
    manifest
        .save(&scrim_core::Manifest::path_for(&path))
        .expect("write manifest");
    path
}

/// A fixture model on disk plus a config for it; keep the `TempDir` alive.
pub fn fixture_config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_fixture(dir.path(), SIZE);
    let mut config = Config::new(model);
    config.listen = ([127, 0, 0, 1], 0).into();
    config.workers = 1;
    (dir, config)
}

/// The router for `config` (auth, limits and batching as configured).
pub fn router(config: &Config) -> (AppState, Router) {
    let state = AppState::new(config).expect("state");
    (state.clone(), scrim_cloud::app(state))
}

/// A deterministic noisy RGB image.
pub fn rgb(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    RgbImage::from_fn(w, h, |_, _| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        image::Rgb([s as u8, (s >> 8) as u8, (s >> 16) as u8])
    })
}

pub fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format)
        .expect("encode");
    out
}

pub fn png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    encode(&rgb(w, h, seed), ImageFormat::Png)
}

pub fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    encode(&rgb(w, h, seed), ImageFormat::Jpeg)
}

/// One multipart part: field name, content type (`None`: no header), bytes.
pub type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

pub const BOUNDARY: &str = "scrim-test-boundary-5f2a9c";

/// A `multipart/form-data` body and its content type.
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{name}.img\"\r\n")
                .as_bytes(),
        );
        if let Some(ct) = content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an error response with `code` and its documented status; returns the message.
    pub fn expect_error(&self, code: ErrorCode) -> String {
        let parsed: ErrorResponse = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an error body ({e}): {}", self.text()));
        assert_eq!(parsed.error.code, code, "{}", self.text());
        assert_eq!(self.status, code.status(), "{}", self.text());
        parsed.error.message
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .expect("body")
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn post(path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut builder = Request::post(path);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder.body(Body::from(body)).expect("request")
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

pub fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    let value = format!("Bearer {token}").parse().expect("header");
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request
}

pub async fn classify_png(app: &Router, bytes: Vec<u8>) -> Reply {
    send(app, post("/v1/classify", Some("image/png"), bytes)).await
}

/// The value of a metric line `name{labels} value` (exact prefix match on `name{labels}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// A request over a real TCP connection (HTTP/1.1), for the loopback tests.
pub async fn http(addr: std::net::SocketAddr, request: Request<Body>) -> std::io::Result<Reply> {
    use hyper_util::rt::TokioIo;
    let io_err = |e: hyper::Error| std::io::Error::other(e.to_string());
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io_err)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = request;
    request
        .headers_mut()
        .insert(header::HOST, addr.to_string().parse().expect("host"));
    let response = sender.send_request(request).await.map_err(io_err)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(Body::new(response.into_body()), 64 << 20)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A body that arrives when the test sends it, chunk by chunk; it ends when the sender drops.
pub struct ChannelBody(tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>);

impl hyper::body::Body for ChannelBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c.into()))))
    }
}

/// A `POST` whose body the test streams through the returned sender (a stalled upload while it
/// holds the sender and sends nothing).
pub fn streamed_post(
    path: &str,
    content_type: &str,
) -> (Request<Body>, tokio::sync::mpsc::UnboundedSender<Vec<u8>>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::new(ChannelBody(rx)))
        .expect("request");
    (request, tx)
}

/// The `Content-Length` of an HTTP response head (0 when absent).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
}
