//! The audit's figures: the privacy–utility frontier plot (SVG, and PNG when a font is
//! available), and a sample grid of original / σ map / perturbed images.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use plotters::prelude::*;
use scrim_core::imaging::{rgb_to_tensor, tensor_to_rgb};
use scrim_core::{BatchMode, ImageTensor, Model, NoiseSource, Perturber};

use scrim_train::data::Dataset;
use scrim_train::run::RunDir;

use crate::error::{Error, Result};
use crate::reports::AuditReport;
use crate::request::Scheme;

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
/// Model errors, or [`Error::Image`] when the PNG cannot be written.
pub fn sample_grid(schemes: &[Scheme], test: &Dataset, path: &Path) -> Result<()> {
    let s = test.size;
    let n = test.len().min(8);
    let originals: Vec<RgbImage> = (0..n).map(|i| test.rgb(i)).collect();
    let mut rows = vec![originals.clone()];
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
        for original in &originals {
            let x = rgb_to_tensor(original);
            let base = p.upload_base(&x)?;
            if p.release().is_some() {
                // A bounded release: its noiseless render, the most an upload can show.
                sig_row.push(tensor_to_rgb(base.base())?);
            } else {
                let sigma = base.sigma();
                let scaled = sigma.data().iter().map(|&v| v / sigma_max).collect();
                sig_row.push(tensor_to_rgb(&ImageTensor::new(sigma.shape(), scaled)?)?);
            }
            out_row.push(tensor_to_rgb(&p.perturb_tensor(&x)?)?);
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
                    let v = *px.get_pixel((x / scale) as u32, (y / scale) as u32);
                    img.put_pixel((c * cell + x) as u32, (r * cell + y) as u32, v);
                }
            }
        }
    }
    img.save(path).map_err(|source| Error::Image {
        path: path.to_path_buf(),
        source,
    })
}
