//! Clock truth (21 CFR Part 11, Annex 11: trustworthy time). Records are ordered by seq, never
//! by wall clock; these watchers make what the wall clock did part of the record.
//!
//! - `StepWatch`: a wall-clock step (forward or back, beyond `clock.step_threshold_ms`),
//!   detected against the monotonic clock at every pipeline tick, becomes a `clock_step` audit
//!   record with the offset. Slewing (NTP's gradual correction) never reaches the threshold
//!   between two ticks, because the reference moves on at every check.
//! - `SyncWatch`: the host's time-synchronisation state from the kernel (`adjtimex`, read
//!   only): the `pdtf_clock_synchronized` metric, and the `clock_unsynchronized` system alarm
//!   when the clock is unsynchronised at start or for longer than
//!   `clock.unsync_alarm_after_s`; entering and leaving are audit records.
//! - `SkewWatch`: a source timestamp further than `clock.max_source_skew_s` from agent time is
//!   recorded as it is (never replaced) and, once per tag until it is back within the bound, a
//!   `source_clock_skew` audit record says so (and `source_clock_ok` when it is back).
//!
//! The watchers are pure (the caller passes the times) and unit-tested.

use pdtf_models::{Sample, TagId, Timestamp};
use serde::Deserialize;
use std::time::{Duration, Instant};

const fn default_step_threshold_ms() -> u64 {
    1_000
}
const fn default_unsync_alarm_after_s() -> u64 {
    600
}
const fn default_max_source_skew_s() -> u64 {
    300
}

/// `[clock]` in the agent file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// A wall-clock jump larger than this between two ticks is a step (audit record).
    #[serde(default = "default_step_threshold_ms")]
    pub step_threshold_ms: u64,
    /// Unsynchronised this long (or at start): the `clock_unsynchronized` alarm.
    #[serde(default = "default_unsync_alarm_after_s")]
    pub unsync_alarm_after_s: u64,
    /// A source timestamp further from agent time than this gets a `source_clock_skew` record.
    #[serde(default = "default_max_source_skew_s")]
    pub max_source_skew_s: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            step_threshold_ms: default_step_threshold_ms(),
            unsync_alarm_after_s: default_unsync_alarm_after_s(),
            max_source_skew_s: default_max_source_skew_s(),
        }
    }
}

/// Signed seconds with millisecond precision, for audit details.
fn secs(ns: i64) -> String {
    format!("{:+.3} s", ns as f64 / 1e9)
}

pub struct StepWatch {
    threshold_ns: i64,
    last: Option<(Instant, Timestamp)>,
}

impl StepWatch {
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold_ns: i64::try_from(threshold.as_nanos()).unwrap_or(i64::MAX),
            last: None,
        }
    }

    /// The step since the last check (wall time minus what the monotonic clock says it
    /// should be), when beyond the threshold, as the audit detail. Moves the reference on.
    pub fn check(&mut self, mono: Instant, wall: Timestamp) -> Option<(i64, String)> {
        let prev = self.last.replace((mono, wall));
        let (m0, w0) = prev?;
        let mono_ns = i64::try_from(mono.saturating_duration_since(m0).as_nanos()).ok()?;
        let step = (wall.as_nanos() - w0.as_nanos()) - mono_ns;
        (step.abs() > self.threshold_ns).then(|| {
            (
                step,
                format!(
                    "wall clock stepped {} by {} (from {} to {}; measured against the monotonic clock, threshold {}); records stay ordered by seq",
                    if step > 0 { "forward" } else { "back" },
                    secs(step),
                    pdtf_connectors::alert::rfc3339(Timestamp::from_unix_nanos(w0.as_nanos() + mono_ns)),
                    pdtf_connectors::alert::rfc3339(wall),
                    secs(self.threshold_ns),
                ),
            )
        })
    }
}

/// The kernel's view of time synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncState {
    pub synchronized: bool,
    /// The kernel's maximum error estimate (µs).
    pub max_error_us: i64,
}

/// Reads the kernel's synchronisation state (`adjtimex` with no modes: read only, needs no
/// privilege). `None` when the call fails. One of the project's two `unsafe` calls (the other
/// is `memory::trim`): libc has no safe wrapper and neither rustix nor nix wraps `adjtimex`.
#[allow(unsafe_code)]
// `maxerror` is a C long: i64 on 64-bit targets (a no-op conversion), i32 on armv7.
#[allow(clippy::useless_conversion)]
pub fn kernel_sync_state() -> Option<SyncState> {
    // SAFETY: `timex` is plain data; zeroed (modes = 0) asks adjtimex to read, not set.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed timex for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    Some(SyncState {
        synchronized: state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0,
        max_error_us: i64::from(tx.maxerror),
    })
}

