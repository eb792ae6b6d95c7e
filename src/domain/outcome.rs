//! How a job stands, from its counters: progress, the failure budget, and
//! the phase it ends in.

/// Record and batch counters of a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records in the plan.
    pub total_records: u64,
    /// Records written to the target.
    pub processed_records: u64,
    /// Records the target rejected.
    pub failed_records: u64,
    /// Batches not finished yet (pending or leased).
    pub unfinished_batches: u64,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// Batches remain and the budget holds.
    InProgress,
    /// Done; every record copied.
    Succeeded,
    /// Done; some records failed, within the budget.
    CompletedWithErrors,
    /// More records failed than the budget allows. Decided as soon as it is
    /// certain (failed records only grow until a retry), not at the end.
    OverBudget {
        /// Failed records / total records.
        ratio: f64,
    },
}

/// Decides the outcome under `max_failed_ratio` (0..=1).
pub fn outcome(c: &Counters, max_failed_ratio: f64) -> Outcome {
    let ratio = failed_ratio(c);
    if ratio > max_failed_ratio {
        return Outcome::OverBudget { ratio };
    }
    match (c.unfinished_batches, c.failed_records) {
        (0, 0) => Outcome::Succeeded,
        (0, _) => Outcome::CompletedWithErrors,
        _ => Outcome::InProgress,
    }
}

/// Failed records over total records (0 for an empty plan).
pub fn failed_ratio(c: &Counters) -> f64 {
    if c.total_records == 0 {
        0.0
    } else {
        // Exact below 2^53 records, which no table reaches.
        c.failed_records as f64 / c.total_records as f64
    }
}

/// Share of records handled (processed + failed), as shown in `kubectl get`:
/// rounded down, so "100%" only when nothing is left.
pub fn progress(c: &Counters) -> String {
    let handled = c.processed_records.saturating_add(c.failed_records);
    let percent = if c.total_records == 0 {
        if c.unfinished_batches == 0 { 100 } else { 0 }
    } else {
        let p = u128::from(handled.min(c.total_records)) * 100 / u128::from(c.total_records);
        if p == 100 && c.unfinished_batches > 0 {
            99
        } else {
            p
        }
    };
    format!("{percent}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(total: u64, processed: u64, failed: u64, unfinished: u64) -> Counters {
        Counters {
            total_records: total,
            processed_records: processed,
            failed_records: failed,
            unfinished_batches: unfinished,
        }
    }

    #[test]
    fn phases() {
        assert_eq!(outcome(&c(100, 50, 0, 5), 0.01), Outcome::InProgress);
        assert_eq!(outcome(&c(100, 100, 0, 0), 0.01), Outcome::Succeeded);
        assert_eq!(
            outcome(&c(100, 99, 1, 0), 0.01),
            Outcome::CompletedWithErrors
        );
        assert_eq!(
            outcome(&c(100, 10, 2, 8), 0.01),
            Outcome::OverBudget { ratio: 0.02 }
        );
        assert_eq!(outcome(&c(0, 0, 0, 0), 0.0), Outcome::Succeeded);
        // A zero budget tolerates no failure at all.
        assert_eq!(
            outcome(&c(100, 99, 1, 0), 0.0),
            Outcome::OverBudget { ratio: 0.01 }
        );
    }

    #[test]
    fn progress_reads_like_a_person_expects() {
        assert_eq!(progress(&c(1000, 612, 0, 10)), "61%");
        assert_eq!(progress(&c(1000, 999, 0, 1)), "99%");
        assert_eq!(progress(&c(1000, 990, 10, 0)), "100%");
        assert_eq!(progress(&c(0, 0, 0, 1)), "0%");
        assert_eq!(progress(&c(0, 0, 0, 0)), "100%");
    }

    proptest! {
        /// Progress is monotone in handled records and never claims 100%
        /// while batches remain.
        #[test]
        fn progress_is_monotone_and_honest(total in 1u64..10_000, a in 0u64..10_000, b in 0u64..10_000, unfinished in 0u64..3) {
            let (lo, hi) = (a.min(b).min(total), a.max(b).min(total));
            let p = |n: u64| progress(&c(total, n, 0, unfinished)).trim_end_matches('%').parse::<u64>().unwrap();
            prop_assert!(p(lo) <= p(hi));
            if unfinished > 0 { prop_assert!(p(hi) < 100); }
        }

        /// Over budget is reported whatever else holds; within budget, a
        /// finished job is Succeeded exactly when nothing failed.
        #[test]
        fn budget_decides_first(total in 1u64..10_000, failed in 0u64..200, unfinished in 0u64..3, ratio in 0.0f64..0.05) {
            let failed = failed.min(total);
            let counters = c(total, total - failed, failed, unfinished);
            match outcome(&counters, ratio) {
                Outcome::OverBudget { ratio: r } => prop_assert!(r > ratio),
                Outcome::Succeeded => prop_assert!(failed == 0 && unfinished == 0),
                Outcome::CompletedWithErrors => prop_assert!(failed > 0 && unfinished == 0),
                Outcome::InProgress => prop_assert!(unfinished > 0),
            }
        }
    }
}
