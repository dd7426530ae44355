//! PNG and JPEG input (feature `image`): check the file is whole, decode, convert to RGB,
//! resize to 32×32 (bilinear) when needed, and hand back the interleaved HWC bytes the
//! classifier takes.
//!
//! Memory: decoding one image takes at most [`MAX_DECODE_BYTES`] besides the file's own
//! bytes. The pixel limit bounds the canvas; a PNG's ancillary chunks (zTXt, iTXt, iCCP,
//! …), which can each inflate to gigabytes, are dropped before the decoder sees them.
//!
//! Integrity: a truncated or corrupt file is an error, never a partly grey image. A PNG
//! must have valid chunk CRCs and end with IEND; a JPEG's last scan must be followed by
//! its EOI marker (the decoders themselves fill missing data in silently).

use std::borrow::Cow;
use std::io::Cursor;

use image::imageops::FilterType;
use image::{ImageFormat, ImageReader, Limits};
use model_format::arch::{IMAGE_LEN, IMAGE_SIZE};

use crate::error::InferError;

/// Largest canvas decoded: a small file can announce a huge one, and decoding it would take
/// memory no caller asked for. 4096×4096 covers any photo worth shrinking to 32×32.
pub const MAX_IMAGE_PIXELS: u64 = 4096 * 4096;
/// Largest image file read from disk: an uncompressed PNG of [`MAX_IMAGE_PIXELS`] in
/// 16-bit RGBA takes 128 MiB.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;
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
    let bytes = match format {
        ImageFormat::Png => {
            png_pixel_chunks(bytes).map_err(|why| InferError::Image(format!("{name}: cannot decode: {why}")))?
        }
        ImageFormat::Jpeg => {
            check_jpeg(bytes).map_err(|why| InferError::Image(format!("{name}: cannot decode: {why}")))?;
            Cow::Borrowed(bytes)
        }
        _ => return Err(InferError::Image(format!("{name}: {format:?} images are not supported (PNG or JPEG only)"))),
    };
    let bytes = bytes.as_ref();
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

/// Reads and decodes an image file (see [`decode_hwc`]); files over
/// [`MAX_IMAGE_FILE_BYTES`] (or endless ones, like `/dev/zero`) are refused without being
/// read whole.
pub fn read_hwc(path: &std::path::Path) -> Result<Vec<u8>, InferError> {
    decode_hwc(&read_capped(path, MAX_IMAGE_FILE_BYTES)?, &path.display().to_string())
}

