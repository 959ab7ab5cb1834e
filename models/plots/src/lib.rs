//! Scrim's figures, drawn the same on every machine: text uses DejaVu Sans compiled into the
//! binary (never a system font), σ maps use one perceptual colour map with a labelled bar.
//!
//! - [`Grid`]: rows of images with row and column labels and an optional colour bar (sample
//!   grids of the audit, `scrim perturb --save-maps`).
//! - [`LineChart`]: series against a shared x axis, as SVG and PNG (training curves).
//! - [`colormap`]: the colour of a value in `[0, 1]`.
//!
//! ```no_run
//! use scrim_plots::{Grid, colormap};
//! let cell = image::RgbImage::from_fn(8, 8, |x, _| colormap(x as f32 / 7.0));
//! let mut grid = Grid::new(4);
//! grid.row("σ map", vec![cell]);
//! grid.colorbar("σ", 0.0, 1.0);
//! grid.save(std::path::Path::new("grid.png")).unwrap();
//! ```

mod chart;
mod grid;

use std::path::PathBuf;
use std::sync::Once;

pub use chart::{LineChart, Series};
pub use grid::Grid;

/// What can go wrong while drawing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Drawing or encoding failed.
    #[error("could not draw {path}: {message}")]
    Draw {
        /// The figure being drawn.
        path: PathBuf,
        /// What the drawing library said.
        message: String,
    },
    /// Nothing to draw (no rows, no points).
    #[error("nothing to draw in {0}")]
    Empty(PathBuf),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The font family name every figure uses.
pub const FONT: &str = "sans-serif";

/// Registers the embedded DejaVu Sans as [`FONT`] (once per process).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are compiled in, so registration cannot fail for want of a file; a parse
        // failure would be a broken build of the font crate.
        let _ = plotters::style::register_font(
            FONT,
            plotters::style::FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Ten colours that stay apart, for series and families.
pub const PALETTE: [plotters::style::RGBColor; 10] = {
    use plotters::style::RGBColor as C;
    [
        C(31, 119, 180),
        C(214, 39, 40),
        C(44, 160, 44),
        C(148, 103, 189),
        C(255, 127, 14),
        C(23, 190, 207),
        C(140, 86, 75),
        C(227, 119, 194),
        C(127, 127, 127),
        C(188, 189, 34),
    ]
};

/// Anchors of the colour map, dark blue through teal and green to yellow: brightness rises
/// steadily, so the order of values survives greyscale printing and colour-blind readers.
const ANCHORS: [[f32; 3]; 6] = [
    [0.267, 0.005, 0.329],
    [0.231, 0.322, 0.545],
    [0.129, 0.569, 0.549],
    [0.369, 0.788, 0.384],
    [0.741, 0.875, 0.149],
    [0.993, 0.906, 0.144],
];

/// The colour of `v ∈ [0, 1]` (clamped; NaN reads as 0).
pub fn colormap(v: f32) -> image::Rgb<u8> {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let pos = v * (ANCHORS.len() - 1) as f32;
    let i = (pos.floor() as usize).min(ANCHORS.len() - 2);
    let t = pos - i as f32;
    let mix = |c: usize| {
        let x = ANCHORS[i][c] * (1.0 - t) + ANCHORS[i + 1][c] * t;
        (x * 255.0).round() as u8
    };
    image::Rgb([mix(0), mix(1), mix(2)])
}

pub(crate) fn draw_error(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_colour_map_gets_brighter_from_end_to_end() {
        let luma = |c: image::Rgb<u8>| {
            0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2])
        };
        let mut last = -1.0;
        for i in 0..=100 {
            let l = luma(colormap(i as f32 / 100.0));
            assert!(l > last, "luma falls at {i}: {l} after {last}");
            last = l;
        }
        assert_eq!(colormap(-3.0), colormap(0.0));
        assert_eq!(colormap(f32::NAN), colormap(0.0));
        assert_eq!(colormap(7.0), colormap(1.0));
    }
}
