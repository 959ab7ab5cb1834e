//! `scrim keygen`: a fresh secret key file.

use std::path::Path;

use scrim_core::SecretKey;

use crate::Result;
use crate::secret_file::{Existing, write_secret};

/// Writes a new key file at `out`, owner-readable only and atomically (never overwrites, never
/// writes through a link); creates its folder.
///
/// # Errors
/// [`Error::KeyFileExists`](crate::Error::KeyFileExists) when anything is at `out`; I/O errors.
pub fn keygen(out: &Path) -> Result<()> {
    let key = SecretKey::generate()?;
    write_secret(out, &key.to_file_bytes(), Existing::Refuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_loadable_key_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("keys/a.key");
        keygen(&path).expect("keygen");
        SecretKey::load(&path).expect("a valid key file");
        let first = std::fs::read(&path).expect("read");
        let err = keygen(&path).expect_err("never overwrites").to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), first);
    }
}
