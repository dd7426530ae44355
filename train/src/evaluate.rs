//! Precision@1 on a labelled set with the evaluation preprocessing
//! ([`model_format::preprocess::preprocess`]: central crop, standardisation).

use model_format::arch::{INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE};
use model_format::cifar::Records;
use model_format::preprocess::preprocess;
use tch::{Device, Kind, Tensor};

use crate::error::TrainError;
use crate::model::Net;

/// Images evaluated per forward pass.
const EVAL_BATCH: i64 = 1000;

/// A labelled set, preprocessed once, kept on the CPU.
pub struct EvalSet {
    inputs: Tensor,
    labels: Tensor,
}

impl EvalSet {
    /// Preprocesses every record.
    pub fn new(records: &Records) -> EvalSet {
        let n = records.len();
        let mut values = vec![0f32; n * INPUT_LEN];
        for (i, out) in values.chunks_exact_mut(INPUT_LEN).enumerate() {
            preprocess(records.image(i), out);
        }
        let labels: Vec<i64> = (0..n).map(|i| i64::from(records.label(i))).collect();
        EvalSet {
            inputs: Tensor::from_slice(&values).view([
                n as i64,
                INPUT_CHANNELS as i64,
                INPUT_SIZE as i64,
                INPUT_SIZE as i64,
            ]),
            labels: Tensor::from_slice(&labels),
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fraction of examples whose top logit is the label.
    pub fn precision_at_1(&self, net: &Net) -> Result<f64, TrainError> {
        self.precision_at_1_reporting(net, |_, _| {})
    }

    /// Like [`EvalSet::precision_at_1`], calling `report(done, total)` after each batch.
    pub fn precision_at_1_reporting(&self, net: &Net, mut report: impl FnMut(usize, usize)) -> Result<f64, TrainError> {
        let n = self.len() as i64;
        let device = net.device();
        let mut correct = 0i64;
        tch::no_grad(|| -> Result<(), TrainError> {
            let mut start = 0;
            while start < n {
                let len = EVAL_BATCH.min(n - start);
                let xs = self.inputs.f_narrow(0, start, len)?.f_to_device(device)?;
                let ys = self.labels.f_narrow(0, start, len)?.f_to_device(device)?;
                let predicted = net.forward(&xs).f_argmax(-1, false)?;
                correct += predicted.f_eq_tensor(&ys)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
                start += len;
                report(start as usize, n as usize);
            }
            Ok(())
        })?;
        Ok(correct as f64 / n.max(1) as f64)
    }

    /// Precision@1 of a set of weights (flat, `TENSORS` order) on `device`.
    pub fn precision_of(&self, values: &[Vec<f32>], device: Device) -> Result<f64, TrainError> {
        self.precision_at_1(&Net::from_values(values, device)?)
    }

    /// Like [`EvalSet::precision_of`], showing progress on stderr: one line redrawn in place on
    /// a terminal, one plain line per batch in a log.
    pub fn precision_of_showing_progress(&self, values: &[Vec<f32>], device: Device) -> Result<f64, TrainError> {
        use std::io::{IsTerminal, Write};
        let terminal = std::io::stderr().is_terminal();
        let precision = self.precision_at_1_reporting(&Net::from_values(values, device)?, |done, total| {
            let line = format!("measuring precision@1: {done}/{total} images ({}%)", 100 * done / total.max(1));
            let mut err = std::io::stderr().lock();
            let _ = if terminal { write!(err, "\r{line}") } else { writeln!(err, "{line}") };
        })?;
        if terminal {
            eprintln!();
        }
        Ok(precision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::arch::{IMAGE_LEN, SOFTMAX_BIAS, SOFTMAX_WEIGHT};

    #[test]
    fn precision_counts_top_logit_matches() {
        // Zero softmax weights and a bias favouring class 3: every prediction is 3, so
        // precision is the fraction of records labelled 3.
        let labels = [3u8, 1, 3, 3, 0];
        let bytes: Vec<u8> =
            labels.iter().flat_map(|&l| std::iter::once(l).chain((0..IMAGE_LEN).map(|i| (i % 200) as u8))).collect();
        let set = EvalSet::new(&Records::from_bytes(bytes, "mem").unwrap());
        let mut values = model_format::init::initial_tensors(0);
        values[SOFTMAX_WEIGHT].iter_mut().for_each(|v| *v = 0.0);
        values[SOFTMAX_BIAS][3] = 1.0;
        assert_eq!(set.len(), 5);
        assert_eq!(set.precision_of(&values, Device::Cpu).unwrap(), 0.6);
        let mut reports = Vec::new();
        let net = Net::from_values(&values, Device::Cpu).unwrap();
        let precision = set.precision_at_1_reporting(&net, |done, total| reports.push((done, total))).unwrap();
        assert_eq!(precision, 0.6);
        assert_eq!(reports, [(5, 5)], "one report per batch, the last one complete");
    }
}
