//! The training configuration, saved as `config.json` next to the weights of every run.

use burn::optim::AdamConfig;
use burn::prelude::*;

use scrim_core::NoiseKind;

use crate::backend::Backend;
use crate::nets::{PerturberConfig, RecognizerConfig};
use crate::{Error, Result};

mod defaults;
pub use defaults::{BOUNDED_HSIC, BOUNDED_HSIC_RAMP, BOUNDED_PRIVATE_EPOCHS, SensitiveDefaults};

/// Everything that defines a co-training run. Saved with the run, so a run can be reloaded,
/// resumed and reproduced.
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// Data source as on the command line (`utkface:DIR`, `synthetic`, ...).
    pub data: String,
    /// The desired attribute the recognizer learns.
    pub desired: String,
    /// The sensitive attribute (needed for `adversarial` and for the audit).
    #[config(default = "None")]
    pub sensitive: Option<String>,
    /// Square input size in pixels.
    #[config(default = 32)]
    pub size: usize,
    /// The perturber.
    pub perturber: PerturberConfig,
    /// The recognizer.
    pub recognizer: RecognizerConfig,
    /// The adversary (adversarial mode).
    #[config(default = "None")]
    pub adversary: Option<RecognizerConfig>,
    /// Adam for every network.
    pub optimizer: AdamConfig,
    /// λ: weight of the noise reward `−λ · mean(log σ)`.
    #[config(default = 0.05)]
    pub lambda: f64,
    /// Utility-constrained mode: when set, λ is no longer fixed but adapted by dual ascent so
    /// that the recognizer's accuracy on perturbed validation images stays at this value (a
    /// fraction); `lambda` is then only the starting value. The perturber adds as much noise as
    /// the accuracy budget allows, instead of whatever a hand-picked λ happens to give.
    #[config(default = "None")]
    pub target_accuracy: Option<f64>,
    /// Dual step of the utility-constrained mode: `log λ += dual_rate · (acc − target)` at each
    /// control step (every [`CONTROL_EVERY`] training batches), `acc` a running mean over
    /// validation batches.
    #[config(default = 1.0)]
    pub dual_rate: f64,
    /// Total epochs, warm-up included.
    #[config(default = 12)]
    pub epochs: usize,
    /// Epochs that train the recognizer alone on clean images before co-training.
    #[config(default = 2)]
    pub warmup_epochs: usize,
    /// The last this many epochs (included in `epochs`) train the recognizer alone on images
    /// from the frozen perturber: the cloud model adapts to the final perturbation instead of
    /// chasing a moving one. The perturber (and λ) no longer change.
    #[config(default = 0)]
    pub finetune_epochs: usize,
    /// Co-training epochs over which λ ramps linearly from 0 to its value.
    #[config(default = 2)]
    pub lambda_ramp_epochs: usize,
    /// Mini-batch size.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Peak learning rate (cosine decay to a tenth of it over the run).
    #[config(default = 2e-3)]
    pub learning_rate: f64,
    /// The perturber's learning rate is this multiple of the recognizer's, so its σ head can
    /// travel from the initial noise level within a short run. Too high (10 was tried) lets σ
    /// outrun the recognizer at larger λ: the recognizer fails, CE stops resisting, and σ
    /// saturates everywhere.
    #[config(default = 2.0)]
    pub perturber_lr_scale: f64,
    /// Seed for initialisation, shuffling, training noise and the split.
    #[config(default = 42)]
    pub seed: u64,
    /// Noise kind: `gaussian` or `laplace`.
    #[config(default = "NoiseKind::Gaussian")]
    pub noise: NoiseKind,
    /// Adversarial mode: train an adversary on perturbed images and reward the perturber for
    /// pushing its prediction to the class prior.
    #[config(default = false)]
    pub adversarial: bool,
    /// Weight of the adversarial term.
    #[config(default = 1.0)]
    pub adversary_weight: f64,
    /// Distillation: weight of `T² · KL(teacher ‖ recognizer)` at temperature [`DISTILL_T`],
    /// where the teacher is the recognizer as warm-up left it (trained on images without
    /// noise), frozen, and sees the image without noise while the recognizer sees the upload.
    /// 0 disables it.
    #[config(default = 0.0)]
    pub distill: f64,
    /// Weight of the attacker-free term: the dependence (normalised HSIC, a Gaussian kernel) of
    /// the expected release on the sensitive label within each desired class of a batch
    /// (`crate::cotrain` module docs). 0 disables it; needs `sensitive`.
    #[config(default = 0.0)]
    pub hsic: f64,
    /// Co-training epochs over which the attacker-free term's weight rises linearly from 0 (in
    /// the first co-training epoch) to `hsic`; 0 applies it in full from the first step. The
    /// term measures a dependence the release has not yet formed at initialisation, and applied
    /// in full from step one it can hold the encoder at a map that carries nothing, gender
    /// included.
    #[config(default = 0)]
    pub hsic_ramp_epochs: usize,
    /// More labels the attacker-free term takes out of the release besides `sensitive`, each
    /// with the weight `hsic` (e.g. age group beside race). Needs `sensitive` and `hsic` > 0.
    #[config(default = "Vec::new()")]
    pub also_hide: Vec<String>,
    /// Re-initialise the adversary (and its optimiser) every this many co-training epochs;
    /// 0 keeps one adversary for the whole run. With a pool, each member restarts on this
    /// period, the members at staggered epochs.
    #[config(default = 0)]
    pub adversary_reset_epochs: usize,
    /// Update steps of every adversary (the pool's members or the single adversary) per
    /// perturber step, each on a fresh noise draw of the batch's uploads: the adversaries see
    /// several draws of every image, as an attacker who uploads a face set afresh does.
    #[config(default = 1)]
    pub adversary_steps: usize,
    /// Keep the epoch where a freshly trained attacker of this kind (linear or cnn) reads the
    /// least of the sensitive label, among those within `select_tolerance` of the best
    /// validation accuracy, instead of the one with the lowest validation objective
    /// (`crate::cotrain` module docs). `None`: the objective.
    #[config(default = "None")]
    pub select_attacker: Option<crate::cotrain::AdversaryKind>,
    /// With `select_attacker`: how far (a fraction) below the best validation accuracy a kept
    /// epoch may be.
    #[config(default = 0.01)]
    pub select_tolerance: f64,
    /// A pool of adversaries of these kinds (`crate::cotrain::AdversaryKind`), trained on every
    /// batch; the perturber is rewarded on the worst of them. Empty: no pool.
    #[config(default = "Vec::new()")]
    pub adversary_pool: Vec<crate::cotrain::AdversaryKind>,
    /// Widths of the pool's CNN adversaries.
    #[config(default = "vec![16, 32, 64]")]
    pub adversary_widths: Vec<usize>,
    /// Validation share of each class.
    #[config(default = 0.1)]
    pub val_fraction: f64,
    /// Test share of each class.
    #[config(default = 0.2)]
    pub test_fraction: f64,
    /// Backend: `flex`, `ndarray` or `wgpu`.
    #[config(default = "Backend::Flex")]
    pub backend: Backend,
    /// Train the recognizer behind a key-based block-wise transform (the key file's path, the
    /// scheme and the block size; never the key itself).
    #[config(default = "None")]
    pub block_key: Option<crate::keyed::BlockKeyConfig>,
}

