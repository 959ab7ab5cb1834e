//! The HTTP client for scrim-cloud: uploads perturbed images, never raw ones.
//!
//! Blocking reqwest over rustls (ring). Requests are retried with capped, jittered exponential
//! backoff on HTTP 503 (honouring `Retry-After`) and on transport errors; every other answer is
//! returned at once, mapped onto [`ScrimError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderValue};

use crate::classification::Classification;
use crate::error::{Result, ScrimError, guard};
use crate::perturber::{PerturbedImage, Perturber};
use crate::wire::{Attempt, RetryPolicy, classify_url, install_crypto_provider, retry_after};

/// How to reach a scrim-cloud server. Build it in Kotlin/Swift/Python with named arguments; every
/// field but `base_url` has a default (the same as [`ClientConfig::new`]). Its printed forms
/// (`toString`, `debugDescription`, `str`/`repr`) redact the API token.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
#[uniffi::export(Debug, Display)]
pub struct ClientConfig {
    /// Server root, e.g. `https://vision.example.com` or `https://example.com/scrim/`; the
    /// client posts to `<base_url>/v1/classify`. Use `https` outside development: the API token
    /// travels in a header.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[uniffi(default = None)]
    pub api_token: Option<String>,
    /// Time allowed to open a connection (TCP + TLS), in milliseconds.
    #[uniffi(default = 10000)]
    pub connect_timeout_ms: u64,
    /// Time allowed for one whole request, upload to last byte of the answer, in milliseconds.
    #[uniffi(default = 30000)]
    pub request_timeout_ms: u64,
    /// Retries after the first attempt, on HTTP 503 and on network errors (0 = no retry).
    #[uniffi(default = 3)]
    pub max_retries: u32,
    /// Backoff before the first retry, doubled for each further retry, in milliseconds.
    #[uniffi(default = 250)]
    pub initial_backoff_ms: u64,
    /// Cap on one backoff, also on a server's `Retry-After`, in milliseconds.
    #[uniffi(default = 5000)]
    pub max_backoff_ms: u64,
    /// PEM certificates to trust *instead of* the platform's trust store (pins the service's
    /// CA). Required on Android, where the platform verifier needs JNI set-up the SDK does not do.
    #[uniffi(default = None)]
    pub trusted_roots_pem: Option<String>,
}

impl ClientConfig {
    /// A configuration with the defaults the bindings use.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_token: None,
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_retries: 3,
            initial_backoff_ms: 250,
            max_backoff_ms: 5_000,
            trusted_roots_pem: None,
        }
    }
}

impl std::fmt::Display for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: say whether there is one, never what it is.
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff_ms", &self.initial_backoff_ms)
            .field("max_backoff_ms", &self.max_backoff_ms)
            .field(
                "trusted_roots_pem",
                &self.trusted_roots_pem.as_ref().map(|p| p.len()),
            )
            .finish()
    }
}

/// A client for one scrim-cloud server. Thread-safe: build one and share it (it keeps a
/// connection pool). Every call blocks; call it off the UI thread.
#[derive(uniffi::Object)]
pub struct ScrimClient {
    http: reqwest::blocking::Client,
    classify_url: reqwest::Url,
    auth: Option<HeaderValue>,
    retry: RetryPolicy,
    request_timeout: Duration,
}

impl std::fmt::Debug for ScrimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrimClient")
            .field("classify_url", &self.classify_url.as_str())
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry)
            .finish()
    }
}

#[uniffi::export]
impl ScrimClient {
    /// Checks the configuration and builds the client. Opens no connection.
    ///
    /// # Errors
    /// [`ScrimError::InvalidConfig`] for a bad URL, token, certificate or timeout.
    #[uniffi::constructor]
    pub fn new(config: ClientConfig) -> Result<Arc<Self>> {
        guard(|| Self::build(&config).map(Arc::new))
    }

    /// Uploads a perturbed image and returns the server's classification.
    ///
    /// # Errors
    /// [`ScrimError::Network`] when the server cannot be reached after all retries;
    /// [`ScrimError::Unauthorized`] for a refused token; [`ScrimError::Server`] for any other
    /// error answer (503 only after all retries); [`ScrimError::InvalidResponse`] for a 2xx that
    /// is not a classification.
    pub fn classify(&self, image: &PerturbedImage) -> Result<Classification> {
        guard(|| self.post_with_retries(image.png_bytes()))
    }

