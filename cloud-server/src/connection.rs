//! The accept loop and the life of one connection: what axum's `serve` leaves out and a hostile
//! client needs.
//!
//! - **Connection cap**: at most `max_connections` are served at once (lowered to fit the
//!   open-file limit, so the server never runs out of descriptors); one more is accepted and
//!   closed at once, so the backlog never fills with clients waiting in vain.
//! - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`…) back off, 10 ms doubling up to 1 s,
//!   instead of spinning.
//! - **Timeouts**: a request head must arrive within `header_read_timeout` of the server starting
//!   to wait for it (hyper's timer), and a connection with no request in flight is closed after
//!   `idle_timeout` without a byte from the client. A connection being closed gets another
//!   `header_read_timeout` to finish; then it is dropped.
//! - **Heads hyper refuses** (too many or too large headers, a URL over 64 KiB, a malformed
//!   request line) are answered by hyper itself with an empty body; [`Watched`] rewrites those
//!   answers into the API's JSON error shape.
//! - **Draining**: on shutdown the listener closes and every connection finishes the request it
//!   has, or that is already on the wire, with `Connection: close`. A connection is closed once
//!   it has had no request in flight and no byte from the client for [`DRAIN_LINGER`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::error::{ErrorCode, error_json};

/// How long a draining connection waits for a request already on its way.
pub(crate) const DRAIN_LINGER: Duration = Duration::from_millis(250);

/// Descriptors kept free for the listener, model files, logs and the runtime.
const RESERVED_FDS: u64 = 64;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Most header fields in a request head (hyper's default, named for the error message).
const MAX_HEADERS: usize = 100;

/// Connection limits, copied out of the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_header_bytes: usize,
}

/// Serves `router` on `listener` until `signal`, then drains: waits (at most `grace`) until every
/// connection has closed. Returns when the signal came.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    signal: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Instant {
    let cap = effective_cap(limits.max_connections, open_file_limit());
    let slots = Arc::new(Semaphore::new(cap));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut backoff = BACKOFF_MIN;
    let mut refused: u64 = 0;
    tokio::pin!(signal);
    loop {
        let accepted = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                backoff = BACKOFF_MIN;
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Closed at once: the client learns now, and the descriptor is free again.
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(
                            max_connections = cap,
                            refused,
                            "connection limit reached; closing new connections"
                        );
                    }
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let router = router.clone();
                let drain = drain_rx.clone();
                tokio::spawn(async move {
                    serve_connection(tcp, router, limits, drain).await;
                    drop(slot);
                });
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept error");
                tokio::select! {
                    () = &mut signal => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    let stopped = Instant::now();
    drop(listener);
    let _ = drain_tx.send(true);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!("every connection closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "grace period over; closing the remaining connections"
        ),
    }
    stopped
}

