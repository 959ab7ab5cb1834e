//! A hostile client over a real loopback socket: stalled uploads, oversized request heads,
//! slow headers, idle and excess connections, and shutdown with requests already on the wire.
//! Every test bounds its own waits, so a regression fails instead of hanging.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use scrim_cloud::{ErrorCode, ErrorResponse};

/// How long any single read waits before the test fails.
const READ_LIMIT: Duration = Duration::from_secs(5);

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_LIMIT)).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// One response: status and body (read by `content-length`), or `None` on EOF before any byte.
fn read_reply(stream: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = common::content_length(&head);
            if buf.len() >= end + 4 + length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return Some((status, head, buf[end + 4..end + 4 + length].to_vec()));
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return None,
            Ok(0) => panic!("EOF inside a response: {}", String::from_utf8_lossy(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return None;
            }
            Err(e) => panic!("no response within {READ_LIMIT:?}: {e}"),
        }
    }
}

/// Asserts a JSON error body with `code`; returns its message.
fn expect_json_error(status: u16, body: &[u8], code: ErrorCode) -> String {
    let parsed: ErrorResponse = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{status}: not a JSON error ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(parsed.error.code, code);
    assert_eq!(status, code.status().as_u16());
    parsed.error.message
}

/// `GET path` on a fresh connection.
fn get_raw(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let (status, _, body) = read_reply(&mut s).expect("a response");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn wait_for_depth(addr: SocketAddr, depth: f64) {
    let deadline = Instant::now() + READ_LIMIT;
    loop {
        let (_, text) = get_raw(addr, "/metrics");
        if metric(&text, "scrim_queue_depth") == Some(depth) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never reached depth {depth}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn classify_head(length: usize) -> String {
    format!(
        "POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// Admission comes before the body: an upload that stalls holds its queue slot (so memory is
/// bounded by `queue`, not by connections), and the next request is refused with 503 +
/// `Retry-After` without the server reading its body.
#[test]
fn admission_happens_before_the_body_is_read() {
    let (_dir, mut config) = fixture_config();
    config.queue = 1;
    config.max_batch_images = 1;
    let server = scrim_cloud::spawn(config).expect("spawn");
    let body = png(32, 32, 1);

    let mut stalled = connect(server.addr);
    stalled
        .write_all(classify_head(body.len()).as_bytes())
        .expect("write");
    stalled.write_all(&body[..10]).expect("write");
    wait_for_depth(server.addr, 1.0);

    // Head only: the answer cannot depend on a body that never comes.
    let mut next = connect(server.addr);
    next.write_all(classify_head(body.len()).as_bytes())
        .expect("write");
    let (status, head, reply) = read_reply(&mut next).expect("a response");
    expect_json_error(status, &reply, ErrorCode::Overloaded);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );

    // The stalled upload completes and is answered; its slot comes back.
    stalled.write_all(&body[10..]).expect("write");
    let (status, _, reply) = read_reply(&mut stalled).expect("a response");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    wait_for_depth(server.addr, 0.0);
    server.shutdown();
}

/// Request heads that hyper refuses before routing (too many headers, a huge header, a huge
/// URL, a malformed request line) get the same JSON error shape as every other error.
#[test]
fn oversized_and_malformed_request_heads_get_json_errors() {
    let (_dir, config) = fixture_config();
    let server = scrim_cloud::spawn(config).expect("spawn");
    let many: String = (0..500).map(|i| format!("X-Pad-{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(1 << 20));
    let long_url = format!("/healthz?q={}", "a".repeat(100 << 10));
    let cases = [
        (
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n"),
            (431, "headers_too_large"),
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{big}\r\n"),
            (431, "headers_too_large"),
        ),
        (
            format!("GET {long_url} HTTP/1.1\r\nHost: t\r\n\r\n"),
            (414, "uri_too_long"),
        ),
        (
            "NOT AN HTTP REQUEST\r\n\r\n".to_owned(),
            (400, "bad_request"),
        ),
    ];
    for (request, (status_wanted, code)) in cases {
        let mut stream = connect(server.addr);
        let mut writer = stream.try_clone().expect("clone");
        // The server may answer (and close) before it has read everything.
        let sending = std::thread::spawn(move || {
            let _ = writer.write_all(request.as_bytes());
        });
        let (status, _, body) = read_reply(&mut stream).expect("a response, not a bare close");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{status}: not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (status_wanted, Some(code)),
            "{json}"
        );
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        let _ = sending.join();
    }
    // The server is unharmed.
    assert_eq!(get_raw(server.addr, "/healthz").0, 200);
    server.shutdown();
}

/// Shutdown with requests already written on keep-alive connections: every one is answered
/// (with `Connection: close`), none is cut off by an EOF.
#[test]
fn shutdown_answers_requests_already_written_on_keep_alive_connections() {
    let (_dir, config) = fixture_config();
    let server = scrim_cloud::spawn(config).expect("spawn");
    let body = png(32, 32, 1);
    let mut request = classify_head(body.len()).into_bytes();
    request.extend_from_slice(&body);
    let mut streams: Vec<TcpStream> = (0..24).map(|_| connect(server.addr)).collect();
    for s in &mut streams {
        s.write_all(&request).expect("write");
        let (status, _, _) = read_reply(s).expect("first response");
        assert_eq!(status, 200);
    }
    // The connections are idle and kept alive; each now sends its next request, and shutdown
    // begins right away.
    for s in &mut streams {
        s.write_all(&request).expect("write");
    }
    let stopping = std::thread::spawn(move || server.shutdown());
    let mut answered = 0;
    for s in &mut streams {
        if let Some((status, head, _)) = read_reply(s) {
            assert_eq!(status, 200, "{head}");
            answered += 1;
        }
    }
    stopping.join().expect("shutdown");
    assert_eq!(answered, streams.len(), "requests cut off by shutdown");
}

/// An admitted upload whose body stalls is answered 408 `body_timeout` after `body_timeout_ms`
/// (well before the request timeout), and its queue slot comes back.
#[test]
fn a_stalled_body_times_out_on_its_own_limit_and_frees_its_slot() {
    let (_dir, mut config) = fixture_config();
    config.queue = 1;
    config.max_batch_images = 1;
    config.body_timeout_ms = 200;
    config.request_timeout_ms = 60_000;
    let server = scrim_cloud::spawn(config).expect("spawn");
    let mut stalled = connect(server.addr);
    stalled
        .write_all(classify_head(1000).as_bytes())
        .expect("write");
    stalled.write_all(b"0123456789").expect("write");
    let (status, _, body) = read_reply(&mut stalled).expect("a response");
    let message = expect_json_error(status, &body, ErrorCode::BodyTimeout);
    assert!(message.contains("200 ms"), "{message}");
    wait_for_depth(server.addr, 0.0);
    server.shutdown();
}

/// Waits until the server closes `stream` (EOF or reset), sending `keep_sending` every 100 ms
/// meanwhile; fails after `limit`.
fn closed_within(stream: &mut TcpStream, keep_sending: Option<&[u8]>, limit: Duration) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        if let Some(bytes) = keep_sending
            && stream.write_all(bytes).is_err()
        {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
    panic!("the connection was still open after {limit:?}");
}

/// Slowloris: one header line every 100 ms never completes a head; the connection is closed
/// after `header_read_timeout_ms` although bytes keep arriving.
#[test]
fn a_slow_request_head_is_cut_off_by_the_header_read_timeout() {
    let (_dir, mut config) = fixture_config();
    config.header_read_timeout_ms = 500;
    config.idle_timeout_ms = 60_000;
    let server = scrim_cloud::spawn(config).expect("spawn");
    let mut slow = connect(server.addr);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .expect("write");
    closed_within(&mut slow, Some(b"X-Slow: 1\r\n"), Duration::from_secs(5));
    assert_eq!(get_raw(server.addr, "/healthz").0, 200);
    server.shutdown();
}

/// A connection that sends nothing, new or kept alive after a response, is closed after
/// `idle_timeout_ms`.
#[test]
fn idle_connections_are_closed() {
    let (_dir, mut config) = fixture_config();
    config.idle_timeout_ms = 300;
    config.header_read_timeout_ms = 60_000;
    let server = scrim_cloud::spawn(config).expect("spawn");
    let mut fresh = connect(server.addr);
    let mut kept = connect(server.addr);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    assert_eq!(read_reply(&mut kept).expect("a response").0, 200);
    closed_within(&mut fresh, None, Duration::from_secs(5));
    closed_within(&mut kept, None, Duration::from_secs(5));
    server.shutdown();
}

/// A keep-alive connection that sends request after request is never idle, however long it
/// lives: the idle timeout counts from the last sign of life when it fires, not from when it
/// was armed. (It once closed such connections between two requests, losing the second; the
/// soak suite found it.)
#[test]
fn a_busy_keep_alive_connection_outlives_the_idle_timeout() {
    let (_dir, mut config) = fixture_config();
    config.idle_timeout_ms = 100;
    let server = scrim_cloud::spawn(config).expect("spawn");
    let mut busy = connect(server.addr);
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        busy.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let reply = read_reply(&mut busy);
        assert!(
            reply.is_some(),
            "closed after {answered} answers, {:?} into the run",
            started.elapsed()
        );
        answered += 1;
    }
    assert!(answered > 100, "{answered}");
    server.shutdown();
}

/// Beyond `max_connections`, a new connection is closed at once instead of waiting in the
/// backlog; once the held ones go, the server answers again.
#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    let (_dir, mut config) = fixture_config();
    config.max_connections = 4;
    config.idle_timeout_ms = 60_000;
    config.header_read_timeout_ms = 60_000;
    let server = scrim_cloud::spawn(config).expect("spawn");
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(server.addr)).collect();
    // Each held connection is served (so it counts) before the next one comes.
    for s in &mut held {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        assert_eq!(read_reply(s).expect("a response").0, 200);
    }
    let mut extra = connect(server.addr);
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let started = Instant::now();
    assert!(read_reply(&mut extra).is_none(), "served beyond the cap");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(held);
    let deadline = Instant::now() + READ_LIMIT;
    loop {
        let mut s = connect(server.addr);
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        if let Some((status, _, _)) = read_reply(&mut s) {
            assert_eq!(status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.shutdown();
}
