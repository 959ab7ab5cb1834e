//! Line charts in side-by-side panels that share an x axis (training curves), as SVG and PNG.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, FONT, Result, draw_error, register_font};

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points in x order.
    pub points: Vec<(f64, f64)>,
}

/// Panels of line series, left to right.
#[derive(Debug, Clone)]
pub struct LineChart {
    title: String,
    x_desc: String,
    panels: Vec<(String, Vec<Series>)>,
}

impl LineChart {
    /// A chart titled `title` whose x axis reads `x_desc`.
    pub fn new(title: impl Into<String>, x_desc: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x_desc: x_desc.into(),
            panels: Vec::new(),
        }
    }

    /// Adds a panel whose y axis reads `y_desc`. Series without points are left out.
    pub fn panel(&mut self, y_desc: impl Into<String>, series: Vec<Series>) -> &mut Self {
        let series: Vec<Series> = series
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect();
        if !series.is_empty() {
            self.panels.push((y_desc.into(), series));
        }
        self
    }

    /// Writes `stem.svg` and `stem.png`; returns both paths.
    ///
    /// # Errors
    /// [`Error::Empty`] without points; [`Error::Draw`] when a file cannot be drawn.
    pub fn save(&self, stem: &Path) -> Result<[PathBuf; 2]> {
        let svg = stem.with_extension("svg");
        let png = stem.with_extension("png");
        if self.panels.is_empty() {
            return Err(Error::Empty(png));
        }
        register_font();
        let size = (420 * self.panels.len() as u32 + 40, 380);
        self.draw(SVGBackend::new(&svg, size).into_drawing_area())
            .map_err(|e| draw_error(&svg, e))?;
        self.draw(BitMapBackend::new(&png, size).into_drawing_area())
            .map_err(|e| draw_error(&png, e))?;
        Ok([svg, png])
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let root = root.titled(&self.title, (FONT, 18))?;
        let areas = root.split_evenly((1, self.panels.len()));
        for (area, (y_desc, series)) in areas.iter().zip(&self.panels) {
            let pts = series.iter().flat_map(|s| s.points.iter());
            let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            for &(x, y) in pts {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
            if x1 <= x0 {
                x1 = x0 + 1.0;
            }
            let pad = ((y1 - y0) * 0.08).max(1e-3);
            // Whole-number x values (epochs) get whole-number ticks, one per value up to 12.
            let integer_x = series
                .iter()
                .flat_map(|s| s.points.iter())
                .all(|p| p.0.fract() == 0.0);
            let x_ticks = if integer_x {
                ((x1 - x0) as usize + 1).min(12)
            } else {
                10
            };
            let mut chart = ChartBuilder::on(area)
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
            chart
                .configure_mesh()
                .x_desc(self.x_desc.as_str())
                .x_labels(x_ticks)
                .x_label_formatter(&|v| {
                    if integer_x {
                        format!("{v:.0}")
                    } else {
                        format!("{v}")
                    }
                })
                .y_desc(y_desc.as_str())
                .label_style((FONT, 12))
                .draw()?;
            for (i, s) in series.iter().enumerate() {
                let colour = crate::PALETTE[i % crate::PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(s.points.clone(), colour.stroke_width(2)))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.5))
                .label_font((FONT, 12))
                .position(SeriesLabelPosition::LowerRight)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_writes_both_files_with_its_text() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut c = LineChart::new("curves", "epoch");
        c.panel(
            "accuracy",
            vec![Series {
                name: "val".into(),
                points: vec![(0.0, 0.5), (1.0, 0.8)],
            }],
        )
        .panel(
            "σ",
            vec![Series {
                name: "none".into(),
                points: vec![],
            }],
        );
        let [svg, png] = c.save(&dir.join("curves")).expect("save");
        let text = std::fs::read_to_string(&svg).expect("svg");
        assert!(
            text.contains("accuracy") && text.contains("epoch"),
            "{text}"
        );
        assert!(image::open(&png).expect("png").width() > 400);
        // A panel without points is left out, and a chart without any is an error.
        assert!(!text.contains(">σ<"));
        assert!(matches!(
            LineChart::new("t", "x").save(&dir.join("empty")),
            Err(Error::Empty(_))
        ));
    }
}
