//! The one error type of scrim-audit.

use std::path::PathBuf;

/// What can go wrong while auditing, sweeping or merging audit reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An attacker name that is none of those in [`crate::Attack::ALL`].
    #[error(
        "unknown attack {0:?}; use kerckhoffs, variance, linear, cnn, blur, finetune or reconstruct"
    )]
    UnknownAttack(String),
    /// A baseline name that is none of `none`, `uniform`, `arden`.
    #[error(
        "unknown baseline {0:?}; use none, uniform or arden (train a Cloak-style run with `scrim train --input-independent` and pass it with --run)"
    )]
    UnknownBaseline(String),
    /// A sweep recipe that is none of `paper`, `cloak`, `gray-suppress`, `adversarial`.
    #[error("unknown variant {0:?}; use paper, cloak, gray-suppress or adversarial")]
    UnknownVariant(String),
    /// An ARDEN scheme with a nullified fraction outside `[0, 1]` or a negative or non-finite
    /// Laplace scale.
    #[error(
        "ARDEN needs a nullified fraction in [0, 1] and a Laplace scale ≥ 0, got μ = {nullify}, b = {scale}"
    )]
    BadArden {
        /// The nullified fraction μ asked for.
        nullify: f64,
        /// The Laplace scale b asked for.
        scale: f64,
    },
    /// The ARDEN baseline takes its client block from the attacker, which has no block.
    #[error("the ARDEN baseline needs attacker widths with at least one block")]
    ArdenNeedsBlock,
    /// Uniform noise without a σ and without a perturber to match.
    #[error("uniform noise needs --uniform-sigma or a perturber to match its energy")]
    UniformNeedsSigma,
    /// An audit without schemes.
    #[error("nothing to audit: give --run, --perturber or --baselines")]
    NoScheme,
    /// An audit without sensitive labels.
    #[error("give at least one --sensitive label")]
    NoSensitive,
    /// A sweep without λ values or without variants.
    #[error("give at least one --lambdas value and one --variants name")]
    EmptySweep,
    /// The split of the run the audit takes its split from indexes images the data lacks.
    #[error(
        "{}: its split indexes {needed} images but --data has {available}; audit with the data the run was trained on",
        run.display()
    )]
    SplitMismatch {
        /// The run folder whose split was read.
        run: PathBuf,
        /// Images the split needs (its largest index + 1).
        needed: usize,
        /// Images in the data.
        available: usize,
    },
    /// Nothing to merge.
    #[error("give at least one report.json")]
    NoReport,
    /// A file that does not parse as an audit report.
    #[error("{}: not an audit report: {reason}", path.display())]
    NotAReport {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        reason: serde_json::Error,
    },
    /// Two reports of different data, desired labels or splits, which cannot be merged.
    #[error("cannot merge an audit of {report} with one of {into}")]
    Incompatible {
        /// What the report being merged audited.
        report: Box<Audited>,
        /// What the reports merged so far audited.
        into: Box<Audited>,
    },
    /// The report could not be turned into JSON.
    #[error("cannot serialise the report: {0}")]
    Serialize(serde_json::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Data, training or evaluation went wrong (unknown labels, unreadable runs, ...).
    #[error(transparent)]
    Train(#[from] scrim_train::Error),
    /// An error from the runtime (ONNX, manifests, noise).
    #[error(transparent)]
    Core(#[from] scrim_core::Error),
}

/// What an audit report is of: the data, the desired label and the split (reports merge only
/// when these agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    /// The data source.
    pub data: String,
    /// The desired label.
    pub desired: String,
    /// Images in train / val / test.
    pub split: [usize; 3],
}

impl std::fmt::Display for Audited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}; split {:?})",
            self.data, self.desired, self.split
        )
    }
}

/// `Result` with scrim-audit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error naming the file at fault.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
