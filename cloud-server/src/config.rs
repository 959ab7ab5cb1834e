//! Server configuration: one struct with explicit defaults, loaded once at the edge.
//!
//! Sources, lowest precedence first: [`Config::default`], a TOML file, `SCRIM_CLOUD_*`
//! environment variables, command-line flags (the last two are merged by the `scrim-cloud`
//! binary, see `cli`). Tokens never come from the TOML file: they come from a token file
//! (`tokens_file`), the `SCRIM_CLOUD_TOKENS` environment variable, or code.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::tokens::{ApiToken, read_token_file};
use crate::{Error, Result};

/// Everything the server needs to start. Construct with [`Config::new`] and adjust the public
/// fields, or load a TOML file with [`Config::from_toml_file`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The recognizer ONNX file; its manifest is the `.json` beside it.
    pub model: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Largest number of images run through the model at once.
    pub max_batch: usize,
    /// Longest time the first image of a batch waits for others, in milliseconds (it waits
    /// only while other requests are on their way).
    pub max_wait_ms: u64,
    /// Images admitted and not yet answered; beyond it requests get 503 + `Retry-After`.
    pub queue: usize,
    /// Inference threads; 0 means one per CPU core but one (at least one), which is left to the
    /// HTTP side: on a 2-core machine one inference thread served 1.5× the images of two, at a
    /// third of the p99 (docs/PERFORMANCE.md).
    pub workers: usize,
    /// The inference engine: tract (the default, built in) or onnxruntime (`ort_library`).
    pub engine: EngineKind,
    /// The onnxruntime shared library for `engine = "ort"`, e.g. the
    /// `onnxruntime/capi/libonnxruntime.so.*` of PyPI's onnxruntime wheel.
    pub ort_library: Option<PathBuf>,
    /// Largest body of `POST /v1/classify`, in bytes.
    pub max_body_bytes: usize,
    /// Largest body of `POST /v1/classify/batch`, in bytes.
    pub max_batch_body_bytes: usize,
    /// Most images in one batch request.
    pub max_batch_images: usize,
    /// Largest `width × height` decoded (checked before decoding).
    pub max_pixels: u64,
    /// Time limit for a whole request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Time limit for reading a request body once the request is admitted (it holds a queue
    /// slot meanwhile), in milliseconds; 408 `body_timeout` beyond it.
    pub body_timeout_ms: u64,
    /// Time a client has to send a complete request head, counted from when the server starts
    /// waiting for it (connection opened, or previous response written), in milliseconds.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight that receives nothing for this long is closed,
    /// in milliseconds.
    pub idle_timeout_ms: u64,
    /// Connections served at once; beyond it new connections are closed at once. Lowered at
    /// start to fit the process's open-file limit.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes; 431 beyond it.
    pub max_header_bytes: usize,
    /// After SIGTERM / Ctrl-C, how long in-flight requests may take to finish, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// `Retry-After` sent with 503 responses, in seconds.
    pub retry_after_secs: u64,
    /// A file with one API token per line (`#` comments and blank lines ignored).
    pub tokens_file: Option<PathBuf>,
    /// API tokens given directly (environment or code). Never read from TOML.
    #[serde(skip)]
    pub tokens: Vec<ApiToken>,
    /// The sealed level bundle of a selectively encrypted `model` (`bundle.scrimlv` from
    /// `scrim protect select`); needed by tiers with a `key_file`.
    pub bundle: Option<PathBuf>,
    /// Service tiers: each serves its own tokens the model of one protection level. The tokens
    /// of `tokens_file` / [`Config::tokens`] are served `model` as it is (level 0).
    pub tiers: Vec<TierConfig>,
    /// A perturber (`perturber.onnx`, manifest beside it) to serve the try-a-photo page with,
    /// under `/try/`; off when absent.
    pub try_page: Option<PathBuf>,
    /// onnxruntime-web's `dist` folder for the page (default: where
    /// `scripts/fetch-onnxruntime-web` installs it, under `~/.cache/scrim`).
    pub try_page_ort: Option<PathBuf>,
}