/// The bytes of `path` if it holds at most `cap` of them.
fn read_capped(path: &std::path::Path, cap: u64) -> Result<Vec<u8>, InferError> {
    use std::io::Read;
    let fail = |e: std::io::Error| InferError::Image(format!("{}: {e}", path.display()));
    // The type first: opening a FIFO for reading would block until a writer comes.
    check_regular(path, &std::fs::metadata(path).map_err(fail)?)?;
    let file = std::fs::File::open(path).map_err(fail)?;
    // Again on the open file, in case the path was swapped in between.
    check_regular(path, &file.metadata().map_err(fail)?)?;
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 > cap {
        return Err(InferError::TooLarge(format!(
            "{}: the file is larger than the limit of {cap} bytes for an image",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Refuses a folder, a device (`/dev/zero`), a FIFO or a socket: only files are images.
fn check_regular(path: &std::path::Path, meta: &std::fs::Metadata) -> Result<(), InferError> {
    if meta.is_file() {
        return Ok(());
    }
    let kind = model_format::atomic::kind_of(&meta.file_type());
    Err(InferError::Image(format!("{}: is {kind}, not a regular file: refusing to read it", path.display())))
}

fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// The PNG chunks that make the pixels; every other chunk is ancillary metadata.
const PNG_PIXEL_CHUNKS: [&[u8; 4]; 5] = [b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"];

/// Checks a PNG's chunk structure and CRCs up to IEND, and returns the file with only
/// the chunks that make the pixels (borrowed when there was nothing to drop).
fn png_pixel_chunks(bytes: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let mut rest = bytes.strip_prefix(PNG_SIGNATURE).ok_or("not a PNG file")?;
    let mut kept = Vec::with_capacity(bytes.len());
    kept.extend_from_slice(PNG_SIGNATURE);
    let mut dropped = false;
    loop {
        let Some((kind, chunk, after)) = next_png_chunk(rest)? else {
            return Err("truncated PNG: the file ends before its IEND chunk".into());
        };
        if kept.len() == PNG_SIGNATURE.len() && kind != b"IHDR" {
            return Err("corrupt PNG: the first chunk is not IHDR".into());
        }
        if PNG_PIXEL_CHUNKS.contains(&kind) || kind[0].is_ascii_uppercase() {
            // Unknown critical chunks stay, so that the decoder refuses them.
            kept.extend_from_slice(chunk);
        } else {
            dropped = true;
        }
        if kind == b"IEND" {
            return Ok(if dropped { Cow::Owned(kept) } else { Cow::Borrowed(bytes) });
        }
        rest = after;
    }
}

/// A PNG chunk's type, its whole bytes (length, type, data, CRC), and what follows it.
type SplitChunk<'a> = (&'a [u8; 4], &'a [u8], &'a [u8]);

/// Splits the next chunk off `rest`. `None` at the end of the data; an error for a cut or
/// corrupt chunk.
fn next_png_chunk(rest: &[u8]) -> Result<Option<SplitChunk<'_>>, String> {
    if rest.is_empty() {
        return Ok(None);
    }
    let header = rest.get(..8).ok_or("truncated PNG: the file ends inside a chunk header")?;
    let length = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let kind: &[u8; 4] = header[4..8].try_into().expect("4 bytes");
    if !kind.iter().all(u8::is_ascii_alphabetic) {
        return Err(format!("corrupt PNG: chunk type {kind:?} is not four letters"));
    }
    let name = String::from_utf8_lossy(kind);
    let total = length.checked_add(12).filter(|&total| total <= rest.len()).ok_or_else(|| {
        format!("truncated PNG: the {name} chunk needs {length} bytes of data but the file ends first")
    })?;
    let (chunk, after) = rest.split_at(total);
    let stored = u32::from_be_bytes(chunk[total - 4..].try_into().expect("4 bytes"));
    if crc32(&chunk[4..total - 4]) != stored {
        return Err(format!("corrupt PNG: the CRC of the {name} chunk does not match its bytes"));
    }
    Ok(Some((kind, chunk, after)))
}

/// The CRC-32 (ISO-HDLC, as PNG uses it) of `bytes`.
fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (n, entry) in table.iter_mut().enumerate() {
            *entry = (0..8).fold(n as u32, |c, _| if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 });
        }
        table
    });
    !bytes.iter().fold(!0u32, |c, &b| table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8))
}

/// Walks a JPEG's markers: every segment must be whole, there must be a scan, and the
/// last scan's entropy-coded data must end at the EOI marker (bytes after EOI are allowed,
/// as cameras append data there).
fn check_jpeg(bytes: &[u8]) -> Result<(), String> {
    const TRUNCATED: &str = "truncated JPEG: the file ends before its end-of-image marker";
    let mut at = 2; // after SOI (checked by the format guess)
    let mut scans = 0;
    loop {
        // A marker: 0xFF, optional 0xFF fill bytes, then its code. Stray bytes before a
        // marker are skipped, as libjpeg does.
        at += bytes.get(at..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)).ok_or(TRUNCATED)?;
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let code = *bytes.get(at).ok_or(TRUNCATED)?;
        at += 1;
        match code {
            0xD9 if scans > 0 => return Ok(()),
            0xD9 => return Err("corrupt JPEG: it ends before any image data (no scan)".into()),
            // Markers without a length: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let length = bytes.get(at..at + 2).ok_or(TRUNCATED)?;
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if length < 2 || at + length > bytes.len() {
            return Err(TRUNCATED.into());
        }
        at += length;
        if code == 0xDA {
            scans += 1;
            at = end_of_entropy_data(bytes, at).ok_or(TRUNCATED)?;
        }
    }
}

