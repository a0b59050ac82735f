//! Limit alarms: lo-lo / lo / hi / hi-hi with deadband (hysteresis) and on-delay.
//!
//! Rules, per tag:
//! - A level is *in condition* when the value is beyond its limit (`> hi`, `< lo`). While a
//!   level of at least the same rank on the same side is active, it stays in condition until
//!   the value comes back past the limit by `deadband`.
//! - The wanted level is the most severe level in condition. A raise or escalation happens only
//!   after the wanted level has held for `on_delay_ms` (measured on sample agent time); a
//!   clear or de-escalation happens at once.
//! - Bad-quality samples neither raise nor clear: the alarm keeps its state until a usable value.
//! - Phase-aware: a recipe's phase may replace a tag's limits while it runs (`PhaseLimits`);
//!   the line twin's recipe and phase say which apply to each sample. Outside the phases
//!   that name a tag its own limits apply; a tag with none is not judged there, and an alarm
//!   the phase's limits raised clears at the first sample after the phase ended.

use super::Detector;
use crate::{
    twin::LineTwin, AlarmEvent, AlarmState, Condition, ConditionKind, ConditionSource, Level,
    LimitSpec, RecordBody, Sample, TagId, TagTable, Timestamp,
};

#[derive(Debug, Clone, Copy, Default)]
struct TagAlarm {
    active: Option<Level>,
    pending: Option<(Level, Timestamp)>,
}

/// Limits that replace tags' own while one phase of one recipe runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseLimits {
    pub recipe: String,
    pub phase: String,
    /// `specs[i]` replaces `TagId(i)`'s limits in the phase; `None`: the tag's own apply.
    pub specs: Vec<Option<LimitSpec>>,
}

#[derive(Debug, Clone)]
pub struct LimitDetector {
    specs: Vec<Option<LimitSpec>>,
    phases: Vec<PhaseLimits>,
    state: Vec<TagAlarm>,
}

impl LimitDetector {
    /// `specs[i]` belongs to `TagId(i)`; `None` means the tag has no limits.
    pub fn new(specs: Vec<Option<LimitSpec>>) -> Self {
        let state = vec![TagAlarm::default(); specs.len()];
        Self {
            specs,
            phases: Vec::new(),
            state,
        }
    }

    /// With the recipes' phase limits.
    pub fn with_phases(mut self, phases: Vec<PhaseLimits>) -> Self {
        let len = phases
            .iter()
            .map(|p| p.specs.len())
            .max()
            .unwrap_or(0)
            .max(self.state.len());
        self.state.resize(len, TagAlarm::default());
        self.phases = phases;
        self
    }

    /// The limits of tag `i` now: the running phase's, else the tag's own.
    fn spec_now(&self, i: usize, twin: &LineTwin) -> Option<LimitSpec> {
        let phase = match (twin.recipe(), twin.phase()) {
            (Some(r), Some(p)) => self
                .phases
                .iter()
                .find(|l| l.recipe == r && l.phase == p)
                .and_then(|l| l.specs.get(i).copied().flatten()),
            _ => None,
        };
        phase.or_else(|| self.specs.get(i).copied().flatten())
    }

    /// Whether tag `i` has limits anywhere (its own, or in some phase).
    fn watched(&self, i: usize) -> bool {
        self.specs.get(i).is_some_and(Option::is_some)
            || self
                .phases
                .iter()
                .any(|p| p.specs.get(i).is_some_and(Option::is_some))
    }

    /// Currently active level of a tag, if any.
    pub fn active(&self, tag: crate::TagId) -> Option<Level> {
        self.state.get(tag.index()).and_then(|s| s.active)
    }

    /// Sets a tag's active level (at start, from the journal), so an alarm that was active
    /// before a restart clears when the value returns, instead of staying "active" on
    /// SCADA's retained topic forever.
    pub fn restore_level(&mut self, tag: TagId, level: Option<Level>) {
        if let Some(st) = self.state.get_mut(tag.index()) {
            st.active = level;
            st.pending = None;
        }
    }
}

