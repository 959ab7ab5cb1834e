//! Over a real loopback socket: `scrim_cloud::spawn`, graceful shutdown with a request in flight,
//! start-up refusals, and the `scrim-cloud` binary itself (the `listening on` line, env tokens,
//! SIGTERM, logs without secrets).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use scrim_cloud::{BatchResponse, ClassifyResponse, Config, Error, ErrorCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_server_classifies_over_loopback() {
    let (_dir, config) = fixture_config();
    let server = scrim_cloud::spawn(config).expect("spawn");
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);
    assert_eq!(server.url(), format!("http://{}", server.addr));

    let reply = http(
        server.addr,
        post("/v1/classify", Some("image/png"), png(32, 32, 1)),
    )
    .await
    .expect("classify");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let r: ClassifyResponse = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(r.labels.len(), 3);

    let images = [png(32, 32, 2), png(32, 32, 3)];
    let (ct, body) = multipart(&[
        ("x", Some("image/png"), &images[0]),
        ("y", Some("image/png"), &images[1]),
    ]);
    let reply = http(server.addr, post("/v1/classify/batch", Some(&ct), body))
        .await
        .expect("batch");
    let r: BatchResponse = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(r.results.len(), 2);

    let reply = http(
        server.addr,
        post("/v1/classify", Some("image/png"), png(9, 9, 1)),
    )
    .await
    .expect("bad");
    reply.expect_error(ErrorCode::WrongSize);
    tokio::task::spawn_blocking(move || server.shutdown())
        .await
        .expect("shutdown");
}