/// A change the caller records (and shows as the `clock_unsynchronized` alarm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncChange {
    /// Raise the alarm (unsynchronised at start, or for longer than the limit).
    Unsynchronized(String),
    /// Clear it.
    Synchronized(String),
}

pub struct SyncWatch {
    alarm_after: Duration,
    started: bool,
    unsynced_since: Option<Instant>,
    alarmed: bool,
}

impl SyncWatch {
    pub fn new(alarm_after: Duration) -> Self {
        Self {
            alarm_after,
            started: false,
            unsynced_since: None,
            alarmed: false,
        }
    }

    pub fn check(&mut self, now: Instant, s: SyncState) -> Option<SyncChange> {
        let at_start = !std::mem::replace(&mut self.started, true);
        if s.synchronized {
            self.unsynced_since = None;
            return std::mem::take(&mut self.alarmed).then(|| {
                SyncChange::Synchronized(format!(
                    "host clock synchronised again (kernel maximum error {} µs)",
                    s.max_error_us
                ))
            });
        }
        let since = *self.unsynced_since.get_or_insert(now);
        if self.alarmed || !(at_start || now.duration_since(since) >= self.alarm_after) {
            return None;
        }
        self.alarmed = true;
        Some(SyncChange::Unsynchronized(if at_start {
            format!(
                "host clock not synchronised at start (kernel maximum error {} µs): timestamps may be wrong",
                s.max_error_us
            )
        } else {
            format!(
                "host clock not synchronised for {} s (kernel maximum error {} µs): timestamps may be wrong",
                now.duration_since(since).as_secs(),
                s.max_error_us
            )
        }))
    }
}

/// The three watchers of a line pipeline, with the tag names for the records.
pub struct Clocks {
    step: StepWatch,
    sync: SyncWatch,
    skew: SkewWatch,
    names: std::sync::Arc<[String]>,
    /// The kernel's state; a field so a test can give another.
    pub read_sync: fn() -> Option<SyncState>,
    /// The state could not be read, and that was logged.
    pub unreadable_reported: bool,
}

impl Clocks {
    pub fn new(c: &ClockConfig, names: std::sync::Arc<[String]>) -> Self {
        Self {
            step: StepWatch::new(Duration::from_millis(c.step_threshold_ms)),
            sync: SyncWatch::new(Duration::from_secs(c.unsync_alarm_after_s)),
            skew: SkewWatch::new(Duration::from_secs(c.max_source_skew_s)),
            names,
            read_sync: kernel_sync_state,
            unreadable_reported: false,
        }
    }

    /// At a tick: a step (offset ns, detail), the kernel's state, and a change of it.
    pub fn on_tick(
        &mut self,
        mono: Instant,
        wall: Timestamp,
    ) -> (Option<(i64, String)>, Option<SyncState>, Option<SyncChange>) {
        let step = self.step.check(mono, wall);
        let state = (self.read_sync)();
        let change = state.and_then(|s| self.sync.check(mono, s));
        (step, state, change)
    }

    /// The tag names by `TagId`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The tag names after a reload (the registry only grows).
    pub fn set_names(&mut self, names: std::sync::Arc<[String]>) {
        self.names = names;
    }

    /// A source clock that went off (or came back) with this sample: (event, detail).
    pub fn on_sample(&mut self, s: &Sample) -> Option<(&'static str, String)> {
        s.source_time?;
        let name = self.names.get(s.tag.index()).map_or("?", |n| n.as_str());
        self.skew.check(s, name)
    }
}

/// Which tags' source clocks are currently off; one bit per tag id.
pub struct SkewWatch {
    max_ns: i64,
    off: Vec<bool>,
}

impl SkewWatch {
    pub fn new(max: Duration) -> Self {
        Self {
            max_ns: i64::try_from(max.as_nanos()).unwrap_or(i64::MAX),
            off: Vec::new(),
        }
    }

    /// `(event, detail)` when the sample's source clock went off or came back.
    pub fn check(&mut self, s: &Sample, name: &str) -> Option<(&'static str, String)> {
        let src = s.source_time?;
        let skew = src.as_nanos() - s.agent_time.as_nanos();
        let i = s.tag.index();
        if i >= self.off.len() {
            self.off.resize(i + 1, false);
        }
        let off = skew.abs() > self.max_ns;
        if off == self.off[i] {
            return None;
        }
        self.off[i] = off;
        Some(if off {
            (
                "source_clock_skew",
                format!(
                    "tag {name}: source timestamp {} is {} from agent time {} (limit {}); recorded as sent, not replaced",
                    pdtf_connectors::alert::rfc3339(src),
                    secs(skew),
                    pdtf_connectors::alert::rfc3339(s.agent_time),
                    secs(self.max_ns).trim_start_matches('+'),
                ),
            )
        } else {
            (
                "source_clock_ok",
                format!(
                    "tag {name}: source timestamps within {} of agent time again",
                    secs(self.max_ns).trim_start_matches('+')
                ),
            )
        })
    }

