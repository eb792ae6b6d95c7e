//! Exponential backoff, the one helper every retry loop uses (the
//! controller's requeue after a failed reconcile, the worker's retries).

use std::time::Duration;

/// Delays that double from `min` after each consecutive failure, up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff from `min` to `max`, with no failure yet.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failures: 0,
        }
    }

    /// Counts one more failure and returns how long to wait before retrying:
    /// `min`, `2·min`, `4·min` … capped at `max`.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay()
    }

    /// The delay for the failures counted so far (zero before the first).
    pub fn delay(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let exp = (self.failures - 1).min(20);
        self.min.saturating_mul(1 << exp).min(self.max)
    }

    /// Forgets the failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures counted.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
        assert_eq!(b.delay(), Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(4));
        assert_eq!(b.next_delay(), Duration::from_secs(8));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.delay(), Duration::from_secs(300));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn never_below_min_never_above_max_never_shrinks(
            min_ms in 1u64..10_000, extra in 0u64..1_000_000, n in 1usize..200,
        ) {
            let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(min_ms + extra));
            let mut b = Backoff::new(min, max);
            let mut last = Duration::ZERO;
            for _ in 0..n {
                let d = b.next_delay();
                prop_assert!(d >= min && d <= max);
                prop_assert!(d >= last);
                last = d;
            }
        }
    }
}
