//! The tensor operations of co-training: training noise, the perturbation with 8-bit rounding
//! passed straight through, the warm-up input, the adversary's prior cross-entropy and the
//! distillation term.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::{Distribution, activation};

use crate::batch;
use crate::config::TrainConfig;
use crate::nets::{Perturber, PerturberOut, Recognizer};

/// Draws training noise of unit variance (Gaussian or Laplace) shaped like `like`.
fn unit_noise(like: &Tensor<4>, kind: scrim_core::NoiseKind) -> Tensor<4> {
    let device = like.device();
    let shape = like.shape();
    match kind {
        scrim_core::NoiseKind::Gaussian => {
            Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device)
        }
        scrim_core::NoiseKind::Laplace => {
            let u =
                Tensor::<4>::random(shape, Distribution::Uniform(-0.499_999, 0.499_999), &device);
            let mag = u.clone().abs().mul_scalar(-2.0).add_scalar(1.0).log();
            u.sign()
                .mul(mag)
                .mul_scalar(-std::f64::consts::FRAC_1_SQRT_2)
        }
    }
}

/// What the recognizer warms up on: the image after the perturber's fixed transforms (grey
/// conversion or tone standardisation, concept erasure), without noise, so co-training does
/// not start with a change of input distribution. Identity for perturbers without one.
pub(crate) fn fixed_part(p: &Perturber, x: Tensor<4>) -> Tensor<4> {
    match p.fixed_shift(x.clone()) {
        Some(shift) => quantize_ste((x + shift).clamp(0.0, 1.0)).detach(),
        None => x,
    }
}

/// `x' = q(clip(k ⊙ (x + μ) + (1 − k)·fill + σ ⊙ ε, 0, 1))` (`μ = 0`, `k = 1` when the perturber
/// has neither), with `q` 8-bit rounding passed straight through in the
/// backward pass, so training sees exactly the values an 8-bit upload carries.
///
/// A bounded release instead renders `q(clip(up(map) + σ·ε, 0, 1))`: the map upsampled to the
/// image (a grey map to all three channels, with one ε per pixel), as `scrim_core::release`
/// does on the device; the photo enters only through the map.
pub fn perturb(x: Tensor<4>, out: &PerturberOut, kind: scrim_core::NoiseKind) -> Tensor<4> {
    if let Some(map) = &out.map {
        let [n, c, h, w] = x.dims();
        let [_, mc, side, _] = map.dims();
        let up = crate::nets::upsample_nearest(map.clone(), h / side.max(1));
        let eps = unit_noise(&Tensor::zeros([n, mc, h, w], &x.device()), kind);
        let noisy = up + eps * out.sigma.clone().slice([0..n, 0..mc]);
        return quantize_ste(noisy.expand([n, c, h, w]).clamp(0.0, 1.0));
    }
    let eps = unit_noise(&x, kind);
    let noisy = (noiseless(x, out) + out.sigma.clone() * eps).clamp(0.0, 1.0);
    quantize_ste(noisy)
}

/// The upload before its noise, `k ⊙ (x + μ) + (1 − k)·fill`, of a perturber without a bounded
/// release.
fn noiseless(x: Tensor<4>, out: &PerturberOut) -> Tensor<4> {
    let mut base = x;
    if let Some(shift) = &out.shift {
        base = base + shift.clone();
    }
    if let Some(keep) = &out.keep {
        let fill = keep.clone().neg().add_scalar(1.0).mul_scalar(out.fill);
        base = base * keep.clone() + fill;
    }
    base
}

/// What an attacker who averages many uploads of one photo sees, one row per image: the upload
/// before its noise (clipped to `[0, 1]`), or a bounded release's map.
pub(crate) fn expected_release(x: Tensor<4>, out: &PerturberOut) -> Tensor<2> {
    let release = match &out.map {
        Some(map) => map.clone(),
        None => noiseless(x, out).clamp(0.0, 1.0),
    };
    let [n, c, h, w] = release.dims();
    release.reshape([n, c * h * w])
}

/// 8-bit rounding with a straight-through gradient.
pub fn quantize_ste(x: Tensor<4>) -> Tensor<4> {
    let q = x.clone().mul_scalar(255.0).round().div_scalar(255.0);
    x.clone() + (q - x).detach()
}

/// Cross-entropy between the class prior and the adversary's prediction: smallest when the
/// adversary predicts the prior for every image.
pub(crate) fn prior_cross_entropy(logits: Tensor<2>, prior: &[f32]) -> Tensor<1> {
    let [_, k] = logits.dims();
    let p = Tensor::<1>::from_floats(prior, &logits.device()).reshape([1, k]);
    activation::log_softmax(logits, 1)
        .mul(p)
        .sum_dim(1)
        .mean()
        .neg()
}

/// `distill · T² · KL(softmax(teacher(x̃)/T) ‖ softmax(logits/T))`, where `x̃` is the image
/// after the perturber's fixed transform (no noise): the teacher's soft labels carry what the
/// clean image says, which the noisy upload alone may not.
pub(crate) fn distillation(
    teacher: &Recognizer,
    perturber: &Perturber,
    x: Tensor<4>,
    logits: Tensor<2>,
    cfg: &TrainConfig,
) -> Tensor<1> {
    let t = crate::config::DISTILL_T;
    // The teacher in evaluation mode (running BatchNorm statistics), outside the graph.
    let target = activation::softmax(
        teacher
            .valid()
            .forward(fixed_part(perturber, x).inner())
            .div_scalar(t),
        1,
    );
    let log_p = activation::log_softmax(logits.div_scalar(t), 1);
    let log_q = target.clone().add_scalar(1e-8).log();
    (target * (log_q - log_p))
        .sum_dim(1)
        .mean()
        .reshape([1])
        .mul_scalar(cfg.distill * t * t)
}

/// The single value of a one-element tensor.
pub(crate) fn scalar<const D: usize>(t: Tensor<D>) -> f64 {
    f64::from(batch::to_vec(t).first().copied().unwrap_or(0.0))
}