#[test]
fn shutdown_lets_in_flight_requests_finish() {
    // An upload whose body is only half sent holds its queue slot; shutdown begins while it is
    // in flight, and the rest of the body then arrives: it must be answered.
    use std::io::Write as _;
    let (_dir, config) = fixture_config();
    let server = scrim_cloud::spawn(config).expect("spawn");
    let addr = server.addr;
    let body = png(32, 32, 1);
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(&body[..10]).expect("write");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(wait_for_depth(addr, 1));
    let stopping = std::thread::spawn(move || server.shutdown());
    // The listener closes first; the request is still in flight.
    for _ in 0..2000 {
        if std::net::TcpStream::connect(addr).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stream.write_all(&body[10..]).expect("write");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("answered in time");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    stopping.join().expect("shutdown");
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Polls `GET /metrics` until `scrim_queue_depth` reaches `depth`.
async fn wait_for_depth(addr: std::net::SocketAddr, depth: usize) {
    for _ in 0..4000 {
        let metrics = http(addr, get("/metrics")).await.expect("metrics").text();
        if metric(&metrics, "scrim_queue_depth") == Some(depth as f64) {
            return;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    panic!("the queue never reached depth {depth}");
}

#[test]
fn a_stalled_upload_times_out_with_504() {
    use std::io::Write as _;
    let (_dir, mut config) = fixture_config();
    config.request_timeout_ms = 200;
    let server = scrim_cloud::spawn(config).expect("spawn");
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Announce 1000 bytes, send 10, then stall.
    let head = format!(
        "POST /v1/classify HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\n\
         Content-Length: 1000\r\n\r\n0123456789",
        server.addr
    );
    stream.write_all(head.as_bytes()).expect("write");
    let started = Instant::now();
    let text = read_response(&mut stream);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(
        text.contains("\"code\":\"timeout\"") && text.contains("200 ms"),
        "{text}"
    );
    server.shutdown();
}

/// Reads one HTTP/1.1 response with a `content-length` body.
fn read_response(stream: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("the server answers");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if n == 0 {
            return text;
        }
        if let Some(end) = text.find("\r\n\r\n") {
            let length = common::content_length(&text[..end]);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[test]
fn refuses_to_start_on_a_missing_or_invalid_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_fixture(dir.path(), 32);
    let manifest = scrim_core::Manifest::path_for(&model);
    let start = |path: &std::path::Path| {
        let mut config = Config::new(path);
        config.listen = ([127, 0, 0, 1], 0).into();
        scrim_cloud::spawn(config).map(|s| s.shutdown())
    };
    start(&model).expect("the fixture itself starts");

    let expect = |result: scrim_cloud::Result<()>, needles: &[&str]| {
        let err = result.expect_err("must refuse");
        assert!(matches!(err, Error::Model(_) | Error::Config(_)), "{err:?}");
        let message = err.to_string();
        for needle in needles {
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            );
        }
    };
    expect(
        start(&dir.path().join("nope.onnx")),
        &["nope.json", "not found"],
    );

    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::copy(&manifest, other.join("recognizer.json")).expect("copy");
    expect(
        start(&other.join("recognizer.onnx")),
        &["recognizer.onnx", "not found"],
    );

    std::fs::write(other.join("recognizer.onnx"), b"this is not onnx").expect("write");
    expect(start(&other.join("recognizer.onnx")), &["invalid model"]);

    std::fs::copy(&model, other.join("recognizer.onnx")).expect("copy");
    std::fs::write(other.join("recognizer.json"), "{ \"role\": ").expect("write");
    expect(
        start(&other.join("recognizer.onnx")),
        &["invalid manifest", "recognizer.json"],
    );

    // A manifest whose labels do not match the model's outputs.
    let (_, mut wrong) = scrim_core::fixtures::recognizer(32, &["a", "b", "c", "d", "e"]);
    wrong.name = "mismatch".into();
    wrong.save(&other.join("recognizer.json")).expect("save");
    expect(start(&other.join("recognizer.onnx")), &["5 labels"]);

    // A perturber is not a recognizer.
    let (onnx, perturber) = scrim_core::fixtures::perturber(32, 0.5);
    std::fs::write(other.join("perturber.onnx"), onnx).expect("write");
    perturber.save(&other.join("perturber.json")).expect("save");
    expect(start(&other.join("perturber.onnx")), &["recognizer"]);

    // A model that is smaller than the pixel limit allows.
    let mut config = Config::new(&model);
    config.listen = ([127, 0, 0, 1], 0).into();
    config.max_pixels = 100;
    expect(
        scrim_cloud::spawn(config).map(|s| s.shutdown()),
        &["max_pixels"],
    );
}

/// Kills the child if a test fails half-way.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scrim-cloud"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SCRIM_CLOUD_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn the_binary_serves_announces_its_port_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_fixture(dir.path(), 32);
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "file-secret-token-1\n").expect("write");
    let toml = dir.path().join("scrim-cloud.toml");
    std::fs::write(&toml, "max_batch = 4\nmax_wait_ms = 1\nworkers = 1\n").expect("write");
    let child = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&toml)
        .arg("--tokens-file")
        .arg(&tokens)
        .env("SCRIM_CLOUD_MODEL", &model)
        .env(
            "SCRIM_CLOUD_TOKENS",
            "env-secret-token-2, env-secret-token-3",
        )
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start scrim-cloud");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let mut stderr = child.0.stderr.take().expect("stderr");
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    let stdout_thread = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        lines.map_while(Result::ok).collect::<Vec<_>>()
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the listening line");
    let url = first
        .strip_prefix("listening on http://")
        .expect("listening line format");
    let addr: std::net::SocketAddr = url.parse().expect("IP:PORT");
    assert_ne!(addr.port(), 0);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let request = || post("/v1/classify", Some("image/png"), png(32, 32, 1));
        let reply = http(addr, request()).await.expect("request");
        reply.expect_error(ErrorCode::Unauthorized);
        for token in [
            "file-secret-token-1",
            "env-secret-token-2",
            "env-secret-token-3",
        ] {
            let reply = http(addr, with_token(request(), token))
                .await
                .expect("request");
            assert_eq!(reply.status, StatusCode::OK, "{token}: {}", reply.text());
        }
        let reply = http(addr, get("/readyz")).await.expect("readyz");
        assert_eq!(reply.status, StatusCode::OK);
    });

    let pid = child.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let rest = stdout_thread.join().expect("stdout");
    assert!(
        rest.is_empty(),
        "stdout has only the listening line, got also {rest:?}"
    );
    let logs = stderr_thread.join().expect("stderr");
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert!(
        logs.contains("/v1/classify"),
        "debug logs have one line per request: {logs}"
    );
    assert!(
        !logs.contains("secret-token"),
        "tokens leaked into the logs:\n{logs}"
    );
    assert!(
        !logs.contains("IHDR") && !logs.contains("PNG"),
        "image bytes in the logs:\n{logs}"
    );
}

#[test]
fn the_binary_exits_with_a_clear_message_on_a_bad_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--model"])
        .arg(dir.path().join("recognizer.onnx"))
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no listening line");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot load the recognizer"), "{stderr}");
    assert!(stderr.contains("recognizer.json"), "{stderr}");
}

#[test]
fn the_binary_stops_gracefully_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = write_fixture(dir.path(), 32);
    let child = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--model"])
        .arg(&model)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start scrim-cloud");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the listening line");
    assert!(
        line.starts_with("listening on http://127.0.0.1:"),
        "{line:?}"
    );
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let mut logs = String::new();
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("stderr");
    assert!(logs.contains("Ctrl-C"), "{logs}");
}