fn limit_of(spec: &LimitSpec, level: Level) -> Option<f64> {
    match level {
        Level::LoLo => spec.lolo,
        Level::Lo => spec.lo,
        Level::Hi => spec.hi,
        Level::HiHi => spec.hihi,
    }
}

fn in_condition(spec: &LimitSpec, level: Level, value: f64, active: Option<Level>) -> bool {
    let Some(limit) = limit_of(spec, level) else {
        return false;
    };
    let holding =
        active.is_some_and(|a| a.is_high() == level.is_high() && a.rank() >= level.rank());
    let band = if holding { spec.deadband } else { 0.0 };
    if level.is_high() {
        value > limit - band
    } else {
        value < limit + band
    }
}

fn wanted(spec: &LimitSpec, value: f64, active: Option<Level>) -> Option<Level> {
    [Level::HiHi, Level::LoLo, Level::Hi, Level::Lo]
        .into_iter()
        .find(|&l| in_condition(spec, l, value, active))
}

/// A move to `to` from `from` that makes things worse waits for the on-delay.
fn is_worsening(from: Option<Level>, to: Option<Level>) -> bool {
    match (from, to) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(f), Some(t)) => f.is_high() != t.is_high() || t.rank() > f.rank(),
    }
}

impl Detector for LimitDetector {
    fn on_sample(&mut self, sample: &Sample, twin: &LineTwin, out: &mut Vec<RecordBody>) {
        let i = sample.tag.index();
        let spec = if self.phases.is_empty() {
            self.specs.get(i).copied().flatten()
        } else {
            self.spec_now(i, twin)
        };
        let Some(st) = self.state.get_mut(i) else {
            return;
        };
        let Some(spec) = spec.or_else(|| {
            // No limits now (a phase's ended): an alarm they raised clears.
            st.active.map(|_| LimitSpec {
                lolo: None,
                lo: None,
                hi: None,
                hihi: None,
                deadband: 0.0,
                on_delay_ms: 0,
            })
        }) else {
            return;
        };
        let spec = &spec;
        let Some(value) = sample.number().filter(|v| v.is_finite()) else {
            return;
        };
        if !sample.quality.is_usable() {
            return;
        }
        let now = sample.agent_time;
        let want = wanted(spec, value, st.active);
        if want == st.active {
            st.pending = None;
            return;
        }
        if is_worsening(st.active, want) && spec.on_delay_ms > 0 {
            let level = want.expect("worsening always has a target level");
            match st.pending {
                Some((p, since)) if p == level => {
                    if now.millis_since(since) < spec.on_delay_ms {
                        return;
                    }
                }
                _ => {
                    st.pending = Some((level, now));
                    return;
                }
            }
        }
        let previous = st.active;
        st.active = want;
        st.pending = None;
        let (state, limit, severity) = match want {
            Some(l) => (AlarmState::Active(l), limit_of(spec, l), l.severity()),
            None => (
                AlarmState::Inactive,
                previous.and_then(|p| limit_of(spec, p)),
                0,
            ),
        };
        out.push(RecordBody::Alarm(AlarmEvent {
            condition: Condition::tag_limit(sample.tag),
            state,
            previous,
            value,
            limit: limit.unwrap_or(f64::NAN),
            severity,
            time: now,
            batch_id: twin.batch_id().map(str::to_owned),
            phase: twin.phase().map(str::to_owned),
        }));
    }

    fn conditions(&self) -> Vec<Condition> {
        (0..self.state.len())
            .filter(|i| self.watched(*i))
            .map(|i| Condition::tag_limit(TagId(i as u32)))
            .collect()
    }

    fn restore(&mut self, last: &AlarmEvent) -> bool {
        let (ConditionSource::Tag(tag), ConditionKind::Limit) =
            (&last.condition.source, last.condition.kind)
        else {
            return false;
        };
        if !self.watched(tag.index()) {
            return false;
        }
        let level = match last.state {
            AlarmState::Active(l) => Some(l),
            AlarmState::Inactive => None,
        };
        self.restore_level(*tag, level);
        true
    }

