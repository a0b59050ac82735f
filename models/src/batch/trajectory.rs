//! Batch trajectories: for the running batch, per phase and per tag, a summary of the values
//! aligned on the time since the phase started, at a fixed resolution.
//!
//! Point `k` of a tag in a phase summarises every Good numeric value the tag took between
//! `k × resolution` (inclusive) and `(k + 1) × resolution` (exclusive) after the phase
//! started: min, max, mean, last and count. The time of a value is its source time when the
//! source sent one (so re-ordered or late deliveries land where they belong), else the time
//! the agent received it. Points with no value are absent, never zero-filled: a gap (an
//! outage, a restart) stays visible as missing points.
//!
//! Memory is bounded by configuration, never by input: at most `max_points` points per tag
//! and phase occurrence, and at most `max_phases` phase occurrences per batch, so a batch
//! holds at most `capacity_bytes()`. What falls outside is counted (`Outside`), not stored.
//! The whole value is serde-serialisable: a snapshot record carries it across a restart.
//!
//! Monitoring and quality forecasts read `PhaseTrajectory::series` (sparse, in point order)
//! or `PhaseTrajectory::dense` (one slot per point, `None` where there was no value).

use crate::{Quality, Sample, TagId, Timestamp};
use serde::{Deserialize, Serialize};

/// How trajectories are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrajectorySpec {
    /// Width of one point, in milliseconds since the phase start (> 0).
    pub resolution_ms: u64,
    /// Points kept per tag and phase occurrence; later values are counted as `beyond_end`.
    pub max_points: u32,
    /// Phase occurrences kept per batch; later phases are counted, not stored.
    pub max_phases: u32,
}

/// The summary of one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Which point: `k` covers `[k × resolution, (k + 1) × resolution)` after the phase start.
    pub index: u32,
    pub count: u32,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// The value with the latest time inside the point.
    pub last: f64,
    /// That value's time, in milliseconds since the phase start.
    pub last_offset_ms: u64,
}

impl Point {
    fn new(index: u32, value: f64, offset_ms: u64) -> Self {
        Point {
            index,
            count: 1,
            min: value,
            max: value,
            sum: value,
            last: value,
            last_offset_ms: offset_ms,
        }
    }

    fn add(&mut self, value: f64, offset_ms: u64) {
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
        if offset_ms >= self.last_offset_ms {
            self.last = value;
            self.last_offset_ms = offset_ms;
        }
    }

    pub fn mean(&self) -> f64 {
        self.sum / f64::from(self.count)
    }
}

/// One occurrence of a phase in the batch, with each tracked tag's points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTrajectory {
    pub phase: String,
    pub start: Timestamp,
    /// One series per tracked tag (in `Trajectories::tags` order), points in index order.
    series: Vec<Vec<Point>>,
}

impl PhaseTrajectory {
    /// The points of tracked tag number `slot`, in index order.
    pub fn series(&self, slot: usize) -> &[Point] {
        self.series.get(slot).map_or(&[], Vec::as_slice)
    }

    /// The first `points` points of tracked tag `slot`, one slot per point.
    pub fn dense(&self, slot: usize, points: usize) -> Vec<Option<Point>> {
        let mut out = vec![None; points];
        for p in self.series(slot) {
            if let Some(o) = out.get_mut(p.index as usize) {
                *o = Some(*p);
            }
        }
        out
    }
}

/// Values that were not stored, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outside {
    /// No phase had started, or the value's time is before its phase's start.
    pub before_start: u64,
    /// After `max_points × resolution` into the phase, or in a phase past `max_phases`.
    pub beyond_end: u64,
    /// Not Good, or not a number (text, array, empty).
    pub not_good_or_numeric: u64,
}

/// Where `Trajectories::add` put a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// In point `index` of the current phase.
    Point(u32),
    /// Not a tracked tag: nothing to do.
    Untracked,
    /// Counted in `Outside`.
    Outside,
}

/// The trajectories of one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectories {
    pub spec: TrajectorySpec,
    /// The tracked tags, in slot order.
    pub tags: Vec<TagId>,
    /// Slot of each tag by `TagId::index`, `u32::MAX` if not tracked.
    slot_of: Vec<u32>,
    /// Phase occurrences in the order they started.
    pub phases: Vec<PhaseTrajectory>,
    /// Phases that started after `max_phases` were reached.
    pub phases_not_kept: u32,
    /// `true` while the latest phase to start is one that was not kept.
    current_not_kept: bool,
    pub outside: Outside,
}

impl Trajectories {
    pub fn new(spec: TrajectorySpec, tags: &[TagId]) -> Self {
        let len = tags.iter().map(|t| t.index() + 1).max().unwrap_or(0);
        let mut slot_of = vec![u32::MAX; len];
        for (slot, t) in tags.iter().enumerate() {
            slot_of[t.index()] = slot as u32;
        }
        Trajectories {
            spec,
            tags: tags.to_vec(),
            slot_of,
            phases: Vec::new(),
            phases_not_kept: 0,
            current_not_kept: false,
            outside: Outside::default(),
        }
    }

