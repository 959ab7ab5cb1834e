//! `scrim audit`: fresh attackers on perturbed uploads, utility, baselines, frontier plot.

use std::path::PathBuf;

use scrim_audit::{self as audit, Attack, AuditReport, AuditRequest, Baseline, Scheme};
use scrim_train::data::DataSpec;

/// A switch with a default that depends on the data.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// The default for the data.
    Auto,
    /// On.
    On,
    /// Off.
    Off,
}

/// What every audit shares.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Data: utkface:DIR, imagefolder:DIR[#SUBDIR], csv:FILE or synthetic[:N].
    #[arg(long)]
    pub data: DataSpec,
    /// The desired label (utility).
    #[arg(long)]
    pub desired: String,
    /// Sensitive labels to attack, comma-separated; the first is plotted (e.g. race,age_group).
    #[arg(long, value_delimiter = ',', required = true)]
    pub sensitive: Vec<String>,
    /// Attackers, comma-separated. Holders of the perturber, trained on uploads drawn afresh
    /// every epoch: kerckhoffs (a residual CNN), variance (the σ side channel), linear (logistic
    /// regression). On one perturbed copy: cnn, blur (blur then CNN), finetune (from a clean
    /// attacker), reconstruct (a decoder, then the clean attacker).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kerckhoffs,variance,linear,cnn,blur,finetune,reconstruct"
    )]
    pub attacks: Vec<Attack>,
    /// Noise draws averaged for utility.
    #[arg(long, default_value_t = 3)]
    pub draws: usize,
    /// Maximum epochs of the cnn, blur and finetune attackers (early stopping on perturbed
    /// validation images).
    #[arg(long, default_value_t = 10)]
    pub attacker_epochs: usize,
    /// Attackers trained per scheme, attribute and attack, each with its own seed; reports give
    /// the mean, the spread and every seed, and the headline is the highest mean.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub attacker_seeds: u64,
    /// Attackers of different seeds trained at once, one thread each (0 = one per core, or every
    /// seed at once, up to twice the cores, when there are more seeds than cores; 1 when two
    /// audits share the machine).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Widths of the cnn, blur and finetune attackers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    pub attacker_widths: Vec<usize>,
    /// Maximum epochs of the kerckhoffs attacker (a new upload of every image each epoch).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=500))]
    pub kerckhoffs_epochs: u64,
    /// Widths of the kerckhoffs attacker's residual CNN, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    pub kerckhoffs_widths: Vec<usize>,
    /// Mirror training uploads left–right (kerckhoffs, variance): auto = on for photos, off for
    /// the synthetic data, whose textures a mirror swaps.
    #[arg(long, default_value = "auto")]
    pub augment_flip: Toggle,
    /// Shift kerckhoffs's training uploads by up to this many pixels.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=8))]
    pub augment_shift: u64,
    /// Pooling block of the variance attacker's local noise level.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub variance_block: u64,
    /// Smallest gain in validation accuracy, in percentage points, that keeps an attacker
    /// training: its patience restarts only when its accuracy beats that of its last restart by
    /// more than this (gains add up, so a slow climb goes on; the best epoch is kept either
    /// way). 0 = any gain, however small.
    #[arg(long, default_value_t = 0.0, value_parser = parse_points)]
    pub stop_gain: f64,
    /// Do not read or write the decoded-image cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Output folder (report.json, report.md, frontier.svg/png, samples.png).
    #[arg(long)]
    pub out: PathBuf,
}

impl Common {
    /// The flags every audit shares, as a request.
    pub fn request(&self) -> AuditRequest {
        let sensitive: Vec<&str> = self.sensitive.iter().map(String::as_str).collect();
        let mut req = AuditRequest::new(
            self.data.clone(),
            &self.desired,
            &sensitive,
            self.out.clone(),
        );
        req.attacks = self.attacks.clone();
        req.draws = self.draws;
        req.attacker = req
            .attacker
            .with_epochs(self.attacker_epochs)
            .with_widths(self.attacker_widths.clone());
        req.attacker_seeds = self.attacker_seeds as usize;
        req.jobs = self.jobs;
        let r = &mut req.recipes;
        r.kerckhoffs.epochs = self.kerckhoffs_epochs as usize;
        r.kerckhoffs_widths = self.kerckhoffs_widths.clone();
        match self.augment_flip {
            Toggle::Auto => {}
            Toggle::On => r.augment.flip = true,
            Toggle::Off => r.augment.flip = false,
        }
        r.augment.shift = self.augment_shift as usize;
        r.variance_block = self.variance_block as usize;
        req.set_min_delta(self.stop_gain / 100.0);
        req.progress = true;
        req.cache = !self.no_cache;
        req
    }
}

/// Percentage points between 0 and 10.
fn parse_points(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=10.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of points between 0 and 10")),
    }
}