    fn active_count(&self) -> usize {
        self.state.iter().filter(|s| s.active.is_some()).count()
    }

    fn reconfigure(
        &mut self,
        tags: &TagTable,
        at: Timestamp,
        twin: &LineTwin,
        out: &mut Vec<RecordBody>,
    ) {
        let specs = tags.limits();
        let in_phases: Vec<bool> = (0..specs.len())
            .map(|i| {
                self.phases
                    .iter()
                    .any(|p| p.specs.get(i).is_some_and(Option::is_some))
            })
            .collect();
        self.state
            .resize(specs.len().max(self.state.len()), TagAlarm::default());
        for (i, (st, new)) in self.state.iter_mut().zip(&specs).enumerate() {
            let old = self.specs.get(i).copied().flatten();
            if old != *new {
                // New limits judge the next sample; a half-run on-delay starts again.
                st.pending = None;
            }
            // A tag that lost its own limits but has a phase's keeps its state.
            let (Some(level), None, false) = (st.active, new, in_phases[i]) else {
                continue;
            };
            let tag = TagId(i as u32);
            st.active = None;
            out.push(RecordBody::Alarm(AlarmEvent {
                condition: Condition::tag_limit(tag),
                state: AlarmState::Inactive,
                previous: Some(level),
                value: twin
                    .get(tag)
                    .and_then(|v| v.value.as_f64())
                    .unwrap_or(f64::NAN),
                limit: old.and_then(|o| limit_of(&o, level)).unwrap_or(f64::NAN),
                severity: 0,
                time: at,
                batch_id: twin.batch_id().map(str::to_owned),
                phase: twin.phase().map(str::to_owned),
            }));
        }
        self.specs = specs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Quality, TagId};

    fn spec() -> LimitSpec {
        LimitSpec {
            lolo: Some(10.0),
            lo: Some(20.0),
            hi: Some(80.0),
            hihi: Some(90.0),
            deadband: 2.0,
            on_delay_ms: 0,
        }
    }

    fn sample(value: f64, ms: i64, quality: Quality) -> Sample {
        Sample::new(
            TagId(0),
            value,
            quality,
            None,
            Timestamp::from_unix_millis(ms),
        )
    }

