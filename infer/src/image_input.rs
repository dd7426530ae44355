//! PNG and JPEG input (feature `image`): decode, convert to RGB, resize to 32×32 (bilinear)
//! when needed, and hand back the interleaved HWC bytes the classifier takes.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{ImageFormat, ImageReader, Limits};
use model_format::arch::{IMAGE_LEN, IMAGE_SIZE};

use crate::error::InferError;

/// Largest canvas decoded: a small file can announce a huge one, and decoding it would take
/// memory no caller asked for. 4096×4096 covers any photo worth shrinking to 32×32.
pub const MAX_IMAGE_PIXELS: u64 = 4096 * 4096;
/// Most memory the decoder may allocate for one image (pixels, palettes, metadata chunks):
/// a 4096×4096 RGBA image at 16 bits a channel is 128 MiB.
pub const MAX_DECODE_BYTES: u64 = 160 << 20;

/// Decodes a PNG or JPEG held in memory into 32×32 interleaved RGB (`3,072` bytes).
/// `name` labels errors (a file name, "request body", …).
///
/// ```
/// let err = infer::image_input::decode_hwc(b"not an image", "notes.txt").unwrap_err();
/// assert!(err.to_string().starts_with("notes.txt: "));
/// ```
pub fn decode_hwc(bytes: &[u8], name: &str) -> Result<Vec<u8>, InferError> {
    let format =
        image::guess_format(bytes).map_err(|_| InferError::Image(format!("{name}: not a PNG or JPEG image")))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(InferError::Image(format!("{name}: {format:?} images are not supported (PNG or JPEG only)")));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) =
        reader.into_dimensions().map_err(|e| InferError::Image(format!("{name}: cannot decode: {e}")))?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(InferError::TooLarge(format!(
            "{name}: a {width}x{height} image is larger than the limit of {MAX_IMAGE_PIXELS} pixels"
        )));
    }
    reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decode_limits());
    let decoded = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(why) => {
            InferError::TooLarge(format!("{name}: decoding needs more than {MAX_DECODE_BYTES} bytes: {why}"))
        }
        e => InferError::Image(format!("{name}: cannot decode: {e}")),
    })?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(InferError::Image(format!("{name}: empty image")));
    }
    let side = IMAGE_SIZE as u32;
    let rgb = if decoded.width() == side && decoded.height() == side {
        decoded.to_rgb8()
    } else {
        decoded.resize_exact(side, side, FilterType::Triangle).to_rgb8()
    };
    let hwc = rgb.into_raw();
    debug_assert_eq!(hwc.len(), IMAGE_LEN);
    Ok(hwc)
}

/// Reads and decodes an image file (see [`decode_hwc`]).
pub fn read_hwc(path: &std::path::Path) -> Result<Vec<u8>, InferError> {
    let bytes = std::fs::read(path).map_err(|e| InferError::Image(format!("{}: {e}", path.display())))?;
    decode_hwc(&bytes, &path.display().to_string())
}

fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}
