//! PNG encoding of 8-bit images for `Summary.Image`.
//!
//! Uses the `png` crate rather than a hand-written stored-deflate encoder: it is already in the
//! workspace's lockfile (through infer's `image` feature), it compresses (activations and filter
//! grids shrink several-fold, which matters when a run logs images every few hundred steps), and
//! it leaves no CRC-32/Adler-32/zlib framing code of our own to get wrong.

use std::io;

/// `Summary.Image.colorspace` and the PNG colour type for a channel count.
fn color_type(channels: usize) -> Option<png::ColorType> {
    match channels {
        1 => Some(png::ColorType::Grayscale),
        2 => Some(png::ColorType::GrayscaleAlpha),
        3 => Some(png::ColorType::Rgb),
        4 => Some(png::ColorType::Rgba),
        _ => None,
    }
}

/// Encodes `height × width × channels` bytes, row-major with interleaved channels (HWC), as an
/// 8-bit PNG. `channels` is 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
///
/// Errors (kind `InvalidInput`) on an unsupported channel count, a zero or over-large dimension,
/// or a pixel buffer whose length is not `height * width * channels`.
pub fn encode_png(height: usize, width: usize, channels: usize, pixels_hwc: &[u8]) -> io::Result<Vec<u8>> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
    let color = color_type(channels).ok_or_else(|| invalid(format!("{channels} channels; expected 1, 2, 3 or 4")))?;
    // Summary.Image stores the dimensions as int32.
    let dimension = |n: usize, what: &str| match i32::try_from(n) {
        Ok(n) if n > 0 => Ok(n as u32),
        _ => Err(invalid(format!("{what} {n} is not in 1..={}", i32::MAX))),
    };
    let (png_height, png_width) = (dimension(height, "height")?, dimension(width, "width")?);
    let expected = height.checked_mul(width).and_then(|n| n.checked_mul(channels));
    if expected != Some(pixels_hwc.len()) {
        return Err(invalid(format!(
            "{} pixel bytes for a {height}x{width}x{channels} image (expected {})",
            pixels_hwc.len(),
            expected.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
        )));
    }
    let mut encoded = Vec::new();
    let mut encoder = png::Encoder::new(&mut encoded, png_width, png_height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels_hwc)?;
    writer.finish()?;
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut reader = png::Decoder::new(io::Cursor::new(png_bytes)).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        pixels.truncate(info.buffer_size());
        (info, pixels)
    }

    #[test]
    fn every_channel_count_round_trips_through_a_png_decoder() {
        let (height, width) = (5, 7);
        for (channels, color) in [
            (1, png::ColorType::Grayscale),
            (2, png::ColorType::GrayscaleAlpha),
            (3, png::ColorType::Rgb),
            (4, png::ColorType::Rgba),
        ] {
            let pixels: Vec<u8> = (0..height * width * channels).map(|i| (i * 37 % 256) as u8).collect();
            let encoded = encode_png(height, width, channels, &pixels).unwrap();
            assert_eq!(&encoded[..8], b"\x89PNG\r\n\x1a\n");
            let (info, decoded) = decode(&encoded);
            assert_eq!((info.height, info.width), (height as u32, width as u32));
            assert_eq!((info.color_type, info.bit_depth), (color, png::BitDepth::Eight));
            assert_eq!(decoded, pixels, "{channels} channels");
        }
    }

    #[test]
    fn bad_shapes_are_rejected_with_the_reason() {
        let message = |result: io::Result<Vec<u8>>| result.unwrap_err().to_string();
        assert!(message(encode_png(2, 2, 3, &[0; 11])).contains("11 pixel bytes for a 2x2x3 image (expected 12)"));
        assert!(message(encode_png(2, 2, 5, &[0; 20])).contains("5 channels"));
        assert!(message(encode_png(0, 2, 1, &[])).contains("height 0"));
        assert!(message(encode_png(1, 1 << 31, 1, &[])).contains("width 2147483648"));
    }
}
