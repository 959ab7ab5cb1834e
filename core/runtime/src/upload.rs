//! An upload split into what the device computes deterministically from the photo (the base
//! and the per-pixel σ) and the noise it draws last. [`crate::noise::apply`] is
//! `from_maps` then `draw`; an auditor that must upload the same photo many times with fresh
//! noise (an attacker holding the perturber) runs the perturber's graph once and draws again.

use crate::noise::{NoiseKind, NoiseSource, PerturbationMaps};
use crate::tensor::ImageTensor;
use crate::{Error, Result};

/// Everything an upload is before its noise: `base = k ⊙ (x + μ) + (1 − k) · fill` and `σ ≥ 0`,
/// for a batch of images.
#[derive(Debug, Clone)]
pub struct UploadBase {
    base: ImageTensor,
    sigma: ImageTensor,
    /// One ε per pixel, shared by the colour channels (a grey release stays grey).
    shared_noise: bool,
}

impl UploadBase {
    /// The base and σ of images `x` perturbed by `maps` (every map the shape of `x`).
    ///
    /// # Errors
    /// [`Error::WrongSize`] when a map's shape differs from `x`'s.
    pub fn from_maps(x: &ImageTensor, maps: &PerturbationMaps) -> Result<Self> {
        for (name, t) in [
            ("sigma", Some(&maps.sigma)),
            ("shift", maps.shift.as_ref()),
            ("keep", maps.keep.as_ref()),
        ] {
            if let Some(t) = t
                && t.shape() != x.shape()
            {
                return Err(Error::WrongSize {
                    expected: format!("a {name} map of shape {:?}", x.shape()),
                    found: format!("{:?}", t.shape()),
                });
            }
        }
        let mut base = x.clone();
        let shift = maps.shift.as_ref().map(ImageTensor::data);
        let keep = maps.keep.as_ref().map(ImageTensor::data);
        for (j, v) in base.data_mut().iter_mut().enumerate() {
            let mut b = *v + shift.map_or(0.0, |s| s[j]);
            if let Some(k) = keep {
                let k = k[j].clamp(0.0, 1.0);
                b = k * b + (1.0 - k) * maps.fill;
            }
            *v = b;
        }
        let mut sigma = maps.sigma.clone();
        sigma.data_mut().iter_mut().for_each(|s| *s = s.max(0.0));
        Ok(Self {
            base,
            sigma,
            shared_noise: false,
        })
    }

    /// A base rendered without the photo (a bounded release), σ ≥ 0 of the same shape.
    pub(crate) fn rendered(base: ImageTensor, sigma: ImageTensor, shared_noise: bool) -> Self {
        Self {
            base,
            sigma,
            shared_noise,
        }
    }

    /// `[N, C, H, W]` of the images.
    pub fn shape(&self) -> [usize; 4] {
        self.base.shape()
    }

    /// The noiseless part of the upload.
    pub fn base(&self) -> &ImageTensor {
        &self.base
    }

    /// The per-pixel noise level σ.
    pub fn sigma(&self) -> &ImageTensor {
        &self.sigma
    }

    /// One upload of every image: `q(clip(base + σ ⊙ ε, 0, 1))`, one generator from `source`
    /// per image (pixels in CHW order), 8-bit levels in `[0, 1]`.
    ///
    /// # Errors
    /// None today; the signature leaves room for releases that can fail.
    pub fn draw(&self, kind: NoiseKind, source: &NoiseSource) -> Result<ImageTensor> {
        let mut out = self.base.clone();
        let per_image = self.base.image_len();
        let [_, c, h, w] = self.base.shape();
        let plane = h * w;
        let mut shared = Vec::new();
        for i in 0..self.base.batch() {
            let mut rng = source.rng();
            let range = i * per_image..(i + 1) * per_image;
            let sigma = &self.sigma.data()[range.clone()];
            let dst = &mut out.data_mut()[range];
            if self.shared_noise {
                shared.clear();
                shared.extend((0..plane).map(|_| kind.sample(&mut rng)));
                for ch in 0..c {
                    let range = ch * plane..(ch + 1) * plane;
                    for ((v, s), e) in dst[range.clone()]
                        .iter_mut()
                        .zip(&sigma[range])
                        .zip(&shared)
                    {
                        *v = f32::from(crate::tensor::quantize(*v + s * e)) / 255.0;
                    }
                }
            } else {
                for (v, s) in dst.iter_mut().zip(sigma) {
                    let noisy = *v + s * kind.sample(&mut rng);
                    *v = f32::from(crate::tensor::quantize(noisy)) / 255.0;
                }
            }
        }
        Ok(out)
    }

    /// Sum of σ, sum of σ² and the number of values, over every pixel of every image.
    pub fn sigma_sums(&self) -> (f64, f64, usize) {
        let d = self.sigma.data();
        let sum = d.iter().map(|&s| f64::from(s)).sum();
        let sq = d.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (sum, sq, d.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(x: &ImageTensor) -> PerturbationMaps {
        let n = x.data().len();
        let ramp = |a: f32, b: f32| -> Vec<f32> {
            (0..n).map(|j| a + b * (j % 13) as f32 / 13.0).collect()
        };
        PerturbationMaps {
            sigma: ImageTensor::new(x.shape(), ramp(-0.05, 0.3)).expect("shape"),
            shift: Some(ImageTensor::new(x.shape(), ramp(-0.1, 0.2)).expect("shape")),
            keep: Some(ImageTensor::new(x.shape(), ramp(-0.2, 1.4)).expect("shape")),
            fill: 0.5,
        }
    }

    #[test]
    fn draws_are_fresh_and_seeded_draws_repeat_the_device_path() {
        let data: Vec<f32> = (0..2 * 3 * 16).map(|j| (j % 7) as f32 / 7.0).collect();
        let x = ImageTensor::new([2, 3, 4, 4], data).expect("shape");
        let m = maps(&x);
        let base = UploadBase::from_maps(&x, &m).expect("base");
        let a = base
            .draw(NoiseKind::Gaussian, &NoiseSource::seeded_for_tests(9))
            .expect("draw");
        let b = crate::noise::apply(
            &x,
            &m,
            NoiseKind::Gaussian,
            &NoiseSource::seeded_for_tests(9),
        )
        .expect("apply");
        assert_eq!(a.data(), b.data());
        let os = NoiseSource::from_os();
        let c = base.draw(NoiseKind::Gaussian, &os).expect("draw");
        let d = base.draw(NoiseKind::Gaussian, &os).expect("draw");
        assert_ne!(c.data(), d.data(), "every draw has new noise");
        // Where σ is 0 the upload is the quantised base: k(x+μ) + (1−k)·fill.
        for (j, &s) in m.sigma.data().iter().enumerate() {
            if s <= 0.0 {
                let k = m.keep.as_ref().expect("keep").data()[j].clamp(0.0, 1.0);
                let v = x.data()[j] + m.shift.as_ref().expect("shift").data()[j];
                let want = crate::tensor::quantize(k * v + (1.0 - k) * 0.5);
                assert_eq!((c.data()[j] * 255.0).round() as u8, want);
            }
        }
    }

    #[test]
    fn a_map_of_another_shape_is_refused() {
        let x = ImageTensor::zeros([1, 3, 4, 4]);
        let mut m = maps(&x);
        m.keep = Some(ImageTensor::zeros([1, 3, 2, 2]));
        let err = UploadBase::from_maps(&x, &m).expect_err("shape");
        assert!(err.to_string().contains("keep"), "{err}");
    }
}
