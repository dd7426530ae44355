//! The tutorial's training distortions (`distorted_inputs`): a random 24×24 crop of the
//! 32×32 image, a random left–right flip, a random brightness shift, a random contrast
//! change around each channel's mean, then per-image standardisation.

use model_format::arch::{IMAGE_SIZE, INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE};
use model_format::preprocess::{crop, standardize};
use rand::Rng;

/// Largest brightness shift, on the 0–255 scale (`max_delta=63`).
pub const MAX_BRIGHTNESS_DELTA: f32 = 63.0;
/// Range of the contrast factor (`lower=0.2, upper=1.8`).
pub const CONTRAST_RANGE: (f32, f32) = (0.2, 1.8);

/// One image's random choices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distortion {
    pub top: usize,
    pub left: usize,
    pub flip: bool,
    /// Added to every value (0–255 scale).
    pub brightness: f32,
    /// Each channel's deviation from its mean is multiplied by this.
    pub contrast: f32,
}

impl Distortion {
    /// Draws the choices as TensorFlow does: crop offsets uniform in `0..=8`, flip with
    /// probability ½, brightness uniform in `[−63, 63)`, contrast uniform in `[0.2, 1.8)`.
    pub fn draw(rng: &mut impl Rng) -> Distortion {
        let slack = IMAGE_SIZE - INPUT_SIZE;
        Distortion {
            top: rng.gen_range(0..=slack),
            left: rng.gen_range(0..=slack),
            flip: rng.gen_bool(0.5),
            brightness: rng.gen_range(-MAX_BRIGHTNESS_DELTA..MAX_BRIGHTNESS_DELTA),
            contrast: rng.gen_range(CONTRAST_RANGE.0..CONTRAST_RANGE.1),
        }
    }

    /// Writes the distorted, standardised input for a planar 32×32 `image` into `out`
    /// (`INPUT_LEN` values, CHW).
    ///
    /// ```
    /// use train::distort::Distortion;
    /// let image: Vec<u8> = (0..3 * 32 * 32).map(|i| (i % 256) as u8).collect();
    /// let mut out = vec![0f32; 3 * 24 * 24];
    /// let d = Distortion { top: 0, left: 8, flip: true, brightness: 10.0, contrast: 1.5 };
    /// d.apply(&image, &mut out);
    /// let mean: f32 = out.iter().sum::<f32>() / out.len() as f32;
    /// assert!(mean.abs() < 1e-4);
    /// ```
    pub fn apply(&self, image: &[u8], out: &mut [f32]) {
        crop(image, self.top, self.left, self.flip, out);
        let plane = INPUT_SIZE * INPUT_SIZE;
        for channel in out.chunks_exact_mut(plane).take(INPUT_CHANNELS) {
            let mean = channel.iter().map(|&v| f64::from(v + self.brightness)).sum::<f64>() / plane as f64;
            let mean = mean as f32;
            for v in channel.iter_mut() {
                *v = (*v + self.brightness - mean) * self.contrast + mean;
            }
        }
        debug_assert_eq!(out.len(), INPUT_LEN);
        standardize(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeding::{stream, Purpose};

    fn image() -> Vec<u8> {
        (0..3 * 32 * 32).map(|i| ((i * 13) % 256) as u8).collect()
    }

    #[test]
    fn draws_stay_in_the_tutorials_ranges_and_cover_them() {
        let mut rng = stream(1, Purpose::Distortion, 0);
        let draws: Vec<Distortion> = (0..2000).map(|_| Distortion::draw(&mut rng)).collect();
        assert!(draws.iter().all(|d| d.top <= 8 && d.left <= 8));
        assert!(draws.iter().any(|d| d.top == 8) && draws.iter().any(|d| d.left == 0));
        assert!(draws.iter().all(|d| d.brightness.abs() <= 63.0 && (0.2..1.8).contains(&d.contrast)));
        let flips = draws.iter().filter(|d| d.flip).count();
        assert!((800..1200).contains(&flips), "{flips} flips of 2000");
    }

    #[test]
    fn identity_distortion_is_the_standardised_crop() {
        let img = image();
        let mut out = vec![0f32; INPUT_LEN];
        Distortion { top: 4, left: 4, flip: false, brightness: 0.0, contrast: 1.0 }.apply(&img, &mut out);
        let mut expected = vec![0f32; INPUT_LEN];
        model_format::preprocess::preprocess(&img, &mut expected);
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn contrast_scales_deviations_from_each_channels_mean() {
        // Channels with different means, so that a per-channel contrast change survives
        // the standardisation over the whole image.
        let img: Vec<u8> = (0..3 * 1024).map(|i| ((i * 13) % 100 + (i / 1024) * 70) as u8).collect();
        let d = Distortion { top: 1, left: 2, flip: true, brightness: 5.0, contrast: 0.5 };
        let mut crop_only = vec![0f32; INPUT_LEN];
        crop(&img, 1, 2, true, &mut crop_only);
        let mut expected = crop_only.clone();
        for channel in expected.chunks_exact_mut(576) {
            let mean = channel.iter().map(|v| v + 5.0).sum::<f32>() / 576.0;
            channel.iter_mut().for_each(|v| *v = (*v + 5.0 - mean) * 0.5 + mean);
        }
        standardize(&mut expected);
        let mut out = vec![0f32; INPUT_LEN];
        d.apply(&img, &mut out);
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // a contrast below 1 changes the result (it is not undone by standardisation,
        // because each channel keeps its own mean)
        let mut plain = vec![0f32; INPUT_LEN];
        Distortion { contrast: 1.0, ..d }.apply(&img, &mut plain);
        assert!(plain.iter().zip(&out).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}
