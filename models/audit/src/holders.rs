//! The attackers who hold the perturber (Kerckhoffs's principle): they train on the train split
//! released afresh at every epoch through the scheme itself, and are tested on one release per
//! test image, as uploaded.
//!
//! | attacker | network | sees |
//! |---|---|---|
//! | `kerckhoffs` | a residual CNN, cosine schedule, early stopping | the release, mirrored and shifted |
//! | `variance` | a small CNN | the local noise level of the release ([`View::Variance`]): the σ side channel |
//! | `linear` | logistic regression | the release, or its blur (chosen on validation by the first seed) |

use scrim_train::eval::{self, Classifier, FitConfig};
use scrim_train::nets::{LinearProbe, RecognizerConfig, ResidualConfig};

use crate::context::{Context, SeedRun, SeedRuns};
use crate::error::Result;
use crate::request::Attack;
use crate::uploads::{Augment, Fresh, Redraw, View};

/// The splits as the holder of the perturber has them.
pub(crate) struct Releases<'r> {
    /// Released afresh at every epoch.
    pub train: &'r dyn Redraw,
    /// One release per image.
    pub val: &'r dyn Redraw,
    /// One release per image.
    pub test: &'r dyn Redraw,
    /// Whether the releases are images (augmentation applies) or feature maps.
    pub images: bool,
}

/// Trains and scores `attack` (one of [`Attack::HOLDERS`]) on `attr` over the audit's seeds:
/// the mean accuracy and each seed's.
pub(crate) fn holder_attack(
    ctx: &Context<'_>,
    attack: Attack,
    attr: &str,
    r: &Releases<'_>,
    label: &str,
) -> Result<SeedRuns> {
    let recipes = &ctx.req.recipes;
    let classes = ctx.train.attribute(attr)?.classes.len();
    let augment = if r.images {
        recipes.augment
    } else {
        Augment::NONE
    };
    match attack {
        Attack::Kerckhoffs => {
            let widths = recipes.kerckhoffs_widths.clone();
            let init = |ch: usize| {
                let widths = widths.clone();
                move |d: &burn::prelude::Device| {
                    ResidualConfig::new(classes).with_widths(widths).init(ch, d)
                }
            };
            seeds(
                ctx,
                attr,
                r,
                View::Pixels,
                augment,
                &recipes.kerckhoffs,
                label,
                init,
            )
        }
        Attack::Variance => {
            let widths = recipes.variance_widths.clone();
            let init = |ch: usize| {
                let widths = widths.clone();
                move |d: &burn::prelude::Device| {
                    RecognizerConfig::new(classes)
                        .with_widths(widths)
                        .init_with_channels(ch, d)
                }
            };
            let view = View::Variance {
                block: recipes.variance_block,
            };
            // Shifting replicates edges, which changes the local variance there: mirror only.
            let augment = Augment {
                shift: 0,
                ..augment
            };
            seeds(ctx, attr, r, view, augment, &recipes.variance, label, init)
        }
        _ => linear(ctx, attr, r, classes, label),
    }
}

/// Logistic regression: the first seed fits one probe per view of the recipe and keeps the view
/// with the best validation accuracy; every seed then scores a probe on that view.
fn linear(
    ctx: &Context<'_>,
    attr: &str,
    r: &Releases<'_>,
    classes: usize,
    label: &str,
) -> Result<SeedRuns> {
    let recipes = &ctx.req.recipes;
    let mut views = recipes.linear_views.clone();
    if views.len() > 1 {
        let mut best: Option<(f64, View)> = None;
        for &view in &views {
            let val = Fresh::fixed(r.val, view)?;
            let train = Fresh::new(r.train, view, Augment::NONE, recipes.linear.seed)?;
            let shape = view.shape(r.train.shape());
            let fitted = eval::fit(
                |d| LinearProbe::new(shape, classes, d),
                &train,
                &val,
                attr,
                &recipes.linear,
                &ctx.device,
                &format!("{label} ({view:?} view)").to_lowercase(),
                ctx.req.progress,
            )?;
            let acc = fitted.val_history.iter().copied().fold(0.0, f64::max);
            if best.is_none_or(|(b, _)| acc > b) {
                best = Some((acc, view));
            }
        }
        views = best.map(|(_, v)| vec![v]).unwrap_or(views);
    }
    let view = views.first().copied().unwrap_or(View::Pixels);
    let shape = view.shape(r.train.shape());
    let init =
        move |_ch: usize| move |d: &burn::prelude::Device| LinearProbe::new(shape, classes, d);
    seeds(
        ctx,
        attr,
        r,
        view,
        Augment::NONE,
        &recipes.linear,
        label,
        init,
    )
}

/// One attacker per seed of the audit: `init(channels)` builds it, [`eval::fit`] trains it on
/// fresh releases through `view`, and it is scored on the test releases.
// Eight arguments: each is a different part of the recipe.
#[allow(clippy::too_many_arguments)]
fn seeds<M, F>(
    ctx: &Context<'_>,
    attr: &str,
    r: &Releases<'_>,
    view: View,
    augment: Augment,
    fit: &FitConfig,
    label: &str,
    init: impl Fn(usize) -> F + Sync,
) -> Result<SeedRuns>
where
    M: Classifier,
    F: FnOnce(&burn::prelude::Device) -> M,
{
    let val = Fresh::fixed(r.val, view)?;
    let test = Fresh::fixed(r.test, view)?;
    let channels = view.shape(r.train.shape())[0];
    ctx.over_seeds(|seed| {
        let train = Fresh::new(r.train, view, augment, seed)?;
        let cfg = fit.clone().with_seed(seed);
        let fitted = eval::fit(
            init(channels),
            &train,
            &val,
            attr,
            &cfg,
            &ctx.device,
            label,
            ctx.req.progress,
        )?;
        Ok(SeedRun {
            accuracy: eval::burn_accuracy(&fitted.model, &test, attr, &ctx.device)?,
            val_history: fitted.val_history,
        })
    })
}
