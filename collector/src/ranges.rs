//! Sequence numbers received, as sorted closed ranges: the collector's
//! duplicate filter. In-order delivery extends the last range in O(1).

/// Ranges kept before the two oldest are merged (the gap between them is
/// then taken as received: a copy of a report that old would be accepted
/// again, which bounds memory against a pathological sender).
pub const MAX_RANGES: usize = 4096;

/// A set of u64 as sorted, disjoint, non-adjacent closed ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `seq`; `false` when it was there already.
    pub fn insert(&mut self, seq: u64) -> bool {
        // Fast path: the next one in order.
        if let Some(last) = self.ranges.last_mut() {
            if seq == last.1.wrapping_add(1) && seq != 0 {
                last.1 = seq;
                return true;
            }
            if seq > last.1 {
                self.ranges.push((seq, seq));
                self.bound();
                return true;
            }
        }
        // The first range that ends at or after seq.
        let i = self.ranges.partition_point(|&(_, hi)| hi < seq);
        if let Some(&(lo, _)) = self.ranges.get(i) {
            if lo <= seq {
                return false;
            }
        }
        let prev = i.checked_sub(1);
        let joins_prev = prev
            .and_then(|p| self.ranges.get(p))
            .is_some_and(|&(_, hi)| hi.checked_add(1) == Some(seq));
        let joins_next = self
            .ranges
            .get(i)
            .is_some_and(|&(lo, _)| seq.checked_add(1) == Some(lo));
        match (prev, joins_prev, joins_next) {
            (Some(p), true, true) => {
                let hi = self.ranges.remove(i).1;
                if let Some(range) = self.ranges.get_mut(p) {
                    range.1 = hi;
                }
            }
            (Some(p), true, false) => {
                if let Some(range) = self.ranges.get_mut(p) {
                    range.1 = seq;
                }
            }
            (_, _, true) => {
                if let Some(range) = self.ranges.get_mut(i) {
                    range.0 = seq;
                }
            }
            _ => {
                self.ranges.insert(i, (seq, seq));
                self.bound();
            }
        }
        true
    }

    fn bound(&mut self) {
        if self.ranges.len() > MAX_RANGES {
            // Merge the two lowest ranges (the sequences between them count
            // as seen).
            let (_, hi) = self.ranges.remove(1);
            if let Some(first) = self.ranges.first_mut() {
                first.1 = hi;
            }
        }
    }

    /// The ranges, lowest first.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let mut s = RangeSet::new();
        for seq in [5, 6, 7] {
            assert!(s.insert(seq));
        }
        assert!(!s.insert(6));
        assert!(s.insert(10));
        assert!(s.insert(9));
        assert_eq!(s.ranges(), &[(5, 7), (9, 10)]);
        assert!(s.insert(8));
        assert_eq!(s.ranges(), &[(5, 10)]);
        assert!(s.insert(1));
        assert!(s.insert(3));
        assert!(s.insert(2));
        assert!(!s.insert(2));
        assert_eq!(s.ranges(), &[(1, 3), (5, 10)]);
        assert!(s.insert(4));
        assert_eq!(s.ranges(), &[(1, 10)]);
        assert!(s.insert(0));
        assert_eq!(s.ranges(), &[(0, 10)]);
        assert!(s.insert(u64::MAX));
        assert!(!s.insert(u64::MAX));
    }

    #[test]
    fn bounded() {
        let mut s = RangeSet::new();
        for i in 0..(MAX_RANGES as u64 + 10) {
            s.insert(i * 2);
        }
        assert_eq!(s.ranges().len(), MAX_RANGES);
    }
}
