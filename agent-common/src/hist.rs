//! Base-2 exponential histogram buckets, shared by the kernel and user sides.
//!
//! A bucket index `i` at scale 3 covers `(2^(i/8), 2^((i+1)/8)]` of the value,
//! exactly as an OpenTelemetry `ExponentialHistogram` bucket of scale 3 does
//! (upper bound inclusive). Eight buckets per power of two make each bucket at
//! most `2^(1/8) - 1 ≈ 9.05 %` wide relative to its lower bound.
//!
//! Durations are measured in **binary nanoseconds**, units of `2^-30` s
//! (≈ 0.931 ns), so that a bucket edge is also an exact power of `2^(1/8)`
//! seconds: index `i` in binary nanoseconds is index `i - 240` in seconds.
//! The kernel clock counts whole nanoseconds; converting them to binary
//! nanoseconds rounds down, a quantisation below the clock's own resolution.

/// Buckets per power of two is `2^SCALE`.
pub const SCALE: u32 = 3;
/// Sub-buckets per power of two.
pub const SUB_BUCKETS: u32 = 1 << SCALE;
/// Added to an index so that it fits an unsigned key: the smallest index of
/// a value ≥ 1 is -1 (the value 1 lies on the upper edge of bucket -1).
pub const INDEX_BIAS: i32 = 1;
/// Bucket key reserved for the value 0 (OTLP's `zero_count`).
pub const ZERO_BUCKET: u32 = u32::MAX;
/// The largest biased bucket key a `u64` value can produce.
pub const MAX_BUCKET: u32 = 64 * SUB_BUCKETS;
/// log2 of the number of binary nanoseconds in a second.
pub const BINARY_NS_PER_SEC_LOG2: u32 = 30;
/// Index offset between a histogram in binary nanoseconds and one in seconds.
pub const SECONDS_INDEX_OFFSET: i32 = (BINARY_NS_PER_SEC_LOG2 * SUB_BUCKETS) as i32;

/// Set on a bucket key for the samples that lie at or below the exact
/// latency threshold configured inside that bucket (SLO thresholds rarely
/// fall on a bucket edge; the kernel splits the one bucket they fall in).
pub const AT_OR_BELOW_THRESHOLD: u32 = 1 << 16;
/// Slots of the kernel's threshold table: one per bucket key `0..=MAX_BUCKET`.
pub const THRESHOLD_SLOTS: usize = MAX_BUCKET as usize + 1;

/// `floor(2^(63 + j/8))` for `j` in `1..8`: the sub-bucket edges of a
/// mantissa normalised so that its leading one is bit 63.
///
/// The edges are irrational, so for an integer mantissa `m`,
/// `m > 2^(63 + j/8)` exactly when `m > floor(2^(63 + j/8))`.
pub const SUB_EDGES: [u64; 7] = [
    0x8b95_c1e3_ea8b_d6e6, // 2^(1/8)
    0x9837_f051_8db8_a96f, // 2^(2/8)
    0xa5fe_d6a9_b151_38ea, // 2^(3/8)
    0xb504_f333_f9de_6484, // 2^(4/8)
    0xc567_2a11_5506_dadd, // 2^(5/8)
    0xd744_fcca_d69d_6af4, // 2^(6/8)
    0xeac0_c6e7_dd24_392e, // 2^(7/8)
];

