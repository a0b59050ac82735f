//! The detectors beyond fixed limits, per tag, as one `Detector`: stale, frozen, rate of
//! change, CUSUM, EWMA, SPC run rules (the cores are in `signal`) and discrete states. Each configured one is
//! its own condition (`ConditionKind::Stale`, …) with its own alarm records and retained
//! topic, so a rate alarm never overwrites the limit alarm of the same tag.
//!
//! Levels: a condition on the high side (rising, above the centre line) is `hi`, on the low
//! side `lo`; stale and frozen are `hi`. The record's `value` and `limit` are what the
//! condition judged: stale — seconds since the last value and the allowed age; frozen — the
//! value and the tolerance; rate — units per second and the threshold; CUSUM — the sum and
//! `h` (σ); EWMA — the statistic and its current limit (σ); SPC — the standardised value,
//! with no single limit (`NaN`, null in JSON).
//!
//! Only usable values are judged; a Bad value breaks a frozen run and is otherwise skipped
//! (a Bad transmitter is not a stuck one; staleness still counts only new values).
//! Not wired into the agent yet (issue 13): no tag map keys reach it.

use super::signal::{Cusum, Ewma, Frozen, Rate, Rule, RunRules, Side, Stale};
use super::Detector;
use crate::{
    twin::LineTwin, AlarmEvent, AlarmState, Condition, ConditionKind, ConditionSource, Level,
    RecordBody, Sample, TagId, TagTable, Timestamp, Value,
};

/// A tag's detectors beyond limits, from the tag map; each is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalSpec {
    /// Alarm when no new value came for this long.
    pub stale_ms: Option<u64>,
    /// (tolerance, window): alarm when the value stays within the tolerance that long.
    pub frozen: Option<(f64, u64)>,
    pub rate: Option<RateSpec>,
    pub cusum: Option<Shift>,
    pub ewma: Option<Shift>,
    pub spc: Option<SpcSpec>,
    pub state: Option<StateSpec>,
}

/// A discrete-state alarm: active while the tag's value is one of `values` (a boolean, a
/// number such as an enumeration's code, a text), and — when `phases` names any — only while
/// one of those phases runs (e.g. the door open while spraying).
#[derive(Debug, Clone, PartialEq)]
pub struct StateSpec {
    pub values: Vec<Value>,
    pub phases: Vec<String>,
}

