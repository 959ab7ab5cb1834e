//! Where images come from: a folder, or a `.tar.gz` archive read in place (so the shared
//! UTKFace and CIFAR-10 archives need no extraction step).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One image file found in a source: its path relative to the source root, and its bytes.
pub(crate) struct RawFile {
    pub rel: String,
    pub bytes: Vec<u8>,
}

/// File extensions read as images (`chip`: UTKFace's aligned crops).
const IMAGE_EXTS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "chip"];

/// Whether a file name has an image extension (JPEG, PNG, WebP; case-insensitive): the one
/// filter for every place that picks image files out of a folder.
pub fn is_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    IMAGE_EXTS.iter().any(|e| lower.ends_with(&format!(".{e}")))
}

fn is_archive(path: &Path) -> bool {
    let s = path.to_string_lossy().to_ascii_lowercase();
    s.ends_with(".tar.gz") || s.ends_with(".tgz") || s.ends_with(".tar")
}

/// A fingerprint of every image file under `root` (relative path, size, modification time),
/// cheap to compute, used as the decoded-cache key.
pub(crate) fn fingerprint(root: &Path, prefix: &str) -> Result<String> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if meta.is_file() {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        return Ok(format!(
            "{}|{}|{:?}|{prefix}",
            root.display(),
            meta.len(),
            mtime
        ));
    }
    let mut entries = Vec::new();
    walk(root, &mut |p, m| {
        let rel = p
            .strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned();
        if rel.starts_with(prefix) && is_image(&rel) {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            entries.push(format!("{rel}|{}|{:?}", m.len(), mtime));
        }
    })?;
    entries.sort();
    Ok(format!("{}|{}", root.display(), entries.join("\n")))
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path, &meta);
        }
    }
    Ok(())
}

/// Lists the image files under `root` (a folder or an archive) whose relative path starts with
/// `prefix`, sorted by path.
pub(crate) fn list(root: &Path, prefix: &str) -> Result<Vec<PathOrEntry>> {
    if !root.exists() {
        return Err(Error::NotFound(root.to_path_buf()));
    }
    if is_archive(root) {
        return Ok(vec![PathOrEntry::Archive(root.to_path_buf())]);
    }
    if !root.is_dir() {
        return Err(Error::data(
            root.display(),
            "is neither a folder nor a .tar.gz archive",
        ));
    }
    let mut files = Vec::new();
    walk(root, &mut |p, _| {
        let rel = p
            .strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with(prefix) && is_image(&rel) {
            files.push(PathOrEntry::File(rel, p.to_path_buf()));
        }
    })?;
    files.sort_by(|a, b| a.rel().cmp(b.rel()));
    Ok(files)
}

/// A folder's file, or a whole archive to stream.
pub(crate) enum PathOrEntry {
    File(String, PathBuf),
    Archive(PathBuf),
}

impl PathOrEntry {
    fn rel(&self) -> &str {
        match self {
            PathOrEntry::File(rel, _) => rel,
            PathOrEntry::Archive(_) => "",
        }
    }
}

/// Reads every image under `root` with the given prefix, calling `sink` for each (in path order
/// for folders, archive order for archives). Archive paths lose a single leading folder only if
/// the prefix names it.
pub(crate) fn read_all(
    root: &Path,
    prefix: &str,
    sink: &mut dyn FnMut(RawFile) -> Result<()>,
) -> Result<()> {
    for item in list(root, prefix)? {
        match item {
            PathOrEntry::File(rel, path) => {
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                sink(RawFile { rel, bytes })?;
            }
            PathOrEntry::Archive(path) => read_archive(&path, prefix, sink)?,
        }
    }
    Ok(())
}

fn read_archive(
    path: &Path,
    prefix: &str,
    sink: &mut dyn FnMut(RawFile) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let lower = path.to_string_lossy().to_ascii_lowercase();
    let reader: Box<dyn Read> = if lower.ends_with(".tar") {
        Box::new(std::io::BufReader::new(file))
    } else {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    };
    let mut archive = tar::Archive::new(reader);
    let bad = |e: std::io::Error| Error::data(path.display(), format!("unreadable archive: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .replace('\\', "/");
        let rel = rel.trim_start_matches("./").to_string();
        if !rel.starts_with(prefix) || !is_image(&rel) {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(bad)?;
        sink(RawFile { rel, bytes })?;
    }
    Ok(())
}
