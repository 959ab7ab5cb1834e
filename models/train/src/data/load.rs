//! Loading a [`DataSpec`]: UTKFace folders, ImageFolder trees and CSV files (each from a folder
//! or a `.tar.gz`), decoded in parallel and cached.

use std::path::{Path, PathBuf};

use scrim_core::InputSpec;

use super::dataset::{Attribute, Dataset};
use super::spec::DataSpec;
use super::{cache, source, synthetic};
use crate::{Error, Result};

/// Options for [`load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Square side to resize to.
    pub size: usize,
    /// Use (and fill) the decoded-tensor cache.
    pub cache: bool,
    /// Show a progress bar.
    pub progress: bool,
}

/// Loads a dataset at `size × size`, from the cache when possible.
///
/// # Errors
/// [`Error::InvalidOption`] for a size out of range, [`Error::BadData`] for a missing source or malformed labels (CSV), [`Error::NoImages`] for an empty dataset.
pub fn load(spec: &DataSpec, opts: &LoadOptions) -> Result<Dataset> {
    if opts.size < 8 || opts.size > 512 {
        return Err(Error::option(
            "--size",
            format!("must be in 8..=512, got {}", opts.size),
        ));
    }
    let ds = match spec {
        DataSpec::Synthetic(cfg) => synthetic::generate(cfg, opts.size),
        DataSpec::Utkface(root) => cached(spec, root, "", opts, || load_utkface(root, opts))?,
        DataSpec::ImageFolder(root, prefix) => cached(spec, root, prefix, opts, || {
            load_imagefolder(root, prefix, opts)
        })?,
        DataSpec::Csv(file) => load_csv(file, opts)?,
    };
    if ds.is_empty() {
        return Err(Error::NoImages(spec.to_string()));
    }
    Ok(ds)
}

fn cached(
    spec: &DataSpec,
    root: &Path,
    prefix: &str,
    opts: &LoadOptions,
    load: impl FnOnce() -> Result<Dataset>,
) -> Result<Dataset> {
    if !root.exists() {
        return Err(Error::data(
            spec,
            format!("{} does not exist", root.display()),
        ));
    }
    if !opts.cache {
        return load();
    }
    let key = cache::key(&format!(
        "{spec}|{}|{}",
        opts.size,
        source::fingerprint(root, prefix)?
    ));
    if let Some(ds) = cache::read(&key) {
        return Ok(ds);
    }
    let ds = load()?;
    cache::write(&key, &ds);
    Ok(ds)
}

/// UTKFace age groups (years): 0–17, 18–29, 30–44, 45–59, 60+.
const AGE_GROUPS: [(&str, u32); 5] = [
    ("0-17", 17),
    ("18-29", 29),
    ("30-44", 44),
    ("45-59", 59),
    ("60+", u32::MAX),
];

/// Parses `age_gender_race_...` into (age group, gender, race); `None` when malformed.
fn parse_utkface_name(file: &str) -> Option<(u16, u16, u16)> {
    let mut parts = file.split('_');
    let age: u32 = parts.next()?.parse().ok()?;
    let gender: u16 = parts.next()?.parse().ok()?;
    let race: u16 = parts.next()?.parse().ok()?;
    // The fourth field is the date; a name with only three fields lacks one of the labels.
    parts.next()?;
    if gender > 1 || race > 4 || age > 120 {
        return None;
    }
    let group = AGE_GROUPS.iter().position(|&(_, hi)| age <= hi)? as u16;
    Some((group, gender, race))
}

