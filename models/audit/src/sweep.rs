//! `scrim sweep`: train one run per (variant, λ), then audit them all together with the clean
//! reference and uniform noise of matching energy, so the frontier of each variant can be
//! compared in one plot.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use scrim_train::config::TrainConfig;
use scrim_train::data::DataSpec;
use scrim_train::nets::PerturberLayout;
use scrim_train::report::note;
use scrim_train::run::RunDir;
use scrim_train::workflow::{TrainRequest, train_run};

use crate::audit::audit;
use crate::error::{Error, Result};
use crate::reports::AuditReport;
use crate::request::{AuditRequest, Scheme};

/// A named co-training recipe (see the README's "Privacy options" for why each exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The paper's task-agnostic loss, noise only.
    Paper,
    /// The Cloak-style baseline: one learned σ map for every image.
    Cloak,
    /// Grey upload and suppression on top of the paper's loss (still task-agnostic).
    GraySuppress,
    /// Grey upload, suppression and a learned shift, trained against a re-initialised
    /// adversary that is pushed to the class prior (needs sensitive labels).
    Adversarial,
}

impl Variant {
    /// All recipes.
    pub const ALL: [Variant; 4] = [
        Self::Paper,
        Self::Cloak,
        Self::GraySuppress,
        Self::Adversarial,
    ];

    /// The name used on the command line and in plots.
    pub fn name(self) -> &'static str {
        match self {
            Self::Paper => "paper",
            Self::Cloak => "cloak",
            Self::GraySuppress => "gray-suppress",
            Self::Adversarial => "adversarial",
        }
    }

    /// Applies the recipe to a configuration.
    pub fn apply(self, cfg: &mut TrainConfig) {
        match self {
            Self::Paper => {}
            Self::Cloak => {
                cfg.perturber.layout = PerturberLayout::InputIndependent;
                cfg.perturber.map_size = cfg.size;
            }
            Self::GraySuppress => {
                cfg.perturber.gray = true;
                cfg.perturber.suppress = true;
            }
            Self::Adversarial => {
                cfg.perturber.gray = true;
                cfg.perturber.suppress = true;
                cfg.perturber.shift_max = 0.3;
                cfg.adversarial = true;
                cfg.adversary_reset_epochs = 2;
            }
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| Error::UnknownVariant(s.into()))
    }
}

/// A sweep.
#[derive(Debug, Clone)]
pub struct SweepRequest {
    /// Data.
    pub data: DataSpec,
    /// Desired label.
    pub desired: String,
    /// Sensitive labels (the first is trained against by `adversarial` and plotted).
    pub sensitive: Vec<String>,
    /// λ values.
    pub lambdas: Vec<f64>,
    /// Recipes.
    pub variants: Vec<Variant>,
    /// Applied to every run before its variant (size, epochs, widths, ...).
    pub base: TrainConfig,
    /// Output folder: `runs/` inside it holds one run per (variant, λ).
    pub out: PathBuf,
    /// Audit settings (its `schemes` and `out` are filled in by the sweep).
    pub audit: AuditRequest,
    /// Progress bars.
    pub progress: bool,
}

/// Trains what is missing, then audits every run, the clean reference, and uniform noise matched
/// to each run of the first variant. Finished runs (with a `summary.json`) are reused, so an
/// interrupted sweep continues where it stopped.
///
/// # Errors
/// [`Error::EmptySweep`] without λ values or variants; training and audit errors.
pub fn sweep(req: &SweepRequest) -> Result<AuditReport> {
    if req.lambdas.is_empty() || req.variants.is_empty() {
        return Err(Error::EmptySweep);
    }
    let mut schemes = vec![Scheme::None];
    let mut matched = Vec::new();
    for (vi, &variant) in req.variants.iter().enumerate() {
        for &lambda in &req.lambdas {
            let dir = req
                .out
                .join("runs")
                .join(format!("{}-l{lambda}", variant.name()));
            if !dir.join("summary.json").is_file() {
                let mut t = TrainRequest::new(req.data.clone(), &req.desired, dir.clone());
                t.config = req.base.clone();
                t.config.lambda = lambda;
                t.config.sensitive = req.sensitive.first().cloned();
                variant.apply(&mut t.config);
                t.progress = req.progress;
                t.cache = req.audit.cache;
                t.draws = 1;
                note(&format!("sweep: training {} at λ {lambda}", variant.name()));
                train_run(&t)?;
            } else {
                RunDir::open(&dir)?;
                note(&format!("sweep: reusing {}", dir.display()));
            }
            if vi == 0 {
                matched.push(Scheme::Uniform {
                    sigma: None,
                    matching: Some(dir.clone()),
                });
            }
            schemes.push(Scheme::Run { path: dir });
        }
    }
    schemes.extend(matched);
    let mut a = req.audit.clone();
    a.schemes = schemes;
    a.out = req.out.clone();
    a.size = req.base.size;
    audit(&a)
}
