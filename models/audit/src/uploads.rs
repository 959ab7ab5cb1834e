//! Releases drawn afresh, for the attackers who hold the perturber (Kerckhoffs's principle: the
//! perturber ships in every app, so a provider can upload any labelled face as often as it
//! likes). A [`Redraw`] releases every image of a split again with new noise; [`Fresh`] feeds a
//! classifier a new draw every epoch, augmented and seen through a [`View`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use scrim_core::{ImageTensor, NoiseKind, NoiseSource, UploadBase};
use scrim_train::batch::Inputs;
use scrim_train::data::Dataset;

use crate::error::{Error, Result};
use crate::perturb::Perturb;

/// What of a release an attacker sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum View {
    /// The released values themselves.
    Pixels,
    /// A 3×3 binomial blur of them (edges replicated): what survives averaging out the noise.
    Blur,
    /// The σ side channel: `ln(mean over block×block of (x − blur(x))² + 1e-5)` per channel, the
    /// local noise level of the release, which leaks σ(x) even where the pixels are suppressed.
    Variance {
        /// Side of the pooling blocks.
        block: usize,
    },
}

impl View {
    /// `[C, H, W]` of the view of a release of shape `shape`.
    pub fn shape(self, [c, h, w]: [usize; 3]) -> [usize; 3] {
        match self {
            Self::Pixels | Self::Blur => [c, h, w],
            Self::Variance { block } => {
                let b = block.max(1);
                [c, h / b, w / b]
            }
        }
    }

    /// The view of one release `x` of shape `[C, H, W]`, appended to `out`.
    pub fn apply(self, x: &[f32], [c, h, w]: [usize; 3], out: &mut Vec<f32>) {
        match self {
            Self::Pixels => out.extend_from_slice(x),
            Self::Blur => {
                for plane in x.chunks(h * w).take(c) {
                    out.extend(blur_plane(plane, h, w));
                }
            }
            Self::Variance { block } => {
                let b = block.max(1);
                let (oh, ow) = (h / b, w / b);
                for plane in x.chunks(h * w).take(c) {
                    let smooth = blur_plane(plane, h, w);
                    for y in 0..oh {
                        for xx in 0..ow {
                            let mut acc = 0.0f32;
                            for dy in 0..b {
                                for dx in 0..b {
                                    let k = (y * b + dy) * w + xx * b + dx;
                                    let d = plane[k] - smooth[k];
                                    acc += d * d;
                                }
                            }
                            out.push((acc / (b * b) as f32 + 1e-5).ln());
                        }
                    }
                }
            }
        }
    }
}

/// A 3×3 binomial blur (`[1 2 1]/4` each way) of one `h×w` plane, edges replicated.
pub(crate) fn blur_plane(p: &[f32], h: usize, w: usize) -> Vec<f32> {
    let at = |y: isize, x: isize| {
        p[y.clamp(0, h as isize - 1) as usize * w + x.clamp(0, w as isize - 1) as usize]
    };
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h as isize {
        for x in 0..w as isize {
            let mut acc = 0.0;
            for (dy, wy) in [(-1, 1.0), (0, 2.0), (1, 1.0)] {
                for (dx, wx) in [(-1, 1.0), (0, 2.0), (1, 1.0)] {
                    acc += wy * wx * at(y + dy, x + dx);
                }
            }
            out.push(acc / 16.0);
        }
    }
    out
}

/// Training-time augmentation of releases (label-preserving for faces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Mirror half of the images left–right.
    pub flip: bool,
    /// Shift by up to this many pixels each way (edges replicated).
    pub shift: usize,
}

impl Augment {
    /// No augmentation.
    pub const NONE: Self = Self {
        flip: false,
        shift: 0,
    };

    fn apply(self, x: &[f32], [c, h, w]: [usize; 3], rng: &mut ChaCha8Rng) -> Vec<f32> {
        let flip = self.flip && rng.random::<bool>();
        let s = self.shift as i64;
        let (dy, dx) = if s > 0 {
            (
                rng.random_range(-s..=s) as isize,
                rng.random_range(-s..=s) as isize,
            )
        } else {
            (0, 0)
        };
        let mut out = Vec::with_capacity(x.len());
        for plane in x.chunks(h * w).take(c) {
            for y in 0..h as isize {
                let sy = (y + dy).clamp(0, h as isize - 1) as usize;
                for xx in 0..w as isize {
                    let mut sx = (xx + dx).clamp(0, w as isize - 1) as usize;
                    if flip {
                        sx = w - 1 - sx;
                    }
                    out.push(plane[sy * w + sx]);
                }
            }
        }
        out
    }
}

/// Something that releases every image of a split, each time with new noise.
pub(crate) trait Redraw: Sync {
    /// The labelled images released (one release per image, same order).
    fn dataset(&self) -> &Dataset;
    /// `[C, H, W]` of one release.
    fn shape(&self) -> [usize; 3];
    /// One release of every image, flattened image after image.
    fn draw(&self) -> Result<Vec<f32>>;
}

