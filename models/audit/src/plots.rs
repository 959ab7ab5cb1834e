//! The audit's human-readable outputs: `report.md`, the privacy–utility frontier plot (SVG, and
//! PNG when a font is available), and a sample grid of original / σ map / perturbed images.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use plotters::prelude::*;
use scrim_core::{BatchMode, ImageTensor, Model, NoiseSource, Perturber};

use super::{AuditReport, Scheme};
use scrim_train::data::Dataset;
use scrim_train::run::RunDir;
use scrim_train::{Error, Result};

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
         Utility is the mean over {} noise draws. Attackers: widths {:?}, at most {} epochs, \
         early stopping after {} without validation gain.\n",
        report.data,
        report.desired,
        pct(report.desired_majority),
        report.draws,
        report.attacker.widths,
        report.attacker.epochs,
        report.attacker.patience
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
            pct(r.desired_clean.accuracy),
            pct(r.desired_perturbed.accuracy)
        );
        for s in &report.sensitive {
            match r.best_attack(s) {
                Some(a) => {
                    let best_seed = if a.seeds.is_empty() {
                        String::new()
                    } else {
                        format!(", best of {} seeds {}", a.seeds.len(), pct(a.best_seed()))
                    };
                    let _ = write!(
                        row,
                        " {} ± {} ({:?}{best_seed}; {}) |",
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
        "| scheme | attribute | attacker | accuracy | balanced | majority | each seed |\n|---|---|---|---|---|---|---|"
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
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} ± {} | {} | {} | {seeds} |",
                r.name,
                a.attribute,
                format!("{:?}", a.attacker).to_lowercase(),
                pct(a.accuracy.accuracy),
                pct(a.ci95),
                pct(a.accuracy.balanced),
                pct(a.majority)
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
    if report.schemes.iter().any(|r| !r.notes.is_empty()) {
        let _ = writeln!(md, "\n### Notes\n");
        for r in &report.schemes {
            for note in &r.notes {
                let _ = writeln!(md, "- {}: {note}", r.name);
            }
        }
    }
    let _ = writeln!(md, "\nMeasured by:\n\n```\n{}\n```", report.command);
    md
}

/// Registers a system sans-serif font for plot text once; `false` when none is installed.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
        ];
        candidates.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                // Plot text needs the font for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// Draws the frontier (desired accuracy against the best attacker on the primary sensitive
/// label) as `frontier.svg` and `frontier.png`. Plotting needs a TrueType font for its text; without
/// one the plots are skipped with a warning (the numbers are in the report either way).
///
/// # Errors
/// Never fails the audit for a plot: problems are logged.
pub fn write_plots(report: &AuditReport, out: &Path) -> Result<()> {
    if !font_available() {
        tracing::warn!(
            "no TrueType font found (install fonts-dejavu-core): skipping frontier.svg/png"
        );
        return Ok(());
    }
    let svg = out.join("frontier.svg");
    let png = out.join("frontier.png");
    let r1 = frontier(
        report,
        SVGBackend::new(&svg, (760, 520)).into_drawing_area(),
    );
    let r2 = frontier(
        report,
        BitMapBackend::new(&png, (760, 520)).into_drawing_area(),
    );
    for (p, r) in [(svg, r1), (png, r2)] {
        if let Err(e) = r {
            tracing::warn!("could not draw {}: {e}", p.display());
        }
    }
    Ok(())
}

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn frontier<DB: DrawingBackend>(
    report: &AuditReport,
    area: DrawingArea<DB, plotters::coord::Shift>,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let Some(primary) = report.sensitive.first() else {
        return Ok(());
    };
    // Points per family, ordered by λ (or σ) so a family draws as a curve.
    let mut families: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let mut majority = 0.0;
    for r in &report.schemes {
        if let Some(a) = r.best_attack(primary) {
            majority = a.majority;
            let order = r.lambda.unwrap_or(r.mean_sigma);
            families.entry(r.family.clone()).or_default().push((
                order,
                100.0 * a.accuracy.accuracy,
                100.0 * r.desired_perturbed.accuracy,
            ));
        }
    }
    let all: Vec<&(f64, f64, f64)> = families.values().flatten().collect();
    if all.is_empty() {
        return Ok(());
    }
    let (mut x0, mut x1, mut y0, mut y1) = (100.0 * majority - 2.0, 0.0f64, 100.0f64, 0.0f64);
    for p in &all {
        x0 = x0.min(p.1 - 2.0);
        x1 = x1.max(p.1 + 2.0);
        y0 = y0.min(p.2 - 2.0);
        y1 = y1.max(p.2 + 2.0);
    }
    area.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&area)
        .caption(
            format!(
                "{}: {} kept vs {primary} hidden",
                report.data, report.desired
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "best {primary} attacker accuracy (%) — lower is more private"
        ))
        .y_desc(format!("{} accuracy on uploads (%)", report.desired))
        .label_style(("sans-serif", 13))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(100.0 * majority, y0), (100.0 * majority, y1)],
            ShapeStyle::from(&BLACK.mix(0.4)).stroke_width(1),
        ))?
        .label(format!("{primary} majority rate"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.4)));
    for (i, (family, pts)) in families.iter_mut().enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.1, p.2)).collect();
        // ARDEN's points are ordered by the Laplace scale on its features, not a pixel σ.
        let label = if family == "arden" {
            "arden (noisy features, by Laplace b)".to_string()
        } else {
            family.clone()
        };
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(
            line.iter()
                .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    area.present()?;
    Ok(())
}