fn load_utkface(root: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let mut names = Vec::new();
    let (mut age, mut gender, mut race) = (Vec::new(), Vec::new(), Vec::new());
    let mut skipped = Vec::new();
    let images = decode_all(root, "", opts, &mut |rel| {
        let file = rel.rsplit('/').next().unwrap_or(rel);
        match parse_utkface_name(file) {
            Some((a, g, r)) => {
                names.push(rel.to_string());
                age.push(a);
                gender.push(g);
                race.push(r);
                true
            }
            None => {
                skipped.push(rel.to_string());
                false
            }
        }
    })?;
    if !skipped.is_empty() {
        tracing::warn!(
            "skipped {} UTKFace files whose names lack a label field (e.g. {})",
            skipped.len(),
            skipped
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(Dataset {
        size: opts.size,
        images,
        names,
        attributes: vec![
            Attribute {
                name: "gender".into(),
                classes: strs(&["male", "female"]),
                labels: gender,
            },
            Attribute {
                name: "race".into(),
                classes: strs(&["white", "black", "asian", "indian", "other"]),
                labels: race,
            },
            Attribute {
                name: "age_group".into(),
                classes: AGE_GROUPS.iter().map(|(n, _)| n.to_string()).collect(),
                labels: age,
            },
        ],
    })
}

fn load_imagefolder(root: &Path, prefix: &str, opts: &LoadOptions) -> Result<Dataset> {
    let mut names = Vec::new();
    let mut class_of = Vec::new();
    let prefix_dir = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let images = decode_all(root, &prefix_dir, opts, &mut |rel| {
        let inner = rel.strip_prefix(&prefix_dir).unwrap_or(rel);
        // Skip a single top-level folder in archives that wrap everything in one (e.g. "cifar10/").
        match inner.split_once('/') {
            Some((class, _)) => {
                names.push(rel.to_string());
                class_of.push(class.to_string());
                true
            }
            None => false,
        }
    })?;
    let mut classes: Vec<String> = class_of.clone();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return Err(Error::data(
            root.display(),
            format!(
                "an ImageFolder needs at least two class folders (class/image.jpg), found {}",
                classes.len()
            ),
        ));
    }
    let labels = class_of
        .iter()
        .map(|c| classes.binary_search(c).unwrap_or(0) as u16)
        .collect();
    Ok(Dataset {
        size: opts.size,
        images,
        names,
        attributes: vec![Attribute {
            name: "class".into(),
            classes,
            labels,
        }],
    })
}

fn load_csv(file: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| Error::data(file.display(), "empty CSV"))?
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let path_col = header.iter().position(|h| h == "path").ok_or_else(|| {
        Error::data(
            file.display(),
            format!("the header needs a `path` column, got {header:?}"),
        )
    })?;
    if header.len() < 2 {
        return Err(Error::data(
            file.display(),
            "no label columns besides `path`",
        ));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != header.len() {
            return Err(Error::data(
                format!("{} line {}", file.display(), n + 2),
                format!("{} cells, the header has {}", cells.len(), header.len()),
            ));
        }
        rows.push(cells.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    let paths: Vec<PathBuf> = rows.iter().map(|r| base.join(&r[path_col])).collect();
    let mut images = Vec::with_capacity(paths.len() * 3 * opts.size * opts.size);
    let bar = crate::report::bar(paths.len() as u64, "decoding", opts.progress);
    for p in &paths {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        images.extend(decode_resize(&bytes, opts.size).map_err(|e| Error::data(p.display(), e))?);
        bar.inc(1);
    }
    bar.finish();
    let mut attributes = Vec::new();
    for (col, name) in header.iter().enumerate().filter(|(c, _)| *c != path_col) {
        let mut classes: Vec<String> = rows.iter().map(|r| r[col].clone()).collect();
        classes.sort();
        classes.dedup();
        let labels = rows
            .iter()
            .map(|r| classes.binary_search(&r[col]).unwrap_or(0) as u16)
            .collect();
        attributes.push(Attribute {
            name: name.clone(),
            classes,
            labels,
        });
    }
    Ok(Dataset {
        size: opts.size,
        images,
        names: rows.iter().map(|r| r[path_col].clone()).collect(),
        attributes,
    })
}

/// Decodes and resizes exactly as the device does (scrim-core's decoder and resize filter),
/// returning CHW bytes.
fn decode_resize(bytes: &[u8], size: usize) -> scrim_core::Result<Vec<u8>> {
    let rgb = scrim_core::imaging::decode(bytes, scrim_core::DecodeLimits::default())?;
    let img = scrim_core::imaging::resize_rgb(&rgb, InputSpec::rgb(size, size));
    let plane = size * size;
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px.0[c];
        }
    }
    Ok(out)
}

/// Reads every image under `root`/`prefix`, keeps those `accept` takes (in order), and decodes
/// them on all cores. Undecodable files are skipped with a warning.
fn decode_all(
    root: &Path,
    prefix: &str,
    opts: &LoadOptions,
    accept: &mut dyn FnMut(&str) -> bool,
) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    let spinner = crate::report::spinner("reading", opts.progress);
    source::read_all(root, prefix, &mut |f| {
        spinner.inc(1);
        raw.push(f);
        Ok(())
    })?;
    spinner.finish();
    // Decode everything in parallel first, then let `accept` see the files in order.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = raw.len().div_ceil(threads).max(1);
    let bar = crate::report::bar(raw.len() as u64, "decoding", opts.progress);
    let decoded: Vec<scrim_core::Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = raw
            .chunks(chunk)
            .map(|part| {
                let bar = &bar;
                s.spawn(move || {
                    part.iter()
                        .map(|f| {
                            bar.inc(1);
                            decode_resize(&f.bytes, opts.size)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    bar.finish();
    let mut images = Vec::new();
    let mut undecodable = 0usize;
    for (f, d) in raw.iter().zip(decoded) {
        match d {
            Ok(px) => {
                if accept(&f.rel) {
                    images.extend(px);
                }
            }
            Err(e) => {
                undecodable += 1;
                tracing::warn!("skipping {}: {e}", f.rel);
            }
        }
    }
    if undecodable > 0 {
        tracing::warn!("skipped {undecodable} files that are not decodable images");
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utkface_names() {
        assert_eq!(
            parse_utkface_name("41_0_3_20170119171541497.jpg.chip.jpg"),
            Some((2, 0, 3))
        );
        assert_eq!(parse_utkface_name("2_1_2_2016.jpg"), Some((0, 1, 2)));
        assert_eq!(
            parse_utkface_name("61_1_20170109142408075.jpg.chip.jpg"),
            None
        );
        assert_eq!(parse_utkface_name("x_1_2_3.jpg"), None);
        assert_eq!(parse_utkface_name("30_2_1_3.jpg"), None);
    }

    #[test]
    fn data_specs_parse() {
        assert_eq!(
            "utkface:/d".parse::<DataSpec>().ok(),
            Some(DataSpec::Utkface("/d".into()))
        );
        assert_eq!(
            "imagefolder:c.tar.gz#train/".parse::<DataSpec>().ok(),
            Some(DataSpec::ImageFolder("c.tar.gz".into(), "train".into()))
        );
        assert!(
            matches!("synthetic:500".parse::<DataSpec>(), Ok(DataSpec::Synthetic(c)) if c.count == 500)
        );
        assert!("ftp:x".parse::<DataSpec>().is_err());
        assert!("utkface:".parse::<DataSpec>().is_err());
        assert!("synthetic:many".parse::<DataSpec>().is_err());
    }
}
