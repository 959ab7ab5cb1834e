//! `scrim sweep`: one run per (recipe, λ), audited together: the privacy–utility frontier.

use scrim_audit::{self as audit, SweepRequest, Variant};
use scrim_train::config::TrainConfig;

use super::audit::{Common, print_summary};

/// `scrim sweep`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// λ values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.02,0.1,0.3")]
    lambdas: Vec<f64>,
    /// Recipes, comma-separated: paper, cloak, gray-suppress, adversarial.
    #[arg(long, value_delimiter = ',', default_value = "paper,cloak")]
    variants: Vec<Variant>,
    /// Image side.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Co-training epochs per run (warm-up included).
    #[arg(long, default_value_t = 9)]
    epochs: usize,
    /// Recognizer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    widths: Vec<usize>,
}

/// Runs `scrim sweep`.
///
/// # Errors
/// Any training or audit error.
pub fn run(a: Args) -> anyhow::Result<()> {
    let audit = a.common.request();
    let mut base = TrainConfig::for_data(&audit.data, &audit.desired);
    // The recipes are σ networks traded off by λ: the dense layout and its warm-up, even for
    // faces, whose default (the bounded release) has no λ.
    let dense = TrainConfig::for_data(
        &scrim_train::data::DataSpec::Synthetic(Default::default()),
        "",
    );
    base.perturber.layout = dense.perturber.layout;
    base.warmup_epochs = dense.warmup_epochs;
    base.size = a.size;
    base.epochs = a.epochs;
    base.recognizer.widths = a.widths;
    let req = SweepRequest {
        data: audit.data.clone(),
        desired: audit.desired.clone(),
        sensitive: audit.sensitive.clone(),
        lambdas: a.lambdas,
        variants: a.variants,
        base,
        out: audit.out.clone(),
        audit,
        progress: true,
    };
    let report = audit::sweep(&req)?;
    print_summary(&report, &req.out);
    Ok(())
}
