//! Decoding, resizing and encoding images.
//!
//! Every image that enters Scrim goes through [`decode`]: format sniffing (JPEG, PNG, WebP), a
//! pixel-count guard against decompression bombs checked *before* the pixels are decoded, EXIF
//! orientation, and conversion to 8-bit RGB. [`to_tensor`] resizes to the model's input with the
//! `Triangle` (bilinear) filter, which `image` widens when it downscales, so large photos are
//! area-averaged rather than aliased.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

pub use crate::tensor::quantize;

use crate::manifest::InputSpec;
use crate::tensor::ImageTensor;
use crate::{Error, Result};

/// Default decompression-bomb guard: 40 megapixels (a 48 MP phone photo is 8000×6000 = 48 MP,
/// so callers that accept full-size camera images raise it with [`DecodeLimits`]).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Limits applied while decoding untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Maximum `width × height`.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Decodes JPEG, PNG or WebP bytes into 8-bit RGB with EXIF orientation applied.
///
/// # Errors
/// [`Error::InvalidImage`] for unknown formats and corrupt data; [`Error::ImageTooLarge`] when
/// the declared size exceeds `limits` (checked before decoding any pixel).
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::InvalidImage(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(Error::InvalidImage(format!(
                "{other:?} is not supported; use JPEG, PNG or WebP"
            )));
        }
        None => {
            return Err(Error::InvalidImage(
                "not a JPEG, PNG or WebP image (unrecognised header)".into(),
            ));
        }
    }
    let mut reader = reader;
    let mut image_limits = image::Limits::default();
    // The allocation cap is a second line of defence behind the pixel count (RGBA16 worst case).
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(image_limits);
    let mut decoder = reader.into_decoder().map_err(|e| invalid(&e))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::ImageTooLarge {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(Error::InvalidImage("image has zero width or height".into()));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| invalid(&e))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

fn invalid(e: &image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(l) => Error::InvalidImage(format!("image exceeds limits: {l}")),
        other => Error::InvalidImage(other.to_string()),
    }
}

/// Resizes (if needed) to the model input and converts to a `[1, 3, H, W]` tensor in `[0, 1]`.
pub fn to_tensor(img: &RgbImage, input: InputSpec) -> ImageTensor {
    if img.dimensions() == (input.width as u32, input.height as u32) {
        rgb_to_tensor(img)
    } else {
        rgb_to_tensor(&resize_rgb(img, input))
    }
}

/// Resizes to the model input with the `Triangle` filter: the one resize that training data and
/// devices share, so a model sees the same pixels in both.
pub fn resize_rgb(img: &RgbImage, input: InputSpec) -> RgbImage {
    let (w, h) = (input.width as u32, input.height as u32);
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    image::imageops::resize(img, w, h, FilterType::Triangle)
}

/// Converts an RGB image to a `[1, 3, H, W]` tensor in `[0, 1]` without resizing.
pub fn rgb_to_tensor(img: &RgbImage) -> ImageTensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    let mut data = vec![0.0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + i] = f32::from(px.0[c]) / 255.0;
        }
    }
    // Length matches the shape by construction.
    ImageTensor::new([1, 3, h, w], data).unwrap_or_else(|_| ImageTensor::zeros([1, 3, h, w]))
}

/// Decodes an image and requires it to be exactly the model's input size (no resizing): what the
/// server does with uploads, which are perturbed on the device at the model's resolution.
///
/// # Errors
/// As [`decode`], plus [`Error::WrongSize`] when the size differs.
pub fn decode_exact(bytes: &[u8], input: InputSpec, limits: DecodeLimits) -> Result<ImageTensor> {
    let img = decode(bytes, limits)?;
    if img.dimensions() != (input.width as u32, input.height as u32) {
        return Err(Error::WrongSize {
            expected: format!(
                "a perturbed image of {}x{} pixels (width x height) as produced by the Scrim SDK",
                input.width, input.height
            ),
            found: format!("{}x{} pixels", img.width(), img.height()),
        });
    }
    Ok(rgb_to_tensor(&img))
}

