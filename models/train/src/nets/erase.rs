//! Linear concept erasure in training: the closed-form fit on the training split, and the
//! correction as a constant of the perturber, computed as `scrim_core::erasure` computes it on
//! the device (the export check compares the two).

use burn::module::{Module, Param};
use burn::prelude::*;

use super::tone::luma;
use crate::data::Dataset;
use crate::{Error, Result, batch};
use scrim_core::erasure::{Erasure, MAX_ERASURE_RANK, MAX_ERASURE_TABLE, MAX_ERASURE_VALUES};

/// The fitted erasure: `v' = v − ((v − μ)·B)·Cᵀ` on the fixed transform's output `v`. Its tables
/// are saved with the perturber but never trained (the forward pass detaches them).
#[derive(Module, Debug)]
pub struct ConceptErasure {
    /// μ, `[1, d]`.
    pub mean: Param<Tensor<2>>,
    /// `B`, `[d, r]`.
    pub down: Param<Tensor<2>>,
    /// `C`, `[d, r]`.
    pub up: Param<Tensor<2>>,
    /// 1 (the grey plane) or 3 (RGB).
    pub channels: usize,
    /// The erased label's name.
    #[module(skip)]
    pub label: String,
}

fn constant(t: Tensor<2>) -> Param<Tensor<2>> {
    Param::from_tensor(t).set_require_grad(false)
}

impl ConceptErasure {
    /// The erasure the device will apply, as its manifest carries it.
    pub fn to_core(&self) -> Erasure {
        Erasure {
            label: self.label.clone(),
            channels: self.channels,
            rank: self.down.val().dims()[1],
            mean: batch::to_vec(self.mean.val()),
            down: batch::to_vec(self.down.val()),
            up: batch::to_vec(self.up.val()),
        }
    }

    /// The tables of a device erasure as perturber constants.
    pub fn from_core(e: &Erasure, device: &Device) -> Self {
        let (d, r) = (e.values(), e.rank);
        let t = |v: &[f32], shape: [usize; 2]| {
            constant(Tensor::<1>::from_floats(v, device).reshape(shape))
        };
        Self {
            mean: t(&e.mean, [1, d]),
            down: t(&e.down, [d, r]),
            up: t(&e.up, [d, r]),
            channels: e.channels,
            label: e.label.clone(),
        }
    }

    /// The correction of images after the fixed transform, `base` `[N, 3, H, W]` → the same
    /// shape (a grey correction in every channel).
    pub fn correction(&self, base: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = base.dims();
        let v = values(base, self.channels);
        let z = (v - self.mean.val().detach()).matmul(self.down.val().detach());
        let corr = z.matmul(self.up.val().detach().transpose()).neg();
        if self.channels == 1 {
            corr.reshape([n, 1, h, w]).expand([n, c, h, w])
        } else {
            corr.reshape([n, c, h, w])
        }
    }
}

/// What an erasure reads of each image: its luma plane (`channels` 1) or the RGB image,
/// flattened, `[N, d]`.
fn values(base: Tensor<4>, channels: usize) -> Tensor<2> {
    let [n, c, h, w] = base.dims();
    if channels == 1 {
        luma(base).reshape([n, h * w])
    } else {
        base.reshape([n, c * h * w])
    }
}

/// The ridge added to the covariance's diagonal, as a fraction of its mean variance: the
/// tone-standardised images are singular (every image has the same mean and contrast), and the
/// erasure stays exact with any positive ridge (`scrim_core::erasure`).
const RIDGE: f64 = 1e-4;