/// Which engine runs the recognizer (`engine = "tract"` or `"ort"` in TOML, `--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// tract, built in: fixed-shape plans for the batch sizes the server forms.
    #[default]
    Tract,
    /// onnxruntime, loaded at start from `ort_library` (needs the `ort` cargo feature, on by
    /// default).
    Ort,
}

/// One service tier (`[[tiers]]` in TOML): API tokens that are served the model restored with
/// one level key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Name shown in `/v1/models` and the logs, e.g. `basic`.
    pub name: String,
    /// The level key (`level-K.key`); without one the tier gets level 0, the encrypted model as
    /// shipped.
    pub key_file: Option<PathBuf>,
    /// A file with this tier's API tokens, one per line (`#` comments allowed).
    pub tokens_file: Option<PathBuf>,
    /// This tier's tokens given in code. Never read from TOML.
    #[serde(skip)]
    pub tokens: Vec<ApiToken>,
}

impl TierConfig {
    /// A tier named `name` with `key_file` and no tokens yet.
    pub fn new(name: &str, key_file: Option<PathBuf>) -> Self {
        Self {
            name: name.into(),
            key_file,
            tokens_file: None,
            tokens: Vec::new(),
        }
    }

    /// The tier's tokens: [`TierConfig::tokens`] plus those in `tokens_file`.
    ///
    /// # Errors
    /// As [`Config::load_tokens`]; a tier without any token is an error (nobody could use it).
    pub fn load_tokens(&self) -> Result<Vec<ApiToken>> {
        let mut tokens = self.tokens.clone();
        if let Some(path) = &self.tokens_file {
            tokens.extend(read_token_file(path)?);
        }
        if tokens.is_empty() {
            return Err(Error::Config(format!(
                "tier {:?} has no API token: give it a tokens_file",
                self.name
            )));
        }
        if tokens.iter().any(|t| t.is_empty()) {
            return Err(Error::Config(format!(
                "tier {:?}: an API token is empty",
                self.name
            )));
        }
        Ok(tokens)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            max_batch: 32,
            max_wait_ms: 2,
            queue: 256,
            workers: 0,
            engine: EngineKind::Tract,
            ort_library: None,
            max_body_bytes: 4 << 20,
            max_batch_body_bytes: 32 << 20,
            max_batch_images: 64,
            max_pixels: 4_000_000,
            request_timeout_ms: 10_000,
            body_timeout_ms: 5_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 5_000,
            max_connections: 1024,
            max_header_bytes: 128 << 10,
            shutdown_grace_ms: 30_000,
            retry_after_secs: 1,
            tokens_file: None,
            tokens: Vec::new(),
            bundle: None,
            tiers: Vec::new(),
            try_page: None,
            try_page_ort: None,
        }
    }
}

