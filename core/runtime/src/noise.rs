//! Device-side noise: draws ε from a CSPRNG and forms the upload `x' = clip(x + σ ⊙ ε, 0, 1)`,
//! quantised to 8 bits exactly as it will be encoded.
//!
//! The generator is ChaCha20 seeded from the operating system for every image, so noise is never
//! reused and the seed never leaves the device. [`NoiseSource::seeded_for_tests`] exists only for
//! tests and reproducible experiments; its name says so.

use std::sync::Mutex;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::tensor::ImageTensor;
use crate::{Error, Result};

/// The distribution of ε. Both have unit standard deviation, so `σ` is the noise's standard
/// deviation for either kind (Laplace scale `b = σ/√2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// Standard normal ε.
    #[default]
    Gaussian,
    /// Laplace ε with unit variance (heavier tails).
    Laplace,
}

impl NoiseKind {
    /// Draws one unit-variance sample.
    pub fn sample(self, rng: &mut impl RngCore) -> f32 {
        match self {
            NoiseKind::Gaussian => rng.sample::<f32, _>(StandardNormal),
            NoiseKind::Laplace => {
                // Inverse CDF on u ∈ (−½, ½); b = 1/√2 gives variance 2b² = 1.
                let u: f32 = rng.random::<f32>() - 0.5;
                let b = std::f32::consts::FRAC_1_SQRT_2;
                -b * u.signum() * (1.0 - 2.0 * u.abs()).max(f32::MIN_POSITIVE).ln()
            }
        }
    }
}

impl std::str::FromStr for NoiseKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gaussian" => Ok(Self::Gaussian),
            "laplace" => Ok(Self::Laplace),
            other => Err(Error::InvalidArgument(format!(
                "unknown noise kind {other:?}; use gaussian or laplace"
            ))),
        }
    }
}

/// Where noise comes from.
pub struct NoiseSource {
    seeded: Option<Mutex<ChaCha20Rng>>,
}

impl std::fmt::Debug for NoiseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The state of a seeded generator is as good as the noise itself: never print it.
        let kind = if self.seeded.is_some() {
            "seeded-for-tests"
        } else {
            "os-csprng"
        };
        f.debug_struct("NoiseSource").field("kind", &kind).finish()
    }
}

impl Default for NoiseSource {
    fn default() -> Self {
        Self::from_os()
    }
}

impl NoiseSource {
    /// A fresh ChaCha20 generator seeded from the operating system for every image.
    pub fn from_os() -> Self {
        Self { seeded: None }
    }

    /// A deterministic generator, **for tests and reproducible experiments only**: anyone who
    /// knows the seed can subtract the noise.
    pub fn seeded_for_tests(seed: u64) -> Self {
        Self {
            seeded: Some(Mutex::new(ChaCha20Rng::seed_from_u64(seed))),
        }
    }

    /// True for [`NoiseSource::seeded_for_tests`].
    pub fn is_deterministic(&self) -> bool {
        self.seeded.is_some()
    }

    /// A generator for one image.
    pub fn rng(&self) -> ChaCha20Rng {
        match &self.seeded {
            None => ChaCha20Rng::from_os_rng(),
            Some(master) => {
                let mut guard = master
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                ChaCha20Rng::from_seed(guard.random())
            }
        }
    }
}

/// The per-pixel maps a perturber produced for one batch, all the shape of the input.
#[derive(Debug, Clone)]
pub struct PerturbationMaps {
    /// σ(x) ≥ 0.
    pub sigma: ImageTensor,
    /// μ(x), a deterministic offset, if the perturber has one.
    pub shift: Option<ImageTensor>,
    /// k(x) ∈ [0,1], the kept fraction of each pixel, if the perturber suppresses.
    pub keep: Option<ImageTensor>,
    /// Value suppressed pixels tend to.
    pub fill: f32,
}

/// Standard deviation of the luma after tone standardisation.
pub const STANDARD_STD: f32 = 0.2;

/// Added to the luma variance before its square root, so a flat image stays flat.
pub const STANDARD_EPS: f32 = 1e-4;

