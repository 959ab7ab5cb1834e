//! The audit's figures: the privacy–utility frontier plot (SVG, and PNG when a font is
//! available), and a sample grid of original / σ map / perturbed images.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use scrim_train::data::Dataset;
use scrim_train::run::RunDir;

use crate::error::Result;
use crate::reports::AuditReport;
use crate::request::Scheme;

/// Draws the frontier (desired accuracy against the best attacker on the primary sensitive
/// label) as `frontier.svg` and `frontier.png`, in the embedded font.
///
/// # Errors
/// Never fails the audit for a plot: problems are logged.
pub fn write_plots(report: &AuditReport, out: &Path) -> Result<()> {
    scrim_plots::register_font();
    let svg = out.join("frontier.svg");
    let png = out.join("frontier.png");
    let r1 = frontier(report, SVGBackend::new(&svg, SIZE).into_drawing_area());
    let r2 = frontier(report, BitMapBackend::new(&png, SIZE).into_drawing_area());
    for (p, r) in [(svg, r1), (png, r2)] {
        if let Err(e) = r {
            tracing::warn!("could not draw {}: {e}", p.display());
        }
    }
    Ok(())
}

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (1040, 600);
const FONT: &str = scrim_plots::FONT;

/// One point of the frontier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    /// λ, or σ where a run has no λ: orders a family's points along its curve.
    pub order: f64,
    /// "λ 0.05", "σ 0.25", or nothing for a single-point family.
    pub label: String,
    /// Best attack, mean over seeds (%).
    pub attack: f64,
    /// Lowest and highest seed of that attack (%).
    pub spread: (f64, f64),
    /// Desired accuracy on uploads (%).
    pub desired: f64,
}

/// What the frontier plot shows, gathered from a report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frontier {
    pub title: String,
    pub primary: String,
    pub desired: String,
    /// Majority rate of the primary attribute (%).
    pub majority: f64,
    /// Desired accuracy on clean photos (%): the `none` baseline, or the best clean accuracy.
    pub clean: Option<f64>,
    pub families: BTreeMap<String, Vec<Point>>,
}

/// A readable name for the data: the dataset's kind, not a local path.
pub(crate) fn data_title(spec: &str) -> String {
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let stem = || {
        let path = rest.split('#').next().unwrap_or(rest);
        let name = Path::new(path.trim_end_matches('/'))
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        name.split('.').next().unwrap_or("").to_string()
    };
    match kind {
        "utkface" => "UTKFace".into(),
        "synthetic" => "synthetic data".into(),
        _ if stem().is_empty() => kind.into(),
        _ => stem(),
    }
}

impl Frontier {
    pub(crate) fn from_report(report: &AuditReport) -> Option<Self> {
        let primary = report.sensitive.first()?.clone();
        let mut families: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        let mut majority = 0.0;
        let mut clean_none = None;
        let mut clean_best: Option<f64> = None;
        for r in &report.schemes {
            if r.family == "none" {
                clean_none = Some(100.0 * r.desired_perturbed.accuracy);
            } else if r.desired_clean.n > 0 && r.family != "arden" {
                let c = 100.0 * r.desired_clean.accuracy;
                clean_best = Some(clean_best.map_or(c, |b: f64| b.max(c)));
            }
            let Some(a) = r.best_attack(&primary) else {
                continue;
            };
            majority = 100.0 * a.majority;
            let mean = 100.0 * a.accuracy.accuracy;
            let spread = if a.seeds.is_empty() {
                (mean, mean)
            } else {
                a.seeds.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &s| {
                    (lo.min(100.0 * s), hi.max(100.0 * s))
                })
            };
            let (order, label) = match r.lambda {
                Some(l) => (l, format!("λ {l}")),
                None if r.family == "none" => (0.0, String::new()),
                None if r.family == "arden" => (r.mean_sigma, format!("b {}", r.mean_sigma)),
                None => (r.mean_sigma, format!("σ {:.2}", r.mean_sigma)),
            };
            families.entry(r.family.clone()).or_default().push(Point {
                order,
                label,
                attack: mean,
                spread,
                desired: 100.0 * r.desired_perturbed.accuracy,
            });
        }
        for pts in families.values_mut() {
            pts.sort_by(|a, b| a.order.total_cmp(&b.order));
        }
        Some(Self {
            title: format!(
                "{}: {} kept, {primary} hidden",
                data_title(&report.data),
                report.desired
            ),
            primary,
            desired: report.desired.clone(),
            majority,
            clean: clean_none.or(clean_best),
            families,
        })
    }
}

