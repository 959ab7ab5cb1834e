//! The hostile senders that run beside the legitimate load:
//!
//! - **slowloris**: a request head sent one header line at a time, never finished; the server
//!   must close the connection after `header_read_timeout_ms`;
//! - **slow body**: a head with a large `Content-Length`, then the body dripped or stalled; the
//!   server must answer 408 `body_timeout` after `body_timeout_ms` (or 503 when the queue is
//!   full) and free the queue slot;
//! - **decode amplification**: a small PNG whose header claims 2000×2000 16-bit RGBA (32 MB
//!   decoded); the server must refuse it from the header, `wrong_size`, without decoding it.
//!
//! Each sender repeats its attack until told to stop, and counts what the server did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageBuffer, Rgba};
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{Connection, ReadOutcome, connect, read_response};
use crate::load::{outcome, percentile};
use crate::{Error, Result};

/// Width and height the decode-amplification PNG declares.
pub(crate) const AMP_SIDE: u32 = 2000;

/// What the hostile senders do, and the server limits they run into.
#[derive(Debug, Clone)]
pub(crate) struct Attack {
    pub(crate) addr: SocketAddr,
    pub(crate) slowloris: usize,
    pub(crate) slow_body: usize,
    pub(crate) decode_amp: usize,
    /// Slowloris: pause between header lines.
    pub(crate) line_interval: Duration,
    /// Slow body: pause between chunks (half the senders stall instead).
    pub(crate) drip_interval: Duration,
    /// Slow body: the `Content-Length` claimed (at most the server's body limit, so the request
    /// is admitted and holds a queue slot).
    pub(crate) claim: usize,
    /// The server's `header_read_timeout_ms`.
    pub(crate) header_timeout: Duration,
    /// The server's `body_timeout_ms`.
    pub(crate) body_timeout: Duration,
    /// The decode-amplification upload.
    pub(crate) crafted: Bytes,
}

/// What the slowloris senders saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowlorisStats {
    /// Concurrent senders of this kind.
    pub senders: usize,
    /// Connections opened (and finished before the end of the run).
    pub connections: usize,
    /// Closed by the server no earlier than 0.9 × the header timeout: the defence working.
    pub closed_by_header_timeout: usize,
    /// Closed by the server sooner.
    pub closed_early: usize,
    /// Still open at the header timeout + 2 s + one line interval: the defence failing.
    pub held_past_limit: usize,
    /// Answers the server sent before closing (by status and code).
    pub answers: BTreeMap<String, usize>,
    /// Connections that could not be opened.
    pub connect_failures: usize,
    /// Shortest time from connect to close, in milliseconds.
    pub close_ms_min: f64,
    /// Longest time from connect to close, in milliseconds.
    pub close_ms_max: f64,
}

/// What the slow-body senders saw, by outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowBodyStats {
    /// Concurrent senders of this kind.
    pub senders: usize,
    /// Slow uploads started and finished.
    pub attempts: usize,
    /// `"408 body_timeout"`, `"503 overloaded + Retry-After"`, `"closed without an answer"`, …
    pub outcomes: BTreeMap<String, usize>,
    /// Longest time from connect to answer, in milliseconds.
    pub answer_ms_max: f64,
}

/// What the decode-amplification senders saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecodeAmpStats {
    /// Concurrent senders of this kind.
    pub senders: usize,
    /// Size of the crafted PNG in bytes.
    pub upload_bytes: usize,
    /// What its header claims, e.g. `2000x2000 16-bit RGBA`.
    pub declared: String,
    /// Uploads answered.
    pub uploads: usize,
    /// `"400 wrong_size"` expected.
    pub outcomes: BTreeMap<String, usize>,
    /// Answer latency, in milliseconds.
    pub p99_ms: f64,
    /// Slowest answer, in milliseconds.
    pub max_ms: f64,
}

/// Everything the hostile senders saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostileStats {
    /// Slowloris.
    pub slowloris: SlowlorisStats,
    /// Slow bodies.
    pub slow_body: SlowBodyStats,
    /// Decode amplification.
    pub decode_amp: DecodeAmpStats,
}

/// The senders, running until [`Running::stop`].
#[derive(Debug)]
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    slowloris: Vec<JoinHandle<SlowlorisStats>>,
    slow_body: Vec<JoinHandle<SlowBodyStats>>,
    decode_amp: Vec<JoinHandle<Result<DecodeAmpStats>>>,
    attack: Attack,
}

/// Starts every sender on the current runtime.
pub(crate) fn start(attack: &Attack) -> Running {
    let (stop, stopped) = watch::channel(false);
    let slowloris = (0..attack.slowloris)
        .map(|_| tokio::spawn(slowloris(attack.clone(), stopped.clone())))
        .collect();
    let slow_body = (0..attack.slow_body)
        .map(|i| tokio::spawn(slow_body(attack.clone(), i % 2 == 1, stopped.clone())))
        .collect();
    let decode_amp = (0..attack.decode_amp)
        .map(|_| tokio::spawn(decode_amp(attack.clone(), stopped.clone())))
        .collect();
    Running {
        stop,
        slowloris,
        slow_body,
        decode_amp,
        attack: attack.clone(),
    }
}

