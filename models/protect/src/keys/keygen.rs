//! `scrim keygen`: a fresh secret key file.

use std::path::Path;

use scrim_core::SecretKey;

use crate::files::create_parent;
use crate::{Error, Result};

/// Writes a new key file at `out` (never overwrites); creates its folder.
///
/// # Errors
/// [`Error::KeyFileExists`] when `out` exists; I/O errors.
pub fn keygen(out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Error::KeyFileExists(out.to_path_buf()));
    }
    create_parent(out)?;
    SecretKey::generate()?.save_new(out)?;
    Ok(())
}
