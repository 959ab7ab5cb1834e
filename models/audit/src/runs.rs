//! What the audit reads from a `scrim train` run folder besides its models: the plot family of
//! its configuration and the λ it ended with.

use scrim_train::config::TrainConfig;
use scrim_train::nets::{PerturberConfig, PerturberLayout};
use scrim_train::run::RunDir;

/// The plot family of a trained configuration.
pub(crate) fn family_of(cfg: &TrainConfig) -> String {
    let p = &cfg.perturber;
    if p.layout == PerturberLayout::Bounded {
        let mut name = format!(
            "bounded-r{}{}",
            p.release_side,
            if p.release_channels == 1 { "-grey" } else { "" }
        );
        if cfg.adversarial {
            name.push_str("+adversary");
        }
        if !cfg.adversary_pool.is_empty() {
            name.push_str("+pool");
        }
        if cfg.hsic > 0.0 {
            name.push_str("+hsic");
            for label in &cfg.also_hide {
                name.push_str(&format!("+{label}"));
            }
        }
        return name;
    }
    let cloak = p.layout == PerturberLayout::InputIndependent;
    let mut name = String::from(if cloak { "cloak" } else { "scrim" });
    for (on, tag) in [
        (p.standardize, "+standardize"),
        (p.gray && !p.standardize, "+gray"),
        (p.erase, "+erase"),
        (p.suppress, "+suppress"),
        (p.shift_max > 0.0, "+shift"),
        (cfg.adversarial, "+adversary"),
        (!cfg.adversary_pool.is_empty(), "+pool"),
        (cfg.distill > 0.0, "+distill"),
        (cfg.hsic > 0.0, "+hsic"),
    ] {
        if on {
            name.push_str(tag);
        }
    }
    if cfg.hsic > 0.0 {
        for label in &cfg.also_hide {
            name.push_str(&format!("+{label}"));
        }
    }
    // A coarser σ map, or a narrower network, is another perturber, not another point on the
    // same curve.
    if p.downsample > 1 && !cloak {
        name.push_str(&format!("+downsample{}", p.downsample));
    }
    let sized = matches!(
        p.layout,
        PerturberLayout::Dense | PerturberLayout::Separable
    );
    if sized && p.channels != PerturberConfig::new().channels {
        name.push_str(&format!("+{}ch", p.channels));
    }
    match p.layout {
        PerturberLayout::Separable => name.push_str("+separable"),
        PerturberLayout::Depthwise => name.push_str("+depthwise"),
        PerturberLayout::Global => name.push_str(&format!("+global-r{}", p.release_side)),
        PerturberLayout::Dense | PerturberLayout::InputIndependent | PerturberLayout::Bounded => {}
    }
    name
}

/// The λ a run ended with: its fixed λ, or for a utility-constrained run (`--target-accuracy`)
/// the value the dual ascent reached in its last epoch (its starting λ when no metrics are left);
/// none for the bounded release, which has no λ.
pub fn run_lambda(run: &RunDir, cfg: &TrainConfig) -> Option<f64> {
    if cfg.perturber.layout == PerturberLayout::Bounded {
        // The release's capacity is fixed by its map and σ; no λ trades anything off.
        return None;
    }
    if cfg.target_accuracy.is_none() {
        return Some(cfg.lambda);
    }
    Some(
        run.metrics()
            .ok()
            .and_then(|m| m.last().map(|e| e.lambda))
            .unwrap_or(cfg.lambda),
    )
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
        c.perturber.erase = true;
        assert_eq!(family_of(&c), "cloak+standardize+erase+suppress");
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
        // Width names dense and separable perturbers; the depthwise one has no width.
        q.perturber.channels = 7;
        assert_eq!(family_of(&q), "scrim+downsample4+depthwise");
        q.perturber.layout = PerturberLayout::Dense;
        assert_eq!(family_of(&q), "scrim+downsample4+7ch");
        let mut b = TrainConfig::new(
            "synthetic".into(),
            "shape".into(),
            PerturberConfig::new(),
            RecognizerConfig::new(2),
            AdamConfig::new(),
        );
        b.perturber.layout = PerturberLayout::Bounded;
        b.perturber.release_channels = 1;
        b.hsic = 0.5;
        assert_eq!(
            family_of(&b),
            format!("bounded-r{}-grey+hsic", b.perturber.release_side)
        );
        b.also_hide = vec!["age_group".into()];
        assert_eq!(
            family_of(&b),
            format!("bounded-r{}-grey+hsic+age_group", b.perturber.release_side)
        );
    }
}
