//! The evaluation input contract: central 24×24 crop of the 32×32 image, then per-image
//! standardisation `(x − mean) / max(stddev, 1/√N)` over the image's own N = 1,728 values
//! (TensorFlow's `per_image_standardization`). Output is planar CHW `f32`, `[3, 24, 24]`.
//!
//! ```
//! use model_format::preprocess::{preprocess, INPUT_LEN};
//! let image = [128u8; 3 * 32 * 32]; // planar R, G, B as in a CIFAR-10 record
//! let mut input = [0f32; INPUT_LEN];
//! preprocess(&image, &mut input);
//! assert!(input.iter().all(|&x| x == 0.0)); // a flat image standardises to zeros
//! ```

pub use crate::arch::{IMAGE_LEN, IMAGE_SIZE, INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE};

/// Offset of the central crop on each axis: (32 − 24) / 2 = 4.
pub const CROP_OFFSET: usize = (IMAGE_SIZE - INPUT_SIZE) / 2;

/// Copies the `INPUT_SIZE`² window at (`top`, `left`) of a planar 32×32 image into `out`
/// as `f32` (0–255 scale), planar CHW. With `flip`, each row is mirrored left–right.
///
/// Panics if the slices are not `IMAGE_LEN` and `INPUT_LEN` long or the window leaves the image.
pub fn crop(image: &[u8], top: usize, left: usize, flip: bool, out: &mut [f32]) {
    assert_eq!(image.len(), IMAGE_LEN, "crop: image must be planar 3×32×32 bytes");
    assert_eq!(out.len(), INPUT_LEN, "crop: output must hold 3×24×24 values");
    assert!(top + INPUT_SIZE <= IMAGE_SIZE && left + INPUT_SIZE <= IMAGE_SIZE, "crop: window outside the image");
    for c in 0..INPUT_CHANNELS {
        for y in 0..INPUT_SIZE {
            let src = &image[c * IMAGE_SIZE * IMAGE_SIZE + (top + y) * IMAGE_SIZE + left..][..INPUT_SIZE];
            let dst = &mut out[(c * INPUT_SIZE + y) * INPUT_SIZE..][..INPUT_SIZE];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = f32::from(src[if flip { INPUT_SIZE - 1 - x } else { x }]);
            }
        }
    }
}

/// Per-image standardisation in place: `(x − mean) / max(stddev, 1/√N)` with the
/// population standard deviation. Sums run in `f64` so that the result does not depend
/// on summation order at `f32` precision.
pub fn standardize(values: &mut [f32]) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let scale = var.sqrt().max(1.0 / n.sqrt());
    for v in values.iter_mut() {
        *v = ((f64::from(*v) - mean) / scale) as f32;
    }
}

/// The full evaluation preprocessing of one planar 32×32 RGB image (a CIFAR-10 record's
/// pixels): central crop, then standardisation, into `out` (`INPUT_LEN` values, CHW).
pub fn preprocess(image: &[u8], out: &mut [f32]) {
    crop(image, CROP_OFFSET, CROP_OFFSET, false, out);
    standardize(out);
}

/// Converts an interleaved HWC 32×32 RGB image (as decoders and the HTTP API give it)
/// to the planar CHW layout of CIFAR-10 records.
pub fn hwc_to_planar(hwc: &[u8], planar: &mut [u8]) {
    assert_eq!(hwc.len(), IMAGE_LEN, "hwc_to_planar: image must be 32×32×3 bytes");
    assert_eq!(planar.len(), IMAGE_LEN, "hwc_to_planar: output must hold 3×32×32 bytes");
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    for (i, px) in hwc.chunks_exact(INPUT_CHANNELS).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            planar[c * plane + i] = v;
        }
    }
}

/// The full evaluation preprocessing of one interleaved HWC 32×32 RGB image (as decoders,
/// the HTTP API and the C and Python interfaces give it), into `out` (`INPUT_LEN` values, CHW).
pub fn preprocess_hwc(hwc: &[u8], out: &mut [f32]) {
    let mut planar = [0u8; IMAGE_LEN];
    hwc_to_planar(hwc, &mut planar);
    preprocess(&planar, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp_image() -> Vec<u8> {
        (0..IMAGE_LEN).map(|i| (i * 7 % 256) as u8).collect()
    }

    #[test]
    fn central_crop_takes_the_middle_window() {
        let image = ramp_image();
        let mut out = vec![0f32; INPUT_LEN];
        crop(&image, CROP_OFFSET, CROP_OFFSET, false, &mut out);
        // channel 1, row 0, column 0 of the crop is pixel (4, 4) of the green plane
        assert_eq!(out[INPUT_SIZE * INPUT_SIZE], f32::from(image[1024 + 4 * 32 + 4]));
        crop(&image, 0, 8, true, &mut out);
        // flipped: column 0 of the crop is column 8 + 23 of the image
        assert_eq!(out[0], f32::from(image[31]));
    }

    #[test]
    fn standardized_values_have_zero_mean_and_unit_variance() {
        let image = ramp_image();
        let mut out = vec![0f32; INPUT_LEN];
        preprocess(&image, &mut out);
        let n = out.len() as f64;
        let mean: f64 = out.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var: f64 = out.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-6, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-5, "variance {var}");
    }

    #[test]
    fn near_flat_images_use_the_stddev_floor() {
        let mut values = vec![10f32; INPUT_LEN];
        values[0] = 10.001;
        standardize(&mut values);
        // stddev ≪ 1/√1728, so the floor divides: the outlier moves by at most ~0.001·√1728
        assert!(values[0] < 0.05 && values[0] > 0.0);
    }

    #[test]
    fn hwc_becomes_planar() {
        let hwc: Vec<u8> = (0..IMAGE_LEN).map(|i| (i % 3) as u8 * 100).collect();
        let mut planar = vec![0u8; IMAGE_LEN];
        hwc_to_planar(&hwc, &mut planar);
        assert!(planar[..1024].iter().all(|&v| v == 0));
        assert!(planar[1024..2048].iter().all(|&v| v == 100));
        assert!(planar[2048..].iter().all(|&v| v == 200));
    }
}