/// Colours of the families, combined with four marker shapes.
const COLOURS: [RGBColor; 10] = scrim_plots::PALETTE;

/// Draws marker `shape` (circle, triangle, square, cross) at `at`.
fn draw_marker<DB, CT>(
    area: &DrawingArea<DB, CT>,
    shape: usize,
    at: CT::From,
    colour: RGBColor,
) -> PlotResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
    CT::From: Clone,
{
    let style = colour.filled();
    match shape % 4 {
        0 => area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), 5, style)))?,
        1 => area.draw(&(EmptyElement::at(at) + TriangleMarker::new((0, 0), 7, style)))?,
        2 => area.draw(&(EmptyElement::at(at) + Rectangle::new([(-5, -5), (5, 5)], style)))?,
        _ => area.draw(&(EmptyElement::at(at) + Cross::new((0, 0), 6, colour.stroke_width(3))))?,
    }
    Ok(())
}

fn frontier<DB: DrawingBackend>(
    report: &AuditReport,
    root: DrawingArea<DB, plotters::coord::Shift>,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let Some(f) = Frontier::from_report(report) else {
        return Ok(());
    };
    let all: Vec<&Point> = f.families.values().flatten().collect();
    if all.is_empty() {
        return Ok(());
    }
    let goal_x = f.majority + 5.0;
    let goal_y = f.clean.map(|c| c - 2.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f.majority - 3.0, goal_x + 3.0, 100.0f64, 0.0f64);
    for p in &all {
        x0 = x0.min(p.spread.0 - 2.0);
        x1 = x1.max(p.spread.1 + 2.0);
        y0 = y0.min(p.desired - 2.0);
        y1 = y1.max(p.desired + 2.0);
    }
    if let Some(c) = f.clean {
        y0 = y0.min(c - 4.0);
        y1 = y1.max(c + 2.0);
    }
    root.fill(&WHITE)?;
    let root = root.titled(&f.title, (FONT, 20))?;
    let (plot, legend) = root.split_horizontally(SIZE.0 - 260);
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "strongest {} attacker, accuracy % (bars: lowest to highest seed); lower is more private",
            f.primary
        ))
        .y_desc(format!("{} accuracy on uploads %", f.desired))
        .label_style((FONT, 13))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    // The goal: privacy within 5 points of the majority rate, utility within 2 of clean.
    if let Some(gy) = goal_y {
        chart.draw_series([Rectangle::new(
            [(x0, gy), (goal_x.min(x1), y1)],
            RGBColor(44, 160, 44).mix(0.12).filled(),
        )])?;
        chart.draw_series([Text::new(
            "goal",
            (x0 + 0.3, y1 - 0.4),
            (FONT, 13).into_font().color(&RGBColor(30, 110, 30)),
        )])?;
    }
    let grey = BLACK.mix(0.45);
    chart.draw_series(LineSeries::new(
        [(f.majority, y0), (f.majority, y1)],
        grey.stroke_width(1),
    ))?;
    chart.draw_series([Text::new(
        format!("majority {:.1}%", f.majority),
        (f.majority + 0.2, y0 + 0.6),
        (FONT, 12).into_font().color(&grey),
    )])?;
    if let Some(c) = f.clean {
        chart.draw_series(DashedLineSeries::new(
            [(x0, c), (x1, c)],
            6,
            4,
            grey.stroke_width(1),
        ))?;
        chart.draw_series([EmptyElement::at((x1 - (x1 - x0) * 0.22, c))
            + Text::new(
                format!("clean photos {c:.1}%"),
                (0, -17),
                (FONT, 12).into_font().color(&grey),
            )])?;
    }
    for (i, pts) in f.families.values().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.attack, p.desired)).collect();
        if line.len() > 1 {
            chart.draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?;
        }
        for p in pts {
            if p.spread.1 > p.spread.0 {
                chart.draw_series(LineSeries::new(
                    [(p.spread.0, p.desired), (p.spread.1, p.desired)],
                    colour.stroke_width(1),
                ))?;
            }
        }
        let area = chart.plotting_area();
        for p in pts {
            draw_marker(area, i / COLOURS.len(), (p.attack, p.desired), colour)?;
            if pts.len() > 1 && !p.label.is_empty() {
                area.draw(
                    &(EmptyElement::at((p.attack, p.desired))
                        + Text::new(
                            p.label.clone(),
                            (7, -16),
                            (FONT, 11).into_font().color(&colour),
                        )),
                )?;
            }
        }
    }
    // The legend beside the chart, one line per family, so it never hides a point.
    let legend = legend.margin(40, 10, 6, 6);
    let mut y = 10;
    for (i, (family, pts)) in f.families.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        draw_marker(&legend, i / COLOURS.len(), (10, y + 7), colour)?;
        let family = match family.as_str() {
            "none" => "no perturbation",
            "uniform" => "uniform noise",
            "cloak" => "cloak (one σ map)",
            other => other,
        };
        let name = if family == "arden" {
            "arden (noisy features)".to_string()
        } else if pts.len() == 1 && !pts[0].label.is_empty() {
            format!("{family} ({})", pts[0].label)
        } else {
            family.to_string()
        };
        for line in wrap_label(&name, LEGEND_CHARS) {
            legend.draw(&Text::new(
                line,
                (24, y),
                (FONT, 13).into_font().color(&BLACK),
            ))?;
            y += 16;
        }
        y += 6;
    }
    root.present()?;
    Ok(())
}

