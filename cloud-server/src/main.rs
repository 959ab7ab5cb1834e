//! The `scrim-cloud` binary: parse arguments, set up logging, call the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use scrim_cloud::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scrim-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.into_config().context("configuration")?;
            scrim_cloud::serve(config)?;
        }
        Command::Bench(args) => {
            let report = scrim_cloud::bench::run(&args.options())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Command::Soak(args) => {
            let exe = std::env::current_exe().context("locating the scrim-cloud binary")?;
            let report = scrim_cloud::soak::run(&args.options(exe))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            if !report.passed() {
                anyhow::bail!(
                    "soak failed: {}",
                    report.failures.first().map_or("", String::as_str)
                );
            }
        }
    }
    Ok(())
}

/// Logs go to stderr (stdout carries only the `listening on` line). `RUST_LOG` filters;
/// `RUST_LOG=scrim_cloud=debug` adds one line per request.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
