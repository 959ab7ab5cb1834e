//! `report.md`: the audit's tables (utility and the best attacker, every attacker, the
//! reconstruction attacker, notes) in Markdown.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::reports::AuditReport;

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// Writes the tables of `report` as Markdown.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn write_markdown(report: &AuditReport, path: &Path) -> Result<()> {
    std::fs::write(path, markdown(report)).map_err(|e| Error::io(path, e))
}

/// The tables of `report` as Markdown.
pub fn markdown(report: &AuditReport) -> String {
    let mut md = String::new();
    let [tr, va, te] = report.split_sizes;
    let _ = writeln!(
        md,
        "Data `{}`: {tr} train / {va} val / {te} test images. Desired label `{}` (majority {}). \
         Utility is the mean over {} noise draws. cnn, blur and finetune attackers: widths {:?}, \
         at most {} epochs on one perturbed copy of the train split, early stopping after {} \
         without validation gain{}.",
        report.data,
        report.desired,
        pct(report.desired_majority),
        report.draws,
        report.attacker.widths,
        report.attacker.epochs,
        report.attacker.patience,
        match report.attacker.min_delta {
            Some(d) if d > 0.0 => format!(
                " of more than {:.1} points (every attacker of this audit)",
                100.0 * d
            ),
            _ => String::new(),
        }
    );
    if let Some(r) = &report.recipes {
        let _ = write!(
            md,
            " The holders of the perturber train on the train split uploaded afresh every epoch: \
             kerckhoffs, a residual CNN of widths {:?}, at most {} epochs (mirror {}, shift ±{} px); \
             variance, a CNN of widths {:?} on the local noise level in {}×{} blocks; linear, \
             logistic regression on the upload or its blur.",
            r.kerckhoffs_widths,
            r.kerckhoffs.epochs,
            if r.augment.flip { "on" } else { "off" },
            r.augment.shift,
            r.variance_widths,
            r.variance_block,
            r.variance_block
        );
    }
    let _ = writeln!(
        md,
        " {} attacker seed(s) per attack; the best attack is the highest mean over seeds among \
         the attack kinds, ± its 95% interval on the test images, with the seeds' standard \
         deviation (sd) where there are several.{}\n",
        report.attacker_seeds,
        if report.wall_seconds > 0.0 {
            format!(" The audit took {:.0} min.", report.wall_seconds / 60.0)
        } else {
            String::new()
        }
    );
    let _ = writeln!(md, "### Utility and the best attacker\n");
    let mut header = format!(
        "| scheme | λ | mean σ | {} clean | {} perturbed |",
        report.desired, report.desired
    );
    let mut rule = "|---|---|---|---|---|".to_string();
    for s in &report.sensitive {
        let _ = write!(header, " best {s} attack (majority) |");
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for r in &report.schemes {
        let mut row = format!(
            "| {} | {} | {:.3} | {} | {} |",
            r.name,
            r.lambda.map_or("–".into(), |l| {
                // Three significant digits: an adapted λ is not a round number.
                let digits = (2 - l.abs().log10().floor() as i32).clamp(0, 8) as usize;
                let s = format!("{l:.digits$}");
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s
                }
            }),
            r.mean_sigma,
            if r.family.starts_with("bounded") {
                // Its recognizer reads renders only; a photo is not an input it was made for.
                "–".into()
            } else {
                pct(r.desired_clean.accuracy)
            },
            pct(r.desired_perturbed.accuracy)
        );
        for s in &report.sensitive {
            match r.best_attack(s) {
                Some(a) => {
                    let spread = a
                        .spread()
                        .map_or(String::new(), |sd| format!(", sd {:.1}", 100.0 * sd));
                    let _ = write!(
                        row,
                        " {} ± {} ({:?}{spread}; {}) |",
                        pct(a.accuracy.accuracy),
                        pct(a.ci95),
                        a.attacker,
                        pct(a.majority)
                    );
                }
                None => row.push_str(" – |"),
            }
        }
        let _ = writeln!(md, "{}", row.to_lowercase());
    }
    let _ = writeln!(md, "\n### Every attacker\n");
    let _ = writeln!(
        md,
        "| scheme | attribute | attacker | accuracy | sd | balanced | majority | each seed | epochs | time |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &report.schemes {
        for a in &r.attacks {
            let seeds = if a.seeds.is_empty() {
                "–".to_string()
            } else {
                a.seeds
                    .iter()
                    .map(|&v| pct(v))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let epochs = a.epochs();
            let epochs = if epochs.is_empty() {
                "–".to_string()
            } else {
                epochs
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} ± {} | {} | {} | {} | {seeds} | {epochs} | {} |",
                r.name,
                a.attribute,
                a.attacker.name(),
                pct(a.accuracy.accuracy),
                pct(a.ci95),
                a.spread()
                    .map_or("–".into(), |sd| format!("{:.1}", 100.0 * sd)),
                pct(a.accuracy.balanced),
                pct(a.majority),
                if a.seconds > 0.0 {
                    format!("{:.0} s", a.seconds)
                } else {
                    "–".into()
                }
            );
        }
    }
    if report.schemes.iter().any(|r| r.reconstruction.is_some()) {
        let _ = writeln!(md, "\n### Reconstruction attacker\n");
        let _ = writeln!(
            md,
            "| scheme | PSNR perturbed → reconstructed | SSIM perturbed → reconstructed |\n|---|---|---|"
        );
        for r in &report.schemes {
            if let Some(rec) = &r.reconstruction {
                let _ = writeln!(
                    md,
                    "| {} | {:.2} → {:.2} dB | {:.3} → {:.3} |",
                    r.name, rec.input_psnr, rec.psnr, rec.input_ssim, rec.ssim
                );
            }
        }
    }
    if report
        .schemes
        .iter()
        .any(|r| !r.notes.is_empty() || r.multiply_adds.is_some())
    {
        let _ = writeln!(md, "\n### Notes\n");
        for r in &report.schemes {
            if let Some(c) = &r.multiply_adds {
                let share = c.share().map_or(String::new(), |s| {
                    format!(
                        ", {:.1}% of the recognizer's {:.2} M",
                        100.0 * s,
                        c.recognizer.unwrap_or(0) as f64 / 1e6
                    )
                });
                let _ = writeln!(
                    md,
                    "- {}: the perturber costs {:.2} M multiply-adds per image on the device{share}.",
                    r.name,
                    c.perturber as f64 / 1e6
                );
            }
            for note in &r.notes {
                let _ = writeln!(md, "- {}: {note}", r.name);
            }
        }
    }
    let _ = writeln!(md, "\nMeasured by:\n\n```\n{}\n```", report.command);
    md
}