/// Characters of a legend line that fit beside the chart.
const LEGEND_CHARS: usize = 30;

/// Splits a family name into lines of at most `width` characters, after a `+` or a space
/// (a single longer piece stays whole).
fn wrap_label(name: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut piece = String::new();
    let flush = |piece: &mut String, lines: &mut Vec<String>| {
        let last = lines.last_mut().expect("a line");
        if !last.is_empty() && last.chars().count() + piece.chars().count() > width {
            lines.push(String::new());
        }
        lines.last_mut().expect("a line").push_str(piece);
        piece.clear();
    };
    for c in name.chars() {
        piece.push(c);
        if c == '+' || c == ' ' {
            flush(&mut piece, &mut lines);
        }
    }
    flush(&mut piece, &mut lines);
    lines
        .into_iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// Writes the labelled sample grid of the schemes that have a perturber ONNX
/// ([`scrim_train::figures::sample_grid`]).
///
/// # Errors
/// Model errors, or a figure error when the PNG cannot be drawn or written.
pub fn sample_grid(schemes: &[Scheme], test: &Dataset, path: &Path) -> Result<()> {
    let mut perturbers = Vec::new();
    for scheme in schemes {
        let onnx = match scheme {
            Scheme::Run { path } => RunDir::open(path)?.perturber_onnx(),
            Scheme::Onnx { perturber, .. } => perturber.clone(),
            _ => continue,
        };
        perturbers.push((scheme_name(scheme), onnx));
    }
    scrim_train::figures::sample_grid(&perturbers, test, path)?;
    Ok(())
}

/// A short name for a scheme's row: its run folder or perturber file.
fn scheme_name(scheme: &Scheme) -> String {
    let path = match scheme {
        Scheme::Run { path } => path.as_path(),
        Scheme::Onnx { perturber, .. } => perturber.as_path(),
        _ => return "scheme".into(),
    };
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string());
    match stem.as_deref() {
        Some("perturber") | None => path
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(|| "perturber".into(), |n| n.to_string_lossy().to_string()),
        Some(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::fixtures::{report, scheme};
    use crate::request::Attack;

    #[test]
    fn long_family_names_wrap_at_their_plus_signs() {
        let lines = wrap_label("scrim+standardize+suppress+pool+global-r4", 30);
        assert_eq!(lines, vec!["scrim+standardize+suppress+", "pool+global-r4"]);
        assert!(lines.iter().all(|l| l.chars().count() <= 30));
        assert_eq!(
            wrap_label("cloak (one σ map)", 30),
            vec!["cloak (one σ map)"]
        );
        // A piece longer than a line stays whole rather than vanish.
        assert_eq!(
            wrap_label("x".repeat(40).as_str(), 30),
            vec!["x".repeat(40)]
        );
    }

    #[test]
    fn the_frontier_names_the_data_and_carries_seeds_labels_and_the_clean_line() {
        let mut none = scheme("none", &[("texture", Attack::Cnn, 0.7)]);
        none.desired_perturbed.accuracy = 0.95;
        let mut a = scheme("run-a", &[("texture", Attack::Kerckhoffs, 0.5)]);
        a.family = "scrim".into();
        a.lambda = Some(0.2);
        a.attacks[0].seeds = vec![0.48, 0.5, 0.52];
        let mut b = scheme("run-b", &[("texture", Attack::Linear, 0.6)]);
        b.family = "scrim".into();
        b.lambda = Some(0.05);
        let mut bounded = scheme("run-c", &[("texture", Attack::Cnn, 0.45)]);
        bounded.family = "bounded".into();
        bounded.mean_sigma = 0.25;
        let r = report(
            "utkface:/home/someone/data/UTKFace.tar.gz",
            vec![none, a, b, bounded],
        );
        let f = Frontier::from_report(&r).expect("frontier");
        assert_eq!(f.title, "UTKFace: shape kept, texture hidden");
        assert_eq!(f.clean, Some(95.0));
        assert!((f.majority - 40.0).abs() < 1e-9);
        let scrim = &f.families["scrim"];
        // Ordered by λ, labelled, with the seeds' spread.
        assert_eq!(scrim[0].label, "λ 0.05");
        assert_eq!(scrim[1].label, "λ 0.2");
        assert!((scrim[1].spread.0 - 48.0).abs() < 1e-9 && (scrim[1].spread.1 - 52.0).abs() < 1e-9);
        assert_eq!(scrim[0].spread, (60.0, 60.0));
        assert_eq!(f.families["bounded"][0].label, "σ 0.25");
        for (spec, title) in [
            ("synthetic:300", "synthetic data"),
            ("csv:/data/faces/labels.csv", "labels"),
            ("imagefolder:/data/cifar10.tar.gz#train", "cifar10"),
        ] {
            assert_eq!(data_title(spec), title, "{spec}");
        }
    }

    #[test]
    fn a_frontier_plot_is_drawn_in_the_embedded_font() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = report(
            "synthetic:300",
            vec![scheme("none", &[("texture", Attack::Cnn, 0.7)])],
        );
        write_plots(&r, dir.path()).expect("plots");
        let svg = std::fs::read_to_string(dir.path().join("frontier.svg")).expect("svg");
        assert!(svg.contains("synthetic data: shape kept, texture hidden"));
        assert!(svg.contains("no perturbation"));
        let png = image::open(dir.path().join("frontier.png"))
            .expect("png")
            .to_rgb8();
        // Text is drawn: the title row holds dark pixels.
        let dark = (0..png.width())
            .filter(|&x| (4..24).any(|y| png.get_pixel(x, y)[0] < 100))
            .count();
        assert!(dark > 50, "{dark}");
    }
}