/// Fits the erasure of attribute `attr` on images `indices` of `ds`, where `fixed` maps a batch
/// to what the erasure reads (the image after the perturber's fixed transform).
///
/// # Errors
/// A label with fewer than two classes among the images, or more than
/// [`MAX_ERASURE_RANK`]` + 1`; tables larger than a manifest holds ([`MAX_ERASURE_VALUES`],
/// [`MAX_ERASURE_TABLE`]).
pub fn fit(
    ds: &Dataset,
    attr: usize,
    indices: &[usize],
    channels: usize,
    fixed: impl Fn(Tensor<4>) -> Tensor<4>,
    device: &Device,
) -> Result<ConceptErasure> {
    let a = &ds.attributes[attr];
    let bad = |m: String| Error::option("--erase", m);
    // Classes present in the fit: an absent class has no mean to equalise.
    let mut counts = vec![0usize; a.classes.len()];
    for &i in indices {
        counts[usize::from(a.labels[i])] += 1;
    }
    let present: Vec<usize> = (0..counts.len()).filter(|&k| counts[k] > 0).collect();
    if present.len() < 2 {
        return Err(bad(format!(
            "{} has {} class(es) among the training images: nothing to erase",
            a.name,
            present.len()
        )));
    }
    let rank = present.len() - 1;
    if rank > MAX_ERASURE_RANK {
        return Err(bad(format!(
            "{} has {} classes; an erasure takes at most {}",
            a.name,
            present.len(),
            MAX_ERASURE_RANK + 1
        )));
    }
    // The values, in f64, one row per image.
    let mut rows: Vec<f64> = Vec::new();
    let mut d = 0;
    for chunk in batch::chunks(indices, 256) {
        let v = values(fixed(batch::images(ds, chunk, device)), channels);
        d = v.dims()[1];
        if d > MAX_ERASURE_VALUES || d * (2 * rank + 1) > MAX_ERASURE_TABLE {
            return Err(bad(format!(
                "reads {d} values per image at rank {rank}: the tables travel in the manifest, \
                 which holds at most {MAX_ERASURE_VALUES} values per image and \
                 {MAX_ERASURE_TABLE} table entries (a smaller --size, or --standardize for one \
                 grey plane)"
            )));
        }
        rows.extend(batch::to_vec(v).into_iter().map(f64::from));
    }
    let n = indices.len();
    let mut mean = vec![0.0f64; d];
    for row in rows.chunks(d) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    for row in rows.chunks_mut(d) {
        row.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
    }
    // Σ (upper triangle, then mirrored) and C = Cov(v, one-hot of the first `rank` classes).
    let cov = covariance(&rows, d, n);
    let mut cross = vec![0.0f64; d * rank];
    for (row, &i) in rows.chunks(d).zip(indices) {
        let label = usize::from(a.labels[i]);
        for (j, &k) in present[..rank].iter().enumerate() {
            let z = f64::from(u8::from(label == k)) - counts[k] as f64 / n as f64;
            for (p, &v) in row.iter().enumerate() {
                cross[p * rank + j] += v * z;
            }
        }
    }
    cross.iter_mut().for_each(|c| *c /= n as f64);
    let down = oblique(cov, &cross, d, rank).ok_or_else(|| {
        bad(format!(
            "the covariance of {} is not positive definite",
            a.name
        ))
    })?;
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    Ok(ConceptErasure::from_core(
        &Erasure {
            label: a.name.clone(),
            channels,
            rank,
            mean: f(&mean),
            down: f(&down),
            up: f(&cross),
        },
        device,
    ))
}

/// `(1/n)·XᵀX` of `n` centred rows of `d` values, row-major.
fn covariance(rows: &[f64], d: usize, n: usize) -> Vec<f64> {
    let mut cov = vec![0.0f64; d * d];
    for row in rows.chunks(d) {
        for (p, &vp) in row.iter().enumerate() {
            if vp == 0.0 {
                continue;
            }
            let dst = &mut cov[p * d + p..(p + 1) * d];
            dst.iter_mut()
                .zip(&row[p..])
                .for_each(|(c, &vq)| *c += vp * vq);
        }
    }
    for p in 0..d {
        for q in p..d {
            let v = cov[p * d + q] / n as f64;
            cov[p * d + q] = v;
            cov[q * d + p] = v;
        }
    }
    cov
}

/// `B = Σ⁻¹C (CᵀΣ⁻¹C)⁻¹` with a ridge on Σ; `None` when a Cholesky factor fails.
fn oblique(mut cov: Vec<f64>, cross: &[f64], d: usize, r: usize) -> Option<Vec<f64>> {
    let ridge = RIDGE * (0..d).map(|p| cov[p * d + p]).sum::<f64>() / d as f64;
    for p in 0..d {
        cov[p * d + p] += ridge.max(f64::MIN_POSITIVE);
    }
    let l = cholesky(cov, d)?;
    let m = solve(&l, cross, d, r);
    // G = CᵀM, r × r, symmetric positive definite.
    let mut g = vec![0.0f64; r * r];
    for p in 0..d {
        for i in 0..r {
            for j in 0..r {
                g[i * r + j] += cross[p * r + i] * m[p * r + j];
            }
        }
    }
    // B = M G⁻¹: solve G Bᵀ = Mᵀ.
    let lg = cholesky(g, r)?;
    let mut mt = vec![0.0f64; r * d];
    for p in 0..d {
        for j in 0..r {
            mt[j * d + p] = m[p * r + j];
        }
    }
    let bt = solve(&lg, &mt, r, d);
    let mut b = vec![0.0f64; d * r];
    for j in 0..r {
        for p in 0..d {
            b[p * r + j] = bt[j * d + p];
        }
    }
    Some(b)
}