    /// Tags whose source clock is off now.
    pub fn off(&self) -> impl Iterator<Item = TagId> + '_ {
        self.off
            .iter()
            .enumerate()
            .filter(|(_, o)| **o)
            .map(|(i, _)| TagId(i as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdtf_models::Quality;

    fn wall(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_763_800_000_000 + ms)
    }

    #[test]
    fn a_step_either_way_is_reported_with_its_offset_and_slewing_is_not() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = StepWatch::new(Duration::from_secs(1));
        assert_eq!(
            w.check(at(0), wall(0)),
            None,
            "the first check only anchors"
        );
        // Slewing: 0.5 ms per second for a minute never adds up to a step.
        for s in 1..=60u64 {
            assert_eq!(
                w.check(at(s * 1000), wall(s as i64 * 1000 + s as i64 / 2)),
                None
            );
        }
        let (step, detail) = w.check(at(61_000), wall(61_030 + 3_600_000)).unwrap();
        assert_eq!(step, 3_600_000_000_000);
        assert!(detail.contains("forward by +3600.000 s"), "{detail}");
        let (step, detail) = w
            .check(at(62_000), wall(62_030 + 3_600_000 - 2_500))
            .unwrap();
        assert_eq!(step, -2_500_000_000);
        assert!(detail.contains("back by -2.500 s"), "{detail}");
        // Just under the threshold is not a step.
        assert_eq!(w.check(at(63_000), wall(63_030 + 3_597_500 + 999)), None);
    }

    #[test]
    fn unsynchronised_at_start_alarms_at_once_later_only_after_the_limit() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let unsynced = SyncState {
            synchronized: false,
            max_error_us: 16_000_000,
        };
        let synced = SyncState {
            synchronized: true,
            max_error_us: 20,
        };
        let mut w = SyncWatch::new(Duration::from_secs(600));
        assert!(
            matches!(w.check(at(0), unsynced), Some(SyncChange::Unsynchronized(d)) if d.contains("at start"))
        );
        assert_eq!(w.check(at(1), unsynced), None, "raised once");
        assert!(matches!(
            w.check(at(2), synced),
            Some(SyncChange::Synchronized(_))
        ));
        assert_eq!(w.check(at(3), synced), None);
        // Losing sync later: an alarm only once it lasted the limit.
        assert_eq!(w.check(at(10), unsynced), None);
        assert_eq!(w.check(at(609), unsynced), None);
        assert!(
            matches!(w.check(at(610), unsynced), Some(SyncChange::Unsynchronized(d)) if d.contains("for 600 s"))
        );
        // Synchronised at start: nothing to say.
        let mut w = SyncWatch::new(Duration::from_secs(600));
        assert_eq!(w.check(at(0), synced), None);
    }

    #[test]
    fn the_kernel_state_can_be_read() {
        let s = kernel_sync_state().expect("adjtimex reads without privilege");
        assert!(s.max_error_us >= 0, "{s:?}");
    }

    #[test]
    fn a_far_source_timestamp_is_reported_once_per_tag_until_it_is_back() {
        let mut w = SkewWatch::new(Duration::from_secs(300));
        let sample = |tag: u32, src_ms: i64| {
            Sample::new(TagId(tag), 1.0, Quality::Good, Some(wall(src_ms)), wall(0))
        };
        assert_eq!(w.check(&sample(0, -299_000), "temp"), None);
        let (event, detail) = w.check(&sample(0, -3_600_000), "temp").unwrap();
        assert_eq!(event, "source_clock_skew");
        assert!(
            detail.contains("-3600.000 s") && detail.contains("not replaced"),
            "{detail}"
        );
        assert_eq!(w.check(&sample(0, -3_600_000), "temp"), None, "once");
        assert_eq!(
            w.check(&sample(3, 400_000), "flow").unwrap().0,
            "source_clock_skew"
        );
        assert_eq!(w.off().collect::<Vec<_>>(), vec![TagId(0), TagId(3)]);
        assert_eq!(
            w.check(&sample(0, 10), "temp").unwrap().0,
            "source_clock_ok"
        );
        // No source timestamp: nothing to compare.
        let mut s = sample(5, 0);
        s.source_time = None;
        assert_eq!(w.check(&s, "x"), None);
        assert_eq!(w.off().collect::<Vec<_>>(), vec![TagId(3)]);
    }
}