/// Training batches between two control steps of the utility-constrained mode.
pub const CONTROL_EVERY: usize = 4;

/// Temperature of the distillation term (see [`TrainConfig::distill`]).
pub const DISTILL_T: f64 = 2.0;

/// Bounds of λ in the utility-constrained mode.
pub const LAMBDA_RANGE: (f64, f64) = (1e-3, 5.0);

/// The learning-rate schedule of every training loop: cosine from `peak` at epoch 0 down to a
/// tenth of it at the last of `epochs`.
pub fn cosine_lr(peak: f64, epoch: usize, epochs: usize) -> f64 {
    let t = epoch as f64 / epochs.max(2).saturating_sub(1) as f64;
    let min = peak * 0.1;
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
}

impl TrainConfig {
    /// Checks that the options make a run: the one place every caller's configuration is
    /// validated (the `scrim` command and library callers alike). Messages name the
    /// command-line flag.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for the first option out of range.
    pub fn validate(&self) -> Result<()> {
        let depth = self.recognizer.widths.len();
        if !self.size.is_multiple_of(1 << depth) {
            return Err(Error::option(
                "--size",
                format!(
                    "{} must be divisible by 2^{depth} (the recognizer halves it {depth} times)",
                    self.size
                ),
            ));
        }
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return Err(Error::option(
                "--lambda",
                format!("must be ≥ 0, got {}", self.lambda),
            ));
        }
        if let Some(t) = self.target_accuracy {
            if !(t > 0.0 && t < 1.0) {
                return Err(Error::option(
                    "--target-accuracy",
                    format!("is a fraction in (0, 1), got {t}"),
                ));
            }
            if self.lambda <= 0.0 {
                return Err(Error::option(
                    "--target-accuracy",
                    "starts from --lambda, which must be positive",
                ));
            }
            if self.perturber.layout == crate::nets::PerturberLayout::Bounded {
                return Err(Error::option(
                    "--target-accuracy",
                    "adapts λ, which a bounded release (fixed σ) does not have",
                ));
            }
        }
        if !(self.dual_rate > 0.0 && self.dual_rate.is_finite()) {
            return Err(Error::option(
                "--dual-rate",
                format!("must be positive, got {}", self.dual_rate),
            ));
        }
        if self.epochs == 0 {
            return Err(Error::option("--epochs", "must be positive"));
        }
        if self.adversary_steps == 0 {
            return Err(Error::option("--adversary-steps", "must be at least 1"));
        }
        if self.adversary_steps > 1 && !self.adversarial && self.adversary_pool.is_empty() {
            return Err(Error::option(
                "--adversary-steps",
                "steps adversaries: it needs --adversarial or --adversary-pool",
            ));
        }
        if let Some(kind) = self.select_attacker {
            if self.sensitive.is_none() {
                return Err(Error::option(
                    "--select-attacker",
                    "needs --sensitive, the label the attacker reads",
                ));
            }
            if !(0.0..=1.0).contains(&self.select_tolerance) {
                return Err(Error::option(
                    "--select-tolerance",
                    format!("is a fraction in [0, 1], got {}", self.select_tolerance),
                ));
            }
            use crate::cotrain::AdversaryKind as K;
            if !matches!(kind, K::Linear | K::Cnn) {
                return Err(Error::option(
                    "--select-attacker",
                    format!("is linear or cnn, got {kind:?}"),
                ));
            }
        }
        if !self.adversary_pool.is_empty() {
            if self.sensitive.is_none() {
                return Err(Error::option(
                    "--adversary-pool",
                    "needs --sensitive, the label the adversaries learn",
                ));
            }
            if self.adversary_widths.is_empty() || self.adversary_widths.contains(&0) {
                return Err(Error::option(
                    "--adversary-widths",
                    format!("must be positive widths, got {:?}", self.adversary_widths),
                ));
            }
        }
        if self.batch_size == 0 {
            return Err(Error::option("--batch-size", "must be positive"));
        }
        if !(self.distill >= 0.0 && self.distill.is_finite()) {
            return Err(Error::option(
                "--distill",
                format!("must be ≥ 0, got {}", self.distill),
            ));
        }
        if !(self.hsic >= 0.0 && self.hsic.is_finite()) {
            return Err(Error::option(
                "--hsic",
                format!("must be ≥ 0, got {}", self.hsic),
            ));
        }
        if self.perturber.erase && self.sensitive.is_none() {
            return Err(Error::option(
                "--erase",
                "needs --sensitive, the label to erase",
            ));
        }
        if self.hsic > 0.0 && self.sensitive.is_none() {
            return Err(Error::option(
                "--hsic",
                "needs --sensitive, the label whose dependence it measures",
            ));
        }
        if !self.also_hide.is_empty() && (self.hsic <= 0.0 || self.sensitive.is_none()) {
            return Err(Error::option(
                "--also-hide",
                "works through the attacker-free term: it needs --sensitive and --hsic > 0",
            ));
        }
        if let Some(l) = self
            .also_hide
            .iter()
            .find(|l| **l == self.desired || Some(*l) == self.sensitive.as_ref())
        {
            return Err(Error::option(
                "--also-hide",
                format!("{l:?} is already the desired or the sensitive label"),
            ));
        }
        if self.distill > 0.0 && self.warmup_epochs == 0 {
            return Err(Error::option(
                "--distill",
                "needs a warm-up epoch (--warmup ≥ 1): warm-up trains the teacher",
            ));
        }
        if self.finetune_epochs > 0 && self.warmup_epochs + self.finetune_epochs >= self.epochs {
            return Err(Error::option(
                "--finetune-epochs",
                format!(
                    "{} leaves no co-training epoch: --epochs {} must exceed --warmup {} + --finetune-epochs",
                    self.finetune_epochs, self.epochs, self.warmup_epochs
                ),
            ));
        }
        self.perturber.validate(self.size)
    }

    /// λ in effect during `epoch` (0-based): 0 in warm-up, then a linear ramp.
    pub fn lambda_at(&self, epoch: usize) -> f64 {
        if epoch < self.warmup_epochs {
            return 0.0;
        }
        let k = epoch - self.warmup_epochs + 1;
        self.lambda * (k as f64 / self.lambda_ramp_epochs.max(1) as f64).min(1.0)
    }

    /// Weight of the attacker-free term during `epoch` (0-based): 0 in warm-up, then a linear
    /// ramp from 0 over [`TrainConfig::hsic_ramp_epochs`] co-training epochs.
    pub fn hsic_at(&self, epoch: usize) -> f64 {
        let Some(k) = epoch.checked_sub(self.warmup_epochs) else {
            return 0.0;
        };
        if self.hsic_ramp_epochs == 0 {
            return self.hsic;
        }
        self.hsic * (k as f64 / self.hsic_ramp_epochs as f64).min(1.0)
    }

    /// Learning rate during `epoch`: cosine from the peak to a tenth of it.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        cosine_lr(self.learning_rate, epoch, self.epochs)
    }

    /// True in the closing recognizer-only epochs (see [`TrainConfig::finetune_epochs`]).
    pub fn is_finetune(&self, epoch: usize) -> bool {
        epoch >= self.warmup_epochs && epoch + self.finetune_epochs >= self.epochs
    }

    /// True once λ has reached its full value: the epochs eligible as "best".
    pub fn is_full_lambda(&self, epoch: usize) -> bool {
        epoch + 1 >= self.warmup_epochs + self.lambda_ramp_epochs.max(1)
            || self.epochs <= self.warmup_epochs + self.lambda_ramp_epochs
                && epoch + 1 == self.epochs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TrainConfig {
        TrainConfig::new(
            "synthetic".into(),
            "shape".into(),
            PerturberConfig::new(),
            RecognizerConfig::new(2),
            AdamConfig::new(),
        )
    }

    #[test]
    fn an_erasure_needs_a_sensitive_label_an_image_and_a_size_that_fits_the_manifest() {
        use crate::nets::PerturberLayout;
        let msg = |c: &TrainConfig| c.validate().expect_err("invalid").to_string();
        let mut c = cfg().with_size(32);
        c.perturber.erase = true;
        assert!(msg(&c).contains("needs --sensitive"), "{}", msg(&c));
        c.sensitive = Some("texture".into());
        c.validate().expect("colour at 32×32: 3,072 values");
        c.size = 64;
        assert!(msg(&c).contains("at most 4096"), "{}", msg(&c));
        c.perturber.standardize = true;
        c.perturber.gray = true;
        assert_eq!(c.perturber.erase_channels(), 1);
        c.validate().expect("grey at 64×64: 4,096 values");
        c.perturber.layout = PerturberLayout::Bounded;
        c.perturber.release_side = 4;
        assert!(msg(&c).contains("bounded release"), "{}", msg(&c));
    }

    #[test]
    fn also_hide_works_through_the_attacker_free_term() {
        let msg = |c: &TrainConfig| c.validate().expect_err("invalid").to_string();
        let mut c = cfg().with_also_hide(vec!["colour".into()]);
        assert!(msg(&c).contains("--also-hide"), "{}", msg(&c));
        c.sensitive = Some("texture".into());
        assert!(msg(&c).contains("--hsic > 0"), "{}", msg(&c));
        c.hsic = 0.5;
        c.validate()
            .expect("a second label beside the sensitive one");
        c.also_hide = vec!["texture".into()];
        assert!(msg(&c).contains("already"), "{}", msg(&c));
        c.also_hide = vec!["shape".into()];
        assert!(msg(&c).contains("already"), "{}", msg(&c));
    }

    #[test]
    fn schedules() {
        let c = cfg()
            .with_lambda(0.5)
            .with_warmup_epochs(2)
            .with_lambda_ramp_epochs(2)
            .with_epochs(6);
        let l: Vec<f64> = (0..6).map(|e| c.lambda_at(e)).collect();
        assert_eq!(l, vec![0.0, 0.0, 0.25, 0.5, 0.5, 0.5]);
        assert!((c.lr_at(0) - c.learning_rate).abs() < 1e-12);
        assert!((c.lr_at(5) - c.learning_rate * 0.1).abs() < 1e-12);
        assert!(!c.is_full_lambda(2) && c.is_full_lambda(3));
        // A run too short to reach full λ still has an eligible last epoch.
        let short = c.clone().with_epochs(3);
        assert!(short.is_full_lambda(2));
        // Fine-tuning takes the last epochs, never warm-up ones.
        let ft = c.with_finetune_epochs(2);
        let f: Vec<bool> = (0..6).map(|e| ft.is_finetune(e)).collect();
        assert_eq!(f, vec![false, false, false, false, true, true]);
        assert!(!ft.clone().with_epochs(2).is_finetune(1));
        // The attacker-free term: in full from the first co-training epoch, or ramped from 0.
        let h = cfg().with_hsic(1.0).with_warmup_epochs(1).with_epochs(5);
        let w: Vec<f64> = (0..5).map(|e| h.hsic_at(e)).collect();
        assert_eq!(w, vec![0.0, 1.0, 1.0, 1.0, 1.0]);
        let h = h.with_hsic_ramp_epochs(2);
        let w: Vec<f64> = (0..5).map(|e| h.hsic_at(e)).collect();
        assert_eq!(w, vec![0.0, 0.0, 0.5, 1.0, 1.0]);
    }
}
