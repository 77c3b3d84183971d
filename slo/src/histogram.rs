//! Base-2 exponential histogram of durations in seconds, at scale 3.
//!
//! Bucket `i` covers `(2^(i/8), 2^((i+1)/8)]` seconds, the layout of an
//! OpenTelemetry `ExponentialHistogram` at scale 3, so export is a copy.
//! The kernel counts in binary nanoseconds (`2^-30` s); its bucket keys map
//! onto these indices by a constant shift ([`Histogram::record_kernel_bucket`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sonde_common::hist::{
    bucket_key, latency_bucket_key, AT_OR_BELOW_THRESHOLD, INDEX_BIAS, SCALE, SECONDS_INDEX_OFFSET,
    ZERO_BUCKET,
};

/// Why two histograms cannot be subtracted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// The later reading holds fewer samples in a bucket than the earlier
    /// one: the source was reset (for instance the maps were recreated).
    #[error("counter reset in bucket {index}: earlier {earlier} > later {later}")]
    CounterReset {
        /// Bucket index, or `None`-like `i32::MIN` for the zero bucket.
        index: i32,
        /// Count in the earlier reading.
        earlier: u64,
        /// Count in the later reading.
        later: u64,
    },
}

/// Index used in [`HistogramError::CounterReset`] for the zero bucket.
pub const ZERO_INDEX: i32 = i32::MIN;

/// Exponential histogram at scale 3 over seconds; sparse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Samples equal to zero.
    pub zero_count: u64,
    /// Bucket index → count; only non-zero buckets are stored.
    pub buckets: BTreeMap<i32, u64>,
    /// Bucket index → how many of that bucket's samples lie at or below the
    /// exact threshold the kernel was given inside it (a subset of
    /// `buckets`); empty unless SLO latency thresholds are configured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub at_or_below_threshold: BTreeMap<i32, u64>,
}

impl Histogram {
    /// The OTLP scale of every sonde histogram.
    pub const SCALE: i32 = SCALE as i32;

    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lower (exclusive) edge of bucket `index`, in seconds.
    pub fn lower_bound(index: i32) -> f64 {
        (f64::from(index) / f64::from(1u32 << SCALE)).exp2()
    }

    /// Upper (inclusive) edge of bucket `index`, in seconds.
    pub fn upper_bound(index: i32) -> f64 {
        Self::lower_bound(index + 1)
    }

    /// Adds `count` samples under a kernel bucket key (biased index over
    /// binary nanoseconds, see `sonde_common::hist`).
    pub fn record_kernel_bucket(&mut self, key: u32, count: u64) {
        if count == 0 {
            return;
        }
        if key == ZERO_BUCKET {
            self.zero_count += count;
            return;
        }
        let index = Self::index_of_key(key & !AT_OR_BELOW_THRESHOLD);
        *self.buckets.entry(index).or_insert(0) += count;
        if key & AT_OR_BELOW_THRESHOLD != 0 {
            *self.at_or_below_threshold.entry(index).or_insert(0) += count;
        }
    }

    /// Bucket index (over seconds) of an unflagged kernel bucket key.
    fn index_of_key(key: u32) -> i32 {
        key as i32 - INDEX_BIAS - SECONDS_INDEX_OFFSET
    }

    /// Bucket index (over seconds) that a latency of `ns` nanoseconds falls
    /// in, as the kernel buckets it; `None` for zero.
    pub fn index_of_ns(ns: u64) -> Option<i32> {
        (ns != 0).then(|| Self::index_of_key(latency_bucket_key(ns)))
    }

    /// Adds one sample given in binary nanoseconds (`2^-30` s), bucketed
    /// exactly as the kernel does.
    pub fn record_binary_ns(&mut self, value: u64) {
        self.record_kernel_bucket(bucket_key(value), 1);
    }

    /// Total number of samples.
    pub fn count(&self) -> u64 {
        self.zero_count + self.buckets.values().sum::<u64>()
    }

    /// Adds every sample of `other` to `self`.
    pub fn merge(&mut self, other: &Histogram) {
        self.zero_count += other.zero_count;
        for (&index, &count) in &other.buckets {
            *self.buckets.entry(index).or_insert(0) += count;
        }
        for (&index, &count) in &other.at_or_below_threshold {
            *self.at_or_below_threshold.entry(index).or_insert(0) += count;
        }
    }