/// The lower Cholesky factor of a `d × d` symmetric positive definite matrix, row-major.
fn cholesky(mut a: Vec<f64>, d: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let s = a[j * d + j] - a[j * d..j * d + j].iter().map(|v| v * v).sum::<f64>();
        if !(s > 0.0 && s.is_finite()) {
            return None;
        }
        let pivot = s.sqrt();
        a[j * d + j] = pivot;
        for i in j + 1..d {
            let dot: f64 = a[i * d..i * d + j]
                .iter()
                .zip(&a[j * d..j * d + j])
                .map(|(x, y)| x * y)
                .sum();
            a[i * d + j] = (a[i * d + j] - dot) / pivot;
        }
    }
    for i in 0..d {
        a[i * d + i + 1..(i + 1) * d].fill(0.0);
    }
    Some(a)
}

/// `X = A⁻¹ Y` for `A = L Lᵀ`, `Y` `d × m` row-major.
fn solve(l: &[f64], y: &[f64], d: usize, m: usize) -> Vec<f64> {
    let mut x = y.to_vec();
    // L Z = Y
    for i in 0..d {
        for k in 0..i {
            let lik = l[i * d + k];
            if lik != 0.0 {
                for c in 0..m {
                    x[i * m + c] -= lik * x[k * m + c];
                }
            }
        }
        let p = l[i * d + i];
        x[i * m..(i + 1) * m].iter_mut().for_each(|v| *v /= p);
    }
    // Lᵀ X = Z
    for i in (0..d).rev() {
        for k in i + 1..d {
            let lki = l[k * d + i];
            if lki != 0.0 {
                for c in 0..m {
                    x[i * m + c] -= lki * x[k * m + c];
                }
            }
        }
        let p = l[i * d + i];
        x[i * m..(i + 1) * m].iter_mut().for_each(|v| *v /= p);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(count: usize) -> Dataset {
        use crate::data::{DataSpec, LoadOptions, SyntheticConfig, load};
        let spec = DataSpec::Synthetic(SyntheticConfig { count, seed: 3 });
        let opts = LoadOptions {
            size: 8,
            cache: false,
            progress: false,
        };
        load(&spec, &opts).expect("synthetic")
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], A·[1, 2]ᵀ = [8, 8]ᵀ.
        let l = cholesky(vec![4.0, 2.0, 2.0, 3.0], 2).expect("spd");
        let x = solve(&l, &[8.0, 8.0], 2, 1);
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12,
            "{x:?}"
        );
        assert!(cholesky(vec![1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn after_the_erasure_every_class_has_the_same_mean_and_the_rest_is_kept() {
        let device = Device::flex();
        let ds = synthetic(300);
        let attr = ds.attribute_index("texture").expect("texture");
        let all: Vec<usize> = (0..ds.len()).collect();
        for channels in [1, 3] {
            let e = fit(&ds, attr, &all, channels, |x| x, &device).expect("fit");
            let x = batch::images(&ds, &all, &device);
            let v = values(x.clone(), channels);
            let erased = values(x.clone() + e.correction(x), channels);
            let class_means = |t: Tensor<2>| -> Vec<Vec<f32>> {
                let rows = batch::to_vec(t);
                let d = rows.len() / all.len();
                let labels = &ds.attributes[attr].labels;
                (0..2u16)
                    .map(|k| {
                        let members: Vec<&[f32]> = rows
                            .chunks(d)
                            .zip(labels)
                            .filter(|(_, l)| **l == k)
                            .map(|(r, _)| r)
                            .collect();
                        (0..d)
                            .map(|p| {
                                members.iter().map(|r| r[p]).sum::<f32>() / members.len() as f32
                            })
                            .collect()
                    })
                    .collect()
            };
            let gap = |m: &[Vec<f32>]| {
                m[0].iter()
                    .zip(&m[1])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max)
            };
            let (before, after) = (
                gap(&class_means(v.clone())),
                gap(&class_means(erased.clone())),
            );
            assert!(before > 0.02, "texture moves the class means: {before}");
            assert!(
                after < 1e-3,
                "channels {channels}: class means differ by {after}"
            );
            // Rank 1 of d directions: most of the image is untouched.
            let moved: f32 = (erased - v).powi_scalar(2).mean().into_scalar();
            assert!(
                moved < 0.01,
                "channels {channels}: mean square change {moved}"
            );
        }
    }

    #[test]
    fn a_label_with_one_class_is_refused() {
        let device = Device::flex();
        let ds = synthetic(40);
        let attr = ds.attribute_index("texture").expect("texture");
        let one: Vec<usize> = (0..ds.len())
            .filter(|&i| ds.attributes[attr].labels[i] == 0)
            .collect();
        let err = fit(&ds, attr, &one, 1, |x| x, &device).expect_err("one class");
        assert!(err.to_string().contains("nothing to erase"), "{err}");
    }
}