/// `scrim audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Run folders from `scrim train` (repeatable); the first run's split is used.
    #[arg(long)]
    run: Vec<PathBuf>,
    /// A perturber ONNX from anywhere (its .json manifest beside it), for third-party audits.
    #[arg(long)]
    perturber: Option<PathBuf>,
    /// The recognizer serving --perturber; without it utility uses a recognizer trained on
    /// perturbed images.
    #[arg(long)]
    recognizer: Option<PathBuf>,
    /// Baselines, comma-separated: none, uniform (σ matched to the first perturber's RMS σ),
    /// arden (noisy features of a frozen first conv block; one scheme per --arden-scale).
    #[arg(long, value_delimiter = ',', default_value = "none,uniform")]
    baselines: Vec<Baseline>,
    /// Audit no baselines, only the runs and perturbers given (e.g. to add runs to an audit
    /// whose baselines were measured on the same split).
    #[arg(long, conflicts_with = "baselines")]
    no_baselines: bool,
    /// σ of the uniform baseline instead of matching the first perturber.
    #[arg(long)]
    uniform_sigma: Option<f64>,
    /// ARDEN: probability that an input pixel is nullified (set to 0) before the client block.
    #[arg(long, default_value_t = 0.1)]
    arden_nullify: f64,
    /// ARDEN: Laplace scale(s) b of the noise on the client's features, which are bounded to
    /// [0, 1]; comma-separated values audit one ARDEN scheme each (points on a curve).
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    arden_scale: Vec<f64>,
    /// Use this run's split and image size without auditing the run (e.g. to audit baselines
    /// on the exact split of earlier audits).
    #[arg(long)]
    split_from: Option<PathBuf>,
    /// Image side when no run gives one.
    #[arg(long, default_value_t = 32)]
    size: usize,
}

/// Runs `scrim audit`.
///
/// # Errors
/// Any audit error.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut req = a.common.request();
    req.size = a.size;
    req.split_from = a.split_from.clone();
    let baselines = if a.no_baselines {
        &[][..]
    } else {
        &a.baselines[..]
    };
    for b in baselines {
        match b {
            Baseline::None => req.schemes.push(Scheme::None),
            Baseline::Uniform => req.schemes.push(Scheme::Uniform {
                sigma: a.uniform_sigma,
                matching: None,
            }),
            Baseline::Arden => req
                .schemes
                .extend(a.arden_scale.iter().map(|&b| Scheme::Arden {
                    nullify: a.arden_nullify,
                    laplace_b: b,
                })),
        }
    }
    req.schemes
        .extend(a.run.iter().map(|p| Scheme::Run { path: p.clone() }));
    if let Some(p) = a.perturber {
        req.schemes.push(Scheme::Onnx {
            perturber: p,
            recognizer: a.recognizer,
        });
    }
    let report = audit::audit(&req)?;
    print_summary(&report, &req.out);
    Ok(())
}

/// Prints one line per scheme: utility and the best attack on the first sensitive label.
pub fn print_summary(report: &AuditReport, out: &std::path::Path) {
    let primary = report.sensitive.first().cloned().unwrap_or_default();
    println!(
        "{:<28} {:>9} {:>11}  best {primary} attack (majority)",
        "scheme",
        format!("{} clean", report.desired),
        "perturbed"
    );
    for r in &report.schemes {
        let best = r
            .best_attack(&primary)
            .map(|a| {
                format!(
                    "{:.1}% {:?} ({:.1}%)",
                    100.0 * a.accuracy.accuracy,
                    a.attacker,
                    100.0 * a.majority
                )
            })
            .unwrap_or_else(|| "–".into());
        println!(
            "{:<28} {:>8.1}% {:>10.1}%  {best}",
            r.name,
            100.0 * r.desired_clean.accuracy,
            100.0 * r.desired_perturbed.accuracy
        );
    }
    println!(
        "wrote {}/report.json, report.md, frontier.svg/png, samples.png",
        out.display()
    );
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: super::Common,
    }

    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
        let base = [
            "audit",
            "--data",
            "synthetic",
            "--desired",
            "shape",
            "--sensitive",
            "texture",
            "--out",
            "runs/a",
        ];
        Cli::try_parse_from(base.iter().chain(extra).copied())
    }

    #[test]
    fn stop_gain_reaches_every_trained_attacker_and_bad_values_are_one_line() {
        let req = parse(&["--stop-gain", "0.5"])
            .expect("valid")
            .common
            .request();
        let r = &req.recipes;
        for d in [
            req.attacker.min_delta,
            r.kerckhoffs.min_delta,
            r.variance.min_delta,
            r.linear.min_delta,
        ] {
            assert_eq!(d, Some(0.005));
        }
        let off = parse(&["--stop-gain", "0"])
            .expect("valid")
            .common
            .request();
        assert_eq!(off.recipes.kerckhoffs.min_delta, None);
        for bad in ["-1", "20", "half"] {
            let flag = format!("--stop-gain={bad}");
            let e = parse(&[&flag]).err().expect("rejected").to_string();
            assert!(e.contains("between 0 and 10"), "{bad}: {e}");
            let first = e.trim().lines().next().unwrap_or_default();
            assert!(first.contains("--stop-gain"), "{e}");
        }
    }
}
