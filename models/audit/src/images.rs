//! The audit of a scheme that uploads perturbed images: its utility, then the image attackers
//! (the holders of the perturber in `holders.rs`; `cnn`, `blur`, `finetune`, `reconstruct`) on
//! every sensitive attribute.

use scrim_train::data::Dataset;
use scrim_train::eval::{self, Accuracy};
use scrim_train::nets::Recognizer;

use crate::context::{Context, SeedRun, SeedRuns};
use crate::error::Result;
use crate::holders::{Releases, holder_attack};
use crate::perturb::{ImageScheme, Perturb};
use crate::quality::Reconstruction;
use crate::reconstruct::reconstruct;
use crate::reports::{AttackResult, DeviceCost, SchemeReport, mean_accuracy};
use crate::request::{Attack, Scheme};
use crate::uploads::{ImageUploads, Uploaded, blur_plane};

/// Audits one image scheme named `name`.
pub(crate) fn audit_images(
    ctx: &mut Context<'_>,
    name: &str,
    scheme: &Scheme,
    r: &ImageScheme,
) -> Result<SchemeReport> {
    let req = ctx.req;
    let progress = req.progress;
    let ptrain = r.perturb.apply(ctx.train, progress)?;
    let pval = r.perturb.apply(ctx.val, progress)?;
    let ptest = r.perturb.apply(ctx.test, progress)?;
    let (mean_sigma, rms_sigma) = r.perturb.sigma_stats(ctx.test)?;
    // Utility.
    let draws = req.draws.max(1);
    let (desired_clean, desired_perturbed, utility_model) = match &r.recognizer {
        Some(model) => {
            let clean = eval::onnx_accuracy(model, ctx.test, &req.desired)?;
            let mut accs = vec![eval::onnx_accuracy(model, &ptest, &req.desired)?];
            for _ in 1..draws {
                let t = r.perturb.apply(ctx.test, false)?;
                accs.push(eval::onnx_accuracy(model, &t, &req.desired)?);
            }
            (
                clean,
                mean_accuracy(&accs),
                "co-trained recognizer".to_string(),
            )
        }
        None => {
            let clean = ctx.clean_desired()?;
            let perturbed = if matches!(r.perturb, Perturb::Identity) {
                clean
            } else {
                let m = ctx
                    .fit_attacker(
                        &ptrain,
                        &pval,
                        &req.desired,
                        None,
                        &req.attacker,
                        &format!("{name}: recognizer"),
                    )?
                    .model;
                let mut accs = vec![eval::burn_accuracy(&m, &ptest, &req.desired, &ctx.device)?];
                for _ in 1..draws {
                    let t = r.perturb.apply(ctx.test, false)?;
                    accs.push(eval::burn_accuracy(&m, &t, &req.desired, &ctx.device)?);
                }
                mean_accuracy(&accs)
            };
            (
                clean,
                perturbed,
                "recognizer trained on perturbed images".to_string(),
            )
        }
    };
    let identity = matches!(r.perturb, Perturb::Identity);
    let (attacks, reconstruction) =
        attack_images(ctx, name, &r.perturb, identity, &ptrain, &pval, &ptest)?;
    Ok(SchemeReport {
        name: name.into(),
        scheme: scheme.clone(),
        family: r.family.clone(),
        lambda: r.lambda,
        mean_sigma,
        rms_sigma,
        desired_clean,
        desired_perturbed,
        utility_model,
        attacks,
        reconstruction,
        multiply_adds: r.multiply_adds.0.map(|perturber| DeviceCost {
            perturber,
            recognizer: r.multiply_adds.1,
        }),
        notes: bounded_note(&r.perturb).into_iter().collect(),
        training: r.training.clone(),
    })
}

/// What a bounded release's manifest states about one upload (no note for other perturbers).
fn bounded_note(p: &Perturb) -> Option<String> {
    let Perturb::Onnx(p) = p else {
        return None;
    };
    let r = p.release()?;
    Some(format!(
        "bounded release: the upload is a {}×{} {} map (amplitude {}, upsampled) plus Gaussian \
         noise σ {}; one upload carries at most {:.1} bits of the photo (manifest, checked on \
         load). Its mean σ column is that fixed σ.",
        r.side,
        r.side,
        if r.channels == 1 { "grey" } else { "colour" },
        r.amplitude,
        r.sigma,
        r.bits_per_upload
    ))
}

