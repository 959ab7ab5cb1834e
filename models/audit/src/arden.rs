//! The ARDEN-style baseline (Wang et al., KDD 2018, "Not Just Privacy: Improving Performance of
//! Private Deep Learning in Mobile Cloud"): the phone releases noisy *features*, not images.
//!
//! - **Shallow part (phone):** the first conv block (conv → BN → ReLU → 2×2 max-pool) of the
//!   recognizer the audit trains on clean images for the desired label, frozen.
//! - **Nullification:** each pixel of the input is set to 0 (all three channels) with probability
//!   μ before the block.
//! - **Bounding:** the feature map `f` becomes `f / max(1, ‖f‖∞)`, ARDEN's norm bound with
//!   B = 1: every released value lies in `[0, 1]` (the block ends in a ReLU), so the Laplace
//!   scale `b` is in units of the feature range. (A per-value sensitivity of 1 gives each value
//!   ε = 1/b; the audit claims no formal guarantee for the whole map, it measures attackers.)
//! - **Laplace noise** of scale `b` (standard deviation `√2·b`) on every value.
//! - **Cloud part:** the remaining blocks and the linear head, trained from scratch on noisy
//!   training features ("noisy training"), early-stopping on noisy validation features.
//!
//! Every image gets a fresh mask and fresh noise from a ChaCha20 generator seeded from the
//! operating system (as `uniform_noise` does), drawn once per split: each photo is
//! uploaded once. Attackers are CNNs with the image attacker's widths on the features; the
//! holders of the client (`kerckhoffs`, `variance`, `linear`) train on the train split released
//! afresh every epoch; the blur and reconstruction attackers are image attacks and are skipped
//! (the report says so).

use std::collections::HashMap;

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::Rng;
use scrim_core::{NoiseKind, NoiseSource};

use scrim_train::batch::{self, Inputs};
use scrim_train::data::Dataset;
use scrim_train::eval;
use scrim_train::nets::{Block, Recognizer};

use crate::context::{Context, SeedRun};
use crate::error::{Error, Result};
use crate::holders::{Releases, holder_attack};
use crate::reports::{AttackResult, SchemeReport, mean_accuracy};
use crate::request::{Attack, Scheme};
use crate::uploads::Redraw;

/// Released feature maps of every image of a split, `[N, C, H, W]` flattened.
pub struct Features<'a> {
    source: &'a Dataset,
    shape: [usize; 3],
    values: Vec<f32>,
}

impl Features<'_> {
    /// `[C, H, W]` of one feature map.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Every value, image after image.
    #[cfg(test)]
    fn values(&self) -> &[f32] {
        &self.values
    }
}

impl Inputs for Features<'_> {
    fn dataset(&self) -> &Dataset {
        self.source
    }
    fn channels(&self) -> usize {
        self.shape[0]
    }
    fn batch(&self, indices: &[usize], device: &Device) -> Tensor<4> {
        let [c, h, w] = self.shape;
        let n = c * h * w;
        let mut v = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            v.extend_from_slice(&self.values[i * n..(i + 1) * n]);
        }
        Tensor::from_data(TensorData::new(v, [indices.len(), c, h, w]), device)
    }
}

impl Redraw for Features<'_> {
    fn dataset(&self) -> &Dataset {
        self.source
    }
    fn shape(&self) -> [usize; 3] {
        self.shape
    }
    fn draw(&self) -> Result<Vec<f32>> {
        Ok(self.values.clone())
    }
}

/// The train split released afresh by a client (new masks and noise at every draw): what the
/// holder of the client trains on.
struct FreshRelease<'a> {
    client: &'a Client,
    ds: &'a Dataset,
    device: &'a Device,
    source: &'a NoiseSource,
    shape: [usize; 3],
}

