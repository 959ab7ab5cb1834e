//! A minimal owned image tensor in NCHW layout, the currency between scrim-core's parts.

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

    /// Splits a batch into single-image tensors.
    pub fn unstack(&self) -> Vec<ImageTensor> {
        let [n, c, h, w] = self.shape;
        (0..n)
            .map(|i| Self {
                shape: [1, c, h, w],
                data: self.image(i).to_vec(),
            })
            .collect()
    }

    /// Human-readable `CxHxW` of one image, for error messages.
    pub fn describe(&self) -> String {
        format!("{}x{}x{}", self.shape[1], self.shape[2], self.shape[3])
    }
}
