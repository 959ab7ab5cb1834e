//! The bounded-capacity release: the upload is rendered from a low-resolution map the perturber
//! computes, plus input-independent Gaussian noise, and nothing else of the photo reaches it.
//!
//! `x' = q(clip(up(clamp(m(x), fill ± A)) + σ·ε))`: the graph outputs `m(x)`, a
//! `channels × side × side` map; the device clamps it to `fill ± amplitude` (non-finite values
//! become `fill`), expands it to the input's size by nearest neighbour (a grey map to all three
//! colour channels), and adds noise of one fixed σ (one ε per pixel for a grey map, so the
//! upload stays grey). Because the device clamps, the bound holds whatever graph ships.
//!
//! **The bound.** `X → m → Z = up(m) + σε → x'` is a Markov chain, so what one upload says
//! about the photo is at most `I(m; Z)` (clipping and 8-bit rounding only lose information).
//! Each of the `side²·channels` cells is repeated `f² = (size/side)²` times with independent
//! noise, so its mean is a sufficient statistic with noise σ/f; with power at most `A²` the
//! Gaussian channel gives
//! `bits ≤ side²·channels · ½·log2(1 + f²·A²/σ²)`.
//! This bounds capacity, not privacy: 2.3 bits are enough to name one of five races. It says
//! how much room the release leaves, and audits measure what attackers read in it.

use serde::{Deserialize, Serialize};

use crate::tensor::ImageTensor;
use crate::upload::UploadBase;
use crate::{Error, Result};

/// How a bounded release is rendered (`perturber.release` in a manifest, format version 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundedRelease {
    /// Side of the map the graph outputs (it must divide the input's sides).
    pub side: usize,
    /// 1 (a grey map, copied to the three colour channels) or 3.
    pub channels: usize,
    /// The map is clamped to `fill ± amplitude`.
    pub amplitude: f32,
    /// Standard deviation of the Gaussian noise, the same for every image and pixel.
    pub sigma: f32,
    /// The upper bound on the information one upload carries, in bits ([`BoundedRelease::bound`]),
    /// stated so readers need not compute it; validation checks it.
    pub bits_per_upload: f32,
}

impl BoundedRelease {
    /// A release with its bound computed for square inputs of side `size`.
    pub fn new(side: usize, channels: usize, amplitude: f32, sigma: f32, size: usize) -> Self {
        let mut r = Self {
            side,
            channels,
            amplitude,
            sigma,
            bits_per_upload: 0.0,
        };
        r.bits_per_upload = r.bound(size, size) as f32;
        r
    }

    /// `side²·channels · ½·log2(1 + f²·A²/σ²)` bits, `f` the upsampling factor to
    /// `height × width` (see the module docs).
    pub fn bound(&self, height: usize, width: usize) -> f64 {
        let cells = (self.side * self.side * self.channels) as f64;
        let repeats = (height * width) as f64 / (self.side * self.side).max(1) as f64;
        let snr = repeats * f64::from(self.amplitude).powi(2) / f64::from(self.sigma).powi(2);
        cells * 0.5 * (1.0 + snr).log2()
    }

