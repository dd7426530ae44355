//! The tutorial's distortions as batched tensor ops on the training device
//! (`--augment-on device`): the training set is held there once as bytes (`[N,3,32,32]`
//! `uint8`, 150 MB for CIFAR-10), and a step's batch is made there from the step's draws,
//! so that no CPU thread has to keep up with the devices and nothing but the draws (a few
//! numbers per example) crosses to them.
//!
//! The draws are the host pipeline's, from the same seeded streams in the same order
//! ([`BatchMaker::draws`]): example `i` of batch `s` is the same record with the same crop,
//! flip, brightness and contrast either way, so a batch depends only on `(seed, s)` whichever
//! pipeline makes it, and the two give the same images up to float rounding (the statistics
//! are summed in another order; both sum in f64).

use model_format::arch::{IMAGE_SIZE, INPUT_CHANNELS, INPUT_SIZE};
use model_format::cifar::Records;
use tch::{Device, Kind, Tensor};

use crate::error::TrainError;
use crate::inputs::{BatchMaker, Draws};
use crate::towers::to_device;

/// Where the training inputs are distorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentOn {
    /// On input threads of the host ([`crate::inputs::InputQueue`]).
    Host,
    /// On the first tower's device, as batched tensor ops ([`DeviceInputs`]).
    Device,
}

impl AugmentOn {
    /// The default for a run on `devices`: the device when one is CUDA, else the host (on a
    /// CPU the input threads run beside the step, where device ops would run in it).
    pub fn default_for(devices: &[Device]) -> AugmentOn {
        if devices.iter().any(|d| d.is_cuda()) {
            AugmentOn::Device
        } else {
            AugmentOn::Host
        }
    }

    /// Parses `--augment-on`.
    ///
    /// ```
    /// use train::augment::AugmentOn;
    /// assert_eq!(AugmentOn::parse("device").unwrap(), AugmentOn::Device);
    /// assert!(AugmentOn::parse("gpu").unwrap_err().to_string().contains("--augment-on"));
    /// ```
    pub fn parse(text: &str) -> Result<AugmentOn, TrainError> {
        match text {
            "host" => Ok(AugmentOn::Host),
            "device" => Ok(AugmentOn::Device),
            other => Err(TrainError::Config(format!("--augment-on `{other}`: use `host` or `device`"))),
        }
    }
}

/// The training set on a device, and the draws that make its batches.
pub struct DeviceInputs {
    images: Tensor,
    labels: Tensor,
    maker: BatchMaker,
    device: Device,
}

impl DeviceInputs {
    /// `records` copied to `device`; batches of `batch_size` examples drawn with `seed`.
    pub fn new(
        records: std::sync::Arc<Records>,
        seed: u64,
        batch_size: usize,
        device: Device,
    ) -> Result<DeviceInputs, TrainError> {
        DeviceInputs::slice(records, seed, (batch_size, (batch_size, 0)), device)
    }

    /// [`DeviceInputs::new`] for one process's share of a data-parallel step, as
    /// `(batch_size, (step_examples, first))` (see [`BatchMaker::slice`]).
    pub fn slice(
        records: std::sync::Arc<Records>,
        seed: u64,
        (batch_size, slice): (usize, (usize, usize)),
        device: Device,
    ) -> Result<DeviceInputs, TrainError> {
        let n = records.len();
        let mut bytes = Vec::with_capacity(n * INPUT_CHANNELS * IMAGE_SIZE * IMAGE_SIZE);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            bytes.extend_from_slice(records.image(i));
            labels.push(i64::from(records.label(i)));
        }
        let side = IMAGE_SIZE as i64;
        let images = Tensor::f_from_slice(&bytes)?.f_view([n as i64, INPUT_CHANNELS as i64, side, side])?;
        Ok(DeviceInputs {
            images: images.f_to_device(device)?,
            labels: Tensor::f_from_slice(&labels)?.f_to_device(device)?,
            maker: BatchMaker::slice(records, seed, batch_size, slice),
            device,
        })
    }

    /// Batch `step`: images `[B,3,24,24]` and labels `[B]` on the device.
    pub fn batch(&mut self, step: u64) -> Result<(Tensor, Tensor), TrainError> {
        let draws = self.maker.draws(step);
        distort(&self.images, &self.labels, &draws, self.device)
    }
}