/// Uploads of a split through an image scheme, the deterministic part computed once: each
/// [`Redraw::draw`] adds new CSPRNG noise exactly as the device does.
pub(crate) struct ImageUploads<'a> {
    ds: &'a Dataset,
    bases: Vec<UploadBase>,
    kind: NoiseKind,
    source: NoiseSource,
}

impl<'a> ImageUploads<'a> {
    /// The upload bases of every image of `ds` under `perturb` (the perturber's graph runs once
    /// per image, in threads).
    pub fn new(perturb: &Perturb, ds: &'a Dataset) -> Result<Self> {
        let s = ds.size;
        let base_of = |i: usize| -> Result<UploadBase> {
            let x = ds.image_tensor(i)?;
            Ok(match perturb {
                Perturb::Identity => sigma_base(&x, 0.0)?,
                Perturb::Uniform(sigma) => sigma_base(&x, *sigma)?,
                Perturb::Onnx(p) => p.upload_base(&x)?,
            })
        };
        let bases = in_threads(ds.len(), base_of)?;
        let kind = match perturb {
            Perturb::Onnx(p) => p.noise_kind(),
            _ => NoiseKind::Gaussian,
        };
        debug_assert!(bases.iter().all(|b| b.shape() == [1, 3, s, s]));
        Ok(Self {
            ds,
            bases,
            kind,
            source: NoiseSource::from_os(),
        })
    }
}

/// The upload base of images `x` with a constant σ and no shift or suppression.
fn sigma_base(x: &ImageTensor, sigma: f32) -> Result<UploadBase> {
    let maps = scrim_core::noise::PerturbationMaps {
        sigma: ImageTensor::new(x.shape(), vec![sigma; x.data().len()])?,
        shift: None,
        keep: None,
        fill: 0.5,
    };
    Ok(UploadBase::from_maps(x, &maps)?)
}

/// `f(0..n)` in as many threads as there are cores, results in order.
fn in_threads<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |t| t.get())
        .min(n.max(1));
    let chunk = n.div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<T>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let f = &f;
                scope.spawn(move || (start..(start + chunk).min(n)).map(f).collect())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Train(scrim_train::Error::Internal(
                        "a release thread panicked".into(),
                    )))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

impl Redraw for ImageUploads<'_> {
    fn dataset(&self) -> &Dataset {
        self.ds
    }
    fn shape(&self) -> [usize; 3] {
        [3, self.ds.size, self.ds.size]
    }
    fn draw(&self) -> Result<Vec<f32>> {
        let per = in_threads(self.bases.len(), |i| {
            Ok(self.bases[i].draw(self.kind, &self.source)?.data().to_vec())
        })?;
        Ok(per.concat())
    }
}

/// Uploads already made (one draw, as uploaded): every "draw" is the same.
pub(crate) struct Uploaded<'a>(pub &'a Dataset);

impl Redraw for Uploaded<'_> {
    fn dataset(&self) -> &Dataset {
        self.0
    }
    fn shape(&self) -> [usize; 3] {
        [3, self.0.size, self.0.size]
    }
    fn draw(&self) -> Result<Vec<f32>> {
        Ok(self
            .0
            .images
            .iter()
            .map(|&b| f32::from(b) / 255.0)
            .collect())
    }
}

/// A classifier's inputs: releases of a split through a [`View`], drawn afresh at every epoch
/// and augmented ([`Fresh::new`]), or one fixed draw as uploaded ([`Fresh::fixed`], for
/// validation and test).
pub(crate) struct Fresh<'a> {
    src: &'a dyn Redraw,
    view: View,
    augment: Augment,
    redraw: bool,
    seed: u64,
    epoch: AtomicUsize,
    current: Mutex<Arc<Vec<f32>>>,
}

impl<'a> Fresh<'a> {
    /// Training inputs: a new draw at every epoch after the first.
    pub fn new(src: &'a dyn Redraw, view: View, augment: Augment, seed: u64) -> Result<Self> {
        Ok(Self {
            current: Mutex::new(Arc::new(src.draw()?)),
            src,
            view,
            augment,
            redraw: true,
            seed,
            epoch: AtomicUsize::new(0),
        })
    }

    /// One draw, kept: validation and test releases, as uploaded once.
    pub fn fixed(src: &'a dyn Redraw, view: View) -> Result<Self> {
        Ok(Self {
            redraw: false,
            ..Self::new(src, view, Augment::NONE, 0)?
        })
    }