impl Redraw for FreshRelease<'_> {
    fn dataset(&self) -> &Dataset {
        self.ds
    }
    fn shape(&self) -> [usize; 3] {
        self.shape
    }
    fn draw(&self) -> Result<Vec<f32>> {
        Ok(self
            .client
            .release(self.ds, self.source, self.device)
            .values)
    }
}

/// The phone's part: a frozen conv block, nullification μ and Laplace scale b.
#[derive(Debug, Clone)]
pub struct Client {
    /// The frozen shallow block.
    pub block: Block,
    /// Probability that a pixel is set to 0.
    pub nullify: f32,
    /// Laplace scale b of the noise on the bounded features.
    pub scale: f32,
}

impl Client {
    /// Releases the features of every image of `ds`, each with its own generator from `noise`.
    pub fn release<'a>(
        &self,
        ds: &'a Dataset,
        noise: &NoiseSource,
        device: &Device,
    ) -> Features<'a> {
        let s = ds.size;
        let plane = s * s;
        let all: Vec<usize> = (0..ds.len()).collect();
        let mut values = Vec::new();
        let mut shape = [self.block.conv.weight.dims()[0], s / 2, s / 2];
        for idx in all.chunks(256) {
            let mut rngs: Vec<_> = idx.iter().map(|_| noise.rng()).collect();
            let mut x = Vec::with_capacity(idx.len() * 3 * plane);
            for (&i, rng) in idx.iter().zip(&mut rngs) {
                let keep: Vec<bool> = (0..plane)
                    .map(|_| self.nullify <= 0.0 || rng.random::<f32>() >= self.nullify)
                    .collect();
                for channel in ds.image(i).chunks(plane) {
                    x.extend(
                        channel
                            .iter()
                            .zip(&keep)
                            .map(|(&b, &k)| if k { f32::from(b) / 255.0 } else { 0.0 }),
                    );
                }
            }
            let f = self.block.forward(Tensor::from_data(
                TensorData::new(x, [idx.len(), 3, s, s]),
                device,
            ));
            let [_, c, h, w] = f.dims();
            shape = [c, h, w];
            let f = batch::to_vec(f);
            let laplace_sd = self.scale * std::f32::consts::SQRT_2;
            for (map, rng) in f.chunks(c * h * w).zip(&mut rngs) {
                // ARDEN's bound with B = 1: values in [0, 1] (the block ends in a ReLU).
                let bound = map.iter().fold(1.0f32, |m, &v| m.max(v));
                values.extend(map.iter().map(|&v| {
                    let noise = if laplace_sd > 0.0 {
                        laplace_sd * NoiseKind::Laplace.sample(rng)
                    } else {
                        0.0
                    };
                    v / bound + noise
                }));
            }
        }
        Features {
            source: ds,
            shape,
            values,
        }
    }
}

/// What the ARDEN schemes of one audit share: the frozen block, and for the `finetune` attacker
/// the clean (un-nullified, noise-free) features and the attackers trained on them. The audit
/// holds it (`None` until the first ARDEN scheme) and hands it to every [`audit_arden`].
pub(crate) struct Shared<'a> {
    block: Block,
    clean: Option<(Features<'a>, Features<'a>)>,
    clean_attackers: HashMap<String, Recognizer>,
}