    /// The most memory the points can take (`tags × max_points × max_phases` points).
    pub fn capacity_bytes(spec: &TrajectorySpec, tags: usize) -> u64 {
        tags as u64
            * u64::from(spec.max_points)
            * u64::from(spec.max_phases)
            * std::mem::size_of::<Point>() as u64
    }

    /// A phase started at `start`: later values align on it.
    pub fn begin_phase(&mut self, phase: &str, start: Timestamp) {
        if self.phases.len() >= self.spec.max_phases as usize {
            self.phases_not_kept += 1;
            self.current_not_kept = true;
            return;
        }
        self.current_not_kept = false;
        self.phases.push(PhaseTrajectory {
            phase: phase.to_owned(),
            start,
            series: vec![Vec::new(); self.tags.len()],
        });
    }

    /// The phase occurrence values currently go to.
    pub fn current(&self) -> Option<&PhaseTrajectory> {
        self.phases.last().filter(|_| !self.current_not_kept)
    }

    /// The slot of `tag`, if it is tracked.
    pub fn slot(&self, tag: TagId) -> Option<usize> {
        match self.slot_of.get(tag.index()) {
            Some(&s) if s != u32::MAX => Some(s as usize),
            _ => None,
        }
    }

    /// Adds one sample to the current phase.
    pub fn add(&mut self, s: &Sample) -> Placed {
        let Some(slot) = self.slot(s.tag) else {
            return Placed::Untracked;
        };
        let value = match (s.quality, s.number()) {
            (Quality::Good, Some(v)) if v.is_finite() => v,
            _ => {
                self.outside.not_good_or_numeric += 1;
                return Placed::Outside;
            }
        };
        if self.current_not_kept {
            self.outside.beyond_end += 1;
            return Placed::Outside;
        }
        let Some(phase) = self.phases.last_mut() else {
            self.outside.before_start += 1;
            return Placed::Outside;
        };
        let time = s.source_time.unwrap_or(s.agent_time);
        if time < phase.start {
            self.outside.before_start += 1;
            return Placed::Outside;
        }
        let offset_ms = time.millis_since(phase.start);
        let index = offset_ms / self.spec.resolution_ms.max(1);
        if index >= u64::from(self.spec.max_points) {
            self.outside.beyond_end += 1;
            return Placed::Outside;
        }
        let index = index as u32;
        let series = &mut phase.series[slot];
        // Values arrive mostly in time order: the last point is the usual case.
        match series.last_mut() {
            Some(p) if p.index == index => p.add(value, offset_ms),
            Some(p) if p.index < index => series.push(Point::new(index, value, offset_ms)),
            None => series.push(Point::new(index, value, offset_ms)),
            Some(_) => match series.binary_search_by_key(&index, |p| p.index) {
                Ok(i) => series[i].add(value, offset_ms),
                Err(i) => series.insert(i, Point::new(index, value, offset_ms)),
            },
        }
        Placed::Point(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: TrajectorySpec = TrajectorySpec {
        resolution_ms: 1_000,
        max_points: 10,
        max_phases: 2,
    };

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_700_000_000_000 + ms)
    }

    fn sample(tag: u32, v: f64, ms: i64) -> Sample {
        Sample::new(TagId(tag), v, Quality::Good, Some(at(ms)), at(ms + 5_000))
    }