/// Writes a grid: a row of originals, then per perturber a row of σ maps (σ/σ_max in grey) and a
/// row of perturbed uploads, for the first 8 test images, scaled up 4×.
///
/// # Errors
/// Model errors, or [`Error::Io`] when the PNG cannot be written.
pub fn sample_grid(schemes: &[Scheme], test: &Dataset, path: &Path) -> Result<()> {
    let s = test.size;
    let n = test.len().min(8);
    let mut rows: Vec<Vec<Vec<[u8; 3]>>> = vec![(0..n).map(|i| pixels(test.image(i), s)).collect()];
    for scheme in schemes {
        let onnx = match scheme {
            Scheme::Run { path } => RunDir::open(path)?.perturber_onnx(),
            Scheme::Onnx { perturber, .. } => perturber.clone(),
            _ => continue,
        };
        let model = Model::load_path(&onnx, BatchMode::Single)?;
        let sigma_max = model
            .manifest()
            .perturber
            .as_ref()
            .map_or(1.0, |p| p.sigma_max);
        let p = Perturber::with_noise(model, NoiseSource::from_os())?;
        let (mut sig_row, mut out_row) = (Vec::new(), Vec::new());
        for i in 0..n {
            let x = ImageTensor::new(
                [1, 3, s, s],
                test.image(i)
                    .iter()
                    .map(|&b| f32::from(b) / 255.0)
                    .collect(),
            )?;
            let maps = p.maps(&x)?;
            let sig: Vec<u8> = maps
                .sigma
                .data()
                .iter()
                .map(|&v| scrim_core::imaging::quantize(v / sigma_max))
                .collect();
            sig_row.push(pixels(&sig, s));
            let y = p.perturb_tensor(&x)?;
            let q: Vec<u8> = y
                .data()
                .iter()
                .map(|&v| scrim_core::imaging::quantize(v))
                .collect();
            out_row.push(pixels(&q, s));
        }
        rows.push(sig_row);
        rows.push(out_row);
    }
    let scale = 4;
    let gap = 2;
    let cell = s * scale + gap;
    let mut img = RgbImage::from_pixel(
        (n * cell) as u32,
        (rows.len() * cell) as u32,
        Rgb([255, 255, 255]),
    );
    for (r, row) in rows.iter().enumerate() {
        for (c, px) in row.iter().enumerate() {
            for y in 0..s * scale {
                for x in 0..s * scale {
                    let v = px[(y / scale) * s + x / scale];
                    img.put_pixel((c * cell + x) as u32, (r * cell + y) as u32, Rgb(v));
                }
            }
        }
    }
    img.save(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))
}

/// CHW bytes → row-major RGB pixels.
fn pixels(chw: &[u8], s: usize) -> Vec<[u8; 3]> {
    (0..s * s)
        .map(|i| [chw[i], chw[s * s + i], chw[2 * s * s + i]])
        .collect()
}

/// True when two data specs name the same data: equal strings, or the same kind with paths that
/// resolve to the same file (an audit run from another folder writes `../x` or `/abs/x`).
fn same_data(a: &str, b: &str) -> bool {
    let canonical = |spec: &str| {
        let (kind, rest) = spec.split_once(':')?;
        let (path, sub) = rest.split_once('#').unwrap_or((rest, ""));
        Some((
            kind.to_string(),
            std::fs::canonicalize(path).ok()?,
            sub.to_string(),
        ))
    };
    a == b || canonical(a).is_some_and(|x| Some(x) == canonical(b))
}