    fn values(&self) -> Arc<Vec<f32>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Inputs for Fresh<'_> {
    fn dataset(&self) -> &Dataset {
        self.src.dataset()
    }
    fn channels(&self) -> usize {
        self.view.shape(self.src.shape())[0]
    }
    fn set_epoch(&self, epoch: usize) {
        let before = self.epoch.swap(epoch, Ordering::SeqCst);
        if !self.redraw || epoch == before {
            return;
        }
        match self.src.draw() {
            Ok(v) => {
                *self
                    .current
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(v);
            }
            // Drawing only fails on malformed tensors, which `new` would have met first; keep
            // training on the last draw rather than stop.
            Err(e) => tracing::warn!("could not redraw releases: {e}"),
        }
    }
    fn batch(&self, indices: &[usize], device: &Device) -> Tensor<4> {
        let shape = self.src.shape();
        let per: usize = shape.iter().product();
        let [c, h, w] = self.view.shape(shape);
        let values = self.values();
        let epoch = self.epoch.load(Ordering::SeqCst) as u64;
        let mut out = Vec::with_capacity(indices.len() * c * h * w);
        for &i in indices {
            let x = &values[i * per..(i + 1) * per];
            if self.augment == Augment::NONE {
                self.view.apply(x, shape, &mut out);
            } else {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    self.seed
                        ^ epoch.wrapping_mul(0x9E37_79B9)
                        ^ (i as u64).wrapping_mul(0x85EB_CA6B) << 20,
                );
                let a = self.augment.apply(x, shape, &mut rng);
                self.view.apply(&a, shape, &mut out);
            }
        }
        Tensor::from_data(TensorData::new(out, [indices.len(), c, h, w]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variance_view_is_higher_where_the_noise_is() {
        let (h, w) = (8, 8);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let plane = |s: f32, rng: &mut ChaCha8Rng| -> Vec<f32> {
            (0..h * w)
                .map(|_| 0.5 + s * (rng.random::<f32>() - 0.5))
                .collect()
        };
        let mut x = plane(0.05, &mut rng);
        x.extend(plane(0.4, &mut rng));
        let view = View::Variance { block: 2 };
        assert_eq!(view.shape([2, h, w]), [2, 4, 4]);
        let mut out = Vec::new();
        view.apply(&x, [2, h, w], &mut out);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean(&out[16..]) > mean(&out[..16]) + 2.0, "{out:?}");
        // A flat plane has no local variance.
        let mut flat = Vec::new();
        View::Variance { block: 2 }.apply(&vec![0.3; h * w], [1, h, w], &mut flat);
        assert!(flat.iter().all(|&v| (v - 1e-5f32.ln()).abs() < 1e-3));
    }

    #[test]
    fn augmentation_mirrors_and_shifts_within_the_image() {
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let flip = Augment {
            flip: true,
            shift: 0,
        };
        let mut seen_flip = false;
        for seed in 0..20 {
            let y = flip.apply(&x, [1, 4, 4], &mut ChaCha8Rng::seed_from_u64(seed));
            if y != x {
                assert_eq!(&y[..4], &[3.0, 2.0, 1.0, 0.0]);
                seen_flip = true;
            }
        }
        assert!(seen_flip);
        let shift = Augment {
            flip: false,
            shift: 1,
        };
        for seed in 0..20 {
            let y = shift.apply(&x, [1, 4, 4], &mut ChaCha8Rng::seed_from_u64(seed));
            assert!(y.iter().all(|v| x.contains(v)));
        }
    }

    struct Noisy(Dataset);
    impl Redraw for Noisy {
        fn dataset(&self) -> &Dataset {
            &self.0
        }
        fn shape(&self) -> [usize; 3] {
            [3, 2, 2]
        }
        fn draw(&self) -> Result<Vec<f32>> {
            let mut rng = rand::rng();
            Ok((0..self.0.len() * 12).map(|_| rng.random()).collect())
        }
    }

    #[test]
    fn fresh_inputs_redraw_each_epoch_and_fixed_ones_do_not() {
        let ds = Dataset {
            size: 2,
            images: vec![0; 2 * 12],
            names: vec!["a".into(), "b".into()],
            attributes: vec![],
        };
        let src = Noisy(ds);
        let device = Device::flex();
        let fresh = Fresh::new(&src, View::Pixels, Augment::NONE, 3).expect("draw");
        let a = scrim_train::batch::to_vec(fresh.batch(&[0, 1], &device));
        fresh.set_epoch(0);
        assert_eq!(a, scrim_train::batch::to_vec(fresh.batch(&[0, 1], &device)));
        fresh.set_epoch(1);
        assert_ne!(a, scrim_train::batch::to_vec(fresh.batch(&[0, 1], &device)));
        let fixed = Fresh::fixed(&src, View::Pixels).expect("draw");
        let b = scrim_train::batch::to_vec(fixed.batch(&[0, 1], &device));
        fixed.set_epoch(1);
        assert_eq!(b, scrim_train::batch::to_vec(fixed.batch(&[0, 1], &device)));
    }
}
