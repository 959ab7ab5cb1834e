//! A pool of adversaries of different kinds for adversarial co-training: a CNN on the upload,
//! a CNN on its blur, a CNN on its local noise level (the σ side channel) and a logistic
//! regression. Each learns the sensitive label from every batch of uploads; the perturber is
//! rewarded on the **worst** of them (the highest cross-entropy to the class prior, i.e. the one
//! that reads the most), so hiding from one kind is not enough. Members restart on a staggered
//! schedule, so the pool always holds adversaries of different ages.

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use serde::{Deserialize, Serialize};

use super::ops::prior_cross_entropy;
use crate::eval::Classifier;
use crate::nets::{LinearProbe, Recognizer, RecognizerConfig};

/// One kind of adversary in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdversaryKind {
    /// A CNN on the upload.
    Cnn,
    /// A CNN on the upload's 3×3 binomial blur.
    Blur,
    /// A CNN on `ln(avg_pool2((x − blur x)²) + 1e-5)`: the local noise level.
    Variance,
    /// Logistic regression on the upload.
    Linear,
}

impl std::str::FromStr for AdversaryKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "cnn" => Ok(Self::Cnn),
            "blur" => Ok(Self::Blur),
            "variance" => Ok(Self::Variance),
            "linear" => Ok(Self::Linear),
            other => Err(crate::Error::UnknownName {
                what: "adversary kind",
                given: other.into(),
                expected: "cnn, blur, variance or linear",
            }),
        }
    }
}

/// A 3×3 binomial blur of every channel (zero padding).
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, H, W]`.
pub fn blur(x: Tensor<4>) -> Tensor<4> {
    let [_, c, _, _] = x.dims();
    let k = [1.0f32, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0].map(|v| v / 16.0);
    let w: Vec<f32> = (0..c).flat_map(|_| k).collect();
    let weight = Tensor::<1>::from_floats(w.as_slice(), &x.device()).reshape([c, 1, 3, 3]);
    crate::nets::conv2d(x, weight, None, ConvOptions::new([1, 1], [1, 1], [1, 1], c))
}

/// The local noise level: `ln(mean over 2×2 blocks of (x − blur x)² + 1e-5)`.
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, H/2, W/2]`.
pub fn noise_level(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let d = x.clone() - blur(x);
    (d.clone() * d)
        .reshape([n, c, h / 2, 2, w / 2, 2])
        .mean_dim(5)
        .mean_dim(3)
        .reshape([n, c, h / 2, w / 2])
        .add_scalar(1e-5)
        .log()
}

#[derive(Clone)]
enum Net {
    Cnn(Recognizer),
    Linear(LinearProbe),
}

struct Member {
    kind: AdversaryKind,
    net: Net,
    opt: ModuleOptimizer,
}

/// The pool (see the module docs).
pub(crate) struct Pool {
    members: Vec<Member>,
    classes: usize,
    size: usize,
    widths: Vec<usize>,
    optimizer: burn::optim::AdamConfig,
}

impl Member {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let v = match self.kind {
            AdversaryKind::Cnn | AdversaryKind::Linear => x,
            AdversaryKind::Blur => blur(x),
            AdversaryKind::Variance => noise_level(x),
        };
        match &self.net {
            Net::Cnn(m) => m.forward(v),
            Net::Linear(m) => m.forward(v),
        }
    }
}

impl Pool {
    /// One adversary of each kind in `kinds` (CNNs of `widths`) for `classes` sensitive classes
    /// on `size`×`size` uploads.
    pub fn new(
        kinds: &[AdversaryKind],
        widths: &[usize],
        classes: usize,
        size: usize,
        optimizer: &burn::optim::AdamConfig,
        device: &Device,
    ) -> Self {
        let mut pool = Self {
            members: Vec::new(),
            classes,
            size,
            widths: widths.to_vec(),
            optimizer: optimizer.clone(),
        };
        for &kind in kinds {
            let m = pool.fresh(kind, device);
            pool.members.push(m);
        }
        pool
    }

    fn fresh(&self, kind: AdversaryKind, device: &Device) -> Member {
        let net = match kind {
            AdversaryKind::Linear => Net::Linear(LinearProbe::new(
                [3, self.size, self.size],
                self.classes,
                device,
            )),
            _ => Net::Cnn(
                RecognizerConfig::new(self.classes)
                    .with_widths(self.widths.clone())
                    .init(device),
            ),
        };
        Member {
            kind,
            net,
            opt: self.optimizer.init(),
        }
    }

    /// Restarts member `i` of `k` when `epoch` (co-training epochs, counted from 1) is its turn
    /// in a period of `period` epochs: members restart at different epochs.
    pub fn maybe_reset(&mut self, epoch: usize, period: usize, device: &Device) {
        if period == 0 {
            return;
        }
        let k = self.members.len().max(1);
        for i in 0..self.members.len() {
            let offset = i * period / k;
            if epoch > offset && (epoch - offset).is_multiple_of(period) {
                self.members[i] = self.fresh(self.members[i].kind, device);
            }
        }
    }