/// Where the entropy-coded data starting at `at` ends: the first marker that is neither
/// a stuffed 0xFF00 nor a restart marker. `None` if the data runs to the end of the file.
fn end_of_entropy_data(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        match bytes.get(at + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
            _ => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient() -> image::RgbImage {
        image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128]))
    }

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        gradient().write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        bytes
    }

    /// A PNG chunk with its length and CRC.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc32(&out[4..]).to_be_bytes());
        out
    }

    fn error(bytes: &[u8]) -> String {
        decode_hwc(bytes, "x").unwrap_err().to_string()
    }

    #[test]
    fn endless_or_oversize_files_are_refused_unread() {
        // A device is refused before reading, whatever its size.
        let err = read_capped(std::path::Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "/dev/zero: is a character device, not a regular file: refusing to read it");
        // A regular file over the cap is refused after reading at most the cap and a byte.
        let big = std::env::temp_dir().join(format!("infer-big-image-{}", std::process::id()));
        std::fs::write(&big, vec![0u8; 2 << 10]).unwrap();
        let err = read_capped(&big, 1 << 10).unwrap_err();
        std::fs::remove_file(&big).unwrap();
        assert!(matches!(err, InferError::TooLarge(_)), "{err}");
        assert!(err.to_string().contains(": the file is larger than the limit of 1024 bytes"), "{err}");
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn ancillary_png_chunks_are_dropped_before_decoding() {
        let png = encoded(ImageFormat::Png);
        // A zTXt chunk whose "compressed" text is not even zlib: the decoder never sees it.
        let mut with_text = png[..33].to_vec(); // signature + IHDR
        with_text.extend(chunk(b"zTXt", b"comment\0\0\xde\xad\xbe\xef"));
        with_text.extend_from_slice(&png[33..]);
        let cleaned = png_pixel_chunks(&with_text).unwrap();
        assert_eq!(cleaned.as_ref(), png.as_slice());
        assert!(matches!(png_pixel_chunks(&png).unwrap(), Cow::Borrowed(_)));
        assert_eq!(decode_hwc(&with_text, "x").unwrap(), decode_hwc(&png, "x").unwrap());
    }

    #[test]
    fn truncated_or_corrupt_pngs_are_errors() {
        let png = encoded(ImageFormat::Png);
        assert!(error(&png[..png.len() - 12]).contains("ends before its IEND"), "{}", error(&png[..png.len() - 12]));
        assert!(error(&png[..png.len() / 2]).contains("truncated PNG"), "{}", error(&png[..png.len() / 2]));
        let mut flipped = png.clone();
        flipped[40] ^= 1; // inside IDAT
        assert!(error(&flipped).contains("CRC"), "{}", error(&flipped));
    }

    #[test]
    fn truncated_jpegs_are_errors() {
        let jpeg = encoded(ImageFormat::Jpeg);
        assert_eq!(decode_hwc(&jpeg, "x").unwrap().len(), IMAGE_LEN);
        let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let length = usize::from(u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]));
        let after_scan_header = &jpeg[..sos + 2 + length];
        for cut in [after_scan_header, &jpeg[..jpeg.len() / 2], &jpeg[..jpeg.len() - 2], &jpeg[..sos]] {
            assert!(error(cut).contains("truncated JPEG"), "cut at {}: {}", cut.len(), error(cut));
        }
        // Bytes after the end-of-image marker (camera trailers) are fine.
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"trailing data");
        assert_eq!(decode_hwc(&trailer, "x").unwrap(), decode_hwc(&jpeg, "x").unwrap());
    }
}