    /// Perturbs `image` (JPEG, PNG or WebP) on the device, then uploads the perturbed PNG: the raw
    /// image never leaves the device.
    ///
    /// # Errors
    /// As [`Perturber::perturb`] and [`ScrimClient::classify`].
    pub fn classify_image(&self, perturber: &Perturber, image: Vec<u8>) -> Result<Classification> {
        let perturbed = perturber.perturb(image)?;
        self.classify(&perturbed)
    }
}

impl ScrimClient {
    fn build(config: &ClientConfig) -> Result<Self> {
        let bad = |detail: String| ScrimError::InvalidConfig { detail };
        let classify_url = classify_url(&config.base_url).map_err(bad)?;
        if config.connect_timeout_ms == 0 || config.request_timeout_ms == 0 {
            return Err(bad(
                "connect_timeout_ms and request_timeout_ms must be positive".into(),
            ));
        }
        let auth = match &config.api_token {
            None => None,
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        bad("api_token must be printable ASCII without line breaks".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let https = classify_url.scheme() == "https";
        if cfg!(target_os = "android") && https && config.trusted_roots_pem.is_none() {
            return Err(bad(
                "on Android, set trusted_roots_pem to the PEM certificate(s) of the \
                 service's CA: the platform verifier needs JNI initialisation this SDK does not do"
                    .into(),
            ));
        }
        install_crypto_provider();
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            // Never follow a redirect: it could carry the token and the upload somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("scrim-mobile/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.trusted_roots_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| bad(format!("trusted_roots_pem: {e}")))?;
            if certs.is_empty() {
                return Err(bad("trusted_roots_pem holds no certificate".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            classify_url,
            auth,
            retry: RetryPolicy::new(
                config.max_retries,
                config.initial_backoff_ms,
                config.max_backoff_ms,
            ),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        })
    }

    fn post_with_retries(&self, png: &[u8]) -> Result<Classification> {
        let mut retry = 0;
        loop {
            let outcome = self.post_once(png);
            let wait = match &outcome {
                // A request reqwest could not even build will not build next time either.
                Attempt::Transport(e) if e.is_builder() => return outcome.finish(),
                Attempt::Transport(_) => self.retry.backoff(retry, None),
                Attempt::Answer(r, _) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    self.retry.backoff(retry, retry_after(r))
                }
                Attempt::Answer(..) => return outcome.finish(),
            };
            if retry >= self.retry.max_retries {
                return outcome.finish();
            }
            std::thread::sleep(wait);
            retry += 1;
        }
    }

    fn post_once(&self, png: &[u8]) -> Attempt {
        let deadline = Instant::now() + self.request_timeout;
        let mut request = self
            .http
            .post(self.classify_url.clone())
            .header(header::CONTENT_TYPE, "image/png")
            .header(header::ACCEPT, "application/json")
            .body(png.to_vec());
        if let Some(auth) = &self.auth {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        match request.send() {
            Ok(response) => Attempt::Answer(response, deadline),
            Err(e) => Attempt::Transport(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_typed_and_the_token_is_not_printed() {
        let mut c = ClientConfig::new("http://127.0.0.1:9");
        c.api_token = Some("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.to_string().contains("s3cret"));
        let client = ScrimClient::new(c.clone()).expect("valid config");
        assert!(!format!("{client:?}").contains("s3cret"));
        // https installs ring as rustls' provider (reqwest panics without one) and builds the
        // platform verifier; nothing is contacted.
        ScrimClient::new(ClientConfig::new("https://scrim.example.invalid")).expect("https client");

        let cases: [fn(&mut ClientConfig); 4] = [
            |c| c.base_url = "not a url".into(),
            |c| c.api_token = Some("line\nbreak".into()),
            |c| c.request_timeout_ms = 0,
            |c| c.trusted_roots_pem = Some("no certificate here".into()),
        ];
        for mutate in cases {
            let mut bad = c.clone();
            mutate(&mut bad);
            let err = ScrimClient::new(bad).expect_err("invalid");
            assert!(matches!(err, ScrimError::InvalidConfig { .. }), "{err:?}");
        }
    }
}
