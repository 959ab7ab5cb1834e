//! The one error type of scrim-core.

use std::path::PathBuf;

/// Everything that can go wrong in scrim-core. Messages are written for the person who has to fix
/// the input: they say what was expected and what was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not an image in a supported format (JPEG, PNG, WebP), or are corrupt.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The image is larger than the configured pixel limit (decompression-bomb guard).
    #[error(
        "image too large: {width}x{height} = {pixels} pixels exceeds the limit of {limit} pixels"
    )]
    ImageTooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// width × height.
        pixels: u64,
        /// The configured maximum.
        limit: u64,
    },
    /// An image or tensor does not have the size the model expects.
    #[error("wrong input size: the model expects {expected}, got {found}")]
    WrongSize {
        /// What the manifest asks for, e.g. `3x32x32`.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A manifest is missing, malformed or inconsistent.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// An ONNX model could not be loaded, optimised or run.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A key file is malformed, or a key does not fit what it is used for.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Sealed data failed authentication: wrong key, or the data was tampered with.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// A caller passed an argument outside its documented range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// `Result` with scrim-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Reads a whole file, naming the file in the error.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}
