//! The reporter the `scrim` command installs: progress bars and notes on standard error, and
//! the `tracing` subscriber (`RUST_LOG`, default `warn`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use scrim_train::report::{self, Reporter, Task};

struct Terminal {
    bars: bool,
}

struct Bar(ProgressBar);

impl Task for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn status(&self, text: &str) {
        self.0.set_prefix(text.to_string());
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Reporter for Terminal {
    fn task(&self, label: &str, len: Option<u64>) -> Box<dyn Task> {
        let target = if self.bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let pb = ProgressBar::with_draw_target(len, target);
        let template = match len {
            Some(_) => "{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {prefix}",
            None => "{msg:>10} {spinner} {pos} files",
        };
        pb.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(label.to_string());
        Box::new(Bar(pb))
    }

    fn note(&self, text: &str) {
        eprintln!("{text}");
    }
}

/// Installs the terminal reporter (bars unless `--quiet`) and the tracing subscriber.
pub fn install(bars: bool) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    report::install(Box::new(Terminal { bars }));
}
