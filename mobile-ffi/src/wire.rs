//! The wire side of the client: request URLs, one attempt and its outcome, the bounded response
//! body, the server's error body, and the retry policy (capped, jittered exponential backoff).

use std::io::Read;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Response;
use reqwest::header;

use crate::classification::Classification;
use crate::error::{Result, ScrimError};

/// Largest response body the client reads; a classification is a few hundred bytes.
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// The outcome of one request.
pub(crate) enum Attempt {
    Transport(reqwest::Error),
    /// An answer whose body must be read by the deadline.
    Answer(Response, Instant),
}

impl Attempt {
    pub(crate) fn finish(self) -> Result<Classification> {
        match self {
            Attempt::Transport(e) => Err(ScrimError::Network {
                detail: describe(&e),
            }),
            Attempt::Answer(r, deadline) => parse_answer(r, deadline),
        }
    }
}

/// The error and its causes on one line (reqwest's top-level message alone says little).
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(crate) fn parse_answer(response: Response, deadline: Instant) -> Result<Classification> {
    let status = response.status();
    let body = read_body(response, deadline)?;
    if status.is_success() {
        let mut c: Classification =
            serde_json::from_slice(&body).map_err(|e| ScrimError::InvalidResponse {
                detail: format!("HTTP {status} body is not a classification: {e}"),
            })?;
        c.labels.sort_by(|a, b| b.score.total_cmp(&a.score));
        return Ok(c);
    }
    let (code, detail) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody { error }) => (error.code, error.message),
        Err(_) => (
            format!("http_{}", status.as_u16()),
            status.canonical_reason().unwrap_or("error").to_owned(),
        ),
    };
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(ScrimError::Unauthorized { detail });
    }
    Err(ScrimError::Server {
        status: status.as_u16(),
        code,
        detail,
    })
}

/// Reads the body, at most [`MAX_RESPONSE_BYTES`], by `deadline`.
///
/// reqwest's blocking client bounds each read, not the whole body, so a server that drips a
/// byte at a time could hold the caller for ever: the deadline is checked after every read (one
/// read stalls at most the client's timeout).
pub(crate) fn read_body(mut response: Response, deadline: Instant) -> Result<Vec<u8>> {
    let status = response.status();
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = response.read(&mut chunk).map_err(|e| ScrimError::Network {
            detail: format!("reading the HTTP {status} answer: {}", describe(&e)),
        })?;
        if n == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..n]);
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(ScrimError::InvalidResponse {
                detail: format!("HTTP {status} answer is larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        if Instant::now() > deadline {
            return Err(ScrimError::Network {
                detail: format!(
                    "timed out reading the HTTP {status} answer (request_timeout_ms passed)"
                ),
            });
        }
    }
}

/// scrim-cloud's error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// `<base>/v1/classify`, keeping any path prefix of the base.
pub(crate) fn classify_url(base: &str) -> std::result::Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base.trim())
        .map_err(|e| format!("base_url {base:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "base_url must start with https:// or http://, got {base:?}"
        ));
    }
    if url.host().is_none() {
        return Err(format!("base_url {base:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err("base_url must not carry credentials or a query; use api_token".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.join("v1/classify")
        .map_err(|e| format!("base_url {base:?}: {e}"))
}

/// reqwest is built without a default rustls crypto provider (`rustls-no-provider`, to avoid
/// aws-lc's C build); install ring's once, unless the app already installed one.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: either provider works.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// When and how often to retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl RetryPolicy {
    /// Up to `max_retries` retries, the first after about `initial_ms`, none after more than
    /// `max_ms`.
    pub(crate) fn new(max_retries: u32, initial_ms: u64, max_ms: u64) -> Self {
        let max = Duration::from_millis(max_ms);
        Self {
            max_retries,
            initial: Duration::from_millis(initial_ms).min(max),
            max,
        }
    }

    /// The wait before retry number `retry` (0-based): `initial · 2^retry` with "equal jitter"
    /// (half fixed, half random, so clients that failed together do not come back together),
    /// at least the server's `Retry-After`, at most `max`.
    pub(crate) fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max);
        let half = exp / 2;
        let jitter = half.mul_f64(unit_random());
        (half + jitter)
            .max(retry_after.unwrap_or_default())
            .min(self.max)
    }
}

/// A number in `[0, 1)` for backoff jitter. Not security-relevant, so std's randomly keyed
/// hasher is enough and saves a dependency.
pub(crate) fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5c71);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` in seconds (the HTTP-date form is ignored: scrim-cloud sends seconds).
pub(crate) fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_url_keeps_prefixes() {
        let cases = [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/classify"),
            (
                "https://api.example.com/",
                "https://api.example.com/v1/classify",
            ),
            (
                "https://example.com/scrim",
                "https://example.com/scrim/v1/classify",
            ),
            (
                "https://example.com/scrim/",
                "https://example.com/scrim/v1/classify",
            ),
        ];
        for (base, want) in cases {
            assert_eq!(
                classify_url(base).map(String::from).as_deref(),
                Ok(want),
                "{base}"
            );
        }
        for bad in [
            "",
            "ftp://example.com",
            "example.com",
            "https://u:p@example.com",
            "http://h/?a=b",
        ] {
            assert!(classify_url(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = RetryPolicy {
            max_retries: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let b0 = p.backoff(0, None);
            assert!((50..=100).contains(&b0.as_millis()), "{b0:?}");
            let b2 = p.backoff(2, None);
            assert!((200..=400).contains(&b2.as_millis()), "{b2:?}");
            assert!(p.backoff(30, None) <= p.max);
        }
        assert_eq!(
            p.backoff(0, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(p.backoff(0, Some(Duration::from_secs(60))), p.max);
    }
}
