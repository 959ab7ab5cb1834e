//! Image-quality scores of the reconstruction attacker: MSE, PSNR and SSIM of two images, their
//! mean over two datasets image by image, and the scores a report keeps.

use serde::{Deserialize, Serialize};

use scrim_train::data::Dataset;

/// Reconstruction quality on the test split (means over images).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reconstruction {
    /// PSNR of the decoder's output against the clean image, dB.
    pub psnr: f64,
    /// SSIM of the decoder's output against the clean image.
    pub ssim: f64,
    /// PSNR of the perturbed image itself (what the decoder starts from).
    pub input_psnr: f64,
    /// SSIM of the perturbed image itself.
    pub input_ssim: f64,
}

/// PSNR in dB of two images with values in `[0, 1]` (capped at 100 dB for identical images).
pub fn psnr(a: &[f64], b: &[f64]) -> f64 {
    let mse = mse(a, b);
    if mse <= 1e-10 {
        100.0
    } else {
        -10.0 * mse.log10()
    }
}

/// SSIM (Wang et al. 2004) of two square 3-channel CHW images in `[0, 1]`: 7×7 uniform windows
/// over every valid position, `C1 = 0.01²`, `C2 = 0.03²`, averaged over windows and channels.
pub fn ssim(a: &[f64], b: &[f64]) -> f64 {
    let plane = a.len() / 3;
    let s = (plane as f64).sqrt() as usize;
    let win = 7.min(s);
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mut total = 0.0;
    let mut count = 0usize;
    for c in 0..3 {
        let (pa, pb) = (
            &a[c * plane..(c + 1) * plane],
            &b[c * plane..(c + 1) * plane],
        );
        for y in 0..=s - win {
            for x in 0..=s - win {
                let (mut ma, mut mb, mut va, mut vb, mut cov) = (0.0, 0.0, 0.0, 0.0, 0.0);
                let n = (win * win) as f64;
                for dy in 0..win {
                    for dx in 0..win {
                        let i = (y + dy) * s + x + dx;
                        ma += pa[i];
                        mb += pb[i];
                    }
                }
                ma /= n;
                mb /= n;
                for dy in 0..win {
                    for dx in 0..win {
                        let i = (y + dy) * s + x + dx;
                        va += (pa[i] - ma).powi(2);
                        vb += (pb[i] - mb).powi(2);
                        cov += (pa[i] - ma) * (pb[i] - mb);
                    }
                }
                // Sample (co)variances, as in the reference implementation.
                let d = n - 1.0;
                let (va, vb, cov) = (va / d, vb / d, cov / d);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                count += 1;
            }
        }
    }
    total / count.max(1) as f64
}

/// Mean squared difference of two images.
pub(crate) fn mse(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len().max(1) as f64
}

/// Mean of `score(a_i, b_i)` over the images of two datasets, both scaled to `[0, 1]` CHW.
pub(crate) fn mean_score(a: &Dataset, b: &Dataset, score: impl Fn(&[f64], &[f64]) -> f64) -> f64 {
    let to = |v: &[u8]| v.iter().map(|&x| f64::from(x) / 255.0).collect::<Vec<_>>();
    let n = a.len().max(1) as f64;
    (0..a.len())
        .map(|i| score(&to(a.image(i)), &to(b.image(i))))
        .sum::<f64>()
        / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn image(seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..3 * 16 * 16)
            .map(|_| rand::Rng::random::<f64>(&mut rng))
            .collect()
    }

    #[test]
    fn quality_scores() {
        let a = image(1);
        assert_eq!(psnr(&a, &a), 100.0);
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-12);
        // A uniform offset of 0.1 has MSE 0.01: exactly 20 dB.
        let b: Vec<f64> = a.iter().map(|v| v + 0.1).collect();
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-9);
        // Independent noise images are nearly uncorrelated: SSIM near 0, far below a copy.
        let c = image(2);
        assert!(ssim(&a, &c).abs() < 0.2, "{}", ssim(&a, &c));
        // Inverting contrast gives a negative structure term.
        let inv: Vec<f64> = a.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&a, &inv) < -0.5);
    }
}
