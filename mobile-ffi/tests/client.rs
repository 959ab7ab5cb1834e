//! `ScrimClient` against a scripted HTTP server on loopback: status mapping, retries, timeouts.
//!
//! The stub speaks just enough HTTP/1.1 for one request per connection (`Connection: close`),
//! answers with the scripted responses in order, records what it received, and gives up after a
//! deadline so a failing test cannot hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use scrim_mobile::{ClientConfig, PerturbedImage, Perturber, ScrimClient, ScrimError};

const DEADLINE: Duration = Duration::from_secs(20);

/// What the stub received in one request.
#[derive(Debug)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One scripted answer.
enum Script {
    Respond {
        status: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: String,
    },
    /// Read the request, then keep the connection open without answering.
    Stall(Duration),
    /// Answer 200 with a long body sent one byte per interval, for at most the given time.
    Drip(Duration, Duration),
}

fn json(status: &'static str, body: &str) -> Script {
    Script::Respond {
        status,
        headers: &[("Content-Type", "application/json")],
        body: body.to_owned(),
    }
}

fn error(status: &'static str, code: &str) -> Script {
    json(
        status,
        &format!(r#"{{"error":{{"code":"{code}","message":"scripted {code}"}}}}"#),
    )
}

const OK_BODY: &str = r#"{"labels":[{"label":"cat","score":0.25},{"label":"dog","score":0.75}],
    "model":"fixture-recognizer","latency_ms":3}"#;

struct Stub {
    base_url: String,
    server: JoinHandle<Vec<Received>>,
}

impl Stub {
    fn start(script: Vec<Script>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        listener.set_nonblocking(true).expect("nonblocking");
        let server = std::thread::spawn(move || serve(&listener, script));
        Self { base_url, server }
    }

    fn received(self) -> Vec<Received> {
        self.server.join().expect("stub thread")
    }
}

fn serve(listener: &TcpListener, script: Vec<Script>) -> Vec<Received> {
    let start = Instant::now();
    let mut received = Vec::new();
    for step in script {
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break Some(s),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < DEADLINE =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break None,
            }
        };
        let Some(mut stream) = stream else { break };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let Some(request) = read_request(&mut stream) else {
            continue;
        };
        received.push(request);
        match step {
            Script::Respond {
                status,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
            }
            Script::Stall(d) => std::thread::sleep(d),
            Script::Drip(every, total) => {
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\
                            Content-Type: application/json\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(head.as_bytes());
                let dripping = Instant::now();
                while dripping.elapsed() < total && stream.write_all(b" ").is_ok() {
                    let _ = stream.flush();
                    std::thread::sleep(every);
                }
            }
        }
    }
    received
}

fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        request_line: request_line.trim_end().to_owned(),
        headers,
        body,
    })
}

/// A client with fast retries, for tests.
fn client(base_url: &str, max_retries: u32) -> Arc<ScrimClient> {
    let mut config = ClientConfig::new(base_url);
    config.api_token = Some("test-token".into());
    config.max_retries = max_retries;
    config.initial_backoff_ms = 10;
    config.max_backoff_ms = 40;
    config.connect_timeout_ms = 2_000;
    config.request_timeout_ms = 5_000;
    ScrimClient::new(config).expect("client")
}

fn perturber() -> Arc<Perturber> {
    let (onnx, manifest) = scrim_core::fixtures::perturber(8, 0.2);
    Perturber::seeded_for_tests(onnx, manifest.to_json(), 3).expect("fixture perturber")
}

fn photo() -> Vec<u8> {
    let (w, h) = (20, 14);
    let data = (0..3 * w * h).map(|i| (i % 97) as f32 / 96.0).collect();
    let t = scrim_core::ImageTensor::new([1, 3, h, w], data).expect("shape");
    scrim_core::imaging::encode_png(&scrim_core::imaging::tensor_to_rgb(&t).expect("rgb"))
        .expect("png")
}

fn perturbed() -> Arc<PerturbedImage> {
    perturber().perturb(photo()).expect("perturb")
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[test]
fn ok_answer_is_parsed_and_only_the_perturbed_png_is_sent() {
    let stub = Stub::start(vec![json("200 OK", OK_BODY)]);
    let c = client(&stub.base_url, 2);
    let raw = photo();
    let result = c
        .classify_image(&perturber(), raw.clone())
        .expect("classify");
    let labels: Vec<(&str, f32)> = result
        .labels
        .iter()
        .map(|l| (l.label.as_str(), l.score))
        .collect();
    assert_eq!(labels, [("dog", 0.75), ("cat", 0.25)], "best first");
    assert_eq!(result.model, "fixture-recognizer");
    assert_eq!(result.latency_ms, 3.0);

    let received = stub.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.request_line, "POST /v1/classify HTTP/1.1");
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.header("authorization"), Some("Bearer test-token"));
    assert!(r.body.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_ne!(r.body, raw, "the raw photo must never be uploaded");
    assert_eq!(png_size(&r.body), (8, 8), "uploads are at the model's size");
}

