//! Linear concept erasure on the device: a fixed correction of low rank, fitted when the
//! perturber was trained, that leaves every class of a sensitive label with the same mean image.
//!
//! LEACE (Belrose et al., "LEACE: Perfect linear concept erasure in closed form", NeurIPS 2023).
//! With `v` the image after the perturber's fixed transform (the tone-standardised or grey luma
//! plane when the upload is grey, else the RGB image), flattened to `d` values, the erased image
//! is
//!
//! `v' = v − ((v − μ)·B)·Cᵀ`, `B = Σ⁻¹C (CᵀΣ⁻¹C)⁻¹`,
//!
//! where μ and Σ are the training images' mean and covariance and `C` (`d × r`) their
//! cross-covariance with the sensitive label's one-hot code (`r` = classes − 1 columns). Then
//! `Cov(v', label) = C − C·BᵀC = 0`: on the training distribution no linear classifier of the
//! erased image reads the label better than the majority rate, and among the corrections that
//! achieve this it is the one that moves the image least in the whitened metric. Only the `r`
//! directions of `C` change; nonlinear attackers are left for the perturber's noise to fight.
//!
//! The correction is added to the perturber's shift (a grey plane's correction to all three
//! channels alike), so it passes through suppression and noise like the rest of the image. It
//! holds no secret: it is fitted on the provider's training images and ships in the manifest.

use serde::{Deserialize, Serialize};

use crate::noise::LUMA;
use crate::tensor::ImageTensor;
use crate::{Error, Result};

/// The largest number of values an erasure reads per image (64×64 grey or 36×36 colour): its
/// three `d`-sized tables must fit in a manifest ([`crate::manifest::MAX_MANIFEST_BYTES`]).
pub const MAX_ERASURE_VALUES: usize = 4096;

/// The largest rank (a label of at most 17 classes).
pub const MAX_ERASURE_RANK: usize = 16;

/// The most values μ, B and C may hold together, `d·(2r + 1)`: about 21 bytes each in a
/// manifest's JSON, so 40,000 keep it under [`crate::manifest::MAX_MANIFEST_BYTES`] (4,096 values
/// at rank 4, 1,024 at rank 16).
pub const MAX_ERASURE_TABLE: usize = 40_000;

/// A fitted erasure (`perturber.erase` in a manifest, format version 3).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Erasure {
    /// The label whose linear trace is erased (for example `race`).
    pub label: String,
    /// 1: the erasure reads the grey plane of the fixed transform (the tone-standardised luma
    /// with `standardize`, else the luma) and corrects every channel alike; 3: the RGB image.
    pub channels: usize,
    /// Columns `r` of `B` and `C`.
    pub rank: usize,
    /// μ, `d` values.
    pub mean: Vec<f32>,
    /// `B`, `d × r`, row-major.
    pub down: Vec<f32>,
    /// `C`, `d × r`, row-major.
    pub up: Vec<f32>,
}

impl std::fmt::Debug for Erasure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Erasure")
            .field("label", &self.label)
            .field("channels", &self.channels)
            .field("rank", &self.rank)
            .field("values", &self.mean.len())
            .finish_non_exhaustive()
    }
}

impl Erasure {
    /// Values read per image.
    pub fn values(&self) -> usize {
        self.mean.len()
    }

