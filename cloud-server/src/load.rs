//! The legitimate load that `bench` and `soak` both generate: keep-alive clients sharing a number
//! of `POST /v1/classify` requests, the latency of each success and how every other request
//! ended. Also the sample upload they send.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use scrim_core::{ImageTensor, InputSpec, imaging};

use crate::client::{Connection, Reply};
use crate::{Error, ErrorResponse, Result};

/// The outcome of a successful request.
pub(crate) const OK: &str = "200";

/// The one failure a well-behaved client must expect under load: the queue was full, and the
/// answer says when to retry.
pub(crate) const OVERLOADED_RETRY: &str = "503 overloaded + Retry-After";

/// How much load to generate, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) addr: SocketAddr,
    /// Keep-alive connections, one task each.
    pub(crate) clients: usize,
    /// Requests shared between the clients (more are sent while `min_duration` has not passed).
    pub(crate) requests: usize,
    /// Keep sending at least this long.
    pub(crate) min_duration: Duration,
    /// Stop after this long, whatever has been sent.
    pub(crate) max_duration: Duration,
}

/// What a run of load produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Latency of each successful request, in milliseconds.
    pub(crate) latencies_ms: Vec<f64>,
    /// Requests by outcome ([`OK`], `"<status> <code>"`, `"connection error: …"`).
    pub(crate) outcomes: BTreeMap<String, usize>,
}

impl Tally {
    fn count(&mut self, outcome: String) {
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.latencies_ms.extend(other.latencies_ms);
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }

    /// Requests sent.
    pub(crate) fn total(&self) -> usize {
        self.outcomes.values().sum()
    }

    /// Requests answered 200.
    pub(crate) fn ok(&self) -> usize {
        self.outcomes.get(OK).copied().unwrap_or(0)
    }

    /// Requests not answered 200.
    pub(crate) fn errors(&self) -> usize {
        self.total() - self.ok()
    }
}

/// `"200"`, or the status and the JSON error code (`"400 wrong_size"`), with `+ Retry-After` when
/// a 503 carries it.
pub(crate) fn outcome(reply: &Reply) -> String {
    if reply.status == StatusCode::OK {
        return OK.to_owned();
    }
    let code = serde_json::from_slice::<ErrorResponse>(&reply.body)
        .map(|e| e.error.code.as_str())
        .unwrap_or("(no JSON error body)");
    let retry = if reply.status == StatusCode::SERVICE_UNAVAILABLE && reply.retry_after {
        " + Retry-After"
    } else {
        ""
    };
    format!("{} {code}{retry}", reply.status.as_u16())
}

/// Runs `plan`: every client opens one keep-alive connection and sends `upload` until the
/// requests are used up (and `min_duration` has passed) or `max_duration` is over. A request
/// that fails on the connection is counted and the client reconnects.
///
/// # Errors
/// [`Error::Bench`] when a client cannot (re)connect.
pub(crate) async fn drive(plan: Plan, upload: &Bytes) -> Result<Tally> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        let next = Arc::clone(&next);
        let upload = upload.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(plan.addr).await?;
            let mut tally = Tally::default();
            loop {
                let elapsed = started.elapsed();
                let used_up = next.fetch_add(1, Ordering::Relaxed) >= plan.requests;
                if elapsed >= plan.max_duration || (used_up && elapsed >= plan.min_duration) {
                    break;
                }
                let t = Instant::now();
                match connection
                    .post("/v1/classify", "image/png", upload.clone())
                    .await
                {
                    Ok(reply) => {
                        let outcome = outcome(&reply);
                        if outcome == OK {
                            tally.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        tally.count(outcome);
                    }
                    Err(e) => {
                        tally.count(format!("connection error: {e}"));
                        connection = Connection::open(plan.addr).await?;
                    }
                }
            }
            Ok::<_, Error>(tally)
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        all.merge(
            task.await
                .map_err(|e| Error::Bench(format!("client task: {e}")))??,
        );
    }
    Ok(all)
}

/// A deterministic pseudo-random image at the model's input size.
pub(crate) fn sample_tensor(input: InputSpec) -> ImageTensor {
    let mut s: u32 = 0x2545_f491;
    let data = (0..input.len())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            // Quantised like an upload, so a raw run sees the same pixels as the server.
            f32::from((s >> 24) as u8) / 255.0
        })
        .collect();
    let shape = [1, input.channels, input.height, input.width];
    ImageTensor::new(shape, data).unwrap_or_else(|_| ImageTensor::zeros(shape))
}

/// [`sample_tensor`] as the 8-bit PNG a phone would upload.
///
/// # Errors
/// [`Error::Model`] if the image cannot be encoded.
pub(crate) fn sample_png(input: InputSpec) -> Result<Vec<u8>> {
    let rgb = imaging::tensor_to_rgb(&sample_tensor(input)).map_err(Error::Model)?;
    imaging::encode_png(&rgb).map_err(Error::Model)
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn outcomes_name_the_status_the_code_and_retry_after() {
        let reply = |status: u16, retry_after, body: &str| Reply {
            status: StatusCode::from_u16(status).expect("status"),
            retry_after,
            close: false,
            body: Bytes::copy_from_slice(body.as_bytes()),
        };
        let overloaded = r#"{"error":{"code":"overloaded","message":"full"}}"#;
        assert_eq!(outcome(&reply(200, false, "{}")), OK);
        assert_eq!(outcome(&reply(503, true, overloaded)), OVERLOADED_RETRY);
        assert_eq!(outcome(&reply(503, false, overloaded)), "503 overloaded");
        assert_eq!(outcome(&reply(400, false, "")), "400 (no JSON error body)");
    }
}
