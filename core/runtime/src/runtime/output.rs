//! What a [`super::Model`] gives back: the outputs of a run and the convolution methods tract
//! picked.

use crate::tensor::ImageTensor;
use crate::{Error, Result};

/// One output of a model run.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Shape, batch first.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Output {
    /// A perturber map as an image tensor at `height × width`: a map computed at an integer
    /// fraction of the image's resolution is expanded (nearest), one at full size is kept.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] for an output that is not `[N, C, h, w]`;
    /// [`Error::InvalidArgument`] when `h × w` is not an integer fraction of the target.
    pub fn into_map(self, height: usize, width: usize) -> Result<ImageTensor> {
        let [n, c, h, w] = self.shape[..] else {
            return Err(Error::InvalidModel(format!(
                "a perturber map must be [N, C, H, W], got shape {:?}",
                self.shape
            )));
        };
        ImageTensor::new([n, c, h, w], self.data)?.upsample_nearest(height, width)
    }
}

/// One fixed-batch tract plan of a [`super::BatchMode::Tuned`] model, as timed at load: a plan
/// for a batch over one is kept only when it runs an image faster than the batch-1 plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanChoice {
    /// The plan's batch size.
    pub batch: usize,
    /// Microseconds per image (the fastest of a few runs on zeros, divided by the batch).
    pub us_per_image: f64,
    /// Whether the plan was kept.
    pub kept: bool,
}

/// The convolutions and max poolings of one tract plan and the method picked for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanKernels {
    /// The plan's batch size (`None`: symbolic).
    pub batch: Option<usize>,
    /// `(node name, method)` for each convolution, in evaluation order. Methods are operator
    /// names: `ScrimConv` (Scrim's direct convolution, `runtime/direct_conv.rs`), or tract's own:
    /// `LazyIm2col` or `Im2col` (an unrolling before a matrix product), `DirectSpatialConv`,
    /// `DepthWise`, `BlockedConv`.
    pub convolutions: Vec<(String, String)>,
    /// `(node name, method)` for each max pooling: `ScrimMaxPool` (Scrim's 2×2 stride-2 pooling,
    /// `runtime/scrim_pool.rs`) or tract's `OptMaxPool` / `MaxPool`.
    pub pools: Vec<(String, String)>,
}