/// ITU-R BT.601 luma weights of R, G, B.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Tone standardisation as a shift, for every image of `x` (`[N, 3, H, W]`): `t − x` per
/// channel, where `t` is the image's luma shifted and scaled to mean `fill` and standard
/// deviation [`STANDARD_STD`] over its pixels, the same in every channel. Computed here on the
/// device, in two passes over the image, rather than in the perturber's graph.
///
/// # Errors
/// [`Error::InvalidArgument`] for an image without 3 channels.
pub fn standardize_shift(x: &ImageTensor, fill: f32) -> Result<ImageTensor> {
    let [n, c, h, w] = x.shape();
    if c != 3 {
        return Err(Error::InvalidArgument(format!(
            "tone standardisation needs RGB images, got {c} channels"
        )));
    }
    let plane = h * w;
    let mut out = vec![0.0f32; x.data().len()];
    for i in 0..n {
        let img = x.image(i);
        let (r, rest) = img.split_at(plane);
        let (g, b) = rest.split_at(plane);
        let luma = |k: usize| LUMA[0] * r[k] + LUMA[1] * g[k] + LUMA[2] * b[k];
        // Mean and variance in f64: 50k+ pixels summed in f32 lose digits.
        let (mut sum, mut sq) = (0.0f64, 0.0f64);
        for k in 0..plane {
            let y = f64::from(luma(k));
            sum += y;
            sq += y * y;
        }
        let mean = sum / plane as f64;
        let var = (sq / plane as f64 - mean * mean).max(0.0);
        let scale = (f64::from(STANDARD_STD) / (var + f64::from(STANDARD_EPS)).sqrt()) as f32;
        let mean = mean as f32;
        let dst = &mut out[i * 3 * plane..(i + 1) * 3 * plane];
        for k in 0..plane {
            let t = (luma(k) - mean) * scale + fill;
            for ch in 0..3 {
                dst[ch * plane + k] = t - img[ch * plane + k];
            }
        }
    }
    ImageTensor::new([n, c, h, w], out)
}

