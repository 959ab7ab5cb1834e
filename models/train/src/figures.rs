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
        let sigma_max = sigma_max(&model);
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

/// The perturber's σ_max (1 for a model without one).
fn sigma_max(model: &Model) -> f32 {
    model
        .manifest()
        .perturber
        .as_ref()
        .map_or(1.0, |p| p.sigma_max)
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

/// Writes `out/NAME-maps.png` for each input: the photo at the model's size, its σ map (σ/σ_max
/// in colour, with the bar; for a bounded release the noiseless render) and an upload (a fresh
/// noise draw), side by side. One result per input, as [`crate::workflow::perturb_files`].
///
/// # Errors
/// An unloadable perturber or an unwritable folder; a file that fails is reported in its result.
pub fn save_maps(
    perturber: &Path,
    inputs: &[PathBuf],
    out: &Path,
) -> Result<Vec<crate::workflow::FileResult<PathBuf>>> {
    let model = Model::load_path(perturber, BatchMode::Single)?;
    let input = model.manifest().input;
    let sigma_max = sigma_max(&model);
    let p = Perturber::with_noise(model, NoiseSource::from_os())?;
    std::fs::create_dir_all(out).map_err(|e| crate::Error::io(out, e))?;
    let bounded = p.release().is_some();
    let one = |f: &Path| -> Result<PathBuf> {
        let bytes = std::fs::read(f).map_err(|e| crate::Error::io(f, e))?;
        let fail = |e: scrim_core::Error| crate::Error::data(f.display(), e);
        let rgb = scrim_core::imaging::decode(&bytes, scrim_core::DecodeLimits::default())
            .map_err(fail)?;
        let x = scrim_core::imaging::to_tensor(&rgb, input);
        let base = p.upload_base(&x).map_err(fail)?;
        let middle = if bounded {
            tensor_to_rgb(base.base()).map_err(fail)?
        } else {
            sigma_image(base.sigma(), sigma_max)
        };
        let upload = tensor_to_rgb(&p.perturb_tensor(&x).map_err(fail)?).map_err(fail)?;
        let photo = tensor_to_rgb(&x).map_err(fail)?;
        let stem = f
            .file_stem()
            .map_or_else(|| "image".into(), |s| s.to_string_lossy().to_string());
        let mut grid = scrim_plots::Grid::new((256 / input.height.max(1)).clamp(1, 8) as u32);
        let what = if bounded { "render" } else { "σ / σ max" };
        grid.row(stem.clone(), vec![photo, middle, upload])
            .columns(vec!["photo".into(), what.into(), "upload".into()]);
        if !bounded {
            grid.colorbar("σ / σ max", 0.0, 1.0);
        }
        let dst = out.join(format!("{stem}-maps.png"));
        grid.save(&dst)?;
        Ok(dst)
    };
    Ok(inputs
        .iter()
        .map(|f| crate::workflow::FileResult {
            file: f.clone(),
            outcome: one(f),
        })
        .collect())
}