/// Position of the most significant set bit of `v` (`v` > 0), by binary
/// search: the BPF instruction set has no count-leading-zeros.
#[inline(always)]
pub fn msb(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Biased bucket key (`index + INDEX_BIAS`) of `v` at scale 3, or
/// [`ZERO_BUCKET`] for 0. Exact for every `u64`: no floating point.
#[inline(always)]
pub fn bucket_key(v: u64) -> u32 {
    if v == 0 {
        return ZERO_BUCKET;
    }
    let k = msb(v);
    let m = v << (63 - k);
    if m == 1 << 63 {
        // An exact power of two is the upper edge of the bucket below.
        return k * SUB_BUCKETS; // (8k - 1) + INDEX_BIAS
    }
    let sub = (m > SUB_EDGES[0]) as u32
        + (m > SUB_EDGES[1]) as u32
        + (m > SUB_EDGES[2]) as u32
        + (m > SUB_EDGES[3]) as u32
        + (m > SUB_EDGES[4]) as u32
        + (m > SUB_EDGES[5]) as u32
        + (m > SUB_EDGES[6]) as u32;
    k * SUB_BUCKETS + sub + INDEX_BIAS as u32
}

/// Nanoseconds to binary nanoseconds (`2^-30` s): `ns * 2^30 / 10^9`.
/// Below 2^32 ns (4.3 s) a multiply and a shift replace the division
/// (`2^30 / 10^9 = 1 + 316_718_722.4 / 2^32`): the constant is rounded up,
/// so the result is the exact quotient when that is a whole number (1 s is
/// exactly `2^30`), else at most one unit (0.93 ns) above its floor.
/// Above 2^32 ns, a division rounding down.
#[inline(always)]
pub fn ns_to_binary_ns(ns: u64) -> u64 {
    const FRACTION: u64 = 316_718_723; // ceil(0.073741824 * 2^32)
    const DIVISOR: u64 = 1_953_125; // 10^9 / 2^9
    if ns < 1 << 32 {
        ns + ((ns * FRACTION) >> 32)
    } else if ns < 1 << 43 {
        (ns << 21) / DIVISOR
    } else {
        (ns / DIVISOR) << 21
    }
}

/// Bucket key of a latency given in nanoseconds, as the kernel programs
/// compute it. Monotone in `ns`, so a sample in a lower bucket than a
/// threshold's is below it, and one in a higher bucket above it.
#[inline(always)]
pub fn latency_bucket_key(ns: u64) -> u32 {
    bucket_key(ns_to_binary_ns(ns))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// Reference: the smallest integer index i with v <= 2^((i+1)/8),
    /// checked with exact integer arithmetic on v^8 against 2^(i+1).
    fn reference_index(v: u64) -> i32 {
        let v8 = (v as u128).pow(8); // fits: only called with v < 2^15
        let mut i: i32 = -1;
        while v8 > 1u128 << (i + 1) as u32 {
            i += 1;
        }
        i
    }

    #[test]
    fn bucket_matches_exact_reference_for_small_values() {
        for v in 1u64..(1 << 15) {
            let want = reference_index(v) + INDEX_BIAS;
            assert_eq!(bucket_key(v) as i32, want, "v = {v}");
        }
    }

    #[test]
    fn powers_of_two_are_upper_edges() {
        for k in 0..64u32 {
            let v = 1u64 << k;
            assert_eq!(bucket_key(v) as i32, (8 * k) as i32 - 1 + INDEX_BIAS);
            if k >= 4 {
                assert_eq!(bucket_key(v + 1) as i32, (8 * k) as i32 + INDEX_BIAS);
            }
        }
        assert_eq!(bucket_key(u64::MAX), MAX_BUCKET);
        assert_eq!(bucket_key(0), ZERO_BUCKET);
    }

    #[test]
    fn sub_edges_are_floors_of_powers() {
        // 2^(63 + j/8) squared 8 times must straddle the floor.
        for (j, &e) in SUB_EDGES.iter().enumerate() {
            let j = j as u32 + 1;
            // e <= 2^(63 + j/8) < e + 1  <=>  e^8 <= 2^(504 + j) < (e+1)^8
            let lo = pow8_log2_cmp(e, 504 + j);
            let hi = pow8_log2_cmp(e + 1, 504 + j);
            assert!(lo.is_le() && hi.is_gt(), "edge {j}");
        }
    }

    /// Compares x^8 with 2^p using 128-bit limbs (x < 2^64, p < 520).
    fn pow8_log2_cmp(x: u64, p: u32) -> core::cmp::Ordering {
        // x^8 = ((x^2)^2)^2; use a little big-integer of u32 limbs.
        let mut n: std::vec::Vec<u64> = std::vec![x & 0xffff_ffff, x >> 32];
        for _ in 0..3 {
            n = mul(&n, &n);
        }
        let mut target = std::vec![0u64; (p / 32 + 1) as usize];
        target[(p / 32) as usize] = 1 << (p % 32);
        cmp(&n, &target)
    }
    fn mul(a: &[u64], b: &[u64]) -> std::vec::Vec<u64> {
        let mut out = std::vec![0u64; a.len() + b.len()];
        for (i, &x) in a.iter().enumerate() {
            let mut carry = 0u64;
            for (j, &y) in b.iter().enumerate() {
                let t = out[i + j] + x * y + carry;
                out[i + j] = t & 0xffff_ffff;
                carry = t >> 32;
            }
            out[i + b.len()] += carry;
        }
        out
    }
    fn cmp(a: &[u64], b: &[u64]) -> core::cmp::Ordering {
        let n = a.len().max(b.len());
        for i in (0..n).rev() {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            if x != y {
                return x.cmp(&y);
            }
        }
        core::cmp::Ordering::Equal
    }

    #[test]
    fn binary_ns_conversion() {
        assert_eq!(ns_to_binary_ns(1_000_000_000), 1 << 30);
        assert_eq!(ns_to_binary_ns(0), 0);
        assert_eq!(ns_to_binary_ns(1_000), 1073);
        // the fast path: the floor of the quotient or one above, and exact
        // whenever the quotient is whole
        for ns in (1u64..(1 << 32))
            .step_by(999_983)
            .chain([1, 999, 1_953_125, (1 << 32) - 1])
        {
            let exact = ((ns as u128) << 30) / 1_000_000_000;
            let fast = ns_to_binary_ns(ns) as u128;
            assert!(
                fast == exact || fast == exact + 1,
                "{ns}: {fast} vs {exact}"
            );
            if ((ns as u128) << 30).is_multiple_of(1_000_000_000) {
                assert_eq!(fast, exact, "{ns}");
            }
        }
        // no overflow at the top
        assert_eq!(ns_to_binary_ns(u64::MAX), (u64::MAX / 1_953_125) << 21);
    }
}
