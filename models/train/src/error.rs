//! The one error type of scrim-models.

use std::path::PathBuf;

/// What can go wrong while loading data, training, exporting or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad user input: a missing folder, an unknown label, an empty dataset, a bad option.
    #[error("{0}")]
    Input(String),
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
    /// Training or export went wrong (e.g. the exported model disagrees with burn).
    #[error("{0}")]
    Train(String),
}

/// `Result` with scrim-models' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error naming the file at fault.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