    #[test]
    fn values_align_on_the_time_since_the_phase_start_by_source_time() {
        let mut t = Trajectories::new(SPEC, &[TagId(3), TagId(1)]);
        t.begin_phase("spraying", at(0));
        assert_eq!(t.add(&sample(3, 2.0, 0)), Placed::Point(0));
        assert_eq!(t.add(&sample(3, 4.0, 999)), Placed::Point(0));
        assert_eq!(t.add(&sample(3, 9.0, 1_000)), Placed::Point(1));
        // Late delivery of an earlier value: it joins point 0, and is not its `last`.
        assert_eq!(t.add(&sample(3, -1.0, 500)), Placed::Point(0));
        assert_eq!(t.add(&sample(3, 7.0, 4_200)), Placed::Point(4));
        assert_eq!(t.add(&sample(2, 7.0, 4_200)), Placed::Untracked);
        let p = t.current().unwrap();
        let s = p.series(0);
        assert_eq!(s.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 1, 4]);
        assert_eq!((s[0].min, s[0].max, s[0].count), (-1.0, 4.0, 3));
        assert!((s[0].mean() - 5.0 / 3.0).abs() < 1e-12);
        assert_eq!((s[0].last, s[0].last_offset_ms), (4.0, 999));
        assert!(p.series(1).is_empty(), "tag 1 had no value");
        let dense = p.dense(0, 6);
        assert_eq!(
            dense.iter().map(Option::is_some).collect::<Vec<_>>(),
            [true, true, false, false, true, false],
            "the gap stays a gap"
        );
    }

    #[test]
    fn an_out_of_order_value_lands_in_its_own_point_between_others() {
        let mut t = Trajectories::new(SPEC, &[TagId(0)]);
        t.begin_phase("p", at(0));
        for ms in [0, 5_000, 2_500, 2_000, 9_999] {
            t.add(&sample(0, ms as f64, ms));
        }
        let idx: Vec<u32> = t
            .current()
            .unwrap()
            .series(0)
            .iter()
            .map(|p| p.index)
            .collect();
        assert_eq!(idx, [0, 2, 5, 9]);
        assert_eq!(t.current().unwrap().series(0)[1].count, 2);
    }

    #[test]
    fn without_a_source_time_the_receive_time_counts() {
        let mut t = Trajectories::new(SPEC, &[TagId(0)]);
        t.begin_phase("p", at(0));
        let mut s = sample(0, 1.0, 0);
        s.source_time = None;
        s.agent_time = at(3_500);
        assert_eq!(t.add(&s), Placed::Point(3));
    }

    #[test]
    fn what_does_not_fit_is_counted_and_memory_stays_bounded() {
        let mut t = Trajectories::new(SPEC, &[TagId(0)]);
        assert_eq!(t.add(&sample(0, 1.0, 0)), Placed::Outside, "no phase yet");
        t.begin_phase("a", at(1_000));
        assert_eq!(
            t.add(&sample(0, 1.0, 0)),
            Placed::Outside,
            "before the start"
        );
        assert_eq!(t.add(&sample(0, 1.0, 10_999)), Placed::Point(9));
        assert_eq!(
            t.add(&sample(0, 1.0, 11_000)),
            Placed::Outside,
            "past max_points"
        );
        let mut bad = sample(0, 1.0, 2_000);
        bad.quality = Quality::Bad;
        assert_eq!(t.add(&bad), Placed::Outside);
        assert_eq!(t.add(&sample(0, f64::NAN, 2_000)), Placed::Outside);
        // A flood of values in range never grows a series past max_points.
        for k in 0..100_000 {
            t.add(&sample(0, k as f64, 1_000 + (k % 10_000)));
        }
        assert_eq!(t.current().unwrap().series(0).len(), 10);
        t.begin_phase("b", at(20_000));
        t.begin_phase("c", at(30_000));
        assert_eq!(t.phases.len(), 2, "max_phases");
        assert_eq!(t.phases_not_kept, 1);
        assert!(t.current().is_none());
        assert_eq!(t.add(&sample(0, 1.0, 30_500)), Placed::Outside);
        assert_eq!(
            t.outside,
            Outside {
                before_start: 2,
                beyond_end: 2,
                not_good_or_numeric: 2
            }
        );
        assert_eq!(Trajectories::capacity_bytes(&SPEC, 1), 2 * 10 * 48);
    }

    #[test]
    fn in_any_arrival_order_each_point_summarises_exactly_its_values() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut t = Trajectories::new(SPEC, &[TagId(0)]);
            t.begin_phase("p", at(0));
            let n = rng.usize(1..300);
            let values: Vec<(i64, f64)> = (0..n)
                .map(|_| (rng.i64(-2_000..12_000), rng.f64() * 100.0 - 50.0))
                .collect();
            for (ms, v) in &values {
                t.add(&sample(0, *v, *ms));
            }
            let series = t.current().unwrap().series(0);
            assert!(series.windows(2).all(|w| w[0].index < w[1].index));
            for p in series {
                let inside: Vec<&(i64, f64)> = values
                    .iter()
                    .filter(|(ms, _)| (0..10_000).contains(ms) && *ms / 1_000 == i64::from(p.index))
                    .collect();
                assert_eq!(p.count as usize, inside.len());
                let lo = inside.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
                let hi = inside.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                assert_eq!((p.min, p.max), (lo, hi));
                assert!(p.min <= p.mean() + 1e-9 && p.mean() <= p.max + 1e-9);
                let latest = inside.iter().map(|x| x.0).max().unwrap();
                assert_eq!(p.last_offset_ms, latest as u64);
            }
            let stored: u64 = series.iter().map(|p| u64::from(p.count)).sum();
            let o = t.outside;
            assert_eq!(stored + o.before_start + o.beyond_end, n as u64);
        }
    }

    #[test]
    fn a_snapshot_restores_the_same_trajectories() {
        let mut t = Trajectories::new(SPEC, &[TagId(0), TagId(7)]);
        t.begin_phase("a", at(0));
        for k in 0..30 {
            t.add(&sample((k % 2) * 7, k as f64, i64::from(k) * 300));
        }
        let bytes = bincode::serde::encode_to_vec(&t, bincode::config::standard()).unwrap();
        let (back, _): (Trajectories, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, t);
        let mut cont = back;
        assert_eq!(cont.add(&sample(7, 1.0, 9_100)), Placed::Point(9));
    }
}
