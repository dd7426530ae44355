//! Histograms with TensorFlow's default exponential buckets
//! (`tensorflow/core/lib/histogram/histogram.cc`), so TensorBoard draws them exactly as it draws
//! TensorFlow's own `tf.summary.histogram` output.

use std::sync::OnceLock;

use super::proto::HistogramProto;

/// The default bucket upper limits: `-DBL_MAX, …, -1e-12, 0, 1e-12, 1.1e-12, …, DBL_MAX`, each
/// positive limit 1.1 times the last, from 1e-12 up to just under 1e20. Built by repeated
/// multiplication, as TensorFlow does, so the limits are the same bits as TensorFlow's.
pub fn default_bucket_limits() -> &'static [f64] {
    static LIMITS: OnceLock<Vec<f64>> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut positive = Vec::new();
        let mut v = 1.0e-12;
        while v < 1.0e20 {
            positive.push(v);
            v *= 1.1;
        }
        positive.push(f64::MAX);
        let negative = positive.iter().rev().map(|v| -v);
        negative.chain([0.0]).chain(positive.iter().copied()).collect()
    })
}

/// Summarises `values` the way TensorFlow's `Histogram::Add` + `EncodeToProto(…, false)` do:
/// min, max, count, sum, sum of squares (all in f64), and counts per default bucket, where each
/// run of empty buckets is collapsed into one entry whose limit is the run's last limit.
///
/// Returns `None` if any value is NaN or infinite (TensorFlow's histogram op rejects them too:
/// they have no bucket and would poison the sums).
pub fn histogram(values: &[f32]) -> Option<HistogramProto> {
    let limits = default_bucket_limits();
    let mut counts = vec![0.0f64; limits.len()];
    // An empty histogram keeps TensorFlow's `Clear()` state: min above max.
    let mut proto = HistogramProto { min: f64::MAX, max: -f64::MAX, ..HistogramProto::default() };
    for &value in values {
        if !value.is_finite() {
            return None;
        }
        let value = f64::from(value);
        // The first limit strictly above the value (C++ `std::upper_bound`). Finite f32 values
        // are all below DBL_MAX, so the index is always in range.
        counts[limits.partition_point(|&limit| limit <= value)] += 1.0;
        proto.min = proto.min.min(value);
        proto.max = proto.max.max(value);
        proto.num += 1.0;
        proto.sum += value;
        proto.sum_squares += value * value;
    }
    (proto.bucket_limit, proto.bucket) = collapse_empty_runs(limits, &counts);
    Some(proto)
}

/// Drops empty buckets, keeping one entry per run of them (with the run's last limit) so that
/// each non-empty bucket's lower edge is still the previous entry's limit.
fn collapse_empty_runs(limits: &[f64], counts: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut kept_limits = Vec::new();
    let mut kept_counts = Vec::new();
    let mut i = 0;
    while i < counts.len() {
        let mut end = limits[i];
        let count = counts[i];
        i += 1;
        if count <= 0.0 {
            while i < counts.len() && counts[i] <= 0.0 {
                end = limits[i];
                i += 1;
            }
        }
        kept_limits.push(end);
        kept_counts.push(count);
    }
    (kept_limits, kept_counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_symmetric_sorted_and_span_tensorflows_range() {
        let limits = default_bucket_limits();
        // 774 positive limits below 1e20 (1e-12 * 1.1^k), DBL_MAX, their negatives and 0.
        assert_eq!(limits.len(), 2 * 775 + 1);
        assert!(limits.windows(2).all(|pair| pair[0] < pair[1]));
        let middle = limits.len() / 2;
        assert_eq!(limits[middle], 0.0);
        assert_eq!(limits[middle + 1], 1.0e-12);
        assert_eq!(limits[0], -f64::MAX);
        assert_eq!(*limits.last().unwrap(), f64::MAX);
        assert!(limits[limits.len() - 2] < 1.0e20 && limits[limits.len() - 2] * 1.1 >= 1.0e20);
        for k in 1..middle {
            assert_eq!(limits[middle - k], -limits[middle + k]);
        }
    }

    #[test]
    fn statistics_and_buckets_of_a_small_set() {
        let proto = histogram(&[-2.0, 0.0, 0.5, 0.5, 3.0]).unwrap();
        assert_eq!((proto.min, proto.max, proto.num), (-2.0, 3.0, 5.0));
        assert_eq!(proto.sum, 2.0);
        assert_eq!(proto.sum_squares, 4.0 + 0.25 + 0.25 + 9.0);
        assert_eq!(proto.bucket.iter().sum::<f64>(), 5.0);
        assert_eq!(proto.bucket_limit.len(), proto.bucket.len());

        // Every value lies in its bucket: previous limit <= value < this limit.
        let limits = &proto.bucket_limit;
        let nonempty: Vec<(usize, f64)> =
            (0..limits.len()).filter(|&i| proto.bucket[i] > 0.0).map(|i| (i, proto.bucket[i])).collect();
        assert_eq!(nonempty.iter().map(|p| p.1).collect::<Vec<_>>(), vec![1.0, 1.0, 2.0, 1.0]);
        for (&(i, _), value) in nonempty.iter().zip([-2.0, 0.0, 0.5, 3.0]) {
            assert!(limits[i - 1] <= value && value < limits[i], "{value} not in bucket {i}");
            // A non-empty bucket is exactly one default bucket: its lower edge survives collapsing.
            let defaults = default_bucket_limits();
            let upper = defaults.iter().position(|&limit| limit == limits[i]).unwrap();
            assert_eq!(defaults[upper - 1], limits[i - 1]);
        }
        // Runs of empty buckets collapse: 4 non-empty buckets need at most 5 empty entries.
        assert!(limits.len() <= 9, "{} entries", limits.len());
        assert_eq!(*limits.last().unwrap(), f64::MAX);
        assert_eq!(*proto.bucket.last().unwrap(), 0.0);
    }

    #[test]
    fn empty_input_gives_one_empty_bucket() {
        let proto = histogram(&[]).unwrap();
        assert_eq!(proto.num, 0.0);
        assert!(proto.min > proto.max);
        assert_eq!(proto.bucket_limit, vec![f64::MAX]);
        assert_eq!(proto.bucket, vec![0.0]);
    }

    #[test]
    fn non_finite_values_are_rejected() {
        assert!(histogram(&[1.0, f32::NAN]).is_none());
        assert!(histogram(&[f32::INFINITY]).is_none());
        assert!(histogram(&[f32::NEG_INFINITY, 0.0]).is_none());
    }
}
