//! The perturber's fixed transforms, the same for every draw: the grey conversion, the tone
//! standardisation, and the concept erasure of their output.

use burn::prelude::*;

use super::perturber::{LUMA, Perturber, STANDARD_EPS, STANDARD_STD};

impl Perturber {
    /// The shift of the fixed transforms, the same for every draw: the grey conversion or the
    /// tone standardisation, then the concept erasure of their output. `None` when there are
    /// none.
    ///
    /// # Shapes
    /// `[N, 3, H, W]` → `[N, 3, H, W]`.
    pub fn fixed_shift(&self, x: Tensor<4>) -> Option<Tensor<4>> {
        let tone = if self.standardize {
            Some(standardize_shift(x.clone(), self.fill))
        } else {
            self.gray.then(|| gray_shift(x.clone()))
        };
        let Some(erase) = &self.erase else {
            return tone;
        };
        Some(match tone {
            Some(t) => {
                let corr = erase.correction(x + t.clone());
                t + corr
            }
            None => erase.correction(x),
        })
    }
}

/// The luma plane of RGB images (ITU-R BT.601 weights, as on the device).
///
/// # Shapes
/// `[N, 3, H, W]` → `[N, 1, H, W]`.
pub(crate) fn luma(x: Tensor<4>) -> Tensor<4> {
    let weights = Tensor::<1>::from_floats(LUMA, &x.device()).reshape([1, 3, 1, 1]);
    x.mul(weights).sum_dim(1)
}

/// `luma(x) − x` per channel: the offset that turns an RGB image grey.
///
/// # Shapes
/// `[N, 3, H, W]` → `[N, 3, H, W]`.
pub fn gray_shift(x: Tensor<4>) -> Tensor<4> {
    let y = luma(x.clone());
    let [n, c, h, w] = x.dims();
    y.expand([n, c, h, w]) - x
}

/// `t(x) − x` per channel, where `t` is the image's luma standardised to mean `fill` and
/// standard deviation [`STANDARD_STD`] (over its pixels), the same in every channel.
///
/// # Shapes
/// `[N, 3, H, W]` → `[N, 3, H, W]`.
pub fn standardize_shift(x: Tensor<4>, fill: f64) -> Tensor<4> {
    let y = luma(x.clone());
    let mean = y.clone().mean_dim(2).mean_dim(3);
    let d = y - mean;
    let var = d.clone().powi_scalar(2).mean_dim(2).mean_dim(3);
    let t = d
        .div(var.add_scalar(STANDARD_EPS).sqrt())
        .mul_scalar(STANDARD_STD)
        .add_scalar(fill);
    let [n, c, h, w] = x.dims();
    t.expand([n, c, h, w]) - x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_luma_has_the_fixed_mean_and_contrast_whatever_the_brightness() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        // The same image darkened and with less contrast standardises to the same upload.
        let dark = x.clone().mul_scalar(0.4).add_scalar(0.05);
        let t = |x: Tensor<4>| crate::batch::to_vec(x.clone() + standardize_shift(x, 0.5));
        let (a, b) = (t(x), t(dark));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 5e-3, "{u} vs {v}"); // the ε under the root
        }
        // Per image: mean 0.5, standard deviation STANDARD_STD, equal channels.
        for img in a.chunks(3 * 64) {
            let y = &img[..64];
            let mean = y.iter().sum::<f32>() / 64.0;
            let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 64.0).sqrt();
            assert!((mean - 0.5).abs() < 1e-4, "mean {mean}");
            assert!((sd - STANDARD_STD).abs() < 1e-3, "sd {sd}");
            // Equal channels up to rounding (x + (t − x) per channel).
            for (r, g) in img[..64].iter().zip(&img[64..128]) {
                assert!((r - g).abs() < 1e-6, "{r} vs {g}");
            }
        }
    }
}
