//! Cutting a source into batches of key ranges.
//!
//! The source streams its keys in its own order (for PostgreSQL, `ORDER BY
//! key`, under the key column's collation). Every `batch_size`-th key becomes a
//! boundary, and the batches are the half-open ranges between boundaries,
//! unbounded at both ends:
//!
//! ```text
//! (-inf, b1)  [b1, b2)  ...  [bn, +inf)
//! ```
//!
//! The ranges are contiguous and unbounded at the ends, so every key — with
//! gaps, negative, extreme, or inserted after planning — falls in exactly one
//! batch, as long as the source compares keys the way it ordered them. The
//! planner never compares keys itself (it needs no `Ord`), so a text
//! collation it does not know is no problem, and it emits batches as it goes:
//! memory does not grow with the table.

/// A half-open key range `[lower, upper)`; `None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange<K> {
    /// Inclusive lower bound; `None` for the first batch.
    pub lower: Option<K>,
    /// Exclusive upper bound; `None` for the last batch.
    pub upper: Option<K>,
    /// Keys the range held when it was planned.
    pub planned_records: u64,
}

/// Streams keys in source order and emits batches.
#[derive(Debug)]
pub struct Planner<K> {
    batch_size: u64,
    lower: Option<K>,
    in_batch: u64,
    total: u64,
    batches: u64,
}

impl<K: Clone> Planner<K> {
    /// A planner cutting batches of `batch_size` keys (at least 1).
    pub fn new(batch_size: u64) -> Self {
        Self {
            batch_size: batch_size.max(1),
            lower: None,
            in_batch: 0,
            total: 0,
            batches: 0,
        }
    }

    /// Takes the next key in source order. Returns the batch that this key
    /// closes (the key becomes the next batch's lower bound), if any.
    pub fn observe(&mut self, key: K) -> Option<KeyRange<K>> {
        self.total += 1;
        if self.in_batch < self.batch_size {
            self.in_batch += 1;
            return None;
        }
        let closed = KeyRange {
            lower: self.lower.replace(key.clone()),
            upper: Some(key),
            planned_records: self.in_batch,
        };
        self.in_batch = 1;
        self.batches += 1;
        Some(closed)
    }

    /// Ends the stream: returns the last, upper-unbounded batch and the
    /// totals. An empty source still gets one (empty, unbounded) batch, so
    /// rows that appear later are covered too.
    pub fn finish(mut self) -> (KeyRange<K>, PlanTotals) {
        self.batches += 1;
        let last = KeyRange {
            lower: self.lower,
            upper: None,
            planned_records: self.in_batch,
        };
        (
            last,
            PlanTotals {
                records: self.total,
                batches: self.batches,
            },
        )
    }
}

/// What a finished plan covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanTotals {
    /// Keys seen.
    pub records: u64,
    /// Batches emitted (including the last).
    pub batches: u64,
}

/// Plans a whole key sequence at once (for tests and small sources).
pub fn plan_all<K: Clone>(
    keys: impl IntoIterator<Item = K>,
    batch_size: u64,
) -> (Vec<KeyRange<K>>, PlanTotals) {
    let mut planner = Planner::new(batch_size);
    let mut ranges: Vec<KeyRange<K>> = keys
        .into_iter()
        .filter_map(|k| planner.observe(k))
        .collect();
    let (last, totals) = planner.finish();
    ranges.push(last);
    (ranges, totals)
}

