//! What to audit: the schemes, the attackers, the baselines of the command line, and the
//! request that gathers them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use scrim_train::data::DataSpec;
use scrim_train::eval::{ClassifierConfig, FitConfig};

use crate::error::{Error, Result};
use crate::uploads::{Augment, View};

/// What to audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scheme {
    /// No perturbation: the clean reference.
    None,
    /// Input-independent Gaussian noise of one σ everywhere. `sigma: None` takes the RMS σ of
    /// the first perturber audited (equal mean noise energy).
    Uniform {
        /// The noise σ.
        sigma: Option<f64>,
        /// A run whose perturber's RMS σ this noise matches (when `sigma` is absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matching: Option<PathBuf>,
    },
    /// A run folder from `scrim train` (its perturber, recognizer and split).
    Run {
        /// The folder.
        path: PathBuf,
    },
    /// Any perturber ONNX (with its manifest next to it), optionally with the recognizer that
    /// serves it.
    Onnx {
        /// The perturber.
        perturber: PathBuf,
        /// The recognizer; without one, utility uses a recognizer trained on perturbed images.
        recognizer: Option<PathBuf>,
    },
    /// The ARDEN-style feature baseline (Wang et al., KDD 2018): the phone runs the first conv
    /// block of a clean-trained recognizer, frozen, on the image with a fraction `nullify` of
    /// its pixels set to 0, bounds the features to `[0, 1]` and adds Laplace noise of scale
    /// `laplace_b`; the cloud part is trained on such noisy features.
    Arden {
        /// Probability that an input pixel is nullified (ARDEN's μ).
        nullify: f64,
        /// Laplace scale b on features bounded to `[0, 1]`.
        laplace_b: f64,
    },
}

impl Scheme {
    /// A short name for tables and plots.
    pub fn name(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Uniform { sigma: Some(s), .. } => format!("uniform σ={s:.3}"),
            Self::Uniform { sigma: None, .. } => "uniform".into(),
            Self::Arden { nullify, laplace_b } => format!("arden μ={nullify} b={laplace_b}"),
            Self::Run { path }
            | Self::Onnx {
                perturber: path, ..
            } => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
        }
    }

    /// Checks the scheme's parameters, before any training starts.
    ///
    /// # Errors
    /// [`Error::BadArden`] for a nullified fraction outside `[0, 1]` or a negative or
    /// non-finite Laplace scale.
    pub fn check(&self) -> Result<()> {
        if let Self::Arden { nullify, laplace_b } = *self
            && (!(0.0..=1.0).contains(&nullify) || !laplace_b.is_finite() || laplace_b < 0.0)
        {
            return Err(Error::BadArden {
                nullify,
                scale: laplace_b,
            });
        }
        Ok(())
    }
}

/// The attackers (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attack {
    /// The attacker who holds the perturber: a residual CNN trained on the train split released
    /// afresh every epoch (new noise, mirrored and shifted), tested on one release per image.
    Kerckhoffs,
    /// The σ side channel: a CNN on the local noise level of releases drawn afresh.
    Variance,
    /// Logistic regression on releases drawn afresh (pixels or blurred pixels).
    Linear,
    /// A CNN trained from scratch on one perturbed copy of the train split.
    Cnn,
    /// Blur, then a CNN.
    Blur,
    /// A CNN trained on clean images, then fine-tuned on perturbed ones.
    Finetune,
    /// A decoder that reconstructs the clean image; scored by PSNR/SSIM and by the clean
    /// attacker's accuracy on its output.
    Reconstruct,
}

impl Attack {
    /// All attackers.
    pub const ALL: [Attack; 7] = [
        Self::Kerckhoffs,
        Self::Variance,
        Self::Linear,
        Self::Cnn,
        Self::Blur,
        Self::Finetune,
        Self::Reconstruct,
    ];

    /// The attackers who hold the perturber and train on releases drawn afresh.
    pub const HOLDERS: [Attack; 3] = [Self::Kerckhoffs, Self::Variance, Self::Linear];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kerckhoffs => "kerckhoffs",
            Self::Variance => "variance",
            Self::Linear => "linear",
            Self::Cnn => "cnn",
            Self::Blur => "blur",
            Self::Finetune => "finetune",
            Self::Reconstruct => "reconstruct",
        }
    }
}