    fn run(det: &mut LimitDetector, values: &[(f64, i64)]) -> Vec<AlarmState> {
        let twin = LineTwin::new(1);
        let mut out = Vec::new();
        for &(v, ms) in values {
            det.on_sample(&sample(v, ms, Quality::Good), &twin, &mut out);
        }
        out.into_iter()
            .map(|r| match r {
                RecordBody::Alarm(a) => a.state,
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    #[test]
    fn raises_escalates_and_clears_with_deadband() {
        let mut det = LimitDetector::new(vec![Some(spec())]);
        let states = run(
            &mut det,
            &[
                (50.0, 0),
                (81.0, 1),
                (79.0, 2),
                (91.0, 3),
                (89.0, 4),
                (87.9, 5),
                (77.9, 6),
            ],
        );
        assert_eq!(
            states,
            vec![
                AlarmState::Active(Level::Hi),
                AlarmState::Active(Level::HiHi),
                AlarmState::Active(Level::Hi),
                AlarmState::Inactive
            ]
        );
    }

    #[test]
    fn low_side_mirrors_high_side() {
        let mut det = LimitDetector::new(vec![Some(spec())]);
        let states = run(
            &mut det,
            &[(19.0, 0), (9.0, 1), (11.0, 2), (12.5, 3), (22.5, 4)],
        );
        assert_eq!(
            states,
            vec![
                AlarmState::Active(Level::Lo),
                AlarmState::Active(Level::LoLo),
                AlarmState::Active(Level::Lo),
                AlarmState::Inactive
            ]
        );
    }

    #[test]
    fn on_delay_filters_short_spikes() {
        let mut s = spec();
        s.on_delay_ms = 1_000;
        let mut det = LimitDetector::new(vec![Some(s)]);
        // A 500 ms spike never raises; a condition held for 1 s does.
        let spike = run(&mut det, &[(85.0, 0), (85.0, 500), (50.0, 600)]);
        assert!(spike.is_empty(), "{spike:?}");
        let held = run(&mut det, &[(85.0, 2_000), (85.0, 2_500), (85.0, 3_000)]);
        assert_eq!(held, vec![AlarmState::Active(Level::Hi)]);
    }

    #[test]
    fn bad_quality_and_nan_neither_raise_nor_clear() {
        let mut det = LimitDetector::new(vec![Some(spec())]);
        let twin = LineTwin::new(1);
        let mut out = Vec::new();
        det.on_sample(&sample(95.0, 0, Quality::Bad), &twin, &mut out);
        assert!(out.is_empty());
        det.on_sample(&sample(95.0, 1, Quality::Good), &twin, &mut out);
        det.on_sample(&sample(50.0, 2, Quality::Bad), &twin, &mut out);
        det.on_sample(&sample(f64::NAN, 3, Quality::Good), &twin, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(det.active(TagId(0)), Some(Level::HiHi));
    }

    #[test]
    fn a_restored_alarm_clears_when_the_value_returns() {
        let mut det = LimitDetector::new(vec![Some(spec())]);
        det.restore_level(TagId(0), Some(Level::HiHi));
        assert_eq!(det.active_count(), 1);
        assert_eq!(run(&mut det, &[(50.0, 0)]), vec![AlarmState::Inactive]);
    }

    #[test]
    fn tags_without_limits_are_ignored() {
        let mut det = LimitDetector::new(vec![None]);
        assert!(run(&mut det, &[(1e9, 0)]).is_empty());
        assert_eq!(det.active_count(), 0);
    }

    #[test]
    fn restore_takes_only_its_own_conditions() {
        let mut det = LimitDetector::new(vec![Some(spec()), None]);
        let ev = |condition| AlarmEvent {
            condition,
            state: AlarmState::Active(Level::Hi),
            previous: None,
            value: 85.0,
            limit: 80.0,
            severity: 500,
            time: Timestamp::from_unix_millis(0),
            batch_id: None,
            phase: None,
        };
        let rate = Condition {
            source: ConditionSource::Tag(TagId(0)),
            kind: ConditionKind::Rate,
        };
        assert!(
            !det.restore(&ev(rate)),
            "a rate condition is not a limit detector's"
        );
        assert!(
            !det.restore(&ev(Condition::tag_limit(TagId(1)))),
            "tag 1 has no limits"
        );
        assert!(det.restore(&ev(Condition::tag_limit(TagId(0)))));
        assert_eq!(det.active_count(), 1);
        assert_eq!(det.conditions(), vec![Condition::tag_limit(TagId(0))]);
    }

    fn table(limits: Vec<Option<LimitSpec>>) -> TagTable {
        TagTable::new(
            limits
                .into_iter()
                .map(|limits| {
                    Some(crate::TagSpec {
                        name: "t".into(),
                        unit: String::new(),
                        limits,
                        signals: Default::default(),
                    })
                })
                .collect(),
        )
    }

    #[test]
    fn reconfigure_keeps_live_conditions_and_clears_orphaned_ones() {
        let mut det = LimitDetector::new(vec![Some(spec()), Some(spec())]);
        let mut twin = LineTwin::new(2);
        let mut out = Vec::new();
        for tag in [TagId(0), TagId(1)] {
            let s = Sample::new(
                tag,
                85.0,
                Quality::Good,
                None,
                Timestamp::from_unix_millis(1),
            );
            twin.update(&s);
            det.on_sample(&s, &twin, &mut out);
        }
        assert_eq!(det.active_count(), 2);
        out.clear();
        // Tag 0 gets wider limits (still active until judged), tag 1 loses its limits, a
        // third tag is registered.
        let wider = LimitSpec {
            hi: Some(95.0),
            hihi: Some(99.0),
            ..spec()
        };
        let at = Timestamp::from_unix_millis(2);
        det.reconfigure(
            &table(vec![Some(wider), None, Some(spec())]),
            at,
            &twin,
            &mut out,
        );
        let cleared: Vec<_> = out
            .iter()
            .map(|r| match r {
                RecordBody::Alarm(a) => {
                    (a.condition.clone(), a.state, a.previous, a.value, a.limit)
                }
                other => panic!("unexpected record {other:?}"),
            })
            .collect();
        assert_eq!(
            cleared,
            vec![(
                Condition::tag_limit(TagId(1)),
                AlarmState::Inactive,
                Some(Level::Hi),
                85.0,
                80.0
            )]
        );
        assert_eq!(det.active_count(), 1);
        assert_eq!(det.conditions().len(), 2);
        // The new limits judge tag 0's next sample; the new tag 2 is evaluated at all.
        out.clear();
        twin.grow(3);
        for tag in [TagId(0), TagId(2)] {
            let s = Sample::new(
                tag,
                85.0,
                Quality::Good,
                None,
                Timestamp::from_unix_millis(3),
            );
            det.on_sample(&s, &twin, &mut out);
        }
        let states: Vec<_> = out
            .iter()
            .map(|r| match r {
                RecordBody::Alarm(a) => (a.condition.tag(), a.state),
                other => panic!("unexpected record {other:?}"),
            })
            .collect();
        assert_eq!(
            states,
            vec![
                (Some(TagId(0)), AlarmState::Inactive),
                (Some(TagId(2)), AlarmState::Active(Level::Hi))
            ]
        );
    }

    #[test]
    fn a_phases_limits_replace_the_tags_own_while_it_runs_and_clear_after_it() {
        let mut spraying = spec();
        spraying.hi = Some(50.0);
        let only_in_phase = LimitSpec {
            lolo: None,
            lo: None,
            hi: Some(12.0),
            hihi: None,
            deadband: 0.0,
            on_delay_ms: 0,
        };
        // Tag 0 has its own limits (hi 80) and spraying's (hi 50); tag 1 only spraying's.
        let mut det = LimitDetector::new(vec![Some(spec()), None]).with_phases(vec![PhaseLimits {
            recipe: "gran".into(),
            phase: "spraying".into(),
            specs: vec![Some(spraying), Some(only_in_phase)],
        }]);
        assert_eq!(det.conditions().len(), 2, "both tags are watched");
        let mut twin = LineTwin::new(2);
        let mut out = Vec::new();
        let moist = |v: f64, ms: i64| {
            Sample::new(
                TagId(1),
                v,
                Quality::Good,
                None,
                Timestamp::from_unix_millis(ms),
            )
        };
        // Outside the phase: tag 0 judged on its own limits, tag 1 not at all.
        det.on_sample(&sample(60.0, 0, Quality::Good), &twin, &mut out);
        det.on_sample(&moist(15.0, 0), &twin, &mut out);
        assert!(out.is_empty());
        twin.set_batch(Some("B-1"), Some("gran"), Some("spraying"));
        det.on_sample(&sample(60.0, 1, Quality::Good), &twin, &mut out);
        det.on_sample(&moist(15.0, 1), &twin, &mut out);
        assert_eq!(
            det.active(TagId(0)),
            Some(Level::Hi),
            "60 > spraying's hi 50"
        );
        assert_eq!(det.active(TagId(1)), Some(Level::Hi));
        let RecordBody::Alarm(a) = &out[0] else {
            unreachable!()
        };
        assert_eq!((a.limit, a.phase.as_deref()), (50.0, Some("spraying")));
        // Another recipe's phase of the same name is not this one.
        twin.set_batch(Some("B-2"), Some("coat"), Some("spraying"));
        det.on_sample(&sample(60.0, 2, Quality::Good), &twin, &mut out);
        assert_eq!(det.active(TagId(0)), None, "back to its own hi 80");
        // The phase ends: tag 1's alarm clears, it has no limits of its own.
        twin.set_batch(Some("B-1"), Some("gran"), Some("drying"));
        det.on_sample(&moist(15.0, 3), &twin, &mut out);
        assert_eq!(det.active(TagId(1)), None);
        det.on_sample(&moist(30.0, 4), &twin, &mut out);
        assert_eq!(det.active(TagId(1)), None, "not judged outside the phase");
    }
}
