//! Pictures of what a perturber does: a labelled grid of test images, their σ maps (or, for a
//! bounded release, its noiseless render) in a colour map with its bar, and the uploads.

use std::path::{Path, PathBuf};

use image::RgbImage;
use scrim_core::imaging::{rgb_to_tensor, tensor_to_rgb};
use scrim_core::{BatchMode, ImageTensor, Model, NoiseSource, Perturber};

use crate::Result;
use crate::data::Dataset;

/// Writes a labelled grid for the first 8 images of `test`, scaled up 4×: a row of originals,
/// then per perturber (a name and its ONNX file) a row of σ maps (σ/σ_max in the colour map,
/// with its bar; for a bounded release its noiseless render) and a row of uploads.
///
/// # Errors
/// Model errors, or [`crate::Error::Figure`] when the PNG cannot be drawn or written.
pub fn sample_grid(perturbers: &[(String, PathBuf)], test: &Dataset, path: &Path) -> Result<()> {
    let n = test.len().min(8);
    let originals: Vec<RgbImage> = (0..n).map(|i| test.rgb(i)).collect();
    let mut grid = scrim_plots::Grid::new(4);
    grid.row("original", originals.clone());
    let mut any_sigma = false;
    for (name, onnx) in perturbers {
        let model = Model::load_path(onnx, BatchMode::Single)?;
        let sigma_max = model
            .manifest()
            .perturber
            .as_ref()
            .map_or(1.0, |p| p.sigma_max);
        let p = Perturber::with_noise(model, NoiseSource::from_os())?;
        let bounded = p.release().is_some();
        let (mut sig_row, mut out_row) = (Vec::new(), Vec::new());
        for original in &originals {
            let x = rgb_to_tensor(original);
            let base = p.upload_base(&x)?;
            if bounded {
                // A bounded release: its noiseless render, the most an upload can show.
                sig_row.push(tensor_to_rgb(base.base())?);
            } else {
                sig_row.push(sigma_image(base.sigma(), sigma_max));
            }
            out_row.push(tensor_to_rgb(&p.perturb_tensor(&x)?)?);
        }
        any_sigma |= !bounded;
        let what = if bounded { "render" } else { "σ / σ max" };
        grid.row(format!("{name}: {what}"), sig_row);
        grid.row(format!("{name}: upload"), out_row);
    }
    if any_sigma {
        grid.colorbar("σ / σ max", 0.0, 1.0);
    }
    Ok(grid.save(path)?)
}

/// A σ map in the colour map: the mean over channels of σ/σ_max.
pub fn sigma_image(sigma: &ImageTensor, sigma_max: f32) -> RgbImage {
    let [_, c, h, w] = sigma.shape();
    let d = sigma.data();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let mean = (0..c).map(|k| d[(k * h + y) * w + x]).sum::<f32>() / c.max(1) as f32;
        scrim_plots::colormap(mean / sigma_max.max(f32::MIN_POSITIVE))
    })
}
