//! Isolating the records a target rejects, so that the rest of the batch
//! still lands.
//!
//! A batch is first written whole. If the target rejects it, the batch is
//! split in halves and each half is tried again, down to single records:
//! rows that belong to an accepted slice land, and each rejected record is
//! reported with its own error. With `k` bad records among `n`, that takes at
//! most `1 + 2·k·⌈log2 n⌉` attempts, instead of `n` one-by-one writes.
//!
//! Each attempt must be atomic (all rows of the slice, or none — a savepoint
//! in PostgreSQL). A transient failure (connection lost, deadlock) is not a
//! rejection: it stops the isolation so the whole batch is retried later.

use std::{future::Future, ops::Range};

/// Writes rows `0..len` through `write`, which writes one slice atomically
/// and answers `Ok(Ok(()))` (written), `Ok(Err(rejection))` (the target
/// refused this slice) or `Err(transient)` (stop; retry the batch later).
///
/// Returns the index and rejection of every record that could not be
/// written. Every other row is written exactly once.
pub async fn isolate<R, T, F, Fut>(len: usize, mut write: F) -> Result<Vec<(usize, R)>, T>
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Result<Result<(), R>, T>>,
{
    let mut rejected = Vec::new();
    // Depth-first, left half first, so rows land in key order.
    let mut todo = Vec::new();
    todo.push(0..len);
    while let Some(slice) = todo.pop() {
        if slice.is_empty() {
            continue;
        }
        match write(slice.clone()).await? {
            Ok(()) => {}
            Err(rejection) if slice.len() == 1 => rejected.push((slice.start, rejection)),
            Err(_) => {
                let mid = slice.start + slice.len() / 2;
                todo.push(mid..slice.end);
                todo.push(slice.start..mid);
            }
        }
    }
    Ok(rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A fake target: rejects any slice holding a bad row; records what landed.
    struct Target {
        bad: BTreeSet<usize>,
        written: Vec<usize>,
        attempts: usize,
        transient_at: Option<usize>,
    }

    impl Target {
        fn write(&mut self, slice: Range<usize>) -> Result<Result<(), String>, &'static str> {
            self.attempts += 1;
            if self.transient_at == Some(self.attempts) {
                return Err("connection reset");
            }
            if let Some(b) = slice.clone().find(|i| self.bad.contains(i)) {
                return Ok(Err(format!("row {b} violates check")));
            }
            self.written.extend(slice);
            Ok(Ok(()))
        }
    }

    fn run(target: &mut Target, len: usize) -> Result<Vec<(usize, String)>, &'static str> {
        futures::executor::block_on(isolate(len, |slice| {
            std::future::ready(target.write(slice))
        }))
    }

    #[test]
    fn a_clean_batch_is_one_write() {
        let mut t = Target {
            bad: BTreeSet::new(),
            written: vec![],
            attempts: 0,
            transient_at: None,
        };
        assert!(run(&mut t, 1000).unwrap().is_empty());
        assert_eq!(t.attempts, 1);
        assert_eq!(t.written.len(), 1000);
    }

    #[test]
    fn a_transient_error_stops_isolation() {
        let mut t = Target {
            bad: [3].into(),
            written: vec![],
            attempts: 0,
            transient_at: Some(2),
        };
        assert_eq!(run(&mut t, 8), Err("connection reset"));
    }

    proptest! {
        /// Exactly the bad rows are rejected, each with its own error; every
        /// good row lands exactly once, in order; attempts stay logarithmic.
        #[test]
        fn isolates_exactly_the_bad_rows(len in 0usize..600, bad in proptest::collection::btree_set(0usize..600, 0..8)) {
            let bad: BTreeSet<usize> = bad.into_iter().filter(|b| *b < len).collect();
            let mut t = Target { bad: bad.clone(), written: vec![], attempts: 0, transient_at: None };
            let rejected = run(&mut t, len).unwrap();
            let rejected_rows: BTreeSet<usize> = rejected.iter().map(|(i, _)| *i).collect();
            prop_assert_eq!(&rejected_rows, &bad);
            for (i, e) in &rejected {
                prop_assert_eq!(e, &format!("row {i} violates check"));
            }
            let good: Vec<usize> = (0..len).filter(|i| !bad.contains(i)).collect();
            prop_assert_eq!(&t.written, &good, "good rows land once, in order");
            let log = usize::BITS - len.max(1).leading_zeros();
            prop_assert!(t.attempts <= 1 + 2 * bad.len() * log as usize, "{} attempts", t.attempts);
        }
    }
}