/// Serves one connection until it closes (see the module docs for when it is closed).
async fn serve_connection(
    tcp: TcpStream,
    router: Router,
    limits: ConnLimits,
    mut drain: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        let drain = drain.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::start(&activity);
            let router = router.clone();
            let drain = drain.clone();
            async move {
                let mut response = match router.oneshot(request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if *drain.borrow() {
                    // hyper closes the connection once this response is written.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let io = Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
        rewrite: None,
        max_header_bytes: limits.max_header_bytes,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = *drain.borrow();
    let mut drain_started = Instant::now();
    let mut closing_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let quiet_for = if draining {
            DRAIN_LINGER
        } else {
            limits.idle_timeout
        };
        let wake = match closing_since {
            Some(since) => since + limits.header_read_timeout,
            None => (quiet_since(&activity, draining.then_some(drain_started)) + quiet_for)
                .max(now + Duration::from_millis(5)),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = drain.changed(), if !draining => {
                if changed.is_ok() && *drain.borrow() {
                    draining = true;
                    drain_started = Instant::now();
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if let Some(since) = closing_since {
                    if since.elapsed() >= limits.header_read_timeout {
                        tracing::debug!("connection did not close in time; dropping it");
                        return;
                    }
                    continue;
                }
                // Read again now: requests may have come and gone while this task slept, and
                // closing a busy keep-alive connection loses the request its client is sending.
                let since = quiet_since(&activity, draining.then_some(drain_started));
                let quiet = activity.in_flight() == 0
                    && Instant::now().duration_since(since) >= quiet_for;
                if quiet {
                    // hyper closes an idle connection at once and lets a started one finish.
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
        }
    }
}

/// When the connection last showed life (a byte from the client, a request finished), or when
/// draining began if that is later.
fn quiet_since(activity: &Activity, drain_started: Option<Instant>) -> Instant {
    let last = activity.last();
    drain_started.map_or(last, |d| last.max(d))
}

/// What a connection has been doing: requests in flight, and when the client last sent a byte
/// or a request last finished.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// A request in flight on a connection, until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The socket as hyper sees it: notes every byte read, and rewrites hyper's own bodiless error
/// answers (see [`hyper_error_status`]) into JSON errors.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// A replacement answer being written, and how much of it is written.
    rewrite: Option<(Vec<u8>, usize)>,
    max_header_bytes: usize,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.activity.touch();
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewrite.is_none()
            && let Some(code) = hyper_error_status(buf)
        {
            this.rewrite = Some((json_answer(buf, code, this.max_header_bytes), 0));
        }
        if let Some((bytes, written)) = &mut this.rewrite {
            while *written < bytes.len() {
                match ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..])) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => *written += n,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            this.rewrite = None;
            // hyper's bytes were replaced as a whole.
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored, so hyper hands each response head over in one buffer.
}

/// The code of an answer hyper wrote on its own for a request head it could not parse: a whole
/// head (and nothing else) with status 400, 414 or 431 and `content-length: 0`. The app never
/// writes one: every error of its own has a JSON body.
fn hyper_error_status(buf: &[u8]) -> Option<ErrorCode> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let code = match rest.get(..4)? {
        b"400 " => ErrorCode::BadRequest,
        b"414 " => ErrorCode::UriTooLong,
        b"431 " => ErrorCode::HeadersTooLarge,
        _ => return None,
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let empty = buf
        .windows(19)
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0"));
    (end == buf.len() && empty).then_some(code)
}

/// hyper's head with a JSON body and `connection: close` (hyper closes the connection after it
/// anyway).
fn json_answer(head: &[u8], code: ErrorCode, max_header_bytes: usize) -> Vec<u8> {
    let message = match code {
        ErrorCode::HeadersTooLarge => format!(
            "the request head is too large: at most {MAX_HEADERS} header fields and \
             {max_header_bytes} bytes"
        ),
        ErrorCode::UriTooLong => "the request URL is too long".to_owned(),
        _ => "malformed HTTP request".to_owned(),
    };
    let body = error_json(code, &message);
    let head = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// `max_connections`, lowered when the open-file limit could not hold that many.
fn effective_cap(max_connections: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return max_connections;
    };
    let fit = usize::try_from(limit.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
    if fit < max_connections {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            lowered_to = fit,
            "max_connections does not fit the open-file limit; lowering it"
        );
        fit
    } else {
        max_connections
    }
}

/// The soft open-file limit of this process, where the platform tells (Linux's /proc).
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&text)
}

fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_own_bodiless_errors_are_rewritten() {
        let hyper431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
                         date: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        assert_eq!(
            hyper_error_status(hyper431),
            Some(ErrorCode::HeadersTooLarge)
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                     content-length: 2\r\n\r\n{}";
        assert_eq!(hyper_error_status(ours), None);
        assert_eq!(
            hyper_error_status(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        let answer = String::from_utf8(json_answer(hyper431, ErrorCode::HeadersTooLarge, 8192))
            .expect("utf-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head");
        assert!(
            head.starts_with("HTTP/1.1 431 ") && head.contains("date: "),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let parsed: crate::ErrorResponse = serde_json::from_str(body).expect("json");
        assert_eq!(parsed.error.code, ErrorCode::HeadersTooLarge);
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            256                  4096                 files\n";
        assert_eq!(parse_open_file_limit(limits), Some(256));
        assert_eq!(effective_cap(1024, Some(256)), 192);
        assert_eq!(effective_cap(100, Some(256)), 100);
        assert_eq!(effective_cap(1024, None), 1024);
        assert_eq!(effective_cap(1024, Some(10)), 1);
    }
}
