//! SIGTERM under load: keep-alive clients send `POST /v1/classify` back to back, the server gets
//! SIGTERM mid-load, and every request is accounted for. A request written whole on a connection
//! the server had already served must get a whole answer; after SIGTERM the only failures
//! allowed are those of shutdown itself: a refused connection, a new connection closed without
//! an answer (it was still in the listener's backlog), a request that could not be written.
//!
//! The clients write raw bytes (not through hyper) so that "written whole" means exactly that.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::process::ServerProcess;
use crate::client::{ReadOutcome, read_response};
use crate::load::outcome;
use crate::{Error, Result};

/// What the shutdown phase saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShutdownStats {
    /// Keep-alive clients.
    pub clients: usize,
    /// Load before SIGTERM, in milliseconds.
    pub sigterm_after_ms: f64,
    /// Answers by outcome, the whole phase.
    pub answers: BTreeMap<String, usize>,
    /// Of those, answers read after SIGTERM was sent.
    pub answered_after_sigterm: usize,
    /// Answers after SIGTERM that carried `Connection: close`.
    pub closed_with_answer: usize,
    /// Allowed after SIGTERM: connections refused.
    pub refused: usize,
    /// Allowed after SIGTERM: a new connection closed before answering its first request.
    pub new_connection_closed: usize,
    /// Allowed after SIGTERM: a request that could not be written whole.
    pub unwritten: usize,
    /// Violations: a request written whole on a connection the server had served, answered by
    /// EOF.
    pub cut_off: usize,
    /// Violations: anything else (a torn answer, no answer in time, failures before SIGTERM).
    pub violations: BTreeMap<String, usize>,
    /// The server's exit status (`exit status: 0`), or why there is none.
    pub exit: String,
    /// Whether the server exited with status 0.
    pub exit_success: bool,
    /// From SIGTERM to exit, in milliseconds.
    pub exit_ms: f64,
}

#[derive(Debug, Default)]
struct ClientStats {
    answers: BTreeMap<String, usize>,
    answered_after: usize,
    closed_with_answer: usize,
    refused: usize,
    new_connection_closed: usize,
    unwritten: usize,
    cut_off: usize,
    violations: BTreeMap<String, usize>,
}

/// Runs `clients` keep-alive clients against `server`, sends SIGTERM after `load_before`, and
/// waits for the server to exit (at most `grace` + 10 s).
///
/// # Errors
/// [`Error::Bench`] when SIGTERM cannot be sent or a client task fails.
pub(crate) fn run(
    runtime: &tokio::runtime::Runtime,
    server: &mut ServerProcess,
    clients: usize,
    request: Vec<u8>,
    load_before: Duration,
    grace: Duration,
) -> Result<ShutdownStats> {
    let signalled = Arc::new(AtomicBool::new(false));
    let request = Arc::new(request);
    let deadline = Instant::now() + load_before + grace + Duration::from_secs(5);
    let addr = server.addr;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let signalled = Arc::clone(&signalled);
            let request = Arc::clone(&request);
            runtime.spawn(client(addr, request, signalled, deadline))
        })
        .collect();
    std::thread::sleep(load_before);
    // Set first: whatever fails from here on may be the shutdown's doing.
    signalled.store(true, Ordering::SeqCst);
    let sent = Instant::now();
    server.terminate()?;
    let exit = server.wait(grace + Duration::from_secs(10));
    let exit_ms = sent.elapsed().as_secs_f64() * 1e3;
    let mut stats = ShutdownStats {
        clients,
        sigterm_after_ms: load_before.as_secs_f64() * 1e3,
        exit_success: exit.is_some_and(|s| s.success()),
        exit: exit.map_or_else(
            || format!("still running {exit_ms:.0} ms after SIGTERM"),
            |s| s.to_string(),
        ),
        exit_ms,
        ..ShutdownStats::default()
    };
    for task in tasks {
        let one = runtime
            .block_on(task)
            .map_err(|e| Error::Bench(format!("shutdown client: {e}")))?;
        add(&mut stats.answers, one.answers);
        stats.answered_after_sigterm += one.answered_after;
        stats.closed_with_answer += one.closed_with_answer;
        stats.refused += one.refused;
        stats.new_connection_closed += one.new_connection_closed;
        stats.unwritten += one.unwritten;
        stats.cut_off += one.cut_off;
        add(&mut stats.violations, one.violations);
    }
    Ok(stats)
}

fn add(into: &mut BTreeMap<String, usize>, from: BTreeMap<String, usize>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// One client: request, answer, request… on one connection (a new one when the server asks to
/// close), until a connection is refused after SIGTERM or `deadline`.
async fn client(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    signalled: Arc<AtomicBool>,
    deadline: Instant,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let after = || signalled.load(Ordering::SeqCst);
    let violation = |stats: &mut ClientStats, what: String| {
        *stats.violations.entry(what).or_default() += 1;
    };
    // The connection, and whether the server has answered on it.
    let mut open: Option<(TcpStream, bool)> = None;
    while Instant::now() < deadline {
        let (mut stream, served) = match open.take() {
            Some(c) => c,
            None => match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    (s, false)
                }
                Err(_) if after() => {
                    stats.refused += 1;
                    break;
                }
                Err(e) => {
                    violation(&mut stats, format!("connect failed before SIGTERM: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.write_all(&request).await {
            if after() {
                stats.unwritten += 1;
            } else {
                violation(&mut stats, format!("write failed before SIGTERM: {e}"));
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, read_response(&mut stream)).await;
        match read {
            Ok(ReadOutcome::Reply(reply)) => {
                *stats.answers.entry(outcome(&reply)).or_default() += 1;
                if after() {
                    stats.answered_after += 1;
                    if reply.close {
                        stats.closed_with_answer += 1;
                    }
                }
                if !reply.close {
                    open = Some((stream, true));
                }
            }
            Ok(ReadOutcome::ClosedBeforeResponse) if served => stats.cut_off += 1,
            Ok(ReadOutcome::ClosedBeforeResponse) if after() => stats.new_connection_closed += 1,
            Ok(ReadOutcome::ClosedBeforeResponse) => violation(
                &mut stats,
                "a new connection closed without an answer before SIGTERM".into(),
            ),
            Ok(ReadOutcome::Broken(e)) => violation(&mut stats, format!("torn answer: {e}")),
            Err(_) => violation(&mut stats, "no answer before the phase's deadline".into()),
        }
    }
    stats
}