impl StateSpec {
    fn matches(&self, v: &Value) -> bool {
        self.values.iter().any(|want| match (want, v) {
            (Value::Bool(w), Value::Bool(b)) => w == b,
            (Value::Bool(w), Value::Num(n)) => (*n != 0.0) == *w,
            (Value::Num(w), Value::Num(n)) => w == n,
            (Value::Num(w), Value::Bool(b)) => *w == f64::from(u8::from(*b)),
            (Value::Text(w), Value::Text(t)) => w == t,
            _ => false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSpec {
    pub window_ms: u64,
    pub rising: Option<f64>,
    pub falling: Option<f64>,
}

/// A shift detector's centre line and sigma (the tag's units) and its two parameters in σ:
/// CUSUM `k`, `h`; EWMA `λ`, `L`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub target: f64,
    pub sigma: f64,
    pub a: f64,
    pub b: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpcSpec {
    pub target: f64,
    pub sigma: f64,
    pub rules: Vec<Rule>,
}

impl SignalSpec {
    pub fn is_empty(&self) -> bool {
        *self == SignalSpec::default()
    }

    /// The condition kinds it configures.
    pub fn kinds(&self) -> Vec<ConditionKind> {
        [
            (self.stale_ms.is_some(), ConditionKind::Stale),
            (self.frozen.is_some(), ConditionKind::Frozen),
            (self.rate.is_some(), ConditionKind::Rate),
            (self.cusum.is_some(), ConditionKind::Cusum),
            (self.ewma.is_some(), ConditionKind::Ewma),
            (self.spc.is_some(), ConditionKind::Spc),
            (self.state.is_some(), ConditionKind::State),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect()
    }
}

/// One condition's state: its core and its active level.
#[derive(Debug, Clone)]
struct Watch<T> {
    core: T,
    active: Option<Level>,
}

impl<T> Watch<T> {
    fn new(core: T) -> Self {
        Watch { core, active: None }
    }
}

#[derive(Debug, Clone, Default)]
struct TagState {
    /// Created at the first tick or value (the detector has no clock of its own).
    stale: Option<Watch<Stale>>,
    frozen: Option<Watch<Frozen>>,
    rate: Option<Watch<Rate>>,
    cusum: Option<Watch<Cusum>>,
    ewma: Option<Watch<Ewma>>,
    spc: Option<Watch<RunRules>>,
    state: Option<Watch<()>>,
}

impl TagState {
    fn of(spec: &SignalSpec) -> Self {
        TagState {
            stale: None,
            frozen: spec.frozen.map(|(t, w)| Watch::new(Frozen::new(t, w))),
            rate: spec
                .rate
                .map(|r| Watch::new(Rate::new(r.window_ms, r.rising, r.falling))),
            cusum: spec.cusum.map(|s| Watch::new(Cusum::new(s.a, s.b))),
            ewma: spec.ewma.map(|s| Watch::new(Ewma::new(s.a, s.b))),
            spc: spec
                .spc
                .as_ref()
                .map(|s| Watch::new(RunRules::new(s.rules.clone()))),
            state: spec.state.as_ref().map(|_| Watch::new(())),
        }
    }

    fn active_mut(&mut self, kind: ConditionKind) -> Option<&mut Option<Level>> {
        match kind {
            ConditionKind::Stale => self.stale.as_mut().map(|w| &mut w.active),
            ConditionKind::Frozen => self.frozen.as_mut().map(|w| &mut w.active),
            ConditionKind::Rate => self.rate.as_mut().map(|w| &mut w.active),
            ConditionKind::Cusum => self.cusum.as_mut().map(|w| &mut w.active),
            ConditionKind::Ewma => self.ewma.as_mut().map(|w| &mut w.active),
            ConditionKind::Spc => self.spc.as_mut().map(|w| &mut w.active),
            ConditionKind::State => self.state.as_mut().map(|w| &mut w.active),
            _ => None,
        }
    }

    fn actives(&self) -> usize {
        [
            self.stale.as_ref().map(|w| w.active),
            self.frozen.as_ref().map(|w| w.active),
            self.rate.as_ref().map(|w| w.active),
            self.cusum.as_ref().map(|w| w.active),
            self.ewma.as_ref().map(|w| w.active),
            self.spc.as_ref().map(|w| w.active),
            self.state.as_ref().map(|w| w.active),
        ]
        .into_iter()
        .filter(|a| matches!(a, Some(Some(_))))
        .count()
    }
}

/// Where a judgement lands: the condition, the wanted level, what was judged.
struct Judged {
    kind: ConditionKind,
    want: Option<Level>,
    value: f64,
    limit: f64,
}

fn level(side: Option<Side>) -> Option<Level> {
    side.map(|s| match s {
        Side::High => Level::Hi,
        Side::Low => Level::Lo,
    })
}

/// Records the transition of `active` to `j.want`, if it is one.
fn transition(
    tag: TagId,
    active: &mut Option<Level>,
    j: Judged,
    at: Timestamp,
    twin: &LineTwin,
    out: &mut Vec<RecordBody>,
) {
    if *active == j.want {
        return;
    }
    let previous = std::mem::replace(active, j.want);
    out.push(RecordBody::Alarm(AlarmEvent {
        condition: Condition {
            source: ConditionSource::Tag(tag),
            kind: j.kind,
        },
        state: j.want.map_or(AlarmState::Inactive, AlarmState::Active),
        previous,
        value: j.value,
        limit: j.limit,
        severity: j.want.map_or(0, Level::severity),
        time: at,
        batch_id: twin.batch_id().map(str::to_owned),
        phase: twin.phase().map(str::to_owned),
    }));
}

/// A recipe phase's centre lines (its `targets`): while it runs they replace the tags'
/// configured `target` for CUSUM, EWMA and SPC (sigma stays the tag's).
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseTargets {
    pub recipe: String,
    pub phase: String,
    /// `targets[i]` for `TagId(i)`; `None`: the tag's own target.
    pub targets: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Default)]
pub struct SignalDetector {
    /// `specs[i]` belongs to `TagId(i)`.
    specs: Vec<SignalSpec>,
    state: Vec<TagState>,
    phases: Vec<PhaseTargets>,
    /// The (recipe, phase) the centre lines were last taken from, and its entry in `phases`.
    current: Option<(String, String)>,
    current_targets: Option<usize>,
}

impl SignalDetector {
    pub fn new(specs: Vec<SignalSpec>) -> Self {
        let state = specs.iter().map(TagState::of).collect();
        SignalDetector {
            specs,
            state,
            ..SignalDetector::default()
        }
    }

    /// With the recipes' per-phase centre lines.
    pub fn with_phase_targets(mut self, phases: Vec<PhaseTargets>) -> Self {
        self.phases = phases;
        self
    }

    /// A new phase (or none): its centre lines apply, and the shift detectors start afresh
    /// (points judged against another centre line no longer count).
    fn follow_phase(&mut self, twin: &LineTwin) {
        let now = match (twin.recipe(), twin.phase()) {
            (Some(r), Some(p)) => Some((r, p)),
            _ => None,
        };
        let same = match (&self.current, now) {
            (Some((r, p)), Some((nr, np))) => r == nr && p == np,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.current = now.map(|(r, p)| (r.to_owned(), p.to_owned()));
        self.current_targets = now.and_then(|(r, p)| {
            self.phases
                .iter()
                .position(|t| t.recipe == r && t.phase == p)
        });
        for st in &mut self.state {
            if let Some(w) = st.cusum.as_mut() {
                w.core.reset();
            }
            if let Some(w) = st.ewma.as_mut() {
                w.core.reset();
            }
            if let Some(w) = st.spc.as_mut() {
                w.core.reset();
            }
        }
    }

    /// The centre line of tag `i` now for the detector `of` picks: the running phase's, else
    /// the configured one (`None` when the detector is not configured).
    fn spec_target(&self, i: usize, of: impl Fn(&SignalSpec) -> Option<f64>) -> Option<f64> {
        let configured = of(self.specs.get(i)?)?;
        Some(
            self.current_targets
                .and_then(|k| self.phases[k].targets.get(i).copied().flatten())
                .unwrap_or(configured),
        )
    }

    /// Whether any tag has anything configured (else the pipeline can leave it out).
    pub fn is_empty(&self) -> bool {
        self.specs.iter().all(SignalSpec::is_empty)
    }
}

impl Detector for SignalDetector {
    fn on_sample(&mut self, s: &Sample, twin: &LineTwin, out: &mut Vec<RecordBody>) {
        if !self.phases.is_empty() {
            self.follow_phase(twin);
        }
        let i = s.tag.index();
        let targets = (
            self.spec_target(i, |s| s.cusum.map(|c| c.target)),
            self.spec_target(i, |s| s.ewma.map(|c| c.target)),
            self.spec_target(i, |s| s.spc.as_ref().map(|c| c.target)),
        );
        let (Some(spec), Some(st)) = (self.specs.get(i), self.state.get_mut(i)) else {
            return;
        };
        let at = s.agent_time;
        if let Some(max) = spec.stale_ms {
            let w = st
                .stale
                .get_or_insert_with(|| Watch::new(Stale::new(max, at)));
            w.core.seen(at);
            let j = Judged {
                kind: ConditionKind::Stale,
                want: None,
                value: 0.0,
                limit: max as f64 / 1000.0,
            };
            transition(s.tag, &mut w.active, j, at, twin, out);
        }
        if let (Some(w), Some(d)) = (st.state.as_mut(), spec.state.as_ref()) {
            if s.quality.is_usable() {
                let in_phase = d.phases.is_empty()
                    || twin
                        .phase()
                        .is_some_and(|p| d.phases.iter().any(|x| x == p));
                let j = Judged {
                    kind: ConditionKind::State,
                    want: (in_phase && d.matches(&s.value)).then_some(Level::Hi),
                    value: s.value.as_f64().unwrap_or(f64::NAN),
                    limit: f64::NAN,
                };
                transition(s.tag, &mut w.active, j, at, twin, out);
            }
        }
        let Some(v) = s.number().filter(|v| v.is_finite()) else {
            return;
        };
        if !s.quality.is_usable() {
            if let Some(w) = st.frozen.as_mut() {
                w.core.reset();
            }
            return;
        }
        let time = s.source_time.unwrap_or(at);
        if let (Some(w), Some((tol, _))) = (st.frozen.as_mut(), spec.frozen) {
            let frozen = w.core.push(time, v);
            let j = Judged {
                kind: ConditionKind::Frozen,
                want: frozen.then_some(Level::Hi),
                value: v,
                limit: tol,
            };
            transition(s.tag, &mut w.active, j, at, twin, out);
        }
        if let (Some(w), Some(r)) = (st.rate.as_mut(), spec.rate) {
            let (rate, side) = w.core.push(time, v);
            if let Some(rate) = rate {
                let limit = match side {
                    Some(Side::Low) => r.falling,
                    _ => r.rising.or(r.falling),
                };
                let j = Judged {
                    kind: ConditionKind::Rate,
                    want: level(side),
                    value: rate,
                    limit: limit.unwrap_or(f64::NAN),
                };
                transition(s.tag, &mut w.active, j, at, twin, out);
            }
        }
        if let (Some(w), Some(c)) = (st.cusum.as_mut(), spec.cusum) {
            let side = w.core.push((v - targets.0.unwrap_or(c.target)) / c.sigma);
            let (hi, lo) = w.core.sums();
            let j = Judged {
                kind: ConditionKind::Cusum,
                want: level(side),
                value: if side == Some(Side::Low) { lo } else { hi },
                limit: c.b,
            };
            transition(s.tag, &mut w.active, j, at, twin, out);
        }
        if let (Some(w), Some(e)) = (st.ewma.as_mut(), spec.ewma) {
            let side = w.core.push((v - targets.1.unwrap_or(e.target)) / e.sigma);
            let j = Judged {
                kind: ConditionKind::Ewma,
                want: level(side),
                value: w.core.statistic(),
                limit: w.core.limit(),
            };
            transition(s.tag, &mut w.active, j, at, twin, out);
        }
        if let (Some(w), Some(p)) = (st.spc.as_mut(), spec.spc.as_ref()) {
            let z = (v - targets.2.unwrap_or(p.target)) / p.sigma;
            let fired = w.core.push(z);
            let want = (!fired.is_empty()).then_some(if z >= 0.0 { Level::Hi } else { Level::Lo });
            let j = Judged {
                kind: ConditionKind::Spc,
                want,
                value: z,
                limit: f64::NAN,
            };
            transition(s.tag, &mut w.active, j, at, twin, out);
        }
    }

    fn on_tick(&mut self, now: Timestamp, twin: &LineTwin, out: &mut Vec<RecordBody>) {
        for (i, (spec, st)) in self.specs.iter().zip(&mut self.state).enumerate() {
            let Some(max) = spec.stale_ms else { continue };
            let w = st
                .stale
                .get_or_insert_with(|| Watch::new(Stale::new(max, now)));
            let (stale, age) = w.core.check(now);
            let j = Judged {
                kind: ConditionKind::Stale,
                want: stale.then_some(Level::Hi),
                value: age as f64 / 1000.0,
                limit: max as f64 / 1000.0,
            };
            transition(TagId(i as u32), &mut w.active, j, now, twin, out);
        }
    }

    fn conditions(&self) -> Vec<Condition> {
        self.specs
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.kinds().into_iter().map(move |kind| Condition {
                    source: ConditionSource::Tag(TagId(i as u32)),
                    kind,
                })
            })
            .collect()
    }

    fn restore(&mut self, last: &AlarmEvent) -> bool {
        let ConditionSource::Tag(tag) = last.condition.source else {
            return false;
        };
        let Some(spec) = self.specs.get(tag.index()) else {
            return false;
        };
        if !spec.kinds().contains(&last.condition.kind) {
            return false;
        }
        let st = &mut self.state[tag.index()];
        if last.condition.kind == ConditionKind::Stale && st.stale.is_none() {
            if let Some(max) = spec.stale_ms {
                // From the restored transition's time: a tag still silent goes stale again.
                st.stale = Some(Watch::new(Stale::new(max, last.time)));
            }
        }
        if let Some(a) = st.active_mut(last.condition.kind) {
            *a = match last.state {
                AlarmState::Active(l) => Some(l),
                AlarmState::Inactive => None,
            };
        }
        true
    }

    fn active_count(&self) -> usize {
        self.state.iter().map(TagState::actives).sum()
    }

    fn reconfigure(
        &mut self,
        tags: &TagTable,
        at: Timestamp,
        twin: &LineTwin,
        out: &mut Vec<RecordBody>,
    ) {
        let new = tags.signals();
        let mut state = Vec::with_capacity(new.len());
        for (i, spec) in new.iter().enumerate() {
            let old = self.specs.get(i).cloned().unwrap_or_default();
            let mut st = self
                .state
                .get_mut(i)
                .map(std::mem::take)
                .unwrap_or_default();
            if old != *spec {
                // Changed: the conditions it keeps start afresh; those it drops clear.
                let mut fresh = TagState::of(spec);
                for kind in old.kinds() {
                    let was = st.active_mut(kind).and_then(|a| *a);
                    if let (Some(level), false) = (was, spec.kinds().contains(&kind)) {
                        let mut active = Some(level);
                        let j = Judged {
                            kind,
                            want: None,
                            value: f64::NAN,
                            limit: f64::NAN,
                        };
                        transition(TagId(i as u32), &mut active, j, at, twin, out);
                    } else if let (Some(a), Some(level)) = (fresh.active_mut(kind), was) {
                        *a = Some(level);
                    }
                }
                st = fresh;
            }
            state.push(st);
        }
        self.specs = new;
        self.state = state;
    }
}

#[cfg(test)]
mod tests;