/// Quantises one CHW image in `[0, 1]` to 8-bit RGB (round to nearest, clamped).
///
/// # Errors
/// [`Error::InvalidArgument`] when the tensor is not a single 3-channel image.
pub fn tensor_to_rgb(t: &ImageTensor) -> Result<RgbImage> {
    let [n, c, h, w] = t.shape();
    if n != 1 || c != 3 {
        return Err(Error::InvalidArgument(format!(
            "expected one RGB image, got shape {:?}",
            t.shape()
        )));
    }
    let plane = h * w;
    let d = t.data();
    let mut buf = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        for ch in 0..3 {
            buf.push(quantize(d[ch * plane + i]));
        }
    }
    RgbImage::from_raw(w as u32, h as u32, buf)
        .ok_or_else(|| Error::InvalidArgument("image buffer size mismatch".into()))
}

/// Encodes RGB as a lossless 8-bit PNG.
///
/// # Errors
/// [`Error::InvalidImage`] if the encoder fails (it does not for valid buffers).
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .map_err(|e| Error::InvalidImage(format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        })
    }

    #[test]
    fn png_round_trip_is_lossless() {
        let img = gradient(17, 9);
        let png = encode_png(&img).expect("encode");
        let back = decode(&png, DecodeLimits::default()).expect("decode");
        assert_eq!(back, img);
        let t = rgb_to_tensor(&back);
        assert_eq!(t.shape(), [1, 3, 9, 17]);
        assert_eq!(tensor_to_rgb(&t).expect("rgb"), img);
    }

    #[test]
    fn jpeg_and_webp_decode() {
        let img = gradient(32, 24);
        for fmt in [ImageFormat::Jpeg, ImageFormat::WebP] {
            let mut bytes = Vec::new();
            DynamicImage::ImageRgb8(img.clone())
                .write_to(&mut Cursor::new(&mut bytes), fmt)
                .expect("encode");
            let back = decode(&bytes, DecodeLimits::default()).expect("decode");
            assert_eq!(back.dimensions(), (32, 24), "{fmt:?}");
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for bytes in [
            &b""[..],
            b"hello world, not an image",
            &[0x89, b'P', b'N', b'G', 0, 0],
        ] {
            let err = decode(bytes, DecodeLimits::default()).expect_err("garbage");
            assert!(matches!(err, Error::InvalidImage(_)), "{err}");
        }
        // A truncated PNG.
        let png = encode_png(&gradient(40, 40)).expect("encode");
        let err = decode(&png[..png.len() / 2], DecodeLimits::default()).expect_err("truncated");
        assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    }

    #[test]
    fn pixel_limit_rejects_before_decoding() {
        let png = encode_png(&gradient(100, 100)).expect("encode");
        let err = decode(&png, DecodeLimits { max_pixels: 9_999 }).expect_err("too big");
        assert!(
            matches!(
                err,
                Error::ImageTooLarge {
                    pixels: 10_000,
                    limit: 9_999,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("100x100"));
    }

    #[test]
    fn resize_to_input_and_exact_size_check() {
        let img = gradient(64, 48);
        let t = to_tensor(&img, InputSpec::rgb(16, 16));
        assert_eq!(t.shape(), [1, 3, 16, 16]);
        assert!(t.data().iter().all(|v| (0.0..=1.0).contains(v)));
        let png = encode_png(&img).expect("encode");
        let err = decode_exact(&png, InputSpec::rgb(32, 32), DecodeLimits::default())
            .expect_err("wrong size");
        assert!(err.to_string().contains("64x48"), "{err}");
        assert!(decode_exact(&png, InputSpec::rgb(48, 64), DecodeLimits::default()).is_ok());
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 4x2 JPEG tagged "rotate 90° clockwise" must come out 2x4.
        let img = gradient(4, 2);
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .expect("encode");
        let tagged = insert_exif_orientation(&jpeg, 6);
        let back = decode(&tagged, DecodeLimits::default()).expect("decode");
        assert_eq!(back.dimensions(), (2, 4));
    }

    /// Inserts an APP1 Exif segment with one Orientation entry right after the SOI marker.
    fn insert_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big endian, IFD at 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }
}