#[test]
fn unauthorized_is_not_retried() {
    let stub = Stub::start(vec![error("401 Unauthorized", "unauthorized")]);
    let err = client(&stub.base_url, 3)
        .classify(&perturbed())
        .expect_err("401");
    assert_eq!(
        err,
        ScrimError::Unauthorized {
            detail: "scripted unauthorized".into()
        }
    );
    assert_eq!(stub.received().len(), 1);
}

#[test]
fn overloaded_then_ok_is_retried() {
    let overloaded = Script::Respond {
        status: "503 Service Unavailable",
        headers: &[("Content-Type", "application/json"), ("Retry-After", "0")],
        body: r#"{"error":{"code":"overloaded","message":"busy"}}"#.into(),
    };
    let stub = Stub::start(vec![overloaded, json("200 OK", OK_BODY)]);
    let result = client(&stub.base_url, 2)
        .classify(&perturbed())
        .expect("retried");
    assert_eq!(result.labels.len(), 2);
    let received = stub.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].body, received[1].body,
        "the retry sends the same upload"
    );
}

#[test]
fn overloaded_after_all_retries_is_a_server_error() {
    let stub = Stub::start(
        (0..3)
            .map(|_| error("503 Service Unavailable", "overloaded"))
            .collect(),
    );
    let err = client(&stub.base_url, 2)
        .classify(&perturbed())
        .expect_err("503");
    assert_eq!(
        err,
        ScrimError::Server {
            status: 503,
            code: "overloaded".into(),
            detail: "scripted overloaded".into()
        }
    );
    assert_eq!(stub.received().len(), 3, "first attempt + 2 retries");
}

#[test]
fn error_codes_map_to_server_errors() {
    let cases = [
        ("400 Bad Request", "wrong_size", 400),
        ("400 Bad Request", "invalid_image", 400),
        ("413 Payload Too Large", "payload_too_large", 413),
        ("415 Unsupported Media Type", "unsupported_media_type", 415),
        ("504 Gateway Timeout", "timeout", 504),
        ("500 Internal Server Error", "internal", 500),
    ];
    for (status_line, code, status) in cases {
        let stub = Stub::start(vec![error(status_line, code)]);
        let err = client(&stub.base_url, 3)
            .classify(&perturbed())
            .expect_err(code);
        let want = ScrimError::Server {
            status,
            code: code.into(),
            detail: format!("scripted {code}"),
        };
        assert_eq!(err, want);
        assert_eq!(stub.received().len(), 1, "{code} is not retried");
    }
}

#[test]
fn bodies_that_are_not_json_still_map_cleanly() {
    let html = Script::Respond {
        status: "502 Bad Gateway",
        headers: &[],
        body: "<html>proxy</html>".into(),
    };
    let stub = Stub::start(vec![html]);
    let err = client(&stub.base_url, 0)
        .classify(&perturbed())
        .expect_err("502");
    assert_eq!(
        err,
        ScrimError::Server {
            status: 502,
            code: "http_502".into(),
            detail: "Bad Gateway".into()
        }
    );
    stub.received();

    let stub = Stub::start(vec![json("200 OK", r#"{"hello":"world"}"#)]);
    let err = client(&stub.base_url, 0)
        .classify(&perturbed())
        .expect_err("not a classification");
    assert!(matches!(err, ScrimError::InvalidResponse { .. }), "{err:?}");
    stub.received();
}

#[test]
fn connection_refused_is_a_network_error_after_retries() {
    // A port that was just free: bind, note it, close.
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let start = Instant::now();
    let err = client(&format!("http://{addr}"), 3)
        .classify(&perturbed())
        .expect_err("refused");
    assert!(matches!(err, ScrimError::Network { .. }), "{err:?}");
    // Three backoffs of at least 5, 10 and 20 ms (half of 10·2^k, the rest is jitter).
    assert!(
        start.elapsed() >= Duration::from_millis(35),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_server_that_drips_its_answer_times_out_for_the_whole_request() {
    // A byte every 50 ms never trips a per-read timeout; the request's own deadline must.
    let stub = Stub::start(vec![Script::Drip(
        Duration::from_millis(50),
        Duration::from_secs(4),
    )]);
    let (err, elapsed) = classify_failing_within(&stub, 400);
    assert!(
        matches!(&err, ScrimError::Network { detail } if detail.contains("timed out")),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    stub.received();
}

/// Classifies through `stub` with `timeout_ms` and no retry; the error and the time it took.
fn classify_failing_within(stub: &Stub, timeout_ms: u64) -> (ScrimError, Duration) {
    let mut config = ClientConfig::new(stub.base_url.clone());
    config.request_timeout_ms = timeout_ms;
    config.max_retries = 0;
    let start = Instant::now();
    let err = ScrimClient::new(config)
        .expect("client")
        .classify(&perturbed())
        .expect_err("timeout");
    (err, start.elapsed())
}

#[test]
fn a_server_that_never_answers_times_out() {
    let stub = Stub::start(vec![Script::Stall(Duration::from_millis(1500))]);
    let (err, elapsed) = classify_failing_within(&stub, 300);
    assert!(matches!(err, ScrimError::Network { .. }), "{err:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    stub.received();
}
