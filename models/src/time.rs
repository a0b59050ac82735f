//! UTC time with nanosecond resolution, as a plain number so records stay deterministic.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, UTC. Negative values are before 1970.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// Converts a wall-clock reading taken by the caller (models never read the clock).
    pub fn from_system(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX)),
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_nanos(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(self.0.unsigned_abs())
        }
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0) / 1_000_000).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_round_trip_keeps_nanoseconds() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
        assert_eq!(Timestamp::from_system(t.to_system()), t);
        let before_epoch = Timestamp::from_unix_nanos(-5_000);
        assert_eq!(
            Timestamp::from_system(before_epoch.to_system()),
            before_epoch
        );
    }

    #[test]
    fn millis_since_never_negative() {
        let a = Timestamp::from_unix_millis(1_000);
        let b = Timestamp::from_unix_millis(3_500);
        assert_eq!(b.millis_since(a), 2_500);
        assert_eq!(a.millis_since(b), 0);
    }
}
