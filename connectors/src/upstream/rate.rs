//! Token bucket for the backlog drain rate. Pure: the caller passes the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DrainRate {
    per_s: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl DrainRate {
    /// `per_s` records per second, bursts of at most `burst` records.
    pub fn new(per_s: u64, burst: usize, now: Instant) -> Self {
        let capacity = (burst.max(1) as f64).min((per_s as f64).max(1.0));
        Self {
            per_s: per_s.max(1) as f64,
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_s).min(self.capacity);
        self.at = now;
    }

    /// How many records may go now (0 when the bucket is empty).
    pub fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        self.tokens.floor() as usize
    }

    pub fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// When at least one record may go again.
    pub fn next_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_rate_and_burst_are_bounded() {
        let t0 = Instant::now();
        let mut r = DrainRate::new(100, 50, t0);
        assert_eq!(r.available(t0), 50, "burst is capped");
        r.take(50);
        assert_eq!(r.available(t0), 0);
        assert_eq!(r.next_at(t0), t0 + Duration::from_millis(10));
        // Over 10 s at most 50 + 1000 records leave, whatever the call pattern.
        let mut sent = 50;
        for ms in (0..10_000).step_by(7) {
            let now = t0 + Duration::from_millis(ms);
            let n = r.available(now);
            r.take(n);
            sent += n;
        }
        assert!((1_000..=1_050).contains(&sent), "{sent}");
    }
}