/// Runs every requested attacker on every sensitive attribute of the perturbed splits
/// (`identity`: they are the clean splits).
fn attack_images(
    ctx: &mut Context<'_>,
    name: &str,
    perturb: &Perturb,
    identity: bool,
    ptrain: &Dataset,
    pval: &Dataset,
    ptest: &Dataset,
) -> Result<(Vec<AttackResult>, Option<Reconstruction>)> {
    let req = ctx.req;
    let mut results = Vec::new();
    // The decoder does not depend on the attribute: train it once per scheme.
    let (decoded, reconstruction) = if req.attacks.contains(&Attack::Reconstruct) {
        let (out, quality) = reconstruct(ctx, name, ptrain, pval, ptest)?;
        (Some(out), Some(quality))
    } else {
        (None, None)
    };
    let blurred = req
        .attacks
        .contains(&Attack::Blur)
        .then(|| (blur(ptrain), blur(pval), blur(ptest)));
    // The uploads the holders of the perturber draw afresh (the graph runs once per image, on
    // the first holder attack).
    let mut holders = None;
    for attr in &req.sensitive {
        let majority = ctx.majority(attr)?;
        for &attack in &req.attacks {
            let label = format!("{name}: {attr} {attack:?} attacker").to_lowercase();
            let device = ctx.device.clone();
            let score = |m: &Recognizer, ds: &Dataset| -> Result<Accuracy> {
                Ok(eval::burn_accuracy(m, ds, attr, &device)?)
            };
            let started = std::time::Instant::now();
            let runs = match attack {
                Attack::Kerckhoffs | Attack::Variance | Attack::Linear => {
                    let (train, val, test) = match holders.take() {
                        Some(h) => h,
                        None => (
                            ImageUploads::new(perturb, ctx.train)?,
                            Uploaded(pval),
                            Uploaded(ptest),
                        ),
                    };
                    let releases = Releases {
                        train: &train,
                        val: &val,
                        test: &test,
                        images: true,
                    };
                    let out = holder_attack(ctx, attack, attr, &releases, &label);
                    holders = Some((train, val, test));
                    out?
                }
                // Without perturbation the from-scratch attacker is the clean attacker.
                Attack::Cnn if identity => {
                    SeedRuns::single(score(&ctx.clean_attacker(attr)?, ptest)?)
                }
                Attack::Cnn => ctx.over_seeds(|seed| {
                    let cfg = ctx.attacker_with_seed(seed);
                    let trained = ctx.fit_attacker(ptrain, pval, attr, None, &cfg, &label)?;
                    SeedRun::scored(trained, |m| score(m, ptest))
                })?,
                Attack::Blur => {
                    let Some((btrain, bval, btest)) = &blurred else {
                        continue;
                    };
                    ctx.over_seeds(|seed| {
                        let cfg = ctx.attacker_with_seed(seed);
                        let trained = ctx.fit_attacker(btrain, bval, attr, None, &cfg, &label)?;
                        SeedRun::scored(trained, |m| score(m, btest))
                    })?
                }
                Attack::Finetune => {
                    let clean = ctx.clean_attacker(attr)?;
                    ctx.over_seeds(|seed| {
                        let cfg = ctx.attacker_with_seed(seed);
                        let trained =
                            ctx.fit_attacker(ptrain, pval, attr, Some(&clean), &cfg, &label)?;
                        SeedRun::scored(trained, |m| score(m, ptest))
                    })?
                }
                Attack::Reconstruct => {
                    let clean = ctx.clean_attacker(attr)?;
                    match &decoded {
                        Some(d) => SeedRuns::single(score(&clean, d)?),
                        None => continue,
                    }
                }
            };
            results.push(
                AttackResult::from_runs(attr, attack, runs, majority)
                    .with_seconds(started.elapsed().as_secs_f64()),
            );
        }
    }
    Ok((results, reconstruction))
}

/// A 3×3 binomial blur (`[1 2 1]/4` in each direction, edges replicated): removes much of
/// per-pixel noise while keeping the low frequencies an attacker wants.
pub(crate) fn blur(ds: &Dataset) -> Dataset {
    let s = ds.size;
    let mut images = ds.images.clone();
    for plane in images.chunks_mut(s * s) {
        let src: Vec<f32> = plane.iter().map(|&v| f32::from(v)).collect();
        for (dst, v) in plane.iter_mut().zip(blur_plane(&src, s, s)) {
            *dst = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Dataset {
        images,
        ..ds.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn blur_keeps_flat_images_and_smooths_noise() {
        let s = 8;
        let flat = Dataset {
            size: s,
            images: vec![100; 3 * s * s],
            names: vec!["a".into()],
            attributes: vec![],
        };
        assert_eq!(blur(&flat).images, flat.images);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noisy = Dataset {
            images: (0..3 * s * s)
                .map(|_| rand::Rng::random::<u8>(&mut rng))
                .collect(),
            ..flat
        };
        let var = |v: &[u8]| {
            let m = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
            v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / v.len() as f64
        };
        // A 3×3 binomial filter keeps (6/16)² ≈ 14% of white-noise variance in the interior.
        assert!(var(&blur(&noisy).images) < 0.35 * var(&noisy.images));
    }
}