impl Config {
    /// The defaults, serving `model` (a `recognizer.onnx` with its `recognizer.json` beside it).
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Parses TOML; keys are the field names (`max_batch = 16`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending key.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(format!("TOML: {}", e.message().trim())))
    }

    /// Reads a TOML file.
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable, [`Error::Config`] if invalid (with the path).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message().trim())))
    }

    /// Number of inference threads after resolving `workers = 0` (cores − 1, at least 1).
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1).max(1))
                .unwrap_or(1)
        }
    }

    /// The engine to load models with, and how to batch them: for tract, fixed-shape plans up
    /// to `max_batch`, of which those that do not beat running the images one by one are
    /// dropped at load ([`scrim_core::BatchMode::Tuned`]); onnxruntime takes any batch as it
    /// is.
    ///
    /// # Errors
    /// [`Error::Config`] for `engine = "ort"` without `ort_library`.
    pub fn engine(&self) -> Result<(scrim_core::Engine, scrim_core::BatchMode)> {
        let batch = scrim_core::BatchMode::Planned {
            max: self.max_batch,
        };
        match (self.engine, &self.ort_library) {
            (EngineKind::Tract, _) => Ok((
                scrim_core::Engine::Tract,
                scrim_core::BatchMode::Tuned {
                    max: self.max_batch,
                },
            )),
            (EngineKind::Ort, Some(library)) => Ok((
                scrim_core::Engine::Onnxruntime {
                    library: library.clone(),
                },
                batch,
            )),
            (EngineKind::Ort, None) => Err(Error::Config(
                "engine \"ort\" needs ort_library (--ort-library PATH/libonnxruntime.so, e.g. \
                 from PyPI's onnxruntime wheel: site-packages/onnxruntime/capi/)"
                    .into(),
            )),
        }
    }

    /// Checks every value, saying what is wrong and what is allowed.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.model.as_os_str().is_empty() {
            return bad("no model given: pass --model PATH/recognizer.onnx".into());
        }
        if !(1..=1024).contains(&self.max_batch) {
            return bad(format!(
                "max_batch must be in 1..=1024, got {}",
                self.max_batch
            ));
        }
        self.engine()?;
        if self.max_wait_ms > 10_000 {
            return bad(format!(
                "max_wait_ms must be at most 10000, got {}",
                self.max_wait_ms
            ));
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return bad(format!("queue must be in 1..=1000000, got {}", self.queue));
        }
        if self.workers > 1024 {
            return bad(format!(
                "workers must be at most 1024, got {}",
                self.workers
            ));
        }
        if self.max_body_bytes == 0 || self.max_batch_body_bytes == 0 {
            return bad("max_body_bytes and max_batch_body_bytes must be positive".into());
        }
        if !(1..=1024).contains(&self.max_batch_images) {
            return bad(format!(
                "max_batch_images must be in 1..=1024, got {}",
                self.max_batch_images
            ));
        }
        if self.max_batch_images > self.queue {
            return bad(format!(
                "max_batch_images ({}) must not exceed queue ({}): such a batch could never be \
                 admitted",
                self.max_batch_images, self.queue
            ));
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms must be positive".into());
        }
        for (name, ms) in [
            ("body_timeout_ms", self.body_timeout_ms),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                return bad(format!("{name} must be in 1..=3600000, got {ms}"));
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return bad(format!(
                "max_connections must be in 1..=1000000, got {}",
                self.max_connections
            ));
        }
        if !(8192..=16 << 20).contains(&self.max_header_bytes) {
            return bad(format!(
                "max_header_bytes must be in 8192..=16777216, got {}",
                self.max_header_bytes
            ));
        }
        if self.max_pixels == 0 {
            return bad("max_pixels must be positive".into());
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tiers {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return bad(format!(
                    "tier names must be unique and non-empty, got {:?}",
                    t.name
                ));
            }
            if t.key_file.is_some() && self.bundle.is_none() {
                return bad(format!(
                    "tier {:?} has a key_file but no bundle is configured: set `bundle` to the \
                     bundle.scrimlv written with the keys",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// All API tokens: [`Config::tokens`] plus those in `tokens_file`. Empty means auth is off.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file; [`Error::Config`] for a token file without tokens
    /// (an empty file must not silently turn auth off) or a token with inner whitespace.
    pub fn load_tokens(&self) -> Result<Vec<ApiToken>> {
        let mut tokens = self.tokens.clone();
        if let Some(path) = &self.tokens_file {
            tokens.extend(read_token_file(path)?);
        }
        if tokens.iter().any(|t| t.is_empty()) {
            return Err(Error::Config("an API token is empty".into()));
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::parse_token_list;

    #[test]
    fn defaults_are_valid_with_a_model() {
        let c = Config::new("runs/x/recognizer.onnx");
        c.validate().expect("defaults");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.worker_threads() >= 1);
        assert!(Config::default().validate().is_err(), "no model");
    }

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c = Config::from_toml_str(
            "model = \"m.onnx\"\nlisten = \"0.0.0.0:9000\"\nmax_batch = 8\nmax_wait_ms = 5\n",
        )
        .expect("toml");
        assert_eq!(c.max_batch, 8);
        assert_eq!(c.max_wait_ms, 5);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.queue, Config::default().queue);
        let err = Config::from_toml_str("max_bacth = 8").expect_err("typo");
        assert!(err.to_string().contains("max_bacth"), "{err}");
        // Tokens cannot be put in a config file.
        assert!(Config::from_toml_str("tokens = [\"abc\"]").is_err());
        assert_eq!(c.engine, EngineKind::Tract, "tract by default");
        let (_, tract_batch) = c.engine().expect("tract");
        assert_eq!(
            tract_batch,
            scrim_core::BatchMode::Tuned { max: c.max_batch },
            "tract keeps only the plans that beat batch 1"
        );
        let ort = Config::from_toml_str(
            "model = \"m.onnx\"\nengine = \"ort\"\nort_library = \"/lib/libonnxruntime.so\"\n",
        )
        .expect("toml");
        assert_eq!(ort.engine, EngineKind::Ort);
        ort.validate().expect("ort with its library");
        let (engine, batch) = ort.engine().expect("engine");
        assert_eq!(engine.name(), "onnxruntime");
        assert_eq!(batch, scrim_core::BatchMode::Planned { max: ort.max_batch });
        let no_lib = Config::from_toml_str("model = \"m.onnx\"\nengine = \"ort\"\n").expect("toml");
        let err = no_lib.validate().expect_err("ort without a library");
        assert!(err.to_string().contains("ort_library"), "{err}");
        assert!(
            Config::from_toml_str("engine = \"onnx\"").is_err(),
            "unknown engine"
        );
    }

    #[test]
    fn the_example_file_holds_the_defaults() {
        let example = Config::from_toml_str(include_str!("../scrim-cloud.example.toml"))
            .expect("example parses");
        let defaults = Config::new("runs/utk/recognizer.onnx");
        assert_eq!(example, defaults);
    }

    #[test]
    fn validation_names_the_field() {
        type Mutation = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|c| c.max_batch = 0), "max_batch"),
            (Box::new(|c| c.queue = 0), "queue"),
            (Box::new(|c| c.max_wait_ms = 60_000), "max_wait_ms"),
            (Box::new(|c| c.max_batch_images = 0), "max_batch_images"),
            (
                Box::new(|c| c.max_batch_images = 500),
                "must not exceed queue",
            ),
            (Box::new(|c| c.request_timeout_ms = 0), "request_timeout_ms"),
            (Box::new(|c| c.max_body_bytes = 0), "max_body_bytes"),
            (Box::new(|c| c.body_timeout_ms = 0), "body_timeout_ms"),
            (
                Box::new(|c| c.header_read_timeout_ms = 0),
                "header_read_timeout_ms",
            ),
            (Box::new(|c| c.idle_timeout_ms = 0), "idle_timeout_ms"),
            (Box::new(|c| c.max_connections = 0), "max_connections"),
            (Box::new(|c| c.max_header_bytes = 100), "max_header_bytes"),
        ];
        for (mutate, needle) in cases {
            let mut c = Config::new("m.onnx");
            mutate(&mut c);
            let err = c.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn tokens_come_from_file_and_list_and_never_show_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# ops\n\n  alpha-secret \nbeta-secret\n").expect("write");
        let mut c = Config::new("m.onnx");
        c.tokens = parse_token_list(" gamma-secret, ,delta-secret").expect("two tokens");
        c.tokens_file = Some(file.clone());
        let tokens = c.load_tokens().expect("tokens");
        assert_eq!(tokens.len(), 4);
        assert_eq!(tokens[2].expose(), b"alpha-secret");
        let debug = format!("{c:?} {tokens:?}");
        assert!(!debug.contains("secret"), "{debug}");

        std::fs::write(&file, "# nothing here\n").expect("write");
        let err = c.load_tokens().expect_err("empty file");
        assert!(err.to_string().contains("no token"), "{err}");
        std::fs::write(&file, "two words-secret\n").expect("write");
        let err = c.load_tokens().expect_err("spaces").to_string();
        assert!(err.contains("line 1") && !err.contains("secret"), "{err}");
    }
}
