//! PNG and JPEG input (feature `image`): decode, convert to RGB, resize to 32×32 (bilinear)
//! when needed, and hand back the interleaved HWC bytes the classifier takes.

use image::imageops::FilterType;
use model_format::arch::{IMAGE_LEN, IMAGE_SIZE};

use crate::error::InferError;

/// Decodes a PNG or JPEG held in memory into 32×32 interleaved RGB (`3,072` bytes).
/// `name` labels errors (a file name, "request body", …).
///
/// ```
/// let err = infer::image_input::decode_hwc(b"not an image", "notes.txt").unwrap_err();
/// assert!(err.to_string().starts_with("notes.txt: "));
/// ```
pub fn decode_hwc(bytes: &[u8], name: &str) -> Result<Vec<u8>, InferError> {
    let format = image::guess_format(bytes)
        .map_err(|_| InferError::Image(format!("{name}: not a PNG or JPEG image")))?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(InferError::Image(format!("{name}: {format:?} images are not supported (PNG or JPEG only)")));
    }
    let decoded = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| InferError::Image(format!("{name}: cannot decode: {e}")))?;
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
