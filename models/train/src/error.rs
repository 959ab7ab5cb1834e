//! The error type of scrim-train: one variant per kind of failure, each carrying what the
//! caller needs to act on it (the option, the file, the label), and a message that says it.

use std::path::PathBuf;

/// What can go wrong while loading data, training, exporting or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option (a command-line flag, or the configuration field behind it) is out of range
    /// or clashes with another.
    #[error("{flag} {reason}")]
    InvalidOption {
        /// The flag as written on the command line, e.g. `--size`.
        flag: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A name that is not one of the accepted ones (a backend, a layout, a data source).
    #[error("unknown {what} {given:?}; use {expected}")]
    UnknownName {
        /// What was named.
        what: &'static str,
        /// The name given.
        given: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// A label the dataset does not have.
    #[error("unknown label {name:?}; this dataset has: {}", known.join(", "))]
    UnknownLabel {
        /// The label asked for.
        name: String,
        /// The dataset's labels.
        known: Vec<String>,
    },
    /// A file or folder that should exist does not.
    #[error("{} does not exist", .0.display())]
    NotFound(PathBuf),
    /// A source holds no usable image.
    #[error("{0}: no images found")]
    NoImages(String),
    /// Data that cannot be used as it is: a malformed CSV, an unreadable archive or image, too
    /// few images to split.
    #[error("{source_name}: {reason}")]
    BadData {
        /// The file, folder or data source at fault.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A folder that is not a training run.
    #[error("{} is not a training run (no config.json); train one with `scrim train --out {}`", .0.display(), .0.display())]
    NotARun(PathBuf),
    /// A run's file (weights, configuration, metrics) that cannot be read or written as such.
    #[error("{}: {reason}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A backend that this build does not include.
    #[error("backend {0} is not compiled in; rebuild with `--features {0}`")]
    BackendMissing(crate::backend::Backend),
    /// Training diverged.
    #[error("the loss diverged (NaN/inf) in epoch {epoch}; lower --lr or --lambda")]
    Diverged {
        /// The 1-based epoch.
        epoch: usize,
    },
    /// The exported ONNX does not compute what burn computes.
    #[error(
        "the exported ONNX disagrees with burn: max |diff| σ {sigma:.2e}, logits {logits:.2e} (> {tolerance:.0e})"
    )]
    ExportMismatch {
        /// Largest σ difference.
        sigma: f32,
        /// Largest logit difference.
        logits: f32,
        /// The tolerance.
        tolerance: f32,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error from the runtime (ONNX, manifests, images).
    #[error(transparent)]
    Core(#[from] scrim_core::Error),
    /// A failure inside training that is not the input's fault (a panicked worker thread, a
    /// serialisation error).
    /// A figure could not be drawn or written.
    #[error(transparent)]
    Figure(#[from] scrim_plots::Error),
    #[error("{0}")]
    Internal(String),
}

/// `Result` with scrim-train's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error naming the file at fault.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An option out of range.
    pub fn option(flag: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            flag,
            reason: reason.into(),
        }
    }

    /// Data that cannot be used, naming its source.
    pub fn data(source_name: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::BadData {
            source_name: source_name.to_string(),
            reason: reason.to_string(),
        }
    }
}