impl Running {
    /// Stops every sender (attacks in progress are dropped, not counted) and adds up what they
    /// saw.
    ///
    /// # Errors
    /// [`Error::Bench`] when a sender task failed.
    pub(crate) async fn stop(self) -> Result<HostileStats> {
        let _ = self.stop.send(true);
        let join = |e: tokio::task::JoinError| Error::Bench(format!("hostile sender: {e}"));
        let mut stats = HostileStats::default();
        let s = &mut stats.slowloris;
        s.senders = self.attack.slowloris;
        s.close_ms_min = f64::INFINITY;
        for task in self.slowloris {
            let one = task.await.map_err(join)?;
            s.connections += one.connections;
            s.closed_by_header_timeout += one.closed_by_header_timeout;
            s.closed_early += one.closed_early;
            s.held_past_limit += one.held_past_limit;
            s.connect_failures += one.connect_failures;
            add(&mut s.answers, one.answers);
            s.close_ms_min = s.close_ms_min.min(one.close_ms_min);
            s.close_ms_max = s.close_ms_max.max(one.close_ms_max);
        }
        if !s.close_ms_min.is_finite() {
            s.close_ms_min = 0.0;
        }
        let b = &mut stats.slow_body;
        b.senders = self.attack.slow_body;
        for task in self.slow_body {
            let one = task.await.map_err(join)?;
            b.attempts += one.attempts;
            add(&mut b.outcomes, one.outcomes);
            b.answer_ms_max = b.answer_ms_max.max(one.answer_ms_max);
        }
        let d = &mut stats.decode_amp;
        d.senders = self.attack.decode_amp;
        d.upload_bytes = self.attack.crafted.len();
        d.declared = format!("{AMP_SIDE}x{AMP_SIDE} 16-bit RGBA");
        let mut latencies = Vec::new();
        for task in self.decode_amp {
            let one = task.await.map_err(join)??;
            d.uploads += one.uploads;
            add(&mut d.outcomes, one.outcomes);
            d.max_ms = d.max_ms.max(one.max_ms);
            latencies.push(one.p99_ms);
        }
        // The p99 of each sender; their largest is a fair summary without keeping every sample.
        latencies.sort_by(f64::total_cmp);
        d.p99_ms = percentile(&latencies, 1.0);
        Ok(stats)
    }
}

