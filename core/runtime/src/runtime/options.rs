//! How a [`super::Model`] is loaded: how many images it accepts per run and which engine runs it.

use std::path::PathBuf;

/// How many images a loaded model accepts per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchMode {
    /// Exactly one image: fastest for the phone.
    #[default]
    Single,
    /// Any batch size (a symbolic batch dimension): for callers that run batches of every size.
    Dynamic,
    /// Any batch size, through fixed-shape plans for 1, 2, 4, … up to `max` (and `max` itself):
    /// for servers that micro-batch. tract picks its fast convolution paths (lazy im2col, direct
    /// spatial) only for fixed shapes, so a partial batch is padded to the next planned size and
    /// a batch over `max` runs in chunks of `max`. With onnxruntime, the same as `Dynamic`.
    Planned {
        /// The largest planned batch.
        max: usize,
    },
    /// As `Planned`, then, in tract, only the plans for batches over one that run an image
    /// faster than the batch-1 plan are kept, each timed once at load (the batch-1 plan always
    /// stays). tract unrolls lazily only for a batch of one, so on a small model a batch run
    /// image by image can beat the batched plan; a server then gets the faster of the two for
    /// each batch size ([`super::Model::plan_choices`] says what was measured and kept), and a
    /// batch is split over the kept plans by their timings (padding counted as work: 7 images
    /// go as 4 + 2 + 1 when the plans run an image equally fast). With onnxruntime, the same as
    /// `Dynamic`.
    Tuned {
        /// The largest planned batch.
        max: usize,
    },
}

impl BatchMode {
    /// The batch sizes tract plans for (`None`: one plan with a symbolic batch dimension).
    pub(super) fn planned_sizes(self) -> Option<Vec<usize>> {
        match self {
            Self::Single => Some(vec![1]),
            Self::Dynamic => None,
            Self::Planned { max } | Self::Tuned { max } => {
                let max = max.max(1);
                let mut sizes: Vec<usize> =
                    std::iter::successors(Some(1usize), |s| s.checked_mul(2))
                        .take_while(|&s| s < max)
                        .collect();
                sizes.push(max);
                Some(sizes)
            }
        }
    }
}

/// The inference engine behind a [`Model`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Engine {
    /// tract: pure Rust, the phone's engine and the default.
    #[default]
    Tract,
    /// onnxruntime, loaded at run time from the shared library at this path (for example the
    /// `libonnxruntime.so.*` inside PyPI's `onnxruntime` wheel, under `onnxruntime/capi/`), one
    /// session thread per running batch. Needs scrim-core's `ort` cargo feature.
    Onnxruntime {
        /// The onnxruntime shared library.
        library: PathBuf,
    },
}

impl Engine {
    /// A short name for logs and reports: `tract` or `onnxruntime`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tract => "tract",
            Self::Onnxruntime { .. } => "onnxruntime",
        }
    }
}