    /// The samples recorded since `earlier`, a previous reading of the same
    /// cumulative source.
    pub fn delta(&self, earlier: &Histogram) -> Result<Histogram, HistogramError> {
        let zero_count = self.zero_count.checked_sub(earlier.zero_count).ok_or(
            HistogramError::CounterReset {
                index: ZERO_INDEX,
                earlier: earlier.zero_count,
                later: self.zero_count,
            },
        )?;
        Ok(Histogram {
            zero_count,
            buckets: delta_buckets(&self.buckets, &earlier.buckets)?,
            at_or_below_threshold: delta_buckets(
                &self.at_or_below_threshold,
                &earlier.at_or_below_threshold,
            )?,
        })
    }

    /// Index of the bucket that holds the sample of nearest rank
    /// `ceil(q * count)` (at least 1), or `None` when that sample is zero or
    /// the histogram is empty.
    pub fn quantile_index(&self, q: f64) -> Option<i32> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        if rank <= self.zero_count {
            return None;
        }
        let mut seen = self.zero_count;
        for (&index, &count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(index);
            }
        }
        None
    }

    /// The `q`-quantile in seconds (nearest rank), estimated by the geometric
    /// middle of its bucket: within `2^(1/16) - 1 ≈ 4.4 %` of the true sample.
    /// `None` for an empty histogram; `Some(0.0)` when that sample is zero.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count() == 0 {
            return None;
        }
        Some(match self.quantile_index(q) {
            Some(index) => (Self::lower_bound(index) * Self::upper_bound(index)).sqrt(),
            None => 0.0,
        })
    }

    /// Sum of the samples in seconds, estimated by each bucket's geometric
    /// middle: within 4.4 % of the true sum (every sample is within that of
    /// its estimate).
    pub fn estimated_sum(&self) -> f64 {
        self.buckets
            .iter()
            .map(|(&i, &n)| n as f64 * (Self::lower_bound(i) * Self::upper_bound(i)).sqrt())
            .sum()
    }

    /// Samples at or below `threshold_ns`: exact when the kernel was given
    /// this threshold (the straddling bucket's split count is used), else
    /// the conservative [`Histogram::count_at_or_below`].
    pub fn count_at_or_below_ns(&self, threshold_ns: u64) -> u64 {
        let Some(at) = Self::index_of_ns(threshold_ns) else {
            return self.zero_count;
        };
        let below: u64 = self.buckets.range(..at).map(|(_, &count)| count).sum();
        let split = match self.at_or_below_threshold.get(&at) {
            Some(&count) => count,
            // On the bucket's upper edge, the whole bucket is at or below.
            None if Self::upper_bound(at) <= threshold_ns as f64 * 1e-9 => {
                self.buckets.get(&at).copied().unwrap_or(0)
            }
            None => 0,
        };
        self.zero_count + below + split
    }

    /// Samples certainly at or below `threshold_secs`: every bucket whose
    /// upper edge is ≤ the threshold, plus zeros. Exact when the threshold is
    /// a bucket edge; otherwise it leaves out the one bucket that straddles
    /// the threshold, so it never counts a slower sample as fast.
    pub fn count_at_or_below(&self, threshold_secs: f64) -> u64 {
        if threshold_secs < 0.0 {
            return 0;
        }
        self.zero_count
            + self
                .buckets
                .iter()
                .take_while(|(&index, _)| Self::upper_bound(index) <= threshold_secs)
                .map(|(_, &count)| count)
                .sum::<u64>()
    }

    /// Bucket counts as a dense run starting at the smallest index, as OTLP's
    /// `Buckets { offset, bucket_counts }` wants them; `(0, [])` when empty.
    pub fn dense(&self) -> (i32, Vec<u64>) {
        let (Some((&first, _)), Some((&last, _))) = (
            self.buckets.first_key_value(),
            self.buckets.last_key_value(),
        ) else {
            return (0, Vec::new());
        };
        let mut out = vec![0; (last - first) as usize + 1];
        for (&index, &count) in &self.buckets {
            if let Some(slot) = out.get_mut((index - first) as usize) {
                *slot = count;
            }
        }
        (first, out)
    }
}

