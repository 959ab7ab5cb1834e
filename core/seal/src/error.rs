//! scrim-seal's errors are scrim-core's: the same key, model and authentication failures, so
//! callers map one enum whichever crate they call.

use std::path::Path;

pub use scrim_core::{Error, Result};

/// Reads a whole file, naming the file in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| io(path, source))
}

/// An I/O error about `path`.
pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
