//! A cache of decoded, resized datasets, keyed by the source's file list (paths, sizes,
//! modification times) and the image size, so a second run skips JPEG decoding.
//!
//! Location: `$SCRIM_CACHE_DIR`, else `$XDG_CACHE_HOME/scrim/decoded`, else
//! `~/.cache/scrim/decoded`. Entries are written atomically; a corrupt entry is ignored.

use std::path::PathBuf;

use super::dataset::Dataset;

const FORMAT: &str = "scrim-decoded-v1";

fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SCRIM_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("scrim").join("decoded"))
}

/// FNV-1a 64 of the description: stable across Rust versions, unlike `DefaultHasher`.
pub(super) fn key(description: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in FORMAT.bytes().chain(description.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub(super) fn read(key: &str) -> Option<Dataset> {
    let dir = dir()?;
    let meta = std::fs::read(dir.join(format!("{key}.json"))).ok()?;
    let mut ds: Dataset = serde_json::from_slice(&meta).ok()?;
    let images = std::fs::read(dir.join(format!("{key}.bin"))).ok()?;
    if images.len() != ds.len() * ds.image_len() {
        return None;
    }
    ds.images = images;
    tracing::info!("loaded {} decoded images from the cache", ds.len());
    Some(ds)
}

pub(super) fn write(key: &str, ds: &Dataset) {
    let Some(dir) = dir() else { return };
    // The cache is an optimisation: failing to write it is only worth a warning.
    let result = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{key}.bin.tmp{}", std::process::id()));
        std::fs::write(&tmp, &ds.images)?;
        std::fs::rename(&tmp, dir.join(format!("{key}.bin")))?;
        let tmp = dir.join(format!("{key}.json.tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(ds).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, dir.join(format!("{key}.json")))
    })();
    if let Err(e) = result {
        tracing::warn!(
            "could not write the decoded-image cache in {}: {e}",
            dir.display()
        );
    }
}
