//! TFRecord framing, the container format of TensorBoard event files.
//!
//! Each record is: length as u64 little-endian, masked CRC32C of those 8 bytes, the data, masked
//! CRC32C of the data. Readers (TensorBoard's `PyRecordReader_New`, TensorFlow's `RecordReader`)
//! check both checksums and stop reading the file at the first mismatch.

use std::io::{self, Write};

/// Added after rotating, so that a CRC stored next to data that itself holds CRCs is not
/// mistaken for one (TensorFlow's `crc32c::Mask`).
const MASK_DELTA: u32 = 0xa282_ead8;

/// CRC32C (Castagnoli) of `data`, rotated right by 15 bits plus `MASK_DELTA`, as TFRecord
/// stores it.
///
/// ```
/// // RFC 3720's check value for "123456789" is 0xe3069283.
/// assert_eq!(train::summary::masked_crc32c(b"123456789"), 0xc78a_b0e5);
/// ```
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Writes `data` as one TFRecord.
pub fn write_record(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let length = (data.len() as u64).to_le_bytes();
    out.write_all(&length)?;
    out.write_all(&masked_crc32c(&length).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// Splits a whole file into its records, checking both CRCs of each.
#[cfg(test)]
pub(crate) fn read_records(mut bytes: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> io::Result<&'a [u8]> {
        if bytes.len() < n {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("truncated {what}")));
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    fn check(data: &[u8], stored: &[u8], what: &str) -> io::Result<()> {
        let stored = u32::from_le_bytes(stored.try_into().expect("4 bytes"));
        if masked_crc32c(data) != stored {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad {what} CRC")));
        }
        Ok(())
    }
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let length = take(&mut bytes, 8, "length")?;
        check(length, take(&mut bytes, 4, "length CRC")?, "length")?;
        let length = u64::from_le_bytes(length.try_into().expect("8 bytes")) as usize;
        let data = take(&mut bytes, length, "data")?;
        check(data, take(&mut bytes, 4, "data CRC")?, "data")?;
        records.push(data.to_vec());
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values come from independent sources: RFC 3720 (iSCSI) CRC32C test vectors, and
    // tensorboard 2.21's Python `masked_crc32c` / `RecordWriter`.

    #[test]
    fn crc32c_matches_rfc3720_vectors() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn masked_crc32c_matches_tensorboard() {
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc32c(&[0u8; 32]), 0x0fd7_fffa);
        assert_eq!(masked_crc32c(&0u64.to_le_bytes()), 0x0798_0329);
        assert_eq!(masked_crc32c(b"hello"), 0x191c_1fbb);
    }

    #[test]
    fn record_bytes_match_tensorboard_record_writer() {
        let mut out = Vec::new();
        write_record(&mut out, b"hello").unwrap();
        let expected: [u8; 21] = [
            0x05, 0, 0, 0, 0, 0, 0, 0, // length
            0xea, 0xb2, 0x04, 0x3e, // masked CRC of length
            b'h', b'e', b'l', b'l', b'o', // data
            0xbb, 0x1f, 0x1c, 0x19, // masked CRC of data
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn records_round_trip_and_corruption_is_caught() {
        let mut out = Vec::new();
        write_record(&mut out, b"").unwrap();
        write_record(&mut out, b"second record").unwrap();
        let records = read_records(&out).unwrap();
        assert_eq!(records, vec![b"".to_vec(), b"second record".to_vec()]);

        let last = out.len() - 6;
        out[last] ^= 1;
        let err = read_records(&out).unwrap_err();
        assert!(err.to_string().contains("data CRC"), "{err}");
    }
}
