//! The `scrim audit` and `scrim sweep` arguments, and how they become requests.

use std::path::PathBuf;

use clap::Args;
use scrim_models::Result;
use scrim_models::audit::{self, Attack, AuditReport, AuditRequest, Scheme, SweepRequest, Variant};
use scrim_models::data::DataSpec;
use scrim_models::workflow;

/// What every audit shares.
#[derive(Args, Debug)]
pub struct AuditCommon {
    /// Data: utkface:DIR, imagefolder:DIR[#SUBDIR], csv:FILE or synthetic[:N].
    #[arg(long)]
    data: String,
    /// The desired label (utility).
    #[arg(long)]
    desired: String,
    /// Sensitive labels to attack, comma-separated; the first is plotted (e.g. race,age_group).
    #[arg(long, value_delimiter = ',', required = true)]
    sensitive: Vec<String>,
    /// Attackers, comma-separated: cnn, blur, finetune, reconstruct.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cnn,blur,finetune,reconstruct"
    )]
    attacks: Vec<Attack>,
    /// Noise draws averaged for utility.
    #[arg(long, default_value_t = 3)]
    draws: usize,
    /// Maximum epochs of each attacker (early stopping on perturbed validation images).
    #[arg(long, default_value_t = 10)]
    attacker_epochs: usize,
    /// Attackers trained per scheme, attribute and attack, each with its own seed (reports
    /// give the mean and every seed).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    attacker_seeds: u64,
    /// Attacker widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    attacker_widths: Vec<usize>,
    /// Do not read or write the decoded-image cache.
    #[arg(long)]
    no_cache: bool,
    /// Output folder (report.json, report.md, frontier.svg/png, samples.png).
    #[arg(long)]
    out: PathBuf,
}

impl AuditCommon {
    fn request(&self, progress: bool) -> Result<AuditRequest> {
        let data: DataSpec = self.data.parse()?;
        let sensitive: Vec<&str> = self.sensitive.iter().map(String::as_str).collect();
        let mut req = AuditRequest::new(data, &self.desired, &sensitive, self.out.clone());
        req.attacks = self.attacks.clone();
        req.draws = self.draws;
        req.attacker = req
            .attacker
            .with_epochs(self.attacker_epochs)
            .with_widths(self.attacker_widths.clone());
        req.attacker_seeds = self.attacker_seeds as usize;
        req.progress = progress;
        req.cache = !self.no_cache;
        Ok(req)
    }
}

/// `scrim audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    common: AuditCommon,
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
    baselines: Vec<String>,
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

/// `scrim sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    common: AuditCommon,
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