/// Audits one ARDEN scheme (its parameters already checked): utility of the noisily trained
/// cloud part, and attackers on the released features.
pub(crate) fn audit_arden<'a>(
    ctx: &mut Context<'a>,
    shared: &mut Option<Shared<'a>>,
    name: &str,
    scheme: &Scheme,
    nullify: f64,
    scale: f64,
) -> Result<SchemeReport> {
    let req = ctx.req;
    let (clean_model, desired_clean) = ctx.clean_recognizer()?;
    let shared = match shared {
        Some(shared) => shared,
        None => shared.insert(Shared {
            block: clean_model
                .blocks
                .first()
                .cloned()
                .ok_or(Error::ArdenNeedsBlock)?,
            clean: None,
            clean_attackers: HashMap::new(),
        }),
    };
    let client = Client {
        block: shared.block.clone(),
        nullify: nullify as f32,
        scale: scale as f32,
    };
    let os = NoiseSource::from_os();
    let device = ctx.device.clone();
    let (ftrain, fval, ftest) = (
        client.release(ctx.train, &os, &device),
        client.release(ctx.val, &os, &device),
        client.release(ctx.test, &os, &device),
    );

    // Utility: the cloud's blocks (all but the first) trained on noisy features.
    let cloud_cfg = req
        .attacker
        .clone()
        .with_widths(req.attacker.widths[1..].to_vec());
    let cloud = ctx
        .fit_attacker(
            &ftrain,
            &fval,
            &req.desired,
            None,
            &cloud_cfg,
            &format!("{name}: cloud part"),
        )?
        .model;
    let mut accs = vec![eval::burn_accuracy(&cloud, &ftest, &req.desired, &device)?];
    for _ in 1..req.draws.max(1) {
        let t = client.release(ctx.test, &os, &device);
        accs.push(eval::burn_accuracy(&cloud, &t, &req.desired, &device)?);
    }

    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for attr in &req.sensitive {
        let majority = ctx.majority(attr)?;
        for &attack in &req.attacks {
            let label = format!("{name}: {attr} {attack:?} attacker").to_lowercase();
            let started = std::time::Instant::now();
            let init = match attack {
                Attack::Kerckhoffs | Attack::Variance | Attack::Linear => {
                    let fresh = FreshRelease {
                        client: &client,
                        ds: ctx.train,
                        device: &device,
                        source: &os,
                        shape: ftrain.shape(),
                    };
                    let releases = Releases {
                        train: &fresh,
                        val: &fval,
                        test: &ftest,
                        images: false,
                    };
                    let runs = holder_attack(ctx, attack, attr, &releases, &label)?;
                    results.push(
                        AttackResult::from_runs(attr, attack, runs, majority)
                            .with_seconds(started.elapsed().as_secs_f64()),
                    );
                    continue;
                }
                Attack::Cnn => None,
                Attack::Finetune => Some(clean_feature_attacker(ctx, shared, &client, attr)?),
                Attack::Blur | Attack::Reconstruct => {
                    if !skipped.contains(&attack) {
                        skipped.push(attack);
                    }
                    continue;
                }
            };
            let runs = ctx.over_seeds(|seed| {
                let cfg = ctx.attacker_with_seed(seed);
                let trained =
                    ctx.fit_attacker(&ftrain, &fval, attr, init.as_ref(), &cfg, &label)?;
                SeedRun::scored(trained, |m| {
                    Ok(eval::burn_accuracy(m, &ftest, attr, &device)?)
                })
            })?;
            results.push(
                AttackResult::from_runs(attr, attack, runs, majority)
                    .with_seconds(started.elapsed().as_secs_f64()),
            );
        }
    }
    let [c, h, w] = ftrain.shape();
    let mut notes = vec![format!(
        "ARDEN releases {c}×{h}×{w} features (first conv block of the clean recognizer, frozen; \
         {:.0}% of pixels nullified; features bounded to [0, 1]); its mean σ column is the \
         Laplace scale b = {scale} of the noise on those features (standard deviation {:.3}), \
         not a pixel σ.",
        100.0 * nullify,
        scale * std::f64::consts::SQRT_2
    )];
    if !skipped.is_empty() {
        let names: Vec<&str> = skipped.iter().map(|a| a.name()).collect();
        notes.push(format!(
            "{} not run: image attacks do not apply to ARDEN's feature uploads.",
            names.join(" and ")
        ));
    }
    Ok(SchemeReport {
        name: name.into(),
        scheme: scheme.clone(),
        family: "arden".into(),
        lambda: None,
        mean_sigma: scale,
        rms_sigma: scale * std::f64::consts::SQRT_2,
        desired_clean,
        desired_perturbed: mean_accuracy(&accs),
        utility_model: "cloud blocks trained on noisy features (ARDEN noisy training)".into(),
        attacks: results,
        reconstruction: None,
        multiply_adds: None,
        notes,
        training: None,
    })
}

