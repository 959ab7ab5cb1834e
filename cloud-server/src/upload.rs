//! An upload's image header, checked before any pixel is decoded.
//!
//! Uploads must be exactly the model's input size, so the header (format, width, height, colour
//! type) says everything needed to refuse one: a 31 KB PNG can declare 2000×2000 16-bit RGBA
//! (32 MB decoded), and it is answered `wrong_size` without a byte of it being inflated. Only an
//! image of the right size is decoded, under an allocation cap sized for that image.

use std::io::Cursor;

use image::{ImageDecoder as _, ImageFormat, ImageReader};
use scrim_core::{DecodeLimits, ImageTensor, InputSpec, imaging};

use crate::{Error, Result};

/// Bytes per pixel of the widest colour type a decoder produces (16-bit RGBA).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Checks the header of `bytes`, then decodes it as a `[1, 3, H, W]` tensor of the model's input
/// size.
///
/// # Errors
/// [`Error::InvalidImage`] for an unknown format or corrupt data, [`Error::ImageTooLarge`] above
/// `max_pixels`, [`Error::WrongSize`] when the header declares another size (no pixel decoded).
pub(crate) fn decode(bytes: &[u8], input: InputSpec, max_pixels: u64) -> Result<ImageTensor> {
    check_header(bytes, input, max_pixels)?;
    // The header matched, so the image has the model's pixel count; the decoder's own
    // allocation cap (a multiple of `max_pixels`) is sized for that, not for the configured
    // limit.
    let limits = DecodeLimits {
        max_pixels: input_pixels(input),
    };
    imaging::decode_exact(bytes, input, limits).map_err(Error::from_decode)
}

/// Reads only the header: format, dimensions and colour type.
///
/// # Errors
/// As [`decode`].
pub(crate) fn check_header(bytes: &[u8], input: InputSpec, max_pixels: u64) -> Result<()> {
    let invalid = |e: &dyn std::fmt::Display| {
        Error::InvalidImage(format!("the body is not a valid PNG or JPEG image: {e}"))
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(&e))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        _ => return Err(invalid(&"unrecognised header")),
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(alloc_cap(max_pixels));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| invalid(&e))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(Error::from_decode(scrim_core::Error::ImageTooLarge {
            width,
            height,
            pixels,
            limit: max_pixels,
        }));
    }
    if pixels == 0 {
        return Err(invalid(&"the image has zero width or height"));
    }
    // EXIF orientation may swap the sides when decoding; the exact check follows the decode.
    let want = (input.width as u64, input.height as u64);
    let (w, h) = (u64::from(width), u64::from(height));
    if (w, h) != want && (h, w) != want {
        return Err(Error::from_decode(scrim_core::Error::WrongSize {
            expected: format!(
                "a perturbed image of {}x{} pixels (width x height) as produced by the Scrim SDK",
                input.width, input.height
            ),
            found: format!("{width}x{height} pixels"),
        }));
    }
    let decoded = decoder.total_bytes();
    if decoded > input_pixels(input).saturating_mul(MAX_BYTES_PER_PIXEL) {
        return Err(invalid(&format_args!(
            "{:?} needs {decoded} bytes decoded",
            decoder.color_type()
        )));
    }
    Ok(())
}

fn input_pixels(input: InputSpec) -> u64 {
    input.width as u64 * input.height as u64
}

/// The allocation cap while reading a header (the same rule as the decoder's).
fn alloc_cap(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL).max(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use image::{DynamicImage, ImageBuffer, Rgba};

    fn png16(w: u32, h: u32) -> Vec<u8> {
        let img: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::new(w, h);
        let mut out = Vec::new();
        DynamicImage::ImageRgba16(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode");
        out
    }

    fn input(width: usize, height: usize) -> InputSpec {
        InputSpec::rgb(height, width)
    }

    #[test]
    fn the_header_decides_size_and_pixel_limit() {
        let big = png16(2000, 2000);
        let code = |bytes: &[u8], max_pixels| {
            check_header(bytes, input(32, 32), max_pixels)
                .err()
                .map(|e| e.code())
        };
        assert_eq!(code(&big, 4_000_000), Some(ErrorCode::WrongSize));
        // The header alone suffices: the pixel data is cut off.
        assert_eq!(code(&big[..100], 4_000_000), Some(ErrorCode::WrongSize));
        assert_eq!(code(&big[..100], 1_000_000), Some(ErrorCode::ImageTooLarge));
        assert_eq!(code(b"junk", 4_000_000), Some(ErrorCode::InvalidImage));
        assert_eq!(code(&png16(32, 32), 4_000_000), None);
        let t = decode(&png16(32, 32), input(32, 32), 4_000_000).expect("decodes");
        assert_eq!(t.shape(), [1, 3, 32, 32]);
    }
}
