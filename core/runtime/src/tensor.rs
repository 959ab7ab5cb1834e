//! A minimal owned image tensor in NCHW layout, the currency between scrim-core's parts, and the
//! 8-bit quantisation of its values.

use crate::{Error, Result};

/// A batch of images as `f32` in NCHW layout (batch, channels, height, width).
///
/// Pixel values are in `[0, 1]` for images; model outputs may hold anything.
#[derive(Clone, PartialEq)]
pub struct ImageTensor {
    shape: [usize; 4],
    data: Vec<f32>,
}

impl std::fmt::Debug for ImageTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never dump pixel data into logs.
        f.debug_struct("ImageTensor")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl ImageTensor {
    /// Wraps `data` as a tensor of shape `[n, c, h, w]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the length does not match the shape.
    pub fn new(shape: [usize; 4], data: Vec<f32>) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "tensor of shape {shape:?} needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: [usize; 4]) -> Self {
        Self {
            shape,
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// `[n, c, h, w]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
    /// Number of images in the batch.
    pub fn batch(&self) -> usize {
        self.shape[0]
    }
    /// Values per image (`c·h·w`).
    pub fn image_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }
    /// All values, NCHW order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// All values, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Consumes the tensor into its values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    /// The values of image `i` (CHW).
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// Stacks single images (each `[1, c, h, w]`, all the same shape) into one batch.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on an empty list or differing shapes.
    pub fn stack(images: &[ImageTensor]) -> Result<Self> {
        let first = images
            .first()
            .ok_or_else(|| Error::InvalidArgument("cannot stack zero images".into()))?;
        let [_, c, h, w] = first.shape;
        let mut data = Vec::with_capacity(images.len() * first.image_len());
        for img in images {
            let [_, c2, h2, w2] = img.shape;
            if (c2, h2, w2) != (c, h, w) {
                return Err(Error::InvalidArgument(format!(
                    "cannot stack images of shapes {:?} and {:?}",
                    first.shape, img.shape
                )));
            }
            data.extend_from_slice(&img.data);
        }
        let n = data.len() / first.image_len().max(1);
        Ok(Self {
            shape: [n, c, h, w],
            data,
        })
    }

    /// Nearest-neighbour upsampling to `[height, width]`, each an integer multiple of this
    /// tensor's side (the same factor for both): how the device expands a σ map that the
    /// perturber computed at a fraction of the image's resolution.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the target is not an integer multiple with one factor.
    pub fn upsample_nearest(&self, height: usize, width: usize) -> Result<Self> {
        let [n, c, h, w] = self.shape;
        let f = upsample_factor([h, w], [height, width]).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "cannot upsample {h}x{w} to {height}x{width}: not one integer factor"
            ))
        })?;
        if f == 1 {
            return Ok(self.clone());
        }
        let mut data = Vec::with_capacity(n * c * height * width);
        for plane in self.data.chunks_exact(h * w) {
            for row in plane.chunks_exact(w) {
                let start = data.len();
                for &v in row {
                    data.extend(std::iter::repeat_n(v, f));
                }
                // The other f − 1 output rows repeat the one just written.
                for _ in 1..f {
                    data.extend_from_within(start..start + width);
                }
            }
        }
        Self::new([n, c, height, width], data)
    }

    /// Human-readable `CxHxW` of one image, for error messages.
    pub fn describe(&self) -> String {
        format!("{}x{}x{}", self.shape[1], self.shape[2], self.shape[3])
    }
}

/// `[0,1]` → `0..=255`, rounding to nearest; NaN maps to 0. The one 8-bit quantisation: of
/// uploads (`imaging::tensor_to_rgb`), of noisy pixels, and of FFX inputs.
pub fn quantize(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// The integer factor `f ≥ 1` with `to = f · from` on both sides, if there is one.
pub fn upsample_factor(from: [usize; 2], to: [usize; 2]) -> Option<usize> {
    let [h, w] = from;
    if h == 0 || w == 0 || !to[0].is_multiple_of(h) {
        return None;
    }
    let f = to[0] / h;
    (f >= 1 && to[1] == f * w).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_upsampling_repeats_each_value_in_a_block() {
        // Two channels of 2×3 → 4×6: every value fills a 2×2 block, planes stay apart.
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let t = ImageTensor::new([1, 2, 2, 3], data).expect("tensor");
        let up = t.upsample_nearest(4, 6).expect("upsample");
        assert_eq!(up.shape(), [1, 2, 4, 6]);
        let plane0: Vec<f32> = up.data()[..24].to_vec();
        #[rustfmt::skip]
        let want = vec![
            0., 0., 1., 1., 2., 2.,
            0., 0., 1., 1., 2., 2.,
            3., 3., 4., 4., 5., 5.,
            3., 3., 4., 4., 5., 5.,
        ];
        assert_eq!(plane0, want);
        assert_eq!(up.data()[24], 6.0);
        assert_eq!(up.data()[47], 11.0);
        // Factor 1 is the identity; unequal or fractional factors are refused.
        assert_eq!(t.upsample_nearest(2, 3).expect("same").data(), t.data());
        assert!(t.upsample_nearest(4, 3).is_err());
        assert!(t.upsample_nearest(3, 4).is_err());
        assert_eq!(upsample_factor([8, 8], [32, 32]), Some(4));
        assert_eq!(upsample_factor([0, 8], [32, 32]), None);
    }
}
