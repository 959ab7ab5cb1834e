//! Moving images and labels between [`Dataset`]s, burn tensors and scrim-core tensors.

use burn::prelude::*;
use burn::tensor::TensorData;
use scrim_core::ImageTensor;

use crate::data::Dataset;

/// Images `indices` of `ds` as a `[B, 3, S, S]` tensor in `[0, 1]`.
pub fn images(ds: &Dataset, indices: &[usize], device: &Device) -> Tensor<4> {
    let s = ds.size;
    let mut v = Vec::with_capacity(indices.len() * ds.image_len());
    for &i in indices {
        v.extend(ds.unit_pixels(i));
    }
    Tensor::from_data(TensorData::new(v, [indices.len(), 3, s, s]), device)
}

/// Where a classifier's inputs come from: images, or feature maps derived from them (the
/// ARDEN baseline releases features). Labels and length come from the underlying [`Dataset`].
pub trait Inputs {
    /// The labelled images the inputs belong to (one input per image, same order).
    fn dataset(&self) -> &Dataset;
    /// Channels of one input.
    fn channels(&self) -> usize;
    /// Inputs `indices` as one batch.
    ///
    /// # Shapes
    /// `[B, channels, H, W]`.
    fn batch(&self, indices: &[usize], device: &Device) -> Tensor<4>;
    /// Called by [`crate::eval::fit`] before each training epoch with its number: inputs drawn
    /// afresh every epoch (an upload redrawn with new noise) redraw here. The default does
    /// nothing.
    fn set_epoch(&self, _epoch: usize) {}
    /// Number of inputs.
    fn len(&self) -> usize {
        self.dataset().len()
    }
    /// True when there are no inputs.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inputs for Dataset {
    fn dataset(&self) -> &Dataset {
        self
    }
    fn channels(&self) -> usize {
        3
    }
    fn batch(&self, indices: &[usize], device: &Device) -> Tensor<4> {
        images(self, indices, device)
    }
}

/// Labels of attribute `attr` for `indices` as an int tensor.
pub fn labels(ds: &Dataset, attr: usize, indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = indices
        .iter()
        .map(|&i| i64::from(ds.attributes[attr].labels[i]))
        .collect();
    Tensor::from_data(TensorData::new(v, [indices.len()]), device)
}

/// A burn tensor's values as `f32`.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// Class predictions (argmax) of logits `[B, K]`.
pub fn predictions(logits: Tensor<2>) -> Vec<usize> {
    let [b, k] = logits.dims();
    let v = to_vec(logits);
    (0..b)
        .map(|i| {
            let row = &v[i * k..(i + 1) * k];
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |best, (j, &x)| if x > best.1 { (j, x) } else { best },
                )
                .0
        })
        .collect()
}

/// A burn `[B, 3, H, W]` tensor as a scrim-core tensor.
pub fn to_image_tensor(t: Tensor<4>) -> ImageTensor {
    let [b, c, h, w] = t.dims();
    ImageTensor::new([b, c, h, w], to_vec(t)).unwrap_or_else(|_| ImageTensor::zeros([b, c, h, w]))
}

/// A scrim-core tensor as a burn tensor.
pub fn from_image_tensor(t: &ImageTensor, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(t.data().to_vec(), t.shape()), device)
}

/// Splits `0..n` into batches of `size` (the last may be smaller).
pub fn chunks(indices: &[usize], size: usize) -> impl Iterator<Item = &[usize]> {
    indices.chunks(size.max(1))
}