    /// Checks the tables against an input of `height × width`.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] naming the field.
    pub fn validate(&self, height: usize, width: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidManifest(format!("perturber.erase: {m}")));
        if self.channels != 1 && self.channels != 3 {
            return bad(format!("channels must be 1 or 3, got {}", self.channels));
        }
        if !(1..=MAX_ERASURE_RANK).contains(&self.rank) {
            return bad(format!(
                "rank must be in 1..={MAX_ERASURE_RANK}, got {}",
                self.rank
            ));
        }
        let d = self.channels * height * width;
        if d > MAX_ERASURE_VALUES {
            return bad(format!(
                "reads {d} values per image, at most {MAX_ERASURE_VALUES}"
            ));
        }
        if d * (2 * self.rank + 1) > MAX_ERASURE_TABLE {
            return bad(format!(
                "{d} values at rank {} make {} table entries, at most {MAX_ERASURE_TABLE}",
                self.rank,
                d * (2 * self.rank + 1)
            ));
        }
        if self.mean.len() != d
            || self.down.len() != d * self.rank
            || self.up.len() != d * self.rank
        {
            return bad(format!(
                "mean, down and up need {d}, {0} and {0} values for {1} channel(s) of \
                 {height}x{width} at rank {2}; got {3}, {4} and {5}",
                d * self.rank,
                self.channels,
                self.rank,
                self.mean.len(),
                self.down.len(),
                self.up.len()
            ));
        }
        if [&self.mean, &self.down, &self.up]
            .iter()
            .any(|t| t.iter().any(|v| !v.is_finite()))
        {
            return bad("every value must be finite".into());
        }
        Ok(())
    }

    /// The correction `−((v − μ)·B)·Cᵀ` of one flattened image `v` (`d` values).
    pub fn correction(&self, v: &[f32]) -> Vec<f32> {
        let r = self.rank;
        let mut z = vec![0.0f64; r];
        for (i, (&vi, &mi)) in v.iter().zip(&self.mean).enumerate() {
            let c = f64::from(vi - mi);
            for (zj, &b) in z.iter_mut().zip(&self.down[i * r..(i + 1) * r]) {
                *zj += c * f64::from(b);
            }
        }
        (0..v.len())
            .map(|i| {
                let dot: f64 = z
                    .iter()
                    .zip(&self.up[i * r..(i + 1) * r])
                    .map(|(zj, &c)| zj * f64::from(c))
                    .sum();
                -dot as f32
            })
            .collect()
    }

    /// Adds to `shift` the correction of every image of `x + fixed`: `x` is the photo and
    /// `fixed` the shift of the fixed transform (the tone standardisation, or zeros), so the
    /// erasure reads the image the upload starts from, never a learned part.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the shapes disagree with the tables.
    pub fn add_to(
        &self,
        x: &ImageTensor,
        fixed: &ImageTensor,
        shift: &mut ImageTensor,
    ) -> Result<()> {
        let [n, c, h, w] = x.shape();
        let plane = h * w;
        if c != 3 || fixed.shape() != x.shape() || shift.shape() != x.shape() {
            return Err(Error::InvalidArgument(format!(
                "erasure: image {}, fixed shift {}, shift {}",
                x.describe(),
                fixed.describe(),
                shift.describe()
            )));
        }
        if self.channels * plane != self.values() {
            return Err(Error::InvalidArgument(format!(
                "erasure reads {} values, the image has {} channel(s) of {h}x{w}",
                self.values(),
                self.channels
            )));
        }
        for i in 0..n {
            let (img, fix) = (x.image(i), fixed.image(i));
            let v: Vec<f32> = if self.channels == 1 {
                // The grey plane: with a fixed transform every channel of x + fixed holds it;
                // without one (a colour upload), its luma.
                (0..plane)
                    .map(|k| {
                        (0..3)
                            .map(|ch| LUMA[ch] * (img[ch * plane + k] + fix[ch * plane + k]))
                            .sum()
                    })
                    .collect()
            } else {
                img.iter().zip(fix).map(|(a, b)| a + b).collect()
            };
            let corr = self.correction(&v);
            let dst = &mut shift.data_mut()[i * 3 * plane..(i + 1) * 3 * plane];
            for ch in 0..3 {
                let src = if self.channels == 1 {
                    &corr[..]
                } else {
                    &corr[ch * plane..(ch + 1) * plane]
                };
                dst[ch * plane..(ch + 1) * plane]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rank 1 on 2 values: μ = 0, B = [1, 0], C = [1, 0] removes the first value.
    fn first_value_off() -> Erasure {
        Erasure {
            label: "race".into(),
            channels: 1,
            rank: 1,
            mean: vec![0.0; 2],
            down: vec![1.0, 0.0],
            up: vec![1.0, 0.0],
        }
    }

    #[test]
    fn the_correction_removes_the_erased_direction_only() {
        let e = first_value_off();
        assert_eq!(e.correction(&[0.7, 0.3]), vec![-0.7, 0.0]);
    }

    #[test]
    fn a_grey_correction_reaches_every_channel_and_reads_the_fixed_plane() {
        let e = first_value_off();
        // One image of 1×2 pixels whose fixed transform turns every channel into [0.4, 0.9].
        let x = ImageTensor::new([1, 3, 1, 2], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).expect("valid");
        let fixed_plane = [0.4, 0.9];
        let fixed: Vec<f32> = (0..3)
            .flat_map(|ch| {
                (0..2).map(move |k| fixed_plane[k] - [0.1, 0.2, 0.3, 0.4, 0.5, 0.6][ch * 2 + k])
            })
            .collect();
        let fixed = ImageTensor::new([1, 3, 1, 2], fixed).expect("valid");
        let mut shift = fixed.clone();
        e.add_to(&x, &fixed, &mut shift).expect("valid");
        for ch in 0..3 {
            let up = x.data()[ch * 2] + shift.data()[ch * 2];
            let kept = x.data()[ch * 2 + 1] + shift.data()[ch * 2 + 1];
            assert!(up.abs() < 1e-6, "channel {ch}: {up}");
            assert!((kept - 0.9).abs() < 1e-6, "channel {ch}: {kept}");
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut e = first_value_off();
        assert!(e.validate(1, 2).is_ok());
        let msg = e.validate(2, 2).expect_err("invalid").to_string();
        assert!(msg.contains("need 4, 4 and 4"), "{msg}");
        e.up[0] = f32::NAN;
        assert!(
            e.validate(1, 2)
                .expect_err("invalid")
                .to_string()
                .contains("finite")
        );
        e.up[0] = 1.0;
        e.channels = 2;
        assert!(
            e.validate(1, 2)
                .expect_err("invalid")
                .to_string()
                .contains("1 or 3")
        );
        e.channels = 1;
        e.rank = 0;
        assert!(
            e.validate(1, 2)
                .expect_err("invalid")
                .to_string()
                .contains("rank")
        );
        let big = Erasure {
            channels: 3,
            mean: vec![0.0; 3 * 64 * 64],
            down: vec![0.0; 3 * 64 * 64],
            up: vec![0.0; 3 * 64 * 64],
            ..first_value_off()
        };
        assert!(
            big.validate(64, 64)
                .expect_err("invalid")
                .to_string()
                .contains("at most 4096")
        );
        // 4,096 grey values fit at rank 4, not at rank 16.
        let wide = |rank: usize| Erasure {
            rank,
            mean: vec![0.0; 64 * 64],
            down: vec![0.0; 64 * 64 * rank],
            up: vec![0.0; 64 * 64 * rank],
            ..first_value_off()
        };
        assert!(wide(4).validate(64, 64).is_ok());
        let msg = wide(16).validate(64, 64).expect_err("too big").to_string();
        assert!(msg.contains("table entries"), "{msg}");
    }

    #[test]
    fn debug_does_not_dump_the_tables() {
        let s = format!("{:?}", first_value_off());
        assert!(
            s.contains("rank: 1") && s.contains("values: 2") && !s.contains("0.0"),
            "{s}"
        );
    }
}
