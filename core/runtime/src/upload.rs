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
        let per_image = self.noise_len() / self.base.batch().max(1);
        let mut eps = Vec::with_capacity(self.noise_len());
        for _ in 0..self.base.batch() {
            let mut rng = source.rng();
            eps.extend((0..per_image).map(|_| kind.sample(&mut rng)));
        }
        self.draw_with(&eps)
    }

    /// How many ε values one [`UploadBase::draw`] takes: one per value of every image (CHW
    /// order), or one per pixel when the colour channels share their noise (a grey release).
    pub fn noise_len(&self) -> usize {
        let [n, c, h, w] = self.base.shape();
        if self.shared_noise {
            n * h * w
        } else {
            n * c * h * w
        }
    }

    /// The upload for given noise values `eps` ([`UploadBase::noise_len`] of them, in the order
    /// [`UploadBase::draw`] draws them): the arithmetic of `draw` without the generator. For
    /// checking other implementations of the device path (the try-a-photo page) bit for bit
    /// against this one; a real upload takes its noise from [`UploadBase::draw`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `eps` has another length.
    pub fn draw_with(&self, eps: &[f32]) -> Result<ImageTensor> {
        if eps.len() != self.noise_len() {
            return Err(Error::InvalidArgument(format!(
                "{} noise values given, the upload takes {}",
                eps.len(),
                self.noise_len()
            )));
        }
        let mut out = self.base.clone();
        let [n, c, h, w] = self.base.shape();
        let plane = h * w;
        let per_image = c * plane;
        let eps_per_image = eps.len() / n.max(1);
        for i in 0..n {
            let range = i * per_image..(i + 1) * per_image;
            let sigma = &self.sigma.data()[range.clone()];
            let dst = &mut out.data_mut()[range];
            let e = &eps[i * eps_per_image..(i + 1) * eps_per_image];
            for (j, (v, s)) in dst.iter_mut().zip(sigma).enumerate() {
                // A shared ε is the pixel's, whatever the channel.
                let e = if self.shared_noise {
                    e[j % plane]
                } else {
                    e[j]
                };
                *v = f32::from(crate::tensor::quantize(*v + s * e)) / 255.0;
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
    fn draw_is_draw_with_the_generators_noise() {
        let data: Vec<f32> = (0..2 * 3 * 16).map(|j| (j % 5) as f32 / 5.0).collect();
        let x = ImageTensor::new([2, 3, 4, 4], data).expect("shape");
        let base = UploadBase::from_maps(&x, &maps(&x)).expect("base");
        assert_eq!(base.noise_len(), 2 * 3 * 16);
        let source = NoiseSource::seeded_for_tests(4);
        let mut eps = Vec::new();
        for _ in 0..2 {
            let mut rng = source.rng();
            eps.extend((0..48).map(|_| NoiseKind::Laplace.sample(&mut rng)));
        }
        let drawn = base
            .draw(NoiseKind::Laplace, &NoiseSource::seeded_for_tests(4))
            .expect("draw");
        assert_eq!(drawn, base.draw_with(&eps).expect("draw_with"));
        assert!(base.draw_with(&eps[1..]).is_err());
        // A grey release shares one ε per pixel between the channels.
        let grey = UploadBase::rendered(
            x.clone(),
            ImageTensor::new(x.shape(), vec![0.1; x.data().len()]).expect("sigma"),
            true,
        );
        assert_eq!(grey.noise_len(), 2 * 16);
        let up = grey.draw_with(&eps[..32]).expect("grey");
        let want = crate::tensor::quantize(x.data()[5] + 0.1 * eps[5]);
        assert_eq!((up.data()[16 + 5] * 255.0).round() as u8, {
            let v = x.data()[16 + 5] + 0.1 * eps[5];
            crate::tensor::quantize(v)
        });
        assert_eq!((up.data()[5] * 255.0).round() as u8, want);
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