/// The attacker for `attr` trained on clean features (trained once per audit), the start of
/// the `finetune` attacker.
fn clean_feature_attacker<'a>(
    ctx: &Context<'a>,
    shared: &mut Shared<'a>,
    client: &Client,
    attr: &str,
) -> Result<Recognizer> {
    if let Some(m) = shared.clean_attackers.get(attr) {
        return Ok(m.clone());
    }
    let (ctrain, cval) = shared.clean.get_or_insert_with(|| {
        let clean_client = Client {
            nullify: 0.0,
            scale: 0.0,
            ..client.clone()
        };
        let os = NoiseSource::from_os();
        (
            clean_client.release(ctx.train, &os, &ctx.device),
            clean_client.release(ctx.val, &os, &ctx.device),
        )
    });
    let m = ctx
        .fit_attacker(
            &*ctrain,
            &*cval,
            attr,
            None,
            &ctx.req.attacker,
            &format!("clean-feature attacker ({attr})"),
        )?
        .model;
    shared.clean_attackers.insert(attr.to_string(), m.clone());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scrim_train::data::{self, DataSpec, LoadOptions, SyntheticConfig};
    use scrim_train::nets::RecognizerConfig;

    fn setup(n: usize) -> (Dataset, Client, Device) {
        let device = Device::flex();
        let spec = DataSpec::Synthetic(SyntheticConfig { count: n, seed: 3 });
        let ds = data::load(
            &spec,
            &LoadOptions {
                size: 16,
                cache: false,
                progress: false,
            },
        )
        .expect("synthetic data");
        let block = RecognizerConfig::new(2)
            .with_widths(vec![8])
            .init(&device)
            .blocks
            .remove(0);
        (
            ds,
            Client {
                block,
                nullify: 0.0,
                scale: 0.0,
            },
            device,
        )
    }

    #[test]
    fn clean_release_is_bounded_and_deterministic() {
        let (ds, client, device) = setup(20);
        let a = client.release(&ds, &NoiseSource::from_os(), &device);
        let b = client.release(&ds, &NoiseSource::from_os(), &device);
        assert_eq!(a.shape(), [8, 8, 8]);
        assert_eq!(a.values().len(), 20 * 8 * 8 * 8);
        assert_eq!(a.values(), b.values());
        assert!(a.values().iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(a.batch(&[3, 4], &device).dims(), [2, 8, 8, 8]);
    }

    #[test]
    fn laplace_noise_has_scale_b_and_nullification_changes_features() {
        let (ds, client, device) = setup(20);
        let clean = client.release(&ds, &NoiseSource::from_os(), &device);
        let b = 0.3;
        let noisy = Client {
            scale: b,
            ..client.clone()
        }
        .release(&ds, &NoiseSource::seeded_for_tests(1), &device);
        let d: Vec<f64> = noisy
            .values()
            .iter()
            .zip(clean.values())
            .map(|(x, y)| f64::from(x - y))
            .collect();
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        // Laplace(b): mean 0 and E|X| = b; 10 240 samples put both within a few percent.
        let mean_abs = d.iter().map(|v| v.abs()).sum::<f64>() / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((mean_abs - f64::from(b)).abs() < 0.03, "E|X| {mean_abs}");
        // Nullifying every pixel leaves a constant input: all images release the same map.
        let blank = Client {
            nullify: 1.0,
            ..client
        }
        .release(&ds, &NoiseSource::from_os(), &device);
        let m = 8 * 8 * 8;
        assert_eq!(&blank.values()[..m], &blank.values()[m..2 * m]);
        assert_ne!(&clean.values()[..m], &clean.values()[m..2 * m]);
    }
}
