//! Writing key files: owner-only (0600 on Unix), atomic, and never through a link.
//!
//! The bytes go to a fresh temporary file in the destination's folder (created 0600, so the
//! secret is never readable by others, not even for a moment), are flushed to disk, and the file
//! is then renamed onto the destination, so a reader sees either no key or the whole key. The
//! rename replaces a link at the destination instead of writing through it. With
//! [`Existing::Refuse`] the rename fails when anything, a dangling link included, is at the
//! destination, checked by the file system in the same step (no check-then-write race).
//!
//! scrim-core's `SecretKey::save_new` and `LevelKey::save` write in place (the latter following
//! links and keeping an existing file's mode), so scrim-protect writes their bytes itself.

use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use crate::{Error, Result};

/// What to do when a key file already exists where one is to be written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Existing {
    /// Fail with [`Error::KeyFileExists`] and leave the file alone.
    #[default]
    Refuse,
    /// Replace it (atomically: readers see the old key or the new one).
    Replace,
}

/// Writes the secret `bytes` to `path` as described in the module docs, creating its folder.
///
/// # Errors
/// [`Error::KeyFileExists`] when `path` exists and `existing` is [`Existing::Refuse`];
/// [`Error::Io`] naming the file otherwise.
pub(crate) fn write_secret(path: &Path, bytes: &[u8], existing: Existing) -> Result<()> {
    crate::files::create_parent(path)?;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    let io = |e: std::io::Error| Error::io(path, e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".scrim-key-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    // tempfile creates the file 0600 on Unix; say so rather than rely on it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    let persisted = match existing {
        Existing::Refuse => tmp.persist_noclobber(path),
        Existing::Replace => tmp.persist(path),
    };
    if let Err(e) = persisted {
        // Dropping `e.file` removes the temporary file.
        return Err(match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => Error::KeyFileExists(path.to_path_buf()),
            _ => io(e.error),
        });
    }
    sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` from a buffer that is wiped afterwards.
pub(crate) fn write_secret_owned(path: &Path, bytes: Vec<u8>, existing: Existing) -> Result<()> {
    let bytes = Zeroizing::new(bytes);
    write_secret(path, &bytes, existing)
}

/// Flushes the folder entry of the renamed file, so the key survives a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_owner_only_and_refuses_or_replaces_as_asked() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub/k.key");
        write_secret(&path, b"one", Existing::Refuse).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = write_secret(&path, b"two", Existing::Refuse).expect_err("exists");
        assert!(matches!(err, Error::KeyFileExists(_)), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        write_secret(&path, b"two", Existing::Replace).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("k.key")],
            "no temporary file left"
        );
    }

    #[cfg(unix)]
    #[test]
    fn never_writes_through_a_link() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").expect("write");
        let link = dir.path().join("k.key");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let err = write_secret(&link, b"secret", Existing::Refuse).expect_err("link");
        assert!(matches!(err, Error::KeyFileExists(_)), "{err}");
        // A dangling link is in the way too.
        let dangling = dir.path().join("d.key");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
        assert!(write_secret(&dangling, b"secret", Existing::Refuse).is_err());
        assert!(!dir.path().join("nowhere").exists());
        // Replacing replaces the link itself, not the file it points to.
        write_secret(&link, b"secret", Existing::Replace).expect("replace");
        assert_eq!(std::fs::read(&target).expect("read"), b"keep");
        assert!(!std::fs::symlink_metadata(&link).expect("meta").is_symlink());
        assert_eq!(std::fs::read(&link).expect("read"), b"secret");
    }
}