fn add(into: &mut BTreeMap<String, usize>, from: BTreeMap<String, usize>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// A PNG of a few tens of KB whose header declares `AMP_SIDE`² 16-bit RGBA pixels (32 MB
/// decoded).
///
/// # Errors
/// [`Error::Bench`] if it cannot be encoded.
pub(crate) fn crafted_png() -> Result<Bytes> {
    let img: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::new(AMP_SIDE, AMP_SIDE);
    let mut out = Vec::new();
    // Zeros, unfiltered, at the best compression: deflate's ~1000:1 at its limit.
    let encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::NoFilter);
    DynamicImage::ImageRgba16(img)
        .write_with_encoder(encoder)
        .map_err(|e| Error::Bench(format!("cannot encode the crafted PNG: {e}")))?;
    Ok(Bytes::from(out))
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum Slow {
    ConnectFailed,
    Closed {
        after: Duration,
        answer: Option<String>,
    },
    HeldPastLimit,
}

async fn slowloris(attack: Attack, stop: watch::Receiver<bool>) -> SlowlorisStats {
    let mut stats = SlowlorisStats {
        close_ms_min: f64::INFINITY,
        ..SlowlorisStats::default()
    };
    let limit = attack.header_timeout + Duration::from_secs(2) + attack.line_interval;
    loop {
        let once = tokio::select! {
            () = stopped(stop.clone()) => break,
            once = slowloris_once(attack.addr, attack.line_interval, limit) => once,
        };
        match once {
            Slow::ConnectFailed => {
                stats.connect_failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Slow::Closed { after, answer } => {
                stats.connections += 1;
                if after >= attack.header_timeout.mul_f64(0.9) {
                    stats.closed_by_header_timeout += 1;
                } else {
                    stats.closed_early += 1;
                }
                if let Some(answer) = answer {
                    *stats.answers.entry(answer).or_default() += 1;
                }
                let ms = after.as_secs_f64() * 1e3;
                stats.close_ms_min = stats.close_ms_min.min(ms);
                stats.close_ms_max = stats.close_ms_max.max(ms);
            }
            Slow::HeldPastLimit => {
                stats.connections += 1;
                stats.held_past_limit += 1;
            }
        }
    }
    stats
}

/// One slowloris connection: the request line, then one header line per `interval`, until the
/// server closes the connection or `limit` passes.
async fn slowloris_once(addr: SocketAddr, interval: Duration, limit: Duration) -> Slow {
    let started = Instant::now();
    let Ok(stream) = connect(addr).await else {
        return Slow::ConnectFailed;
    };
    let (mut rd, mut wr) = stream.into_split();
    let closed = |answer| Slow::Closed {
        after: started.elapsed(),
        answer,
    };
    let sending = async {
        let _ = wr
            .write_all(b"POST /v1/classify HTTP/1.1\r\nHost: soak\r\n")
            .await;
        for i in 0.. {
            tokio::time::sleep(interval).await;
            let line = format!("X-Slow-{i}: 1\r\n");
            if wr.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let Some(read) = answer_while_sending(read_response(&mut rd), sending, limit).await else {
        return Slow::HeldPastLimit;
    };
    match read {
        ReadOutcome::Reply(reply) => closed(Some(outcome(&reply))),
        ReadOutcome::ClosedBeforeResponse => closed(None),
        ReadOutcome::Broken(e) => closed(Some(format!("broken answer: {e}"))),
    }
}

/// Reads the server's answer while `sending` dribbles a request: the answer, or what ended the
/// read once the server closed its end (an answer may still be on its way for a second), or
/// `None` when nothing happened within `limit`.
async fn answer_while_sending(
    reading: impl Future<Output = ReadOutcome>,
    sending: impl Future<Output = ()>,
    limit: Duration,
) -> Option<ReadOutcome> {
    tokio::pin!(reading);
    tokio::select! {
        read = &mut reading => Some(read),
        () = sending => Some(
            tokio::time::timeout(Duration::from_secs(1), &mut reading)
                .await
                .unwrap_or(ReadOutcome::ClosedBeforeResponse),
        ),
        () = tokio::time::sleep(limit) => None,
    }
}

async fn slow_body(attack: Attack, stall: bool, stop: watch::Receiver<bool>) -> SlowBodyStats {
    let mut stats = SlowBodyStats::default();
    let limit = attack.body_timeout + Duration::from_secs(5);
    loop {
        let started = Instant::now();
        let once = tokio::select! {
            () = stopped(stop.clone()) => break,
            once = slow_body_once(&attack, stall, limit) => once,
        };
        stats.attempts += 1;
        stats.answer_ms_max = stats
            .answer_ms_max
            .max(started.elapsed().as_secs_f64() * 1e3);
        *stats.outcomes.entry(once).or_default() += 1;
        // A refused sender comes back soon, as an attacker would.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats
}

/// One slow upload: a head claiming `claim` bytes, 1 KiB of body, then 1 KiB per
/// `drip_interval` (or nothing more when `stall`), until the server answers.
async fn slow_body_once(attack: &Attack, stall: bool, limit: Duration) -> String {
    let Ok(stream) = connect(attack.addr).await else {
        return "connect failed".to_owned();
    };
    let (mut rd, mut wr) = stream.into_split();
    let chunk = [0u8; 1024];
    let sending = async {
        let head = format!(
            "POST /v1/classify HTTP/1.1\r\nHost: soak\r\nContent-Type: image/png\r\n\
             Content-Length: {}\r\n\r\n",
            attack.claim
        );
        if wr.write_all(head.as_bytes()).await.is_err() || wr.write_all(&chunk).await.is_err() {
            return;
        }
        if stall {
            std::future::pending::<()>().await;
        }
        let mut sent = chunk.len();
        while sent + chunk.len() < attack.claim {
            tokio::time::sleep(attack.drip_interval).await;
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
        // Never send the last byte.
        std::future::pending::<()>().await;
    };
    let Some(read) = answer_while_sending(read_response(&mut rd), sending, limit).await else {
        return format!("no answer within {} ms", limit.as_millis());
    };
    match read {
        ReadOutcome::Reply(reply) => outcome(&reply),
        ReadOutcome::ClosedBeforeResponse => "closed without an answer".to_owned(),
        ReadOutcome::Broken(e) => format!("broken answer: {e}"),
    }
}

async fn decode_amp(attack: Attack, stop: watch::Receiver<bool>) -> Result<DecodeAmpStats> {
    let mut stats = DecodeAmpStats::default();
    let mut latencies = Vec::new();
    let mut connection = Connection::open(attack.addr).await?;
    loop {
        let t = Instant::now();
        let reply = tokio::select! {
            () = stopped(stop.clone()) => break,
            reply = connection.post("/v1/classify", "image/png", attack.crafted.clone()) => reply,
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        stats.uploads += 1;
        let outcome = match reply {
            Ok(reply) => outcome(&reply),
            Err(e) => {
                connection = Connection::open(attack.addr).await?;
                format!("connection error: {e}")
            }
        };
        *stats.outcomes.entry(outcome).or_default() += 1;
        latencies.push(ms);
        stats.max_ms = stats.max_ms.max(ms);
    }
    latencies.sort_by(f64::total_cmp);
    stats.p99_ms = percentile(&latencies, 0.99);
    Ok(stats)
}
