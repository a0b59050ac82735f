//! Capped exponential backoff with jitter, as a pure struct (tests drive it without sleeping).
//!
//! Delay n is drawn uniformly from `[d/2, d]` where `d = min(max, initial * 2^n)`: the jitter
//! keeps a plant's worth of agents from reconnecting in lock-step after a broker restart.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_rng(initial, max, fastrand::Rng::new())
    }

    pub fn with_rng(initial: Duration, max: Duration, rng: fastrand::Rng) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let d = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let extra_ns = self.rng.u64(0..=(d - half).as_nanos() as u64);
        half + Duration::from_nanos(extra_ns)
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_caps_and_resets() {
        let mut b = Backoff::with_rng(
            Duration::from_millis(100),
            Duration::from_secs(2),
            fastrand::Rng::with_seed(7),
        );
        let mut bounds = vec![];
        for n in 0..10u32 {
            let d = b.next_delay();
            let full = (Duration::from_millis(100) * (1 << n)).min(Duration::from_secs(2));
            assert!(
                d >= full / 2 && d <= full,
                "attempt {n}: {d:?} outside [{:?}, {full:?}]",
                full / 2
            );
            bounds.push(full);
        }
        assert_eq!(*bounds.last().unwrap(), Duration::from_secs(2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::with_rng(
            Duration::from_secs(1),
            Duration::from_secs(1),
            fastrand::Rng::with_seed(1),
        );
        let ds: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(
            ds.len() > 10,
            "jitter produced only {} distinct delays",
            ds.len()
        );
    }
}