/// How the attackers who hold the perturber ([`Attack::HOLDERS`]) are trained. Recorded in
/// every report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipes {
    /// Widths of `kerckhoffs`'s residual CNN (stem and blocks).
    pub kerckhoffs_widths: Vec<usize>,
    /// `kerckhoffs`'s optimisation.
    pub kerckhoffs: FitConfig,
    /// Augmentation of image releases for `kerckhoffs` (and the mirror for `variance`).
    pub augment: Augment,
    /// Pooling block of `variance`'s noise-level view.
    pub variance_block: usize,
    /// Widths of `variance`'s CNN.
    pub variance_widths: Vec<usize>,
    /// `variance`'s optimisation.
    pub variance: FitConfig,
    /// Views `linear` chooses from (on validation, with its first seed).
    pub linear_views: Vec<View>,
    /// `linear`'s optimisation.
    pub linear: FitConfig,
}

impl Recipes {
    /// The defaults; `mirror`: left–right flips keep the labels (faces, not the synthetic
    /// textures, whose `/` and `\` a mirror swaps).
    pub fn new(mirror: bool) -> Self {
        let fit = |epochs, patience, batch_size, learning_rate| {
            FitConfig::new()
                .with_epochs(epochs)
                .with_patience(patience)
                .with_batch_size(batch_size)
                .with_learning_rate(learning_rate)
                .with_cosine(true)
        };
        Self {
            kerckhoffs_widths: vec![32, 64, 128],
            kerckhoffs: fit(20, 4, 128, 2e-3),
            augment: Augment {
                flip: mirror,
                shift: 2,
            },
            variance_block: 2,
            variance_widths: vec![32, 64],
            variance: fit(15, 3, 128, 2e-3),
            linear_views: vec![View::Pixels, View::Blur],
            linear: fit(30, 4, 128, 1e-3).with_weight_decay(1e-4),
        }
    }
}

impl std::str::FromStr for Attack {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| Error::UnknownAttack(s.into()))
    }
}

/// A baseline audited beside the runs (`scrim audit --baselines`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The clean images: what an attacker reads without any perturbation.
    None,
    /// Uniform noise of equal energy (σ matched to the first perturber's RMS σ).
    Uniform,
    /// ARDEN-style noisy features of a frozen first conv block.
    Arden,
}

impl Baseline {
    /// All baselines.
    pub const ALL: [Baseline; 3] = [Self::None, Self::Uniform, Self::Arden];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Uniform => "uniform",
            Self::Arden => "arden",
        }
    }
}

impl std::str::FromStr for Baseline {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| Error::UnknownBaseline(s.into()))
    }
}

/// An audit to run.
#[derive(Debug, Clone)]
pub struct AuditRequest {
    /// The data.
    pub data: DataSpec,
    /// Image side (taken from the first run when auditing runs).
    pub size: usize,
    /// The desired label.
    pub desired: String,
    /// Sensitive labels; the first is the primary one (the frontier's y axis).
    pub sensitive: Vec<String>,
    /// Schemes, in report order.
    pub schemes: Vec<Scheme>,
    /// Attackers to train.
    pub attacks: Vec<Attack>,
    /// Noise draws averaged for utility.
    pub draws: usize,
    /// Attacker training.
    pub attacker: ClassifierConfig,
    /// Training of the attackers who hold the perturber.
    pub recipes: Recipes,
    /// Attackers trained per (scheme, attribute, attack), each with its own seed; reports give
    /// their mean and each seed. Attackers vary by several points from seed to seed.
    pub attacker_seeds: usize,
    /// Attackers of different seeds trained at once, one thread each (0 = one per core).
    pub jobs: usize,
    /// Output folder.
    pub out: PathBuf,
    /// Split seed when no run provides a split.
    pub seed: u64,
    /// Progress bars.
    pub progress: bool,
    /// Decoded-image cache.
    pub cache: bool,
    /// A run folder whose split (and image size) the audit uses without auditing the run.
    pub split_from: Option<PathBuf>,
}