    /// One step of every member on the uploads `xp` (detached) and one more on each of
    /// `draws` (fresh noise draws of the same images, detached), with labels `ys`; then the
    /// perturber's term: the highest cross-entropy to the class `prior` among the members.
    pub fn step(
        &mut self,
        xp: Tensor<4>,
        draws: &[Tensor<4>],
        ys: Tensor<1, Int>,
        prior: &[f32],
        loss_fn: &CrossEntropyLoss,
        lr: f64,
    ) -> Tensor<1> {
        let mut rewards = Vec::with_capacity(self.members.len());
        for m in &mut self.members {
            for input in std::iter::once(xp.clone().detach()).chain(draws.iter().cloned()) {
                let loss = loss_fn.forward(m.logits(input), ys.clone());
                let mut g = loss.backward();
                m.net = match std::mem::replace(&mut m.net, Net::Linear(placeholder(&xp))) {
                    Net::Cnn(net) => {
                        let ga = GradientsParams::from_module(&mut g, &net);
                        Net::Cnn(m.opt.step(lr, net, ga))
                    }
                    Net::Linear(net) => {
                        let ga = GradientsParams::from_module(&mut g, &net);
                        Net::Linear(m.opt.step(lr, net, ga))
                    }
                };
            }
            rewards.push(prior_cross_entropy(m.logits(xp.clone()), prior));
        }
        Tensor::cat(rewards, 0).max()
    }
}

/// A throwaway probe that holds a member's place while its network is being stepped.
fn placeholder(x: &Tensor<4>) -> LinearProbe {
    LinearProbe::new([1, 1, 1], 1, &x.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_have_their_shapes_and_the_noise_level_follows_the_noise() {
        let device = Device::flex();
        let flat = Tensor::<4>::full([1, 3, 8, 8], 0.5, &device);
        let noisy = flat.clone()
            + Tensor::<4>::random(
                [1, 3, 8, 8],
                burn::tensor::Distribution::Normal(0.0, 0.2),
                &device,
            );
        assert_eq!(blur(flat.clone()).dims(), [1, 3, 8, 8]);
        // The interior 2×2 blocks (the zero-padded blur darkens the border, the same for every
        // image).
        let interior =
            |t: Tensor<4>| crate::batch::to_vec(t.slice([0..1, 0..3, 1..3, 1..3]).mean());
        let lo = interior(noise_level(flat));
        let hi = interior(noise_level(noisy));
        assert!(hi[0] > lo[0] + 3.0, "{hi:?} vs {lo:?}");
    }

    #[test]
    fn each_extra_draw_is_one_more_step_of_every_member() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([8, 3, 4, 4], burn::tensor::Distribution::Default, &device);
        let ys = Tensor::<1, Int>::from_ints([0, 1, 0, 1, 0, 1, 0, 1], &device);
        let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
        let fresh = || {
            Pool::new(
                &[AdversaryKind::Linear],
                &[4],
                2,
                4,
                &burn::optim::AdamConfig::new(),
                &device,
            )
        };
        // Every run starts from the same member (a copy, not a reseeded draw: burn's generator
        // is shared with the tests running meanwhile).
        let start = fresh().members[0].net.clone();
        let loss_after = |draws: &[Tensor<4>]| {
            let mut pool = fresh();
            pool.members[0].net = start.clone();
            pool.step(x.clone(), draws, ys.clone(), &[0.5, 0.5], &loss_fn, 5e-2);
            let logits = pool.members[0].logits(x.clone());
            crate::batch::to_vec(loss_fn.forward(logits, ys.clone()))[0]
        };
        let one = loss_after(&[]);
        let again = loss_after(&[]);
        let three = loss_after(&[x.clone().detach(), x.clone().detach()]);
        assert_eq!(one, again, "the same seed, the same member");
        assert!(three < one - 1e-3, "3 steps {three} vs 1 step {one}");
    }

    #[test]
    fn members_restart_at_staggered_epochs() {
        let device = Device::flex().autodiff();
        let kinds = [AdversaryKind::Cnn, AdversaryKind::Linear];
        let mut pool = Pool::new(&kinds, &[4], 2, 8, &burn::optim::AdamConfig::new(), &device);
        let x = Tensor::<4>::random([4, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let ys = Tensor::<1, Int>::from_ints([0, 1, 0, 1], &device);
        let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
        let worst = pool.step(x.clone(), &[], ys, &[0.5, 0.5], &loss_fn, 1e-2);
        assert_eq!(worst.dims(), [1]);
        let before: Vec<Vec<f32>> = pool
            .members
            .iter()
            .map(|m| crate::batch::to_vec(m.logits(x.clone())))
            .collect();
        // Period 2 with 2 members: member 0 restarts at epochs 2, 4, …; member 1 at 3, 5, ….
        pool.maybe_reset(2, 2, &device);
        let after: Vec<Vec<f32>> = pool
            .members
            .iter()
            .map(|m| crate::batch::to_vec(m.logits(x.clone())))
            .collect();
        assert_ne!(before[0], after[0]);
        assert_eq!(before[1], after[1]);
    }
}