/// Merges audits of the same data, desired label and split into one report (schemes keep their
/// order; a scheme name seen twice keeps its first measurement).
///
/// # Errors
/// [`Error::Input`] when the reports audit different data, labels or splits.
pub fn merge(reports: Vec<AuditReport>) -> Result<AuditReport> {
    let mut it = reports.into_iter();
    let mut merged = it
        .next()
        .ok_or_else(|| Error::Input("give at least one report.json".into()))?;
    for r in it {
        if !same_data(&r.data, &merged.data)
            || r.desired != merged.desired
            || r.split_sizes != merged.split_sizes
        {
            return Err(Error::Input(format!(
                "cannot merge an audit of {} ({}; split {:?}) with one of {} ({}; split {:?})",
                r.data, r.desired, r.split_sizes, merged.data, merged.desired, merged.split_sizes
            )));
        }
        for s in &r.sensitive {
            if !merged.sensitive.contains(s) {
                merged.sensitive.push(s.clone());
            }
        }
        merge_schemes(&mut merged.schemes, r.schemes);
        merged.command = format!("{}\n{}", merged.command, r.command);
    }
    Ok(merged)
}

/// Adds `from` to `into`: new schemes are appended; a scheme already there (same name, e.g.
/// audited again with other attackers) gains the attacks it lacks, and an attack measured twice
/// keeps the first number.
fn merge_schemes(into: &mut Vec<super::SchemeReport>, from: Vec<super::SchemeReport>) {
    for s in from {
        match into.iter_mut().find(|m| m.name == s.name) {
            // The same scheme audited again (e.g. with other attackers): its new attacks
            // join the first report's; an attack measured twice keeps the first number.
            Some(m) => {
                for a in s.attacks {
                    if !m
                        .attacks
                        .iter()
                        .any(|b| b.attribute == a.attribute && b.attacker == a.attacker)
                    {
                        m.attacks.push(a);
                    }
                }
                m.reconstruction = m.reconstruction.or(s.reconstruction);
                for n in s.notes {
                    if !m.notes.contains(&n) {
                        m.notes.push(n);
                    }
                }
            }
            None => into.push(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attack, AttackResult, Scheme, SchemeReport};
    use scrim_train::eval::Accuracy;

    fn scheme(name: &str, attacks: &[(&str, Attack, f64)]) -> SchemeReport {
        let acc = |a: f64| Accuracy {
            accuracy: a,
            balanced: a,
            n: 100,
        };
        SchemeReport {
            name: name.into(),
            scheme: Scheme::None,
            family: "none".into(),
            lambda: None,
            mean_sigma: 0.0,
            rms_sigma: 0.0,
            desired_clean: acc(0.9),
            desired_perturbed: acc(0.9),
            utility_model: String::new(),
            attacks: attacks
                .iter()
                .map(|(attr, attacker, a)| AttackResult {
                    attribute: (*attr).into(),
                    attacker: *attacker,
                    accuracy: acc(*a),
                    ci95: 0.01,
                    majority: 0.4,
                    seeds: Vec::new(),
                })
                .collect(),
            reconstruction: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_scheme_audited_twice_gains_the_attacks_it_lacked() {
        let mut into = vec![scheme("run", &[("race", Attack::Cnn, 0.5)])];
        let from = vec![
            scheme(
                "run",
                &[("race", Attack::Cnn, 0.9), ("race", Attack::Blur, 0.6)],
            ),
            scheme("other", &[("race", Attack::Cnn, 0.7)]),
        ];
        merge_schemes(&mut into, from);
        assert_eq!(into.len(), 2);
        let run = &into[0];
        assert_eq!(run.attacks.len(), 2);
        // The first measurement of an attack is kept; the new attacker joins it.
        assert_eq!(
            run.best_attack("race").map(|a| a.attacker),
            Some(Attack::Blur)
        );
        assert!((run.attacks[0].accuracy.accuracy - 0.5).abs() < 1e-12);
    }

    #[test]
    fn data_specs_match_by_resolved_path() {
        let dir = std::env::temp_dir();
        let abs = format!("utkface:{}", dir.display());
        let dotted = format!(
            "utkface:{}/../{}",
            dir.display(),
            dir.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        );
        assert!(same_data(&abs, &abs));
        assert!(same_data(&abs, &dotted));
        assert!(!same_data(&abs, &format!("csv:{}", dir.display())));
        assert!(!same_data("synthetic:100", "synthetic:200"));
    }
}
