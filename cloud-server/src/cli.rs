//! Command-line arguments of the `scrim-cloud` binary, and how they merge with the TOML file and
//! the environment into a [`Config`].
//!
//! Precedence, highest first: flags, `SCRIM_CLOUD_*` environment variables, the TOML file
//! (`--config`), the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::EngineKind;
use crate::tokens::{TOKENS_ENV, parse_token_list};
use crate::{Config, Result};

mod tools;

pub use tools::{BenchArgs, SoakArgs};

/// `scrim-cloud`: serve a Scrim recognizer over HTTP, or load-test it.
#[derive(Debug, Parser)]
#[command(name = "scrim-cloud", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing would only complicate matching on it"
)]
pub enum Command {
    /// Serve a recognizer (`recognizer.onnx` + `recognizer.json`) over HTTP.
    Serve(ServeArgs),
    /// Load-test the server on loopback and compare with raw tract throughput.
    Bench(BenchArgs),
    /// Soak and fault suite: legitimate load beside hostile senders, server memory, SIGTERM
    /// under load; exits non-zero when the server misbehaves.
    Soak(SoakArgs),
}

/// Flags of `scrim-cloud serve`. Every flag also reads `SCRIM_CLOUD_<NAME>`; API tokens come
/// from `--tokens-file` or `SCRIM_CLOUD_TOKENS` (comma-separated), never from a flag.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// The recognizer ONNX file, e.g. runs/NAME/recognizer.onnx (manifest read from the .json
    /// beside it).
    #[arg(long, env = "SCRIM_CLOUD_MODEL")]
    pub model: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, env = "SCRIM_CLOUD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A TOML file with any of the settings (keys as the flag names, with underscores).
    #[arg(long, env = "SCRIM_CLOUD_CONFIG")]
    pub config: Option<PathBuf>,
    /// A file with one API token per line; when given, /v1 requires `Authorization: Bearer`.
    #[arg(long, env = "SCRIM_CLOUD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Largest number of images per model run [default: 32].
    #[arg(long, env = "SCRIM_CLOUD_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Longest wait for a batch to fill, in ms (only while requests are arriving) [default: 2].
    #[arg(long, env = "SCRIM_CLOUD_MAX_WAIT_MS")]
    pub max_wait_ms: Option<u64>,
    /// Images admitted and not yet answered; beyond it, 503 + Retry-After [default: 256].
    #[arg(long, env = "SCRIM_CLOUD_QUEUE")]
    pub queue: Option<usize>,
    /// Inference threads; 0 = one per CPU core but one, at least one [default: 0].
    #[arg(long, env = "SCRIM_CLOUD_WORKERS")]
    pub workers: Option<usize>,
    /// Inference engine: tract (built in) or ort (onnxruntime from --ort-library)
    /// [default: tract].
    #[arg(long, env = "SCRIM_CLOUD_ENGINE", value_enum)]
    pub engine: Option<EngineKind>,
    /// The onnxruntime shared library for --engine ort (PyPI's onnxruntime wheel has it in
    /// site-packages/onnxruntime/capi/).
    #[arg(long, env = "SCRIM_CLOUD_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// Largest body of /v1/classify, in bytes [default: 4194304].
    #[arg(long, env = "SCRIM_CLOUD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest body of /v1/classify/batch, in bytes [default: 33554432].
    #[arg(long, env = "SCRIM_CLOUD_MAX_BATCH_BODY_BYTES")]
    pub max_batch_body_bytes: Option<usize>,
    /// Most images in one batch request [default: 64].
    #[arg(long, env = "SCRIM_CLOUD_MAX_BATCH_IMAGES")]
    pub max_batch_images: Option<usize>,
    /// Largest width × height decoded [default: 4000000].
    #[arg(long, env = "SCRIM_CLOUD_MAX_PIXELS")]
    pub max_pixels: Option<u64>,
    /// Time limit of a request, in ms [default: 10000].
    #[arg(long, env = "SCRIM_CLOUD_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Time limit for reading a request body once admitted, in ms [default: 5000].
    #[arg(long, env = "SCRIM_CLOUD_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,
    /// Time a client has to send a complete request head, in ms [default: 10000].
    #[arg(long, env = "SCRIM_CLOUD_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Idle connections (no request in flight, nothing received) are closed after this, in ms
    /// [default: 5000].
    #[arg(long, env = "SCRIM_CLOUD_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Connections served at once; more are closed at once [default: 1024].
    #[arg(long, env = "SCRIM_CLOUD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest request head (request line + headers), in bytes [default: 131072].
    #[arg(long, env = "SCRIM_CLOUD_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Time in-flight requests get after SIGTERM, in ms [default: 30000].
    #[arg(long, env = "SCRIM_CLOUD_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Retry-After of 503 responses, in seconds [default: 1].
    #[arg(long, env = "SCRIM_CLOUD_RETRY_AFTER_SECS")]
    pub retry_after_secs: Option<u64>,
    /// Serve the try-a-photo page at /try/ with this perturber (its .json beside it): the
    /// visitor's browser perturbs the photo and posts only the upload, e.g.
    /// `--try-page runs/demo/perturber.onnx`. Needs onnxruntime-web (scripts/fetch-onnxruntime-web)
    /// [default: off].
    #[arg(long, env = "SCRIM_CLOUD_TRY_PAGE", value_name = "PERTURBER.onnx")]
    pub try_page: Option<PathBuf>,
    /// onnxruntime-web's dist folder for --try-page
    /// [default: ~/.cache/scrim/onnxruntime-web/node_modules/onnxruntime-web/dist].
    #[arg(long, env = "SCRIM_CLOUD_TRY_PAGE_ORT", value_name = "DIR")]
    pub try_page_ort: Option<PathBuf>,
}

