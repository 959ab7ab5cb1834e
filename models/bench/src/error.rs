//! The error type of scrim-bench.

use std::path::PathBuf;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A reference implementation run as a child process (onnxruntime, PyTorch) failed or
    /// answered something that is not its report.
    #[error("{script}: {reason}")]
    Reference {
        /// The script, e.g. `ort_perturb.py`.
        script: String,
        /// What went wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Training, export or data errors.
    #[error(transparent)]
    Train(#[from] scrim_train::Error),
    /// Runtime errors (ONNX, manifests, images).
    #[error(transparent)]
    Core(#[from] scrim_core::Error),
    /// A failure that is not the input's fault (encoding a test image, serialising the report).
    #[error("{0}")]
    Internal(String),
}

/// `Result` with scrim-bench's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error naming the file at fault.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A reference script's failure.
    pub fn reference(script: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Reference {
            script: script.into(),
            reason: reason.into(),
        }
    }
}
