//! `scrim protect transform`: block-wise transforms of image files with a secret key, and
//! their inverse.

use std::path::{Path, PathBuf};

use image::{ImageBuffer, Rgb};
use scrim_core::imaging;
use scrim_core::manifest::MAX_INPUT_SIDE;
use scrim_core::{BlockTransform, DecodeLimits, ImageTensor, InputSpec, Scheme, SecretKey};

use crate::files::{create_dir, read, write};
use crate::{Error, Result};

/// What [`transform_files`] does.
#[derive(Debug, Clone)]
pub struct TransformRequest {
    /// The key file.
    pub key: PathBuf,
    /// The scheme.
    pub scheme: Scheme,
    /// Block size.
    pub block: usize,
    /// Undo the transform instead.
    pub inverse: bool,
    /// Resize to `size × size` first (forward only), as the device does for a model's input.
    pub size: Option<usize>,
}

/// Transforms (or, with `inverse`, restores) image files into `out` as PNGs with the same stem.
/// 8-bit schemes write 8-bit PNGs; FFX outputs are not 8-bit levels and are written as 16-bit
/// PNGs holding `round(y · 65535)`, which the inverse reads back exactly.
///
/// # Errors
/// Key errors; [`Error::Image`] naming the file at fault for image and size errors; I/O errors.
pub fn transform_files(
    req: &TransformRequest,
    inputs: &[PathBuf],
    out: &Path,
) -> Result<Vec<PathBuf>> {
    if let Some(size) = req.size
        && !(1..=MAX_INPUT_SIDE).contains(&size)
    {
        return Err(Error::BadSize {
            size,
            max: MAX_INPUT_SIDE,
        });
    }
    let key = SecretKey::load(&req.key)?;
    let t = BlockTransform::new(&key, req.scheme, req.block)?;
    drop(key);
    create_dir(out)?;
    let mut written = Vec::new();
    for f in inputs {
        let named = |source: scrim_core::Error| Error::Image {
            path: f.clone(),
            source,
        };
        let bytes = read(f)?;
        let x = if req.inverse && req.scheme == Scheme::Ffx {
            read_rgb16(&bytes).map_err(named)?
        } else {
            let rgb = imaging::decode(&bytes, DecodeLimits::default()).map_err(named)?;
            match (req.size, req.inverse) {
                (Some(s), false) => imaging::to_tensor(&rgb, InputSpec::rgb(s, s)),
                _ => imaging::rgb_to_tensor(&rgb),
            }
        };
        let y = if req.inverse {
            t.invert(&x)
        } else {
            t.apply(&x)
        }
        .map_err(named)?;
        let png = if !req.inverse && req.scheme == Scheme::Ffx {
            encode_rgb16(&y).map_err(named)?
        } else {
            imaging::encode_png(&imaging::tensor_to_rgb(&y).map_err(named)?).map_err(named)?
        };
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let dst = out.join(format!("{stem}.png"));
        write(&dst, png)?;
        written.push(dst);
    }
    Ok(written)
}

fn read_rgb16(bytes: &[u8]) -> scrim_core::Result<ImageTensor> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .map_err(|e| scrim_core::Error::InvalidImage(format!("not a 16-bit FFX PNG: {e}")))?;
    if !matches!(img.color(), image::ColorType::Rgb16) {
        return Err(scrim_core::Error::InvalidImage(format!(
            "an FFX image is a 16-bit RGB PNG, this one is {:?}",
            img.color()
        )));
    }
    let img = img.to_rgb16();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0.0f32; 3 * h * w];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * h * w + i] = f32::from(px.0[c]) / 65535.0;
        }
    }
    ImageTensor::new([1, 3, h, w], data)
}

fn encode_rgb16(t: &ImageTensor) -> scrim_core::Result<Vec<u8>> {
    let [_, _, h, w] = t.shape();
    let d = t.image(0);
    let img: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(w as u32, h as u32, |x, y| {
        let p = y as usize * w + x as usize;
        let q = |c: usize| (d[c * h * w + p].clamp(0.0, 1.0) * 65535.0).round() as u16;
        Rgb([q(0), q(1), q(2)])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| scrim_core::Error::InvalidImage(format!("cannot encode PNG: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::keygen;

    #[test]
    fn sizes_out_of_range_are_refused_before_any_work() {
        // 100000 used to abort on a 120 GB allocation; 2^32 + 1 wrapped to a 1×1 image.
        for size in [0, MAX_INPUT_SIDE + 1, 100_000, (1usize << 32) + 1] {
            let req = TransformRequest {
                key: PathBuf::from("no-such.key"),
                scheme: Scheme::Shuffle,
                block: 4,
                inverse: false,
                size: Some(size),
            };
            let err = transform_files(&req, &[], Path::new("unused")).expect_err("size");
            assert!(matches!(err, Error::BadSize { .. }), "{size}: {err}");
            assert!(err.to_string().contains(&size.to_string()), "{err}");
        }
    }

    #[test]
    fn transform_files_round_trip_for_every_scheme() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = dir.path().join("k.key");
        keygen(&key).expect("keygen");
        assert!(keygen(&key).is_err(), "never overwrites");
        let img = image::RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([(x * 30) as u8, (y * 30) as u8, (x * y) as u8])
        });
        let src = dir.path().join("in");
        std::fs::create_dir_all(&src).expect("dir");
        let file = src.join("a.png");
        img.save(&file).expect("save");
        for scheme in Scheme::ALL {
            let mut req = TransformRequest {
                key: key.clone(),
                scheme,
                block: 4,
                inverse: false,
                size: None,
            };
            let enc = dir.path().join(format!("enc-{scheme}"));
            let written =
                transform_files(&req, std::slice::from_ref(&file), &enc).expect("forward");
            let enc_bytes = std::fs::read(&written[0]).expect("read");
            req.inverse = true;
            let dec = dir.path().join(format!("dec-{scheme}"));
            let back = transform_files(&req, &written, &dec).expect("inverse");
            let got = image::open(&back[0]).expect("open").to_rgb8();
            assert_eq!(got, img, "{scheme}");
            assert_ne!(enc_bytes, std::fs::read(&file).expect("read"));
        }
    }
}
