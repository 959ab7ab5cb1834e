//! The one error type of scrim-protect.

use std::path::PathBuf;

use scrim_core::Scheme;

/// What can go wrong while protecting a model, restoring a level or measuring protection.
///
/// The messages name the command-line option at fault where there is one, because the `scrim`
/// binary shows them as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--importance` names no known kernel ranking.
    #[error("unknown importance {0:?}; use pss, random or mean")]
    UnknownImportance(String),
    /// The model has no conv layer that selective encryption can protect.
    #[error("the model has no conv layer whose weight is an initializer")]
    NoConvLayer,
    /// `--layers` names a conv layer the model does not have.
    #[error("--layers: conv layer {index} does not exist (the model has {count}, numbered from 0)")]
    NoSuchLayer {
        /// The index asked for.
        index: usize,
        /// How many protectable conv layers the model has.
        count: usize,
    },
    /// A conv layer's weight is not among the model's initializers.
    #[error("no initializer {0:?}")]
    MissingInitializer(String),
    /// PSS ranks kernels on training images, and none were given.
    #[error("--importance pss needs --data (training images)")]
    PssNeedsData,
    /// `--ratio` outside `(0, 1]`.
    #[error("--ratio must be in (0, 1], got {0}")]
    BadRatio(f64),
    /// `--size` outside `1..=max`.
    #[error("--size must be in 1..={max}, got {size}")]
    BadSize {
        /// What was asked.
        size: usize,
        /// [`scrim_core::manifest::MAX_INPUT_SIDE`].
        max: usize,
    },
    /// `--levels` outside `1..=max`.
    #[error("--levels must be in 1..={max}, got {levels}")]
    BadLevels {
        /// The number of levels asked for.
        levels: usize,
        /// The most a bundle may have.
        max: usize,
    },
    /// PSS cannot rebuild an ONNX node in burn.
    #[error(
        "PSS cannot rebuild this model in burn: {op} node {reason}; PSS supports \
         conv-BN-ReLU-pool recognizers such as those of `scrim train` (use --importance random \
         or mean for others)"
    )]
    PssUnsupported {
        /// The ONNX operator.
        op: String,
        /// What about the node is not supported.
        reason: String,
    },
    /// The ONNX graph declares no input (or no output) to rebuild from.
    #[error("the ONNX model has no {0}")]
    NoGraphEnd(&'static str),
    /// The rebuilt graph cannot compute a value.
    #[error("{value}: {reason}")]
    PssGraph {
        /// The value that could not be computed.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The rebuilt graph never computed the model's output.
    #[error("the model's output was not computed")]
    OutputNotComputed,
    /// PSS gate training produced no gradient for the gates.
    #[error("PSS: the gates received no gradient")]
    NoGateGradient,
    /// The key-estimation attack was asked to estimate a key of a scheme it does not cover.
    #[error("the key-estimation attack covers shuffle and np, not {0}")]
    AttackScheme(Scheme),
    /// The training and test sets label different classes.
    #[error("the train and test sets have different classes")]
    ClassMismatch,
    /// A key file is in the way and the caller did not ask to replace it.
    #[error("{} already exists; a key file is never overwritten", .0.display())]
    KeyFileExists(PathBuf),
    /// An image file could not be decoded, transformed or encoded.
    #[error("{}: {source}", path.display())]
    Image {
        /// The input file at fault.
        path: PathBuf,
        /// What went wrong.
        source: scrim_core::Error,
    },
    /// A report could not be serialised.
    #[error("{file}: {source}")]
    Json {
        /// The report file.
        file: String,
        /// The serialiser's error.
        source: serde_json::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Loading data, training or exporting went wrong.
    #[error(transparent)]
    Train(#[from] scrim_train::Error),
    /// An error from the runtime (ONNX, manifests, images, keys, sealed bundles).
    #[error(transparent)]
    Core(#[from] scrim_core::Error),
}

/// `Result` with scrim-protect's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error naming the file at fault.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