/// `later - earlier` per bucket; a bucket that shrank means a reset.
fn delta_buckets(
    later: &BTreeMap<i32, u64>,
    earlier: &BTreeMap<i32, u64>,
) -> Result<BTreeMap<i32, u64>, HistogramError> {
    for (&index, &before) in earlier {
        let now = later.get(&index).copied().unwrap_or(0);
        if now < before {
            return Err(HistogramError::CounterReset {
                index,
                earlier: before,
                later: now,
            });
        }
    }
    Ok(later
        .iter()
        .filter_map(|(&index, &now)| {
            let before = earlier.get(&index).copied().unwrap_or(0);
            (now > before).then_some((index, now - before))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BINARY_NS_PER_SEC: f64 = (1u64 << 30) as f64;

    fn from_samples(samples: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        for &v in samples {
            h.record_binary_ns(v);
        }
        h
    }

    #[test]
    fn one_second_is_the_upper_edge_of_bucket_minus_one() {
        let h = from_samples(&[1 << 30]);
        assert_eq!(h.buckets.keys().copied().collect::<Vec<_>>(), vec![-1]);
        assert_eq!(Histogram::upper_bound(-1), 1.0);
        let h = from_samples(&[(1 << 30) + 1]);
        assert_eq!(h.buckets.keys().copied().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn bucket_edges_contain_their_samples() {
        for v in [1u64, 3, 1000, 1 << 20, 10_737_418, 123_456_789_012] {
            let h = from_samples(&[v]);
            let (&i, _) = h.buckets.first_key_value().unwrap();
            let secs = v as f64 / BINARY_NS_PER_SEC;
            assert!(
                Histogram::lower_bound(i) < secs
                    && secs <= Histogram::upper_bound(i) * (1.0 + 1e-12)
            );
        }
    }

    #[test]
    fn delta_reports_a_reset() {
        let later = from_samples(&[1000]);
        let earlier = from_samples(&[1000, 1000]);
        assert!(matches!(
            later.delta(&earlier),
            Err(HistogramError::CounterReset { .. })
        ));
    }

    #[test]
    fn count_at_or_below_on_and_between_edges() {
        let h = from_samples(&[1 << 20, 1 << 21, 1 << 22]); // 2^-10, 2^-9, 2^-8 s
        assert_eq!(h.count_at_or_below(2f64.powi(-9)), 2); // edge: exact
        assert_eq!(h.count_at_or_below(2f64.powi(-9) * 1.01), 2); // inside the next bucket
        assert_eq!(h.count_at_or_below(2f64.powi(-10) * 0.99), 0);
        assert_eq!(h.count_at_or_below(1.0), 3);
    }

    /// The kernel's rule (`latency_key` in the eBPF crate): bucket key, with
    /// the flag when a threshold lies in the sample's bucket and the sample
    /// is at or below it.
    fn kernel_key(ns: u64, threshold_ns: u64) -> u32 {
        let key = latency_bucket_key(ns);
        if key == latency_bucket_key(threshold_ns) && ns <= threshold_ns {
            key | AT_OR_BELOW_THRESHOLD
        } else {
            key
        }
    }

    #[test]
    fn threshold_between_edges_is_counted_exactly() {
        // 10 ms lies inside a bucket (≈ 9.6 ms .. 10.4 ms in binary ns).
        let threshold_ns = 10_000_000;
        let at = Histogram::index_of_ns(threshold_ns).unwrap();
        assert!(Histogram::lower_bound(at) < 0.01 && 0.01 < Histogram::upper_bound(at));
        let samples = [
            9_700_000, 9_999_999, 10_000_000, 10_000_001, 10_300_000, 5_000_000, 0,
        ];
        let mut h = Histogram::new();
        for ns in samples {
            h.record_kernel_bucket(kernel_key(ns, threshold_ns), 1);
        }
        // 0, 5 ms, 9.7 ms, 9.999999 ms and 10 ms: five at or below.
        assert_eq!(h.count_at_or_below_ns(threshold_ns), 5);
        // Without the split, only the lower buckets count.
        assert_eq!(h.count_at_or_below(0.01), 2);
        // The split survives merge and delta.
        let mut twice = h.clone();
        twice.merge(&h);
        assert_eq!(twice.count_at_or_below_ns(threshold_ns), 10);
        assert_eq!(twice.delta(&h).unwrap(), h);
    }

    proptest::proptest! {
        #[test]
        fn exact_threshold_count_matches_the_samples(
            samples in proptest::collection::vec(0u64..100_000_000, 0..200),
            threshold_ns in 1u64..100_000_000,
        ) {
            let mut h = Histogram::new();
            for &ns in &samples {
                h.record_kernel_bucket(kernel_key(ns, threshold_ns), 1);
            }
            let want = samples.iter().filter(|&&ns| ns <= threshold_ns).count() as u64;
            proptest::prop_assert_eq!(h.count_at_or_below_ns(threshold_ns), want);
            proptest::prop_assert_eq!(h.count(), samples.len() as u64);
        }
    }

    #[test]
    fn dense_layout() {
        let h = from_samples(&[1 << 20, 1 << 22]);
        let (offset, counts) = h.dense();
        assert_eq!(offset, -81);
        assert_eq!(counts.len(), 17);
        assert_eq!(counts.iter().sum::<u64>(), 2);
        assert_eq!((counts[0], counts[16]), (1, 1));
    }

    #[test]
    fn quantiles_of_empty_and_zero() {
        assert_eq!(Histogram::new().quantile(0.5), None);
        assert_eq!(from_samples(&[0, 0, 5]).quantile(0.5), Some(0.0));
    }

    proptest! {
        #[test]
        fn merge_equals_histogram_of_all_samples(
            a in prop::collection::vec(0u64..(1 << 40), 0..200),
            b in prop::collection::vec(0u64..(1 << 40), 0..200),
        ) {
            let mut merged = from_samples(&a);
            merged.merge(&from_samples(&b));
            let all: Vec<u64> = a.iter().chain(&b).copied().collect();
            prop_assert_eq!(&merged, &from_samples(&all));
            // commutative, and delta undoes merge
            let mut other = from_samples(&b);
            other.merge(&from_samples(&a));
            prop_assert_eq!(&merged, &other);
            prop_assert_eq!(merged.delta(&from_samples(&a)).unwrap(), from_samples(&b));
            prop_assert_eq!(merged.count(), all.len() as u64);
        }

        #[test]
        fn quantile_within_bucket_error_bound(
            mut samples in prop::collection::vec(1u64..(1 << 45), 1..300),
            q in 0.0f64..=1.0,
        ) {
            let h = from_samples(&samples);
            samples.sort_unstable();
            let rank = ((q * samples.len() as f64).ceil() as usize).max(1);
            let truth = samples[rank - 1] as f64 / BINARY_NS_PER_SEC;
            let estimate = h.quantile(q).unwrap();
            let bound = 2f64.powf(1.0 / 16.0) - 1.0;
            prop_assert!(((estimate - truth) / truth).abs() <= bound + 1e-9,
                "q={} truth={} estimate={}", q, truth, estimate);
        }

        #[test]
        fn estimated_sum_within_bound(samples in prop::collection::vec(1u64..(1 << 40), 1..200)) {
            let h = from_samples(&samples);
            let truth: f64 = samples.iter().map(|&v| v as f64 / BINARY_NS_PER_SEC).sum();
            let bound = 2f64.powf(1.0 / 16.0) - 1.0;
            prop_assert!(((h.estimated_sum() - truth) / truth).abs() <= bound + 1e-9);
        }

        #[test]
        fn count_at_or_below_never_overcounts(
            samples in prop::collection::vec(1u64..(1 << 40), 0..200),
            threshold in 1u64..(1 << 40),
        ) {
            let h = from_samples(&samples);
            let truth = samples.iter().filter(|&&v| v <= threshold).count() as u64;
            let secs = threshold as f64 / BINARY_NS_PER_SEC;
            let counted = h.count_at_or_below(secs);
            prop_assert!(counted <= truth);
            // it only leaves out the bucket straddling the threshold
            let straddling = samples.iter().filter(|&&v| {
                bucket_key(v) == bucket_key(threshold)
            }).count() as u64;
            prop_assert!(truth - counted <= straddling);
        }
    }
}