/// The distorted, standardised batch of `draws` from `images` `[N,3,32,32]` (uint8) and
/// `labels` `[N]` on `device`: the host pipeline's [`crate::distort::Distortion::apply`]
/// as a dozen batched ops.
pub fn distort(
    images: &Tensor,
    labels: &Tensor,
    draws: &Draws,
    device: Device,
) -> Result<(Tensor, Tensor), TrainError> {
    // The draws go to the device without the host waiting for it (a copy from pageable
    // memory is staged by the driver before the call returns).
    let on = |values: &[i64]| -> Result<Tensor, TrainError> { to_device(&Tensor::f_from_slice(values)?, device) };
    let floats = |values: &[f32]| -> Result<Tensor, TrainError> {
        Ok(to_device(&Tensor::f_from_slice(values)?, device)?.f_view([-1, 1, 1, 1])?)
    };
    let b = draws.records.len() as i64;
    let (channels, side, out) = (INPUT_CHANNELS as i64, IMAGE_SIZE as i64, INPUT_SIZE as i64);
    let index = on(&draws.records)?;
    let picked = images.f_index_select(0, &index)?;
    // Rows top..top+24; columns left..left+24, reversed when flipped.
    let steps = Tensor::f_arange(out, (Kind::Int64, device))?;
    let rows = on(&draws.top)?.f_view([-1, 1])?.f_add(&steps)?;
    let flips = on(&draws.flip)?.f_view([-1, 1])?;
    let reversed = steps.f_flip([0])?;
    let columns = on(&draws.left)?.f_view([-1, 1])?.f_add(&steps.f_where_self(&flips.f_eq(0)?, &reversed)?)?;
    let rows = rows.f_view([b, 1, out, 1])?.f_expand([b, channels, out, side], false)?;
    let columns = columns.f_view([b, 1, 1, out])?.f_expand([b, channels, out, out], false)?;
    let crops = picked.f_gather(2, &rows, false)?.f_gather(3, &columns, false)?.f_to_kind(Kind::Float)?;
    // Brightness, then contrast around each channel's mean (of the brightened values, summed
    // in f64 and rounded to f32, as the host does).
    let brightened = crops.f_add(&floats(&draws.brightness)?)?;
    let means = brightened.f_to_kind(Kind::Double)?.f_mean_dim([2i64, 3].as_slice(), true, Kind::Double)?;
    let means = means.f_to_kind(Kind::Float)?;
    let contrasted = brightened.f_sub(&means)?.f_mul(&floats(&draws.contrast)?)?.f_add(&means)?;
    Ok((standardize(&contrasted)?, labels.f_index_select(0, &index)?))
}

/// Per-image standardisation `(x − mean) / max(std, 1/√n)` over each image's values,
/// computed in f64 like [`model_format::preprocess::standardize`].
fn standardize(images: &Tensor) -> Result<Tensor, TrainError> {
    let n = images.size()[1..].iter().product::<i64>() as f64;
    let dims = [1i64, 2, 3];
    let x = images.f_to_kind(Kind::Double)?;
    let mean = x.f_mean_dim(dims.as_slice(), true, Kind::Double)?;
    let centred = x.f_sub(&mean)?;
    let var = centred.f_square()?.f_mean_dim(dims.as_slice(), true, Kind::Double)?;
    let scale = var.f_sqrt()?.f_clamp_min(1.0 / n.sqrt())?;
    Ok(centred.f_div(&scale)?.f_to_kind(Kind::Float)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::arch::IMAGE_LEN;
    use std::sync::Arc;

    fn records(n: usize) -> Arc<Records> {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|r| {
                std::iter::once((r % 10) as u8)
                    .chain((0..IMAGE_LEN).map(move |i| ((i * 7 + r * 31 + i / 97) % 256) as u8))
            })
            .collect();
        Arc::new(Records::from_bytes(bytes, "synthetic").unwrap())
    }

    #[test]
    fn device_batches_are_the_host_pipeline_s_within_float_rounding() {
        let data = records(40);
        let mut host = BatchMaker::new(Arc::clone(&data), 5, 16);
        let mut device = DeviceInputs::new(Arc::clone(&data), 5, 16, Device::Cpu).unwrap();
        // steps across an epoch boundary (40 examples, 16 a batch)
        for step in [0, 1, 2, 3, 7] {
            let expected = host.make(step);
            let (images, labels) = device.batch(step).unwrap();
            assert_eq!(images.size(), [16, 3, 24, 24]);
            assert_eq!(Vec::<i64>::try_from(&labels).unwrap(), expected.labels, "step {step}");
            let got = Vec::<f32>::try_from(&images.flatten(0, -1)).unwrap();
            let worst = got.iter().zip(&expected.images).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5, "step {step}: largest difference {worst}");
        }
    }

    #[test]
    fn flips_and_crops_reach_the_device_batch() {
        // Two draws apart only in the flip give mirrored images.
        let data = records(4);
        let images = {
            let bytes: Vec<u8> = (0..4).flat_map(|i| data.image(i).to_vec()).collect();
            Tensor::from_slice(&bytes).view([4, 3, 32, 32])
        };
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3]);
        let draws = |flip| Draws {
            records: vec![2],
            top: vec![3],
            left: vec![5],
            flip: vec![flip],
            brightness: vec![0.0],
            contrast: vec![1.0],
        };
        let (plain, _) = distort(&images, &labels, &draws(0), Device::Cpu).unwrap();
        let (mirrored, label) = distort(&images, &labels, &draws(1), Device::Cpu).unwrap();
        assert_eq!(Vec::<i64>::try_from(&label).unwrap(), [2]);
        let (a, b) = (
            Vec::<f32>::try_from(&plain.flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(&mirrored.flip([3]).flatten(0, -1)).unwrap(),
        );
        assert_eq!(a, b);
        let mut expected = vec![0f32; 3 * 24 * 24];
        crate::distort::Distortion { top: 3, left: 5, flip: false, brightness: 0.0, contrast: 1.0 }
            .apply(data.image(2), &mut expected);
        for (x, y) in a.iter().zip(&expected) {
            assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
        }
    }
}
