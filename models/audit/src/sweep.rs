//! `scrim sweep`: train one run per (variant, λ), then audit them all together with the clean
//! reference and uniform noise of matching energy, so the frontier of each variant can be
//! compared in one plot.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{AuditReport, AuditRequest, Scheme, audit};
use scrim_train::config::TrainConfig;
use scrim_train::data::DataSpec;
use scrim_train::nets::PerturberLayout;
use scrim_train::run::RunDir;
use scrim_train::workflow::{TrainRequest, train_run};
use scrim_train::{Error, Result};

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
        [
            Self::Paper,
            Self::Cloak,
            Self::GraySuppress,
            Self::Adversarial,
        ]
        .into_iter()
        .find(|v| v.name() == s)
        .ok_or_else(|| {
            Error::Input(format!(
                "unknown variant {s:?}; use paper, cloak, gray-suppress or adversarial"
            ))
        })
    }
}

/// The plot family of a trained configuration.
pub fn family_of(cfg: &TrainConfig) -> String {
    let p = &cfg.perturber;
    let cloak = p.layout == PerturberLayout::InputIndependent;
    let mut name = String::from(if cloak { "cloak" } else { "scrim" });
    for (on, tag) in [
        (p.standardize, "+standardize"),
        (p.gray && !p.standardize, "+gray"),
        (p.suppress, "+suppress"),
        (p.shift_max > 0.0, "+shift"),
        (cfg.adversarial, "+adversary"),
        (cfg.distill > 0.0, "+distill"),
    ] {
        if on {
            name.push_str(tag);
        }
    }
    // A coarser σ map is another perturber, not another point on the same curve.
    if p.downsample > 1 && !cloak {
        name.push_str(&format!("+downsample{}", p.downsample));
    }
    match p.layout {
        PerturberLayout::Separable => name.push_str("+separable"),
        PerturberLayout::Depthwise => name.push_str("+depthwise"),
        PerturberLayout::Dense | PerturberLayout::InputIndependent => {}
    }
    name
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
/// Training and audit errors.
pub fn sweep(req: &SweepRequest) -> Result<AuditReport> {
    if req.lambdas.is_empty() || req.variants.is_empty() {
        return Err(Error::Input(
            "give at least one --lambdas value and one --variants name".into(),
        ));
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
                scrim_train::report::note(&format!(
                    "sweep: training {} at λ {lambda}",
                    variant.name()
                ));
                train_run(&t)?;
            } else {
                RunDir::open(&dir)?;
                scrim_train::report::note(&format!("sweep: reusing {}", dir.display()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::AdamConfig;
    use scrim_train::nets::{PerturberConfig, RecognizerConfig};

    #[test]
    fn families_name_every_option_that_changes_the_uploads_or_the_training() {
        let base = TrainConfig::new(
            "synthetic".into(),
            "shape".into(),
            PerturberConfig::new(),
            RecognizerConfig::new(2),
            AdamConfig::new(),
        );
        assert_eq!(family_of(&base), "scrim");
        let mut c = base.clone();
        c.perturber.layout = PerturberLayout::InputIndependent;
        c.perturber.standardize = true;
        c.perturber.gray = true;
        c.perturber.suppress = true;
        assert_eq!(family_of(&c), "cloak+standardize+suppress");
        let mut d = base.clone();
        d.perturber.gray = true;
        d.distill = 1.0;
        d.adversarial = true;
        assert_eq!(family_of(&d), "scrim+gray+adversary+distill");
        let mut q = base;
        q.perturber.downsample = 4;
        assert_eq!(family_of(&q), "scrim+downsample4");
        q.perturber.layout = PerturberLayout::Separable;
        assert_eq!(family_of(&q), "scrim+downsample4+separable");
        q.perturber.layout = PerturberLayout::Depthwise;
        assert_eq!(family_of(&q), "scrim+downsample4+depthwise");
    }
}