/// Runs `scrim audit`.
///
/// # Errors
/// Any audit error.
pub fn run_audit(a: AuditArgs, progress: bool) -> Result<()> {
    let mut req = a.common.request(progress)?;
    req.size = a.size;
    req.split_from = a.split_from.clone();
    for b in &a.baselines {
        match b.as_str() {
            "none" => req.schemes.push(Scheme::None),
            "uniform" => req.schemes.push(Scheme::Uniform {
                sigma: a.uniform_sigma,
                matching: None,
            }),
            "arden" => req
                .schemes
                .extend(a.arden_scale.iter().map(|&b| Scheme::Arden {
                    nullify: a.arden_nullify,
                    laplace_b: b,
                })),
            "" => {}
            other => {
                return Err(scrim_models::Error::Input(format!(
                    "unknown baseline {other:?}; use none, uniform or arden (train a Cloak-style run with `scrim train --input-independent` and pass it with --run)"
                )));
            }
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
    finish(&report, &req.out);
    Ok(())
}

/// Runs `scrim sweep`.
///
/// # Errors
/// Any training or audit error.
pub fn run_sweep(a: SweepArgs, progress: bool) -> Result<()> {
    let audit = a.common.request(progress)?;
    let mut base = workflow::default_config(&audit.data, &audit.desired);
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
        progress,
    };
    let report = audit::sweep(&req)?;
    finish(&report, &req.out);
    Ok(())
}

fn finish(report: &AuditReport, out: &std::path::Path) {
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

/// `scrim results`.
#[derive(Args, Debug)]
pub struct ResultsArgs {
    /// Audit reports (report.json) to merge, repeatable; all of the same data and split.
    #[arg(long, required = true)]
    report: Vec<PathBuf>,
    /// Markdown files appended as further sections (e.g. the model-protection tables).
    #[arg(long)]
    include: Vec<PathBuf>,
    /// The document to write.
    #[arg(long, default_value = "docs/RESULTS.md")]
    out: PathBuf,
}

/// Runs `scrim results`: merges audits into one document with its frontier plot.
///
/// # Errors
/// Unreadable or incompatible reports, unwritable output.
pub fn run_results(a: ResultsArgs) -> Result<()> {
    use scrim_models::Error;
    let mut reports = Vec::new();
    for p in &a.report {
        let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        let r: AuditReport = serde_json::from_str(&text)
            .map_err(|e| Error::Input(format!("{}: not an audit report: {e}", p.display())))?;
        reports.push(r);
    }
    let mut merged = audit::merge(reports)?;
    // Reports written before λ of a utility-constrained run was read from its metrics showed its
    // starting λ: take the λ it ended with from the run folder, when it is still there.
    for s in &mut merged.schemes {
        if let Scheme::Run { path } = &s.scheme
            && let Ok(run) = scrim_models::run::RunDir::open(path)
            && let Ok(cfg) = run.load_config()
        {
            s.lambda = Some(audit::run_lambda(&run, &cfg));
        }
    }
    let dir = a
        .out
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let figures = dir.join("figures");
    std::fs::create_dir_all(&figures).map_err(|e| Error::io(&figures, e))?;
    audit::write_plots(&merged, &figures)?;
    let mut doc = String::from("# Results\n\n");
    doc.push_str(&format!(
        "Generated by `{}`. Every number below was measured by the commands listed with it; \
         rerun them to reproduce.\n\n",
        command_line()
    ));
    doc.push_str(&format!(
        "## Privacy audit: {} kept, {} hidden\n\n![frontier](figures/frontier.png)\n\n",
        merged.desired,
        merged.sensitive.join(", ")
    ));
    // The sample grids (samples.png beside each report) show dataset images: they stay in the
    // audit folders and out of the repository.
    doc.push_str(
        "Each audit folder also holds `samples.png` (test images, each perturber's σ map, one \
         upload). It shows dataset images, so it is not copied here.\n\n",
    );
    doc.push_str(&audit::markdown(&merged));
    doc.push_str(&runs_table(&merged));
    for inc in &a.include {
        let text = std::fs::read_to_string(inc).map_err(|e| Error::io(inc, e))?;
        doc.push('\n');
        // One level down: the included documents become sections of this one.
        for line in text.lines() {
            if line.starts_with('#') {
                doc.push('#');
            }
            doc.push_str(line);
            doc.push('\n');
        }
    }
    std::fs::write(&a.out, doc).map_err(|e| Error::io(&a.out, e))?;
    println!(
        "wrote {} and {}/frontier.svg/png",
        a.out.display(),
        figures.display()
    );
    Ok(())
}

/// How each audited run was trained, read from its `config.json`.
fn runs_table(report: &AuditReport) -> String {
    let mut out = String::from(
        "\n### How the runs were trained\n\n| run | family | λ | epochs | size | recognizer | perturber options |\n|---|---|---|---|---|---|---|\n",
    );
    for s in &report.schemes {
        let Scheme::Run { path } = &s.scheme else {
            continue;
        };
        let Ok(cfg) = scrim_models::run::RunDir::open(path).and_then(|r| r.load_config()) else {
            out.push_str(&format!(
                "| {} | (config.json not found) | | | | | |\n",
                s.name
            ));
            continue;
        };
        let p = &cfg.perturber;
        let mut opts = vec![format!("σ_max {}", p.sigma_max)];
        if p.input_independent {
            opts.push("input-independent".into());
        }
        if p.downsample > 1 {
            opts.push(format!("σ at 1/{} resolution", p.downsample));
        }
        if p.separable {
            opts.push("depthwise-separable".into());
        }
        if p.depthwise {
            opts.push("fully depthwise".into());
        } else if p.channels != scrim_models::nets::PerturberConfig::new().channels {
            opts.push(format!("{} channels", p.channels));
        }
        if p.standardize {
            opts.push("standardize".into());
        }
        if p.gray {
            opts.push("gray".into());
        }
        if p.suppress {
            opts.push("suppress".into());
        }
        if p.shift_max > 0.0 {
            opts.push(format!("shift-max {}", p.shift_max));
        }
        if let Some(t) = cfg.target_accuracy {
            opts.push(format!(
                "target accuracy {t} (λ adapted from {} by dual ascent, rate {})",
                cfg.lambda, cfg.dual_rate
            ));
        }
        if cfg.adversarial {
            opts.push(format!(
                "adversarial (weight {}, reset every {} epochs)",
                cfg.adversary_weight, cfg.adversary_reset_epochs
            ));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | widths {:?} | {} |\n",
            s.name,
            s.family,
            cfg.lambda,
            cfg.epochs,
            cfg.size,
            cfg.recognizer.widths,
            opts.join(", ")
        ));
    }
    out.push_str(
        "\nEach run: `scrim train --data DATA --desired gender --sensitive race --lambda λ --epochs E [options]`; everything else at its default.\n",
    );
    out
}

/// The command line as a user would type it (`scrim ...`, not the binary's path).
pub fn command_line() -> String {
    std::iter::once("scrim".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}