/// Forms the upload for every image of `x`:
/// `x' = q(clip(k ⊙ (x + μ) + (1 − k) · fill + σ ⊙ ε, 0, 1))`, with `q` 8-bit quantisation
/// (`μ = 0`, `k = 1` when absent). The result holds exactly the values an 8-bit PNG will carry.
/// The same as [`UploadBase::from_maps`](crate::upload::UploadBase::from_maps) then
/// [`draw`](crate::upload::UploadBase::draw).
///
/// # Errors
/// [`Error::WrongSize`] when a map's shape differs from `x`'s.
pub fn apply(
    x: &ImageTensor,
    maps: &PerturbationMaps,
    kind: NoiseKind,
    source: &NoiseSource,
) -> Result<ImageTensor> {
    crate::upload::UploadBase::from_maps(x, maps)?.draw(kind, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(xs: &[f32]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = xs
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn standardisation_gives_every_image_the_same_grey_tone() {
        // Two images of different brightness and contrast, 8×8.
        let plane = 64;
        let mut data = Vec::new();
        for (offset, gain) in [(0.1f32, 0.5f32), (0.3, 0.7)] {
            for ch in 0..3 {
                data.extend(
                    (0..plane).map(|k| offset + gain * ((k * 7 + ch * 3) % 11) as f32 / 11.0),
                );
            }
        }
        let x = ImageTensor::new([2, 3, 8, 8], data).expect("shape");
        let shift = standardize_shift(&x, 0.5).expect("standardize");
        for i in 0..2 {
            let t: Vec<f32> = x
                .image(i)
                .iter()
                .zip(shift.image(i))
                .map(|(a, b)| a + b)
                .collect();
            let (mean, sd) = stats(&t[..plane]);
            assert!((mean - 0.5).abs() < 1e-5, "image {i}: mean {mean}");
            // The ε under the square root shrinks a low-contrast image's spread a little.
            let img = x.image(i);
            let luma: Vec<f32> = (0..plane)
                .map(|k| (0..3).map(|c| LUMA[c] * img[c * plane + k]).sum())
                .collect();
            let v = stats(&luma).1.powi(2);
            let want = f64::from(STANDARD_STD) * (v / (v + f64::from(STANDARD_EPS))).sqrt();
            assert!((sd - want).abs() < 1e-4, "image {i}: sd {sd}, want {want}");
            assert!(
                want > 0.19,
                "image {i}: the test images have too little contrast"
            );
            // Grey: every channel carries the same standardised luma (up to the rounding of
            // x + (t − x)).
            for k in 0..plane {
                assert!((t[k] - t[plane + k]).abs() < 1e-6, "image {i} pixel {k}");
                assert!(
                    (t[k] - t[2 * plane + k]).abs() < 1e-6,
                    "image {i} pixel {k}"
                );
            }
        }
        assert!(standardize_shift(&ImageTensor::zeros([1, 1, 4, 4]), 0.5).is_err());
    }

    #[test]
    fn unit_variance_samples() {
        // 200k samples: the standard error of the mean is ~0.0022, of the std ~0.002 (Gaussian)
        // and ~0.004 (Laplace); the tolerances are five of them.
        for kind in [NoiseKind::Gaussian, NoiseKind::Laplace] {
            let mut rng = NoiseSource::seeded_for_tests(7).rng();
            let xs: Vec<f32> = (0..200_000).map(|_| kind.sample(&mut rng)).collect();
            let (m, s) = stats(&xs);
            assert!(m.abs() < 0.011, "{kind:?} mean {m}");
            assert!((s - 1.0).abs() < 0.02, "{kind:?} std {s}");
        }
        // Laplace has heavier tails: P(|ε| > 3) is ~1.4% against ~0.27% for a Gaussian.
        let mut rng = NoiseSource::seeded_for_tests(8).rng();
        let tail = (0..100_000)
            .filter(|_| NoiseKind::Laplace.sample(&mut rng).abs() > 3.0)
            .count();
        assert!((900..2000).contains(&tail), "laplace tail count {tail}");
    }

    #[test]
    fn applied_noise_matches_sigma() {
        // Mid-grey image, σ = 0.05 on channel 0 and 0 elsewhere: clipping never binds at 6σ.
        let (h, w) = (64, 64);
        let x = ImageTensor::new([1, 3, h, w], vec![0.5; 3 * h * w]).expect("shape");
        let mut sigma = ImageTensor::zeros([1, 3, h, w]);
        sigma.data_mut()[..h * w].fill(0.05);
        let maps = PerturbationMaps {
            sigma,
            shift: None,
            keep: None,
            fill: 0.5,
        };
        let out = apply(
            &x,
            &maps,
            NoiseKind::Gaussian,
            &NoiseSource::seeded_for_tests(1),
        )
        .expect("apply");
        let (m, s) = stats(&out.data()[..h * w]);
        // Quantisation adds variance 1/(12·255²) ≈ (0.0011)²; 4096 samples → std error ~0.0011.
        assert!((m - 0.5).abs() < 0.004, "mean {m}");
        assert!((s - 0.05).abs() < 0.004, "std {s}");
        // σ = 0 leaves pixels exactly as quantised.
        assert!(out.data()[h * w..].iter().all(|&v| v == 128.0 / 255.0));
        // Every value is an 8-bit level in [0,1].
        assert!(
            out.data()
                .iter()
                .all(|&v| (v * 255.0 - (v * 255.0).round()).abs() < 1e-4)
        );
    }

    #[test]
    fn shift_keep_and_clipping() {
        let x = ImageTensor::new([1, 3, 1, 2], vec![0.2, 0.9, 0.2, 0.9, 0.2, 0.9]).expect("shape");
        let maps = PerturbationMaps {
            sigma: ImageTensor::zeros([1, 3, 1, 2]),
            shift: Some(ImageTensor::new([1, 3, 1, 2], vec![0.5; 6]).expect("shape")),
            keep: Some(
                ImageTensor::new([1, 3, 1, 2], vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]).expect("k"),
            ),
            fill: 0.25,
        };
        let out = apply(&x, &maps, NoiseKind::Gaussian, &NoiseSource::from_os()).expect("apply");
        // 0.2 + 0.5 kept; 0.9 fully suppressed to the fill value.
        let expect = [0.7, 0.25, 0.7, 0.25, 0.7, 0.25].map(|v: f32| (v * 255.0).round() / 255.0);
        assert_eq!(out.data(), &expect);
        // Large σ saturates at the bounds, never outside them.
        let maps = PerturbationMaps {
            sigma: ImageTensor::new([1, 3, 1, 2], vec![5.0; 6]).expect("shape"),
            shift: None,
            keep: None,
            fill: 0.5,
        };
        let out = apply(&x, &maps, NoiseKind::Laplace, &NoiseSource::from_os()).expect("apply");
        assert!(out.data().iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn os_noise_differs_between_calls_and_seeded_repeats() {
        let x = ImageTensor::new([1, 3, 8, 8], vec![0.5; 192]).expect("shape");
        let maps = PerturbationMaps {
            sigma: ImageTensor::new([1, 3, 8, 8], vec![0.1; 192]).expect("shape"),
            shift: None,
            keep: None,
            fill: 0.5,
        };
        let os = NoiseSource::from_os();
        let a = apply(&x, &maps, NoiseKind::Gaussian, &os).expect("a");
        let b = apply(&x, &maps, NoiseKind::Gaussian, &os).expect("b");
        assert_ne!(a, b);
        let s1 = apply(
            &x,
            &maps,
            NoiseKind::Gaussian,
            &NoiseSource::seeded_for_tests(3),
        )
        .expect("s");
        let s2 = apply(
            &x,
            &maps,
            NoiseKind::Gaussian,
            &NoiseSource::seeded_for_tests(3),
        )
        .expect("s");
        assert_eq!(s1, s2);
        assert!(!format!("{:?}", NoiseSource::seeded_for_tests(3)).contains('3'));
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let x = ImageTensor::zeros([1, 3, 4, 4]);
        let maps = PerturbationMaps {
            sigma: ImageTensor::zeros([1, 3, 4, 5]),
            shift: None,
            keep: None,
            fill: 0.5,
        };
        let err =
            apply(&x, &maps, NoiseKind::Gaussian, &NoiseSource::from_os()).expect_err("shape");
        assert!(matches!(err, Error::WrongSize { .. }));
    }
}
