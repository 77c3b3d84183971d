//! Wire histograms (`sonde.v1.ExponentialHistogram`) and `sonde-slo`'s
//! [`Histogram`]: the same buckets, dense on the wire, sparse in memory.

use sonde_slo::Histogram;

use crate::v1::ExponentialHistogram;

/// Widest dense bucket run accepted: sonde's indices over binary
/// nanoseconds span about 512 buckets, so anything wider is not sonde's.
pub const MAX_BUCKETS: usize = 1024;
/// Bound on bucket offsets, far outside anything a u64 of nanoseconds reaches.
pub const MAX_ABS_OFFSET: i32 = 4096;

/// Why a wire histogram is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireHistogramError {
    /// Another scale than sonde's.
    #[error("histogram scale {scale}; sonde speaks scale {expected}")]
    Scale {
        /// Scale received.
        scale: i32,
        /// Scale expected.
        expected: i32,
    },
    /// Too many buckets, or an offset out of range.
    #[error("histogram of {buckets} buckets at offset {offset} is out of range")]
    Range {
        /// Dense bucket count.
        buckets: usize,
        /// Offset.
        offset: i32,
    },
}

/// The wire form of `h`: a copy of its buckets, dense from the first.
pub fn to_wire(h: &Histogram) -> ExponentialHistogram {
    let (offset, bucket_counts) = h.dense();
    ExponentialHistogram {
        scale: Histogram::SCALE,
        zero_count: h.zero_count,
        offset,
        bucket_counts,
    }
}

/// Checks scale and bounds.
pub fn validate(w: &ExponentialHistogram) -> Result<(), WireHistogramError> {
    if w.scale != Histogram::SCALE {
        return Err(WireHistogramError::Scale {
            scale: w.scale,
            expected: Histogram::SCALE,
        });
    }
    if w.bucket_counts.len() > MAX_BUCKETS || w.offset.unsigned_abs() > MAX_ABS_OFFSET as u32 {
        return Err(WireHistogramError::Range {
            buckets: w.bucket_counts.len(),
            offset: w.offset,
        });
    }
    Ok(())
}

/// The sparse histogram of a wire histogram.
pub fn from_wire(w: &ExponentialHistogram) -> Result<Histogram, WireHistogramError> {
    validate(w)?;
    let mut h = Histogram::new();
    h.zero_count = w.zero_count;
    for (i, &count) in w.bucket_counts.iter().enumerate() {
        if count > 0 {
            // In range: validate bounds offset and length.
            h.buckets.insert(w.offset + i as i32, count);
        }
    }
    Ok(h)
}

/// Samples in a wire histogram.
pub fn count(w: &ExponentialHistogram) -> u64 {
    w.bucket_counts
        .iter()
        .fold(w.zero_count, |a, &c| a.saturating_add(c))
}

/// Adds the samples of `add` to `acc`, both validated, in place: a dense
/// merge that widens `acc` as needed (no allocation when it need not grow).
pub fn merge_into(acc: &mut ExponentialHistogram, add: &ExponentialHistogram) {
    acc.scale = add.scale;
    acc.zero_count = acc.zero_count.saturating_add(add.zero_count);
    let Some(first_nonzero) = add.bucket_counts.iter().position(|&c| c > 0) else {
        return;
    };
    let last_nonzero = add
        .bucket_counts
        .iter()
        .rposition(|&c| c > 0)
        .unwrap_or(first_nonzero);
    let add_lo = add.offset + first_nonzero as i32;
    let add_hi = add.offset + last_nonzero as i32; // inclusive
    let Some(added) = add.bucket_counts.get(first_nonzero..=last_nonzero) else {
        return;
    };
    if acc.bucket_counts.is_empty() {
        acc.offset = add_lo;
        acc.bucket_counts = added.to_vec();
        return;
    }
    if add_lo < acc.offset {
        let grow = (acc.offset - add_lo) as usize;
        acc.bucket_counts.splice(0..0, std::iter::repeat_n(0, grow));
        acc.offset = add_lo;
    }
    let acc_hi = acc.offset + acc.bucket_counts.len() as i32 - 1;
    if add_hi > acc_hi {
        acc.bucket_counts
            .resize(acc.bucket_counts.len() + (add_hi - acc_hi) as usize, 0);
    }
    // `acc` now spans [add_lo, add_hi].
    let start = (add_lo - acc.offset) as usize;
    for (slot, &c) in acc.bucket_counts.iter_mut().skip(start).zip(added) {
        *slot = slot.saturating_add(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hist(samples: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        for &s in samples {
            h.record_binary_ns(s);
        }
        h
    }

    #[test]
    fn wire_round_trip_is_exact() {
        let h = hist(&[0, 1 << 20, 1 << 22, 1 << 22, 12345]);
        let w = to_wire(&h);
        assert_eq!(w.scale, 3);
        assert_eq!(w.zero_count, 1);
        assert_eq!(count(&w), 5);
        assert_eq!(from_wire(&w).unwrap(), h);
    }

    #[test]
    fn other_scales_and_wild_ranges_are_refused() {
        let mut w = to_wire(&hist(&[1000]));
        w.scale = 2;
        assert!(matches!(
            from_wire(&w),
            Err(WireHistogramError::Scale { scale: 2, .. })
        ));
        w.scale = 3;
        w.offset = i32::MAX;
        assert!(matches!(
            from_wire(&w),
            Err(WireHistogramError::Range { .. })
        ));
    }

    proptest! {
        #[test]
        fn dense_merge_equals_sparse_merge(
            a in prop::collection::vec(0u64..(1 << 40), 0..100),
            b in prop::collection::vec(0u64..(1 << 40), 0..100),
            c in prop::collection::vec(0u64..(1 << 40), 0..100),
        ) {
            let mut acc = ExponentialHistogram::default();
            for part in [&a, &b, &c] {
                merge_into(&mut acc, &to_wire(&hist(part)));
            }
            let all: Vec<u64> = a.iter().chain(&b).chain(&c).copied().collect();
            let mut expected = hist(&all);
            expected.buckets.retain(|_, v| *v > 0);
            let mut got = from_wire(&acc).unwrap();
            got.buckets.retain(|_, v| *v > 0);
            prop_assert_eq!(got, expected);
            prop_assert_eq!(count(&acc), all.len() as u64);
        }
    }
}
