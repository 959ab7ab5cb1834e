//! Where a dataset comes from, as written on the command line.

use std::path::PathBuf;

use super::synthetic::SyntheticConfig;
use crate::{Error, Result};

/// Where a dataset comes from, as written on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    /// `utkface:PATH` — a folder or archive of UTKFace files (`age_gender_race_date.jpg`).
    Utkface(PathBuf),
    /// `imagefolder:PATH[#PREFIX]` — `class/image.jpg` under PATH (or under PREFIX inside it).
    ImageFolder(PathBuf, String),
    /// `csv:FILE` — a CSV with a `path` column and one column per label.
    Csv(PathBuf),
    /// `synthetic[:N]` — the built-in generated set.
    Synthetic(SyntheticConfig),
}

impl std::str::FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "utkface" if !rest.is_empty() => Ok(DataSpec::Utkface(rest.into())),
            "imagefolder" if !rest.is_empty() => {
                let (path, prefix) = rest.split_once('#').unwrap_or((rest, ""));
                Ok(DataSpec::ImageFolder(
                    path.into(),
                    prefix.trim_matches('/').to_string(),
                ))
            }
            "csv" if !rest.is_empty() => Ok(DataSpec::Csv(rest.into())),
            "synthetic" => {
                let mut cfg = SyntheticConfig::default();
                if !rest.is_empty() {
                    cfg.count = rest.parse().map_err(|_| {
                        Error::option(
                            "synthetic:N",
                            format!("needs a number of images, got {rest:?}"),
                        )
                    })?;
                }
                Ok(DataSpec::Synthetic(cfg))
            }
            _ => Err(Error::UnknownName {
                what: "data source",
                given: s.into(),
                expected: "utkface:DIR, imagefolder:DIR[#SUBDIR], csv:FILE or synthetic[:N] \
                           (DIR may also be a .tar.gz archive)",
            }),
        }
    }
}

impl std::fmt::Display for DataSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSpec::Utkface(p) => write!(f, "utkface:{}", p.display()),
            DataSpec::ImageFolder(p, pre) if pre.is_empty() => {
                write!(f, "imagefolder:{}", p.display())
            }
            DataSpec::ImageFolder(p, pre) => write!(f, "imagefolder:{}#{pre}", p.display()),
            DataSpec::Csv(p) => write!(f, "csv:{}", p.display()),
            DataSpec::Synthetic(c) => write!(f, "synthetic:{}", c.count),
        }
    }
}