impl ServeArgs {
    /// The configuration: the TOML file (if any), then these arguments (flags or environment),
    /// then the tokens of `SCRIM_CLOUD_TOKENS`.
    ///
    /// # Errors
    /// [`crate::Error::Io`] / [`crate::Error::Config`] for an unreadable or invalid TOML file, and
    /// [`crate::Error::Config`] when `SCRIM_CLOUD_TOKENS` is set but holds no token (or is not
    /// UTF-8): authentication is off only when the variable is unset and no token file is given.
    pub fn into_config(self) -> Result<Config> {
        let tokens = match std::env::var(TOKENS_ENV) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(crate::Error::Config(format!(
                    "{TOKENS_ENV} is not valid UTF-8"
                )));
            }
        };
        self.merge(tokens.as_deref())
    }

    pub(crate) fn merge(self, tokens_env: Option<&str>) -> Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        overlay!(
            model,
            listen,
            max_batch,
            max_wait_ms,
            queue,
            workers,
            engine,
            max_body_bytes,
            max_batch_body_bytes,
            max_batch_images,
            max_pixels,
            request_timeout_ms,
            body_timeout_ms,
            header_read_timeout_ms,
            idle_timeout_ms,
            max_connections,
            max_header_bytes,
            shutdown_grace_ms,
            retry_after_secs
        );
        if self.tokens_file.is_some() {
            c.tokens_file = self.tokens_file;
        }
        if self.try_page.is_some() {
            c.try_page = self.try_page;
        }
        if self.try_page_ort.is_some() {
            c.try_page_ort = self.try_page_ort;
        }
        if self.ort_library.is_some() {
            c.ort_library = self.ort_library;
        }
        if let Some(list) = tokens_env {
            c.tokens.extend(parse_token_list(list)?);
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::tools::parse_peer;
    use super::*;
    use crate::soak::SoakMode;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("parse")
    }

    #[test]
    fn flags_override_the_toml_file_and_tokens_come_from_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = dir.path().join("scrim-cloud.toml");
        std::fs::write(
            &toml,
            "model = \"from-file.onnx\"\nmax_batch = 8\nqueue = 100\n",
        )
        .expect("write");
        let cli = parse(&[
            "scrim-cloud",
            "serve",
            "--config",
            toml.to_str().expect("utf-8"),
            "--max-batch",
            "4",
            "--listen",
            "127.0.0.1:0",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let c = args.merge(Some("a-secret,b-secret")).expect("config");
        assert_eq!(c.model, PathBuf::from("from-file.onnx"));
        assert_eq!(c.max_batch, 4, "flag beats file");
        assert_eq!(c.queue, 100, "file beats default");
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.engine, EngineKind::Tract);
        let Command::Serve(args) = parse(&[
            "scrim-cloud",
            "serve",
            "--model",
            "m.onnx",
            "--engine",
            "ort",
            "--ort-library",
            "/lib/libonnxruntime.so",
        ])
        .command
        else {
            panic!("serve")
        };
        let c = args.merge(None).expect("config");
        assert_eq!(c.engine, EngineKind::Ort);
        assert_eq!(c.ort_library, Some(PathBuf::from("/lib/libonnxruntime.so")));
        assert_eq!(
            parse_peer("127.0.0.1:9000"),
            Ok(("peer".to_string(), ([127, 0, 0, 1], 9000).into()))
        );
        assert_eq!(
            parse_peer("main=127.0.0.1:9001").map(|p| p.0),
            Ok("main".to_string())
        );
        assert!(parse_peer("=127.0.0.1:1").is_err());
        assert!(parse_peer("python=localhost").is_err());
    }

    #[test]
    fn serve_needs_a_model_and_rejects_bad_values() {
        let Command::Serve(args) = parse(&["scrim-cloud", "serve"]).command else {
            panic!("serve")
        };
        assert!(
            args.merge(None)
                .expect_err("no model")
                .to_string()
                .contains("--model")
        );
        let Command::Serve(args) = parse(&[
            "scrim-cloud",
            "serve",
            "--model",
            "m.onnx",
            "--max-batch",
            "0",
        ])
        .command
        else {
            panic!("serve")
        };
        assert!(args.merge(None).is_err());
        assert!(Cli::try_parse_from(["scrim-cloud", "serve", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn a_tokens_variable_without_a_token_is_an_error_not_auth_off() {
        let serve = || {
            let Command::Serve(args) =
                parse(&["scrim-cloud", "serve", "--model", "m.onnx"]).command
            else {
                panic!("serve")
            };
            args
        };
        for value in ["", ",", " , ", " ,, \t"] {
            let err = serve()
                .merge(Some(value))
                .expect_err("set but empty must not turn auth off")
                .to_string();
            assert!(err.contains(TOKENS_ENV) && !err.contains('\n'), "{err}");
        }
        // A token with inner whitespace could never be presented; refuse it without echoing it.
        let err = serve()
            .merge(Some("good-secret, two words-secret"))
            .expect_err("spaces")
            .to_string();
        assert!(err.contains(TOKENS_ENV) && !err.contains("secret"), "{err}");
        // Auth off stays an explicit choice: the variable unset and no token file.
        let open = serve().merge(None).expect("no tokens configured");
        assert!(open.tokens.is_empty() && open.tokens_file.is_none());
        let on = serve()
            .merge(Some("a-secret, ,b-secret,"))
            .expect("two tokens");
        assert_eq!(on.tokens.len(), 2);
    }

    #[test]
    fn bench_quick_defaults() {
        let Command::Bench(args) = parse(&[
            "scrim-cloud",
            "bench",
            "--quick",
            "--requests",
            "20",
            "--clients",
            "1,2",
        ])
        .command
        else {
            panic!("bench")
        };
        let o = args.options();
        assert_eq!(
            (o.requests, o.warmup, o.clients.clone()),
            (20, 0, vec![1, 2])
        );
        let Command::Bench(args) = parse(&["scrim-cloud", "bench"]).command else {
            panic!("bench")
        };
        assert_eq!(args.options().clients, vec![1, 4, 16]);
        assert_eq!(args.options().requests, 2000);
    }

    #[test]
    fn soak_presets_and_overrides() {
        let Command::Soak(args) =
            parse(&["scrim-cloud", "soak", "--quick", "--requests", "500"]).command
        else {
            panic!("soak")
        };
        let o = args.options(PathBuf::from("x"));
        assert_eq!(
            (o.mode, o.requests, o.connections),
            (SoakMode::Short, 500, 64)
        );
        assert_eq!(o.header_read_timeout_ms, 1_000);
        let Command::Soak(args) = parse(&["scrim-cloud", "soak"]).command else {
            panic!("soak")
        };
        let o = args.options(PathBuf::from("x"));
        assert_eq!((o.mode, o.requests), (SoakMode::Long, 100_000));
    }
}