impl<K> KeyRange<K> {
    /// Whether `key` is in the range, under the comparison `cmp` (the
    /// source's order).
    pub fn contains_by(&self, key: &K, cmp: impl Fn(&K, &K) -> std::cmp::Ordering) -> bool {
        let above = self.lower.as_ref().is_none_or(|l| cmp(key, l).is_ge());
        let below = self.upper.as_ref().is_none_or(|u| cmp(key, u).is_lt());
        above && below
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    #[test]
    fn empty_source_is_one_unbounded_batch() {
        let (ranges, totals) = plan_all(Vec::<i64>::new(), 10);
        assert_eq!(
            ranges,
            vec![KeyRange {
                lower: None,
                upper: None,
                planned_records: 0
            }]
        );
        assert_eq!(
            totals,
            PlanTotals {
                records: 0,
                batches: 1
            }
        );
    }

    #[test]
    fn exact_multiple_has_no_empty_tail() {
        let (ranges, totals) = plan_all(1..=6i64, 3);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].upper, Some(4));
        assert_eq!(ranges[1].lower, Some(4));
        assert_eq!(ranges[1].planned_records, 3);
        assert_eq!(totals.records, 6);
    }

    /// Checks coverage of `keys` (already in source order under `cmp`).
    fn assert_exact_cover<K: Clone + std::fmt::Debug>(
        keys: &[K],
        batch_size: u64,
        cmp: impl Fn(&K, &K) -> Ordering + Copy,
    ) -> Result<(), TestCaseError> {
        let (ranges, totals) = plan_all(keys.iter().cloned(), batch_size);
        prop_assert_eq!(totals.records, keys.len() as u64);
        prop_assert_eq!(totals.batches, ranges.len() as u64);
        prop_assert!(ranges[0].lower.is_none());
        prop_assert!(ranges[ranges.len() - 1].upper.is_none());
        for pair in ranges.windows(2) {
            prop_assert!(pair[0].upper.is_some());
            prop_assert_eq!(
                pair[0]
                    .upper
                    .as_ref()
                    .map(|u| cmp(u, pair[1].lower.as_ref().unwrap())),
                Some(Ordering::Equal),
                "ranges are contiguous"
            );
        }
        for key in keys {
            let holders = ranges.iter().filter(|r| r.contains_by(key, cmp)).count();
            prop_assert_eq!(holders, 1, "key {:?} is in {} batches", key, holders);
        }
        for r in &ranges {
            let held = keys.iter().filter(|k| r.contains_by(k, cmp)).count() as u64;
            prop_assert_eq!(held, r.planned_records);
            prop_assert!(held <= batch_size);
        }
        let planned: u64 = ranges.iter().map(|r| r.planned_records).sum();
        prop_assert_eq!(planned, keys.len() as u64);
        Ok(())
    }

    fn int_keys() -> impl Strategy<Value = Vec<i64>> {
        let extreme = prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0i64),
            Just(-1i64),
            any::<i64>()
        ];
        proptest::collection::btree_set(prop_oneof![extreme, -50i64..50], 0..300)
            .prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        /// Integer keys with gaps, negatives and extremes are each in exactly
        /// one batch; batches hold at most batch_size keys.
        #[test]
        fn integer_keys_are_covered_exactly_once(keys in int_keys(), batch_size in 1u64..40) {
            assert_exact_cover(&keys, batch_size, i64::cmp)?;
        }

        /// Text keys under a collation the planner does not know (here:
        /// case-insensitive first, then by bytes) are covered exactly once.
        #[test]
        fn text_keys_under_a_foreign_collation_are_covered_exactly_once(
            keys in proptest::collection::btree_set("[a-zA-Z0-9 éß_-]{0,6}", 0..200),
            batch_size in 1u64..25,
        ) {
            let collation = |a: &String, b: &String| {
                a.to_lowercase().cmp(&b.to_lowercase()).then_with(|| a.cmp(b))
            };
            let mut keys: Vec<String> = keys.into_iter().collect();
            keys.sort_by(collation);
            assert_exact_cover(&keys, batch_size, collation)?;
        }

        /// A key inserted after planning, anywhere, lands in exactly one batch.
        #[test]
        fn late_keys_are_covered(keys in int_keys(), late in any::<i64>(), batch_size in 1u64..10) {
            let (ranges, _) = plan_all(keys.iter().copied(), batch_size);
            prop_assert_eq!(ranges.iter().filter(|r| r.contains_by(&late, i64::cmp)).count(), 1);
        }
    }
}
