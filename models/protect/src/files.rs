//! Writing the crate's output files (models, bundles, reports), each error naming the file.
//! Key files are written by [`crate::secret_file`] instead.

use std::path::Path;

use serde::Serialize;

use crate::{Error, Result};

/// Reads `path`.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path`, replacing what is there.
pub(crate) fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Creates the folder `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Creates the folder that will hold `file` (nothing to do for a bare file name).
pub(crate) fn create_parent(file: &Path) -> Result<()> {
    match file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => create_dir(dir),
        None => Ok(()),
    }
}

/// `value` as pretty JSON, written to `path`; `suffix` is appended (e.g. a final newline).
pub(crate) fn write_json(path: &Path, value: &impl Serialize, suffix: &str) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        file: path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy()
            .into_owned(),
        source,
    })?;
    write(path, json + suffix)
}
