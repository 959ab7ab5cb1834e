//! Progress bars that disappear when output is not a terminal or progress is off.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` steps.
pub fn bar(len: u64, message: &str, show: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), target(show));
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {prefix}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// A spinner for work of unknown length.
pub fn spinner(message: &str, show: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, target(show));
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} {spinner} {pos} files")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(message.to_string());
    pb
}

fn target(show: bool) -> ProgressDrawTarget {
    if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}
