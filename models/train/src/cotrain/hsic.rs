//! The attacker-free term (`hsic`): how much the release still depends on the sensitive label
//! within each desired class, measured without training anyone.
//!
//! An attacker who holds the perturber uploads its training faces afresh every epoch, so it
//! learns what the release carries *on average over the noise*, not one draw. The term therefore
//! reads the expected release (the upload before its noise: `k ⊙ (x + μ) + (1 − k)·fill`, or a
//! bounded release's map) and measures its dependence on the sensitive label by the normalised
//! Hilbert–Schmidt independence criterion (centred kernel alignment, CKA) between a Gaussian
//! kernel on releases and the label's delta kernel. It is computed within each desired class
//! of the batch and averaged by class size, so it does not penalise what the desired label
//! itself needs when the two labels are correlated (Gretton et al. 2005; Kornblith et al. 2019
//! for the normalisation, which keeps the perturber from lowering the term by shrinking the
//! image's contrast).

use burn::prelude::*;
use burn::tensor::TensorData;

use super::ops::scalar;

/// Fewest images of a desired class in a batch for its term to count.
const MIN_CLASS_IMAGES: usize = 4;

/// Σ_c (n_c / n) · CKA(releases of class c, sensitive labels of class c), debiased (the
/// alignment expected under shuffled labels is subtracted, so independence scores about 0 even
/// in small classes; negative values count as 0), where `z` holds one
/// release per row (`[n, d]`), `desired` and `sensitive` the labels of each row and
/// `sensitive_classes` the number of sensitive classes. Classes with fewer than
/// [`MIN_CLASS_IMAGES`] images or a single sensitive label contribute 0; a batch without any
/// returns a zero that carries no gradient.
pub(crate) fn conditional_cka(
    z: Tensor<2>,
    desired: &[u32],
    sensitive: &[u32],
    sensitive_classes: usize,
) -> Tensor<1> {
    let device = z.device();
    let n = desired.len();
    let mut total = Tensor::<1>::zeros([1], &device);
    let mut classes: Vec<u32> = desired.to_vec();
    classes.sort_unstable();
    classes.dedup();
    for c in classes {
        let rows: Vec<usize> = (0..n).filter(|&i| desired[i] == c).collect();
        let labels: Vec<u32> = rows.iter().map(|&i| sensitive[i]).collect();
        let distinct = {
            let mut l = labels.clone();
            l.sort_unstable();
            l.dedup();
            l.len()
        };
        if rows.len() < MIN_CLASS_IMAGES || distinct < 2 {
            continue;
        }
        let m = rows.len();
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|&i| i as i64).collect::<Vec<_>>(), [m]),
            &device,
        );
        let zc = z.clone().select(0, idx);
        let k = gaussian_gram(zc);
        let l = centred_label_gram(&labels, sensitive_classes);
        let h = centring(m, &device);
        let kc = h.clone().matmul(k).matmul(h);
        let lc = Tensor::<2>::from_data(TensorData::new(l.values, [m, m]), &device);
        let kl = (kc.clone() * lc).sum();
        // What tr(Kc·Lc) is on average when the labels are shuffled: the part of the biased
        // estimate that small classes show even without any dependence.
        let eye = Tensor::<2>::eye(m, &device);
        let chance = (kc.clone() * eye)
            .sum()
            .mul_scalar(l.trace / (m as f64 - 1.0));
        let kk = (kc.clone() * kc).sum();
        let cka = (kl - chance)
            .div(kk.add_scalar(1e-12).sqrt().mul_scalar(l.norm.max(1e-12)))
            .clamp_min(0.0);
        total = total + cka.reshape([1]).mul_scalar(m as f64 / n as f64);
    }
    total
}

/// `exp(−‖zᵢ − zⱼ‖² / mean‖z − z'‖²)`: a Gaussian kernel whose bandwidth is the batch's mean
/// squared distance (held fixed in the backward pass), so the kernel does not depend on the
/// releases' overall scale.
fn gaussian_gram(z: Tensor<2>) -> Tensor<2> {
    let sq = z.clone().powf_scalar(2.0).sum_dim(1);
    let cross = z.clone().matmul(z.transpose());
    let d = (sq.clone() + sq.transpose() - cross.mul_scalar(2.0)).clamp_min(0.0);
    let bandwidth = scalar(d.clone().mean()).max(1e-12);
    d.div_scalar(bandwidth).neg().exp()
}

