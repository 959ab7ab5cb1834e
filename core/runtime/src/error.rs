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
    /// The manifest that belongs beside an ONNX file is not there.
    #[error(
        "manifest not found: {} (expected beside the model {}: `scrim train` writes NAME.json \
         next to each NAME.onnx; copy both)",
        manifest.display(),
        model.display()
    )]
    MissingManifest {
        /// Where the manifest was looked for.
        manifest: PathBuf,
        /// The ONNX file it belongs to.
        model: PathBuf,
    },
    /// A perturber and a recognizer from different training runs were loaded together.
    #[error(
        "the perturber and the recognizer come from different training runs (perturber: \
         {perturber}; recognizer: {recognizer}): a recognizer reads only the uploads of the \
         perturber it was co-trained with; load both from the same run folder"
    )]
    MismatchedRuns {
        /// The perturber's run ([`crate::manifest::describe`]).
        perturber: String,
        /// The recognizer's run.
        recognizer: String,
    },
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

/// Reads a file of at most `max` bytes, naming the file in the error. Never reads more than
/// `max + 1` bytes, so a path such as `/dev/zero` or a huge file given by mistake costs nothing.
///
/// # Errors
/// [`Error::Io`] if unreadable, or with [`std::io::ErrorKind::FileTooLarge`] when the file holds
/// more than `max` bytes.
pub fn read_file_limited(path: &std::path::Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("more than {max} bytes, too large for what it should hold"),
            ),
        ));
    }
    Ok(bytes)
}
