//! Progress and messages from library code. Libraries do not print: they report through the
//! one [`Reporter`] the binary installs at start-up (the `scrim` command draws progress bars on
//! standard error). Without one, progress is invisible and notes go to `tracing` at info level,
//! so tests and other library callers see nothing unless they ask for it.

use std::sync::OnceLock;

/// Where progress and messages go; the binary supplies one through [`install`].
pub trait Reporter: Send + Sync {
    /// Starts a unit of work of `len` steps (`None`: unknown length) named `label`.
    fn task(&self, label: &str, len: Option<u64>) -> Box<dyn Task>;
    /// A line for the user (what was loaded, what was written, a warning).
    fn note(&self, text: &str);
}

/// One unit of work in progress.
pub trait Task: Send + Sync {
    /// `n` more steps done.
    fn advance(&self, n: u64);
    /// A short status shown beside the progress (e.g. the current loss).
    fn status(&self, text: &str);
    /// The work is over: the progress disappears.
    fn finish(&self);
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Installs the process's reporter. Returns false if one was installed already (it stays).
pub fn install(reporter: Box<dyn Reporter>) -> bool {
    REPORTER.set(reporter).is_ok()
}

/// Progress of one unit of work; silent when progress is off or no reporter is installed.
pub struct Progress(Option<Box<dyn Task>>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress"
        } else {
            "Progress(silent)"
        })
    }
}

impl Progress {
    /// `n` more steps done.
    pub fn inc(&self, n: u64) {
        if let Some(t) = &self.0 {
            t.advance(n);
        }
    }

    /// A short status beside the progress.
    pub fn set_status(&self, text: &str) {
        if let Some(t) = &self.0 {
            t.status(text);
        }
    }

    /// The work is over.
    pub fn finish(&self) {
        if let Some(t) = &self.0 {
            t.finish();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn start(label: &str, len: Option<u64>, show: bool) -> Progress {
    Progress(
        show.then(|| REPORTER.get().map(|r| r.task(label, len)))
            .flatten(),
    )
}

/// Progress over `len` steps, shown when `show` is true and a reporter is installed.
pub fn bar(len: u64, label: &str, show: bool) -> Progress {
    start(label, Some(len), show)
}

/// Progress of unknown length.
pub fn spinner(label: &str, show: bool) -> Progress {
    start(label, None, show)
}

/// A line for the user, through the installed reporter (else `tracing` at info level).
pub fn note(text: &str) {
    match REPORTER.get() {
        Some(r) => r.note(text),
        None => tracing::info!("{text}"),
    }
}
