//! Writing a checkpoint as one step: after a crash (`kill -9`, power loss) a run holds either the
//! whole previous checkpoint or the whole new one, never a mix or a torn file.
//!
//! A checkpoint is several files (weights, optimiser states, `checkpoint.json`), so renaming each
//! into place is not enough. [`Commit`] is a small redo log in the run folder:
//! 1. every file is written as `staged-NAME` and flushed to disk;
//! 2. `commit.json` (the list of names) is written atomically: this is the commit point;
//! 3. each `staged-NAME` is renamed onto `NAME`, then `commit.json` is removed.
//!
//! [`recover`] runs before a run is read: with `commit.json` present it finishes step 3 (the
//! staged files are complete), without it it deletes leftover staged files (the old checkpoint is
//! intact).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const STAGED: &str = "staged-";
const MARKER: &str = "commit.json";

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, flushed to
/// disk, so readers see the old content or the new, whole.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| Error::io(path, e);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// A checkpoint being written (see the module docs).
#[derive(Debug)]
pub(crate) struct Commit {
    dir: PathBuf,
    names: Vec<String>,
}

impl Commit {
    /// Starts a checkpoint in `dir`, first finishing or discarding an interrupted one.
    ///
    /// # Errors
    /// As [`recover`].
    pub(crate) fn begin(dir: &Path) -> Result<Self> {
        recover(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            names: Vec::new(),
        })
    }

    /// Writes file `name` of the checkpoint through `write`, which is given the staged path.
    ///
    /// # Errors
    /// Whatever `write` returns; [`Error::Io`] when the file cannot be flushed.
    pub(crate) fn stage(
        &mut self,
        name: &str,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let staged = self.dir.join(format!("{STAGED}{name}"));
        write(&staged)?;
        std::fs::File::open(&staged)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&staged, e))?;
        self.names.push(name.to_string());
        Ok(())
    }

    /// Writes a staged file from bytes.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn stage_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.stage(name, |p| {
            std::fs::write(p, bytes).map_err(|e| Error::io(p, e))
        })
    }

    /// Commits: from here on the new checkpoint is the run's, even if the process dies.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn finish(self) -> Result<()> {
        self.finish_until(Step::Done)
    }

    /// [`finish`](Self::finish), stopping after `step` (tests simulate a crash with it).
    pub(crate) fn finish_until(self, step: Step) -> Result<()> {
        sync_dir(&self.dir)?;
        if step == Step::Staged {
            return Ok(());
        }
        let list = serde_json::to_vec(&self.names).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.dir.join(MARKER), &list)?;
        if step == Step::Marked {
            return Ok(());
        }
        apply(&self.dir, &self.names)
    }
}

/// How far [`Commit::finish_until`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Files staged, no commit point yet.
    Staged,
    /// Commit point written, files not yet renamed.
    Marked,
    /// Everything.
    Done,
}

/// Finishes a checkpoint whose commit point was written, or deletes the staged files of one
/// that never reached it.
///
/// # Errors
/// [`Error::Io`]; [`Error::BadRecord`] for an unreadable `commit.json`.
pub(crate) fn recover(dir: &Path) -> Result<()> {
    let marker = dir.join(MARKER);
    if marker.is_file() {
        let text = std::fs::read(&marker).map_err(|e| Error::io(&marker, e))?;
        let names: Vec<String> = serde_json::from_slice(&text).map_err(|e| Error::BadRecord {
            path: marker.clone(),
            reason: e.to_string(),
        })?;
        tracing::info!("finishing the checkpoint interrupted in {}", dir.display());
        return apply(dir, &names);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(STAGED) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Renames every staged file that is still there onto its name, then removes the marker.
fn apply(dir: &Path, names: &[String]) -> Result<()> {
    for name in names {
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::BadRecord {
                path: dir.join(MARKER),
                reason: format!("{name:?} is not a checkpoint file name"),
            });
        }
        let staged = dir.join(format!("{STAGED}{name}"));
        if staged.is_file() {
            let target = dir.join(name);
            std::fs::rename(&staged, &target).map_err(|e| Error::io(&target, e))?;
        }
    }
    sync_dir(dir)?;
    let marker = dir.join(MARKER);
    std::fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
    sync_dir(dir)
}

/// Flushes a folder's entries (renames, creations) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).expect("read")
    }

    fn checkpoint(dir: &Path, content: &str, step: Step) {
        let mut c = Commit::begin(dir).expect("begin");
        c.stage_bytes("a.bpk", content.as_bytes()).expect("a");
        c.stage_bytes("checkpoint.json", content.as_bytes())
            .expect("json");
        c.finish_until(step).expect("finish");
    }

    #[test]
    fn a_crash_leaves_the_old_checkpoint_or_the_whole_new_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        checkpoint(d, "1", Step::Done);
        assert_eq!(
            (read(d, "a.bpk"), read(d, "checkpoint.json")),
            ("1".into(), "1".into())
        );
        // Dies before the commit point: the old checkpoint stays, the staged files go.
        checkpoint(d, "2", Step::Staged);
        recover(d).expect("recover");
        assert_eq!(
            (read(d, "a.bpk"), read(d, "checkpoint.json")),
            ("1".into(), "1".into())
        );
        assert_eq!(
            std::fs::read_dir(d).expect("ls").count(),
            2,
            "staged files removed"
        );
        // Dies after the commit point: recovery finishes the new checkpoint.
        checkpoint(d, "3", Step::Marked);
        assert_eq!(read(d, "a.bpk"), "1", "not yet renamed");
        recover(d).expect("recover");
        assert_eq!(
            (read(d, "a.bpk"), read(d, "checkpoint.json")),
            ("3".into(), "3".into())
        );
        assert!(!d.join(MARKER).exists());
        // Dies half-way through the renames: the rest is finished.
        checkpoint(d, "4", Step::Marked);
        std::fs::rename(d.join("staged-a.bpk"), d.join("a.bpk")).expect("one rename");
        Commit::begin(d).expect("begin recovers");
        assert_eq!(
            (read(d, "a.bpk"), read(d, "checkpoint.json")),
            ("4".into(), "4".into())
        );
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("config.json");
        write_atomic(&p, b"old").expect("write");
        write_atomic(&p, b"new").expect("write");
        assert_eq!(read(dir.path(), "config.json"), "new");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
