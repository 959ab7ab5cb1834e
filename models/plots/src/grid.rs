//! Labelled image grids: a label left of each row, a caption above each column, images scaled
//! up by nearest neighbour (so pixels stay visible), and an optional colour bar.

use std::path::Path;

use image::{Rgb, RgbImage};
use plotters::prelude::*;

use crate::{Error, FONT, Result, colormap, draw_error, register_font};

/// A grid of images in rows, saved as a PNG.
#[derive(Debug, Clone)]
pub struct Grid {
    scale: u32,
    rows: Vec<(String, Vec<RgbImage>)>,
    columns: Vec<String>,
    title: Option<String>,
    bar: Option<(String, f32, f32)>,
}

const GAP: u32 = 4;
const LABEL_W: u32 = 150;
const HEADER_H: u32 = 22;
const TITLE_H: u32 = 30;
const BAR_W: u32 = 16;
const BAR_AREA: u32 = 90;
const TEXT: u32 = 14;

impl Grid {
    /// An empty grid whose images are drawn `scale` times their size.
    pub fn new(scale: u32) -> Self {
        Self {
            scale: scale.max(1),
            rows: Vec::new(),
            columns: Vec::new(),
            title: None,
            bar: None,
        }
    }

    /// Adds a row of images under `label`.
    pub fn row(&mut self, label: impl Into<String>, images: Vec<RgbImage>) -> &mut Self {
        self.rows.push((label.into(), images));
        self
    }

    /// Captions above the columns (e.g. file names).
    pub fn columns(&mut self, captions: Vec<String>) -> &mut Self {
        self.columns = captions;
        self
    }

    /// A title above the grid.
    pub fn title(&mut self, title: impl Into<String>) -> &mut Self {
        self.title = Some(title.into());
        self
    }

    /// A bar of [`colormap`] at the right, labelled `label`, from `min` (bottom) to `max`.
    pub fn colorbar(&mut self, label: impl Into<String>, min: f32, max: f32) -> &mut Self {
        self.bar = Some((label.into(), min, max));
        self
    }

    /// Draws the grid into an image.
    ///
    /// # Errors
    /// [`Error::Empty`] without rows; [`Error::Draw`] when text cannot be drawn.
    pub fn render(&self) -> Result<RgbImage> {
        let here = Path::new("grid");
        let cols = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        if cols == 0 {
            return Err(Error::Empty(here.to_path_buf()));
        }
        let cell_w = self.cell(|i| i.width());
        let cell_h = self.cell(|i| i.height());
        let top = self.title.as_ref().map_or(0, |_| TITLE_H)
            + if self.columns.is_empty() { 0 } else { HEADER_H };
        let bar = if self.bar.is_some() { BAR_AREA } else { 0 };
        let n = self.rows.len() as u32;
        let width = LABEL_W + cols as u32 * (cell_w + GAP) + bar + GAP;
        let height = top + n * (cell_h + GAP) + GAP;
        let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
        for (r, (_, images)) in self.rows.iter().enumerate() {
            for (c, cell) in images.iter().enumerate() {
                let x0 = LABEL_W + c as u32 * (cell_w + GAP);
                let y0 = top + r as u32 * (cell_h + GAP);
                for y in 0..cell.height() * self.scale {
                    for x in 0..cell.width() * self.scale {
                        let v = *cell.get_pixel(x / self.scale, y / self.scale);
                        img.put_pixel(x0 + x, y0 + y, v);
                    }
                }
            }
        }
        let bar_x = LABEL_W + cols as u32 * (cell_w + GAP) + 12;
        let (bar_top, bar_h) = (top + 8, (n * (cell_h + GAP)).saturating_sub(16).max(20));
        if self.bar.is_some() {
            for y in 0..bar_h {
                let c = colormap(1.0 - y as f32 / (bar_h - 1).max(1) as f32);
                for x in 0..BAR_W {
                    img.put_pixel(bar_x + x, bar_top + y, c);
                }
            }
        }
        register_font();
        {
            let mut raw = img.as_flat_samples_mut();
            let buf = raw.as_mut_slice();
            let root = BitMapBackend::with_buffer(buf, (width, height)).into_drawing_area();
            let style = TextStyle::from((FONT, TEXT).into_font()).color(&BLACK);
            let text = |s: &str, x: u32, y: u32| {
                root.draw(&Text::new(
                    s.to_string(),
                    (x as i32, y as i32),
                    style.clone(),
                ))
                .map_err(|e| draw_error(here, e))
            };
            if let Some(t) = &self.title {
                let big = TextStyle::from((FONT, 18).into_font()).color(&BLACK);
                root.draw(&Text::new(t.clone(), (8, 6), big))
                    .map_err(|e| draw_error(here, e))?;
            }
            for (c, caption) in self.columns.iter().enumerate().take(cols) {
                let max_chars = (cell_w / 8).max(4) as usize;
                let short: String = caption.chars().take(max_chars).collect();
                text(
                    &short,
                    LABEL_W + c as u32 * (cell_w + GAP),
                    top - HEADER_H + 4,
                )?;
            }
            for (r, (label, _)) in self.rows.iter().enumerate() {
                let y = top + r as u32 * (cell_h + GAP) + cell_h / 2 - TEXT / 2;
                text(label, 8, y)?;
            }
            if let Some((label, min, max)) = &self.bar {
                text(&format!("{max:.2}"), bar_x + BAR_W + 4, bar_top)?;
                text(
                    &format!("{min:.2}"),
                    bar_x + BAR_W + 4,
                    bar_top + bar_h - TEXT,
                )?;
                text(label, bar_x + BAR_W + 4, bar_top + bar_h / 2 - TEXT / 2)?;
            }
            root.present().map_err(|e| draw_error(here, e))?;
        }
        Ok(img)
    }

    /// Draws the grid and writes it as a PNG.
    ///
    /// # Errors
    /// As [`Grid::render`], or [`Error::Draw`] when the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let img = self.render().map_err(|e| match e {
            Error::Empty(_) => Error::Empty(path.to_path_buf()),
            Error::Draw { message, .. } => draw_error(path, message),
        })?;
        img.save(path).map_err(|e| draw_error(path, e))
    }

    fn cell(&self, side: impl Fn(&RgbImage) -> u32) -> u32 {
        self.rows
            .iter()
            .flat_map(|r| r.1.iter())
            .map(&side)
            .max()
            .unwrap_or(0)
            * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(v: u8) -> RgbImage {
        RgbImage::from_pixel(8, 8, Rgb([v, v, v]))
    }

    #[test]
    fn a_grid_places_every_image_and_draws_its_labels() {
        let mut g = Grid::new(3);
        g.row("original", vec![solid(0), solid(50)])
            .row("σ map", vec![solid(100), solid(150)])
            .columns(vec!["a.jpg".into(), "b.jpg".into()])
            .title("test")
            .colorbar("σ", 0.0, 0.5);
        let img = g.render().expect("render");
        let top = TITLE_H + HEADER_H;
        // The second row's second image, at its scaled place.
        let (x, y) = (LABEL_W + (24 + GAP) + 12, top + (24 + GAP) + 12);
        assert_eq!(*img.get_pixel(x, y), Rgb([150, 150, 150]));
        // The label area holds dark text pixels; without labels it would be white.
        let dark = (0..LABEL_W)
            .flat_map(|x| (top..top + 24).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y)[0] < 128)
            .count();
        assert!(dark > 10, "no label drawn ({dark} dark pixels)");
    }

    #[test]
    fn an_empty_grid_is_an_error() {
        assert!(matches!(Grid::new(2).render(), Err(Error::Empty(_))));
    }
}