/// `I − 11ᵀ/m`.
fn centring(m: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![-1.0 / m as f32; m * m];
    for i in 0..m {
        v[i * m + i] += 1.0;
    }
    Tensor::from_data(TensorData::new(v, [m, m]), device)
}

/// The centred delta kernel of the labels and its Frobenius norm.
struct LabelGram {
    values: Vec<f32>,
    norm: f64,
    trace: f64,
}

fn centred_label_gram(labels: &[u32], classes: usize) -> LabelGram {
    let m = labels.len();
    let mut share = vec![0f64; classes.max(1)];
    for &l in labels {
        share[l as usize] += 1.0 / m as f64;
    }
    // (HLH)_ij = [yi = yj] − p(yi) − p(yj) + Σ_c p(c)².
    let sum_sq: f64 = share.iter().map(|p| p * p).sum();
    let mut values = Vec::with_capacity(m * m);
    for &a in labels {
        for &b in labels {
            let same = if a == b { 1.0 } else { 0.0 };
            values.push((same - share[a as usize] - share[b as usize] + sum_sq) as f32);
        }
    }
    let norm = values
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    let trace = (0..m).map(|i| f64::from(values[i * m + i])).sum();
    LabelGram {
        values,
        norm,
        trace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn centred_label_gram_matches_hlh() {
        let labels = [0, 1, 1, 2, 0];
        let g = centred_label_gram(&labels, 3);
        let m = labels.len();
        // H L H computed the long way.
        let l: Vec<f64> = (0..m * m)
            .map(|i| f64::from(u8::from(labels[i / m] == labels[i % m])))
            .collect();
        let h = |i: usize, j: usize| f64::from(u8::from(i == j)) - 1.0 / m as f64;
        for i in 0..m {
            for j in 0..m {
                let mut v = 0.0;
                for a in 0..m {
                    for b in 0..m {
                        v += h(i, a) * l[a * m + b] * h(b, j);
                    }
                }
                assert!((v - f64::from(g.values[i * m + j])).abs() < 1e-6);
            }
        }
    }

    /// 64 releases of 16 values, half in each desired class; with `scale` > 0 the first value
    /// encodes the sensitive label (3 classes).
    fn releases(scale: f32) -> (TensorData, Vec<u32>, Vec<u32>) {
        let n = 64;
        let desired: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let sensitive: Vec<u32> = (0..n).map(|i| ((i / 2) % 3) as u32).collect();
        let noise = Tensor::<2>::random([n, 16], Distribution::Normal(0.0, 1.0), &device());
        let mut v = crate::batch::to_vec(noise);
        for (i, s) in sensitive.iter().enumerate() {
            v[i * 16] += scale * *s as f32;
        }
        (TensorData::new(v, [n, 16]), desired, sensitive)
    }

    #[test]
    fn dependence_scores_higher_than_independence() {
        let dev = device();
        let (dep, desired, sensitive) = releases(3.0);
        let (ind, _, _) = releases(0.0);
        let d = scalar(conditional_cka(
            Tensor::from_data(dep, &dev),
            &desired,
            &sensitive,
            3,
        ));
        let i = scalar(conditional_cka(
            Tensor::from_data(ind, &dev),
            &desired,
            &sensitive,
            3,
        ));
        assert!(d > 0.2, "dependent releases scored {d}");
        assert!(i < 0.05, "independent releases scored {i}");
    }

    #[test]
    fn gradient_descent_on_the_term_removes_the_dependence() {
        let dev = Device::flex().autodiff();
        let (data, desired, sensitive) = releases(3.0);
        let mut z = Tensor::<2>::from_data(data, &dev);
        let start = scalar(conditional_cka(z.clone(), &desired, &sensitive, 3));
        for _ in 0..30 {
            let zg = z.clone().detach().require_grad();
            let grads = conditional_cka(zg.clone(), &desired, &sensitive, 3).backward();
            let g = zg.grad(&grads).expect("the term has a gradient");
            z = Tensor::from_inner(zg.inner() - g.mul_scalar(20.0));
        }
        let end = scalar(conditional_cka(z, &desired, &sensitive, 3));
        assert!(end < 0.5 * start, "{start} → {end}");
    }

    #[test]
    fn too_small_classes_contribute_nothing() {
        let dev = device();
        let z = Tensor::<2>::random([3, 4], Distribution::Normal(0.0, 1.0), &dev);
        let v = scalar(conditional_cka(z, &[0, 0, 0], &[0, 1, 0], 2));
        assert!(v.abs() < 1e-12);
    }
}