    /// Checks the release against the input size and fill, naming the field at fault.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`].
    pub fn validate(&self, height: usize, width: usize, fill: f32) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidManifest(format!("perturber.release.{msg}")));
        if self.side == 0 || !height.is_multiple_of(self.side) || !width.is_multiple_of(self.side) {
            return bad(format!(
                "side must divide the input's {height}x{width}, got {}",
                self.side
            ));
        }
        if self.channels != 1 && self.channels != 3 {
            return bad(format!(
                "channels must be 1 (grey) or 3, got {}",
                self.channels
            ));
        }
        let a = self.amplitude;
        if !(a.is_finite() && a > 0.0 && fill - a >= 0.0 && fill + a <= 1.0) {
            return bad(format!(
                "amplitude must be positive with fill ± amplitude inside [0, 1], got {a} \
                 around fill {fill}"
            ));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0 && self.sigma <= 10.0) {
            return bad(format!("sigma must be in (0, 10], got {}", self.sigma));
        }
        let bound = self.bound(height, width);
        if (f64::from(self.bits_per_upload) - bound).abs() > 1e-3 * bound.max(1.0) {
            return bad(format!(
                "bits_per_upload is {}, but side {}, channels {}, amplitude {a} and sigma {} \
                 bound an upload at {bound:.3} bits",
                self.bits_per_upload, self.side, self.channels, self.sigma
            ));
        }
        Ok(())
    }

    /// The upload of images whose graph output is `map` (`[N, channels, side, side]`), before
    /// noise: the map clamped to `fill ± amplitude` (non-finite values → `fill`), expanded to
    /// `height × width` and to three channels; σ is the release's everywhere, and a grey map
    /// gets one ε per pixel for all three channels.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] for a map of another shape.
    pub fn upload_base(
        &self,
        map: &ImageTensor,
        fill: f32,
        height: usize,
        width: usize,
    ) -> Result<UploadBase> {
        let [n, c, h, w] = map.shape();
        if c != self.channels || h != self.side || w != self.side {
            return Err(Error::InvalidModel(format!(
                "the release map is {}, the manifest says [N, {}, {}, {}]",
                map.describe(),
                self.channels,
                self.side,
                self.side
            )));
        }
        let (lo, hi) = (fill - self.amplitude, fill + self.amplitude);
        let mut data = Vec::with_capacity(n * 3 * h * w);
        for i in 0..n {
            let img = map.image(i);
            for ch in 0..3 {
                let plane = if c == 1 { 0 } else { ch };
                data.extend(
                    img[plane * h * w..(plane + 1) * h * w]
                        .iter()
                        .map(|&v| if v.is_finite() { v.clamp(lo, hi) } else { fill }),
                );
            }
        }
        let base = ImageTensor::new([n, 3, h, w], data)?.upsample_nearest(height, width)?;
        let sigma = ImageTensor::new(base.shape(), vec![self.sigma; base.data().len()])?;
        Ok(UploadBase::rendered(base, sigma, self.channels == 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_counts_every_noisy_copy_of_a_cell() {
        // 32×32 grey, A 0.5: R 4, σ 0.2 → 16 cells seen 64 times each.
        let r = BoundedRelease::new(4, 1, 0.5, 0.2, 32);
        let want = 16.0 * 0.5 * (1.0f64 + 64.0 * 0.25 / 0.04).log2();
        // σ is an f32 (0.2 is 0.200000003): agree to 1e-4 bits.
        assert!((r.bound(32, 32) - want).abs() < 1e-4);
        assert!((r.bound(32, 32) - 69.2).abs() < 0.1, "{}", r.bound(32, 32));
        assert!(r.validate(32, 32, 0.5).is_ok());
        // More noise, fewer bits; more cells, more bits.
        assert!(BoundedRelease::new(4, 1, 0.5, 0.3, 32).bits_per_upload < r.bits_per_upload);
        assert!(BoundedRelease::new(8, 1, 0.5, 0.2, 32).bits_per_upload > r.bits_per_upload);
    }

    #[test]
    fn each_rule_names_its_field() {
        let ok = BoundedRelease::new(4, 1, 0.5, 0.2, 32);
        let cases = [
            (BoundedRelease { side: 5, ..ok }, "side"),
            (BoundedRelease { channels: 2, ..ok }, "channels"),
            (
                BoundedRelease {
                    amplitude: 0.6,
                    ..ok
                },
                "amplitude",
            ),
            (BoundedRelease { sigma: 0.0, ..ok }, "sigma"),
            (
                BoundedRelease {
                    bits_per_upload: 10.0,
                    ..ok
                },
                "bits_per_upload",
            ),
        ];
        for (r, field) in cases {
            let e = r.validate(32, 32, 0.5).expect_err(field).to_string();
            assert!(e.contains(&format!("release.{field}")), "{e}");
        }
    }

    #[test]
    fn the_render_is_clamped_grey_and_blind_to_everything_but_the_map() {
        let r = BoundedRelease::new(2, 1, 0.25, 0.1, 4);
        let map = ImageTensor::new([1, 1, 2, 2], vec![0.9, 0.1, f32::NAN, 0.6]).expect("map");
        let m = r.upload_base(&map, 0.5, 4, 4).expect("render");
        let base = m.base();
        assert_eq!(base.shape(), [1, 3, 4, 4]);
        // Clamped to 0.5 ± 0.25, NaN → fill, each cell 2×2, every channel equal.
        let plane: Vec<f32> = base.data()[..16].to_vec();
        assert_eq!(&plane[..4], &[0.75, 0.75, 0.25, 0.25]);
        assert_eq!(&plane[8..12], &[0.5, 0.5, 0.6, 0.6]);
        assert_eq!(&base.data()[16..32], &plane[..]);
        assert!(m.sigma().data().iter().all(|&s| s == 0.1));
        // The noise is shared by the channels: the upload is grey too.
        let up = m
            .draw(crate::NoiseKind::Gaussian, &crate::NoiseSource::from_os())
            .expect("draw");
        assert_eq!(&up.data()[..16], &up.data()[32..48]);
        let wrong = ImageTensor::zeros([1, 3, 2, 2]);
        assert!(r.upload_base(&wrong, 0.5, 4, 4).is_err());
    }
}