impl AuditRequest {
    /// An audit of `schemes` with every attacker and the defaults of the README.
    pub fn new(data: DataSpec, desired: &str, sensitive: &[&str], out: PathBuf) -> Self {
        Self {
            recipes: Recipes::new(!matches!(data, DataSpec::Synthetic(_))),
            data,
            size: 32,
            desired: desired.into(),
            sensitive: sensitive.iter().map(|s| (*s).to_string()).collect(),
            schemes: Vec::new(),
            attacks: Attack::ALL.to_vec(),
            draws: 3,
            attacker: ClassifierConfig::new().with_epochs(10).with_patience(2),
            attacker_seeds: 3,
            jobs: 0,
            out,
            seed: 42,
            progress: false,
            cache: true,
            split_from: None,
        }
    }
}

impl AuditRequest {
    /// Every attacker the audit trains stops after its patience without a validation gain
    /// larger than `min_delta` (a fraction; 0 = any gain) over the epoch that last restarted it.
    pub fn set_min_delta(&mut self, min_delta: f64) {
        let d = (min_delta > 0.0).then_some(min_delta);
        self.attacker.min_delta = d;
        let r = &mut self.recipes;
        for fit in [&mut r.kerckhoffs, &mut r.variance, &mut r.linear] {
            fit.min_delta = d;
        }
    }

    /// How many attackers of different seeds train at once: [`AuditRequest::jobs`], or when it
    /// is 0 the machine's cores, and every seed at once where there are more seeds than cores,
    /// up to twice the cores (burn's kernels leave part of a core idle; on 2 cores three
    /// kerckhoffs seeds at once train 8% faster than two then one, and 15% faster than one at a
    /// time; each attacker holds its own uploads, so memory bounds the rest).
    pub fn parallel_jobs(&self) -> usize {
        match self.jobs {
            0 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                cores.max(self.attacker_seeds.min(2 * cores))
            }
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_names_list_the_known_ones() {
        for a in Attack::ALL {
            assert_eq!(a.name().parse::<Attack>().ok(), Some(a));
            assert_eq!(a.name(), format!("{a:?}").to_lowercase());
        }
        for b in Baseline::ALL {
            assert_eq!(b.name().parse::<Baseline>().ok(), Some(b));
        }
        let e = "cloak".parse::<Baseline>().expect_err("not a baseline");
        assert!(matches!(&e, Error::UnknownBaseline(s) if s == "cloak"));
        assert!(e.to_string().contains("--input-independent"), "{e}");
        let e = "pgd".parse::<Attack>().expect_err("not an attack");
        assert_eq!(
            e.to_string(),
            "unknown attack \"pgd\"; use kerckhoffs, variance, linear, cnn, blur, finetune or reconstruct"
        );
    }

    #[test]
    fn seeds_train_at_once_up_to_twice_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut req = AuditRequest::new(
            DataSpec::Synthetic(Default::default()),
            "a",
            &["b"],
            "o".into(),
        );
        req.attacker_seeds = cores + 1;
        assert_eq!(req.parallel_jobs(), cores + 1);
        req.attacker_seeds = 1;
        assert_eq!(req.parallel_jobs(), cores);
        req.attacker_seeds = 10 * cores;
        assert_eq!(req.parallel_jobs(), 2 * cores);
        req.jobs = 1;
        assert_eq!(req.parallel_jobs(), 1);
    }

    #[test]
    fn arden_parameters_are_checked() {
        let arden = |nullify, laplace_b| Scheme::Arden { nullify, laplace_b };
        assert!(arden(0.1, 0.5).check().is_ok());
        assert!(arden(0.0, 0.0).check().is_ok());
        assert!(Scheme::None.check().is_ok());
        for (m, b) in [(-0.1, 0.5), (1.5, 0.5), (0.1, -1.0), (0.1, f64::NAN)] {
            assert!(
                matches!(arden(m, b).check(), Err(Error::BadArden { .. })),
                "μ = {m}, b = {b}"
            );
        }
    }
}
