//! The statistical cores of the detectors beyond fixed limits, pure and per tag: each takes
//! one value (or, for staleness, the time) and says whether its condition holds. The
//! detectors wrap them with the tag map, the phases and the alarm records.
//!
//! - `Cusum`: two-sided tabular CUSUM on standardised values, `C⁺ = max(0, C⁺ + z − k)`,
//!   `C⁻ = max(0, C⁻ − z − k)`, out when either exceeds `h` (both in σ units) — for small
//!   sustained shifts a fixed limit misses.
//! - `Ewma`: `zₜ = λ·x + (1 − λ)·zₜ₋₁` on standardised values, out beyond
//!   `± L·√(λ/(2 − λ)·(1 − (1 − λ)^{2t}))` (the exact limits, tight at the start).
//! - `RunRules`: Western Electric 1–4 and Nelson 1–8 on standardised values.
//! - `Rate`: the change over a time window, in units per second, against a rising and/or a
//!   falling threshold.
//! - `Frozen`: a Good value that stays within a tolerance for a window (a stuck transmitter).
//! - `Stale`: no new value for longer than allowed, judged at the tick, not by samples.
//!
//! Standardising (`(x − centre) / sigma`) is the caller's: the centre line and sigma come
//! from the recipe's phase or the tag map. Memory per tag is bounded by the longest rule (15
//! points) or, for `Rate`, by the window and `MAX_RATE_POINTS`.

use crate::Timestamp;
use std::collections::VecDeque;

/// Which side of the centre a shift is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    High,
    Low,
}

/// Two-sided tabular CUSUM (`k`, `h` in σ units; `k` is half the shift to detect).
#[derive(Debug, Clone, PartialEq)]
pub struct Cusum {
    pub k: f64,
    pub h: f64,
    hi: f64,
    lo: f64,
}

impl Cusum {
    pub fn new(k: f64, h: f64) -> Self {
        Cusum {
            k,
            h,
            hi: 0.0,
            lo: 0.0,
        }
    }

    /// One standardised value; the side that is out, if one is.
    pub fn push(&mut self, z: f64) -> Option<Side> {
        self.hi = (self.hi + z - self.k).max(0.0);
        self.lo = (self.lo - z - self.k).max(0.0);
        if self.hi > self.h {
            Some(Side::High)
        } else if self.lo > self.h {
            Some(Side::Low)
        } else {
            None
        }
    }

    /// The sums (C⁺, C⁻).
    pub fn sums(&self) -> (f64, f64) {
        (self.hi, self.lo)
    }

    /// After an alarm is handled, or at a phase change.
    pub fn reset(&mut self) {
        self.hi = 0.0;
        self.lo = 0.0;
    }
}

/// EWMA chart on standardised values (`lambda` in (0, 1], limits `l` σ of the statistic).
#[derive(Debug, Clone, PartialEq)]
pub struct Ewma {
    pub lambda: f64,
    pub l: f64,
    z: f64,
    n: u32,
}

impl Ewma {
    pub fn new(lambda: f64, l: f64) -> Self {
        Ewma {
            lambda,
            l,
            z: 0.0,
            n: 0,
        }
    }

    pub fn push(&mut self, x: f64) -> Option<Side> {
        self.z = self.lambda * x + (1.0 - self.lambda) * self.z;
        self.n = self.n.saturating_add(1);
        let limit = self.limit();
        if self.z > limit {
            Some(Side::High)
        } else if self.z < -limit {
            Some(Side::Low)
        } else {
            None
        }
    }

    /// The current limit of the statistic (exact, narrower for the first points).
    pub fn limit(&self) -> f64 {
        let l = self.lambda;
        let decay = (1.0 - l).powi(2 * self.n.min(10_000) as i32);
        self.l * (l / (2.0 - l) * (1.0 - decay)).sqrt()
    }

    pub fn statistic(&self) -> f64 {
        self.z
    }

    pub fn reset(&mut self) {
        self.z = 0.0;
        self.n = 0;
    }
}

/// A run rule (on standardised values: 1 = one σ from the centre line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// One point beyond 3 σ.
    We1,
    /// Two of three successive points beyond 2 σ, same side.
    We2,
    /// Four of five successive points beyond 1 σ, same side.
    We3,
    /// Eight successive points on one side of the centre line.
    We4,
    /// One point beyond 3 σ.
    Nelson1,
    /// Nine successive points on one side.
    Nelson2,
    /// Six successive points steadily increasing or decreasing.
    Nelson3,
    /// Fourteen successive points alternating up and down.
    Nelson4,
    /// Two of three beyond 2 σ, same side.
    Nelson5,
    /// Four of five beyond 1 σ, same side.
    Nelson6,
    /// Fifteen successive points within 1 σ (stratification).
    Nelson7,
    /// Eight successive points beyond 1 σ, either side (none within).
    Nelson8,
}

impl Rule {
    pub const WESTERN_ELECTRIC: [Rule; 4] = [Rule::We1, Rule::We2, Rule::We3, Rule::We4];
    pub const NELSON: [Rule; 8] = [
        Rule::Nelson1,
        Rule::Nelson2,
        Rule::Nelson3,
        Rule::Nelson4,
        Rule::Nelson5,
        Rule::Nelson6,
        Rule::Nelson7,
        Rule::Nelson8,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Rule::We1 => "we1",
            Rule::We2 => "we2",
            Rule::We3 => "we3",
            Rule::We4 => "we4",
            Rule::Nelson1 => "nelson1",
            Rule::Nelson2 => "nelson2",
            Rule::Nelson3 => "nelson3",
            Rule::Nelson4 => "nelson4",
            Rule::Nelson5 => "nelson5",
            Rule::Nelson6 => "nelson6",
            Rule::Nelson7 => "nelson7",
            Rule::Nelson8 => "nelson8",
        }
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::WESTERN_ELECTRIC
            .into_iter()
            .chain(Rule::NELSON)
            .find(|r| r.name() == name)
    }

    /// Whether the rule holds on `last` (oldest first, the newest point last).
    fn holds(self, last: &VecDeque<f64>) -> bool {
        let n = last.len();
        let tail = |k: usize| last.iter().skip(n.saturating_sub(k));
        let full = |k: usize| n >= k;
        let beyond = |k: usize, m: usize, s: f64| {
            full(k)
                && (tail(k).filter(|z| **z > s).count() >= m
                    || tail(k).filter(|z| **z < -s).count() >= m)
        };
        let one_side =
            |k: usize| full(k) && (tail(k).all(|z| *z > 0.0) || tail(k).all(|z| *z < 0.0));
        let newest = last.back().copied().unwrap_or(0.0);
        match self {
            Rule::We1 | Rule::Nelson1 => newest.abs() > 3.0,
            Rule::We2 | Rule::Nelson5 => beyond(3, 2, 2.0) && newest.abs() > 2.0,
            Rule::We3 | Rule::Nelson6 => beyond(5, 4, 1.0) && newest.abs() > 1.0,
            Rule::We4 => one_side(8),
            Rule::Nelson2 => one_side(9),
            Rule::Nelson3 => {
                let v: Vec<f64> = tail(6).copied().collect();
                full(6) && (v.windows(2).all(|w| w[1] > w[0]) || v.windows(2).all(|w| w[1] < w[0]))
            }
            Rule::Nelson4 => {
                let v: Vec<f64> = tail(14).copied().collect();
                full(14) && v.windows(3).all(|w| (w[1] - w[0]) * (w[2] - w[1]) < 0.0)
            }
            Rule::Nelson7 => full(15) && tail(15).all(|z| z.abs() < 1.0),
            Rule::Nelson8 => full(8) && tail(8).all(|z| z.abs() > 1.0),
        }
    }
}

/// Which of a `RunRules`' rules held for one point (bit `i`: its `i`-th rule; at most 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired(u16);

impl Fired {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Run rules over the last points of one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRules {
    pub rules: Vec<Rule>,
    last: VecDeque<f64>,
}

/// The longest run any rule looks at.
const LONGEST_RUN: usize = 15;

impl RunRules {
    pub fn new(rules: Vec<Rule>) -> Self {
        RunRules {
            rules,
            last: VecDeque::with_capacity(LONGEST_RUN),
        }
    }

    /// One standardised value; the rules that hold with it (no allocation: this runs per
    /// sample).
    pub fn push(&mut self, z: f64) -> Fired {
        if self.last.len() == LONGEST_RUN {
            self.last.pop_front();
        }
        self.last.push_back(z);
        let mut fired = Fired(0);
        for (i, r) in self.rules.iter().enumerate().take(16) {
            if r.holds(&self.last) {
                fired.0 |= 1 << i;
            }
        }
        fired
    }

    /// The rules in `fired`, in the configured order.
    pub fn rules_in(&self, fired: Fired) -> impl Iterator<Item = Rule> + '_ {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i < 16 && fired.0 & (1 << i) != 0)
            .map(|(_, r)| *r)
    }

    /// At a phase change (a new centre line): earlier points no longer count.
    pub fn reset(&mut self) {
        self.last.clear();
    }
}

/// The most points `Rate` keeps for its window (older ones are thinned, not the window).
pub const MAX_RATE_POINTS: usize = 1_024;

/// Rate of change over a window: (newest − oldest in the window) / their time apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    pub window_ms: u64,
    /// Out when the rate is above this (units per second), if set.
    pub rising: Option<f64>,
    /// Out when the rate is below minus this (units per second), if set.
    pub falling: Option<f64>,
    points: VecDeque<(Timestamp, f64)>,
}

impl Rate {
    pub fn new(window_ms: u64, rising: Option<f64>, falling: Option<f64>) -> Self {
        Rate {
            window_ms,
            rising,
            falling,
            points: VecDeque::new(),
        }
    }

    /// One value at `at` (in time order; an older value than the newest is ignored). The
    /// rate (units per second) once the window spans at least half its length, and the side
    /// that is out.
    pub fn push(&mut self, at: Timestamp, v: f64) -> (Option<f64>, Option<Side>) {
        if self.points.back().is_some_and(|(t, _)| at < *t) {
            return (None, None);
        }
        self.points.push_back((at, v));
        while self
            .points
            .front()
            .is_some_and(|(t, _)| at.millis_since(*t) > self.window_ms)
        {
            self.points.pop_front();
        }
        if self.points.len() > MAX_RATE_POINTS {
            // Keep the oldest (the window's start) and thin the rest.
            let keep_first = self.points.pop_front();
            self.points.pop_front();
            if let Some(p) = keep_first {
                self.points.push_front(p);
            }
        }
        let Some(&(t0, v0)) = self.points.front() else {
            return (None, None);
        };
        let span = at.millis_since(t0);
        if span * 2 < self.window_ms || span == 0 {
            return (None, None);
        }
        let rate = (v - v0) / (span as f64 / 1000.0);
        let side = if self.rising.is_some_and(|r| rate > r) {
            Some(Side::High)
        } else if self.falling.is_some_and(|f| rate < -f) {
            Some(Side::Low)
        } else {
            None
        };
        (Some(rate), side)
    }

    pub fn reset(&mut self) {
        self.points.clear();
    }
}

/// A value that does not move beyond `tolerance` for `window_ms`: a stuck transmitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Frozen {
    pub tolerance: f64,
    pub window_ms: u64,
    /// Since when, and the range of the values since then.
    run: Option<(Timestamp, f64, f64)>,
}

impl Frozen {
    pub fn new(tolerance: f64, window_ms: u64) -> Self {
        Frozen {
            tolerance,
            window_ms,
            run: None,
        }
    }

    /// One Good value at `at`; whether the value has been frozen for the window.
    pub fn push(&mut self, at: Timestamp, v: f64) -> bool {
        let run = match self.run {
            Some((since, lo, hi)) if v.max(hi) - v.min(lo) <= self.tolerance => {
                (since, v.min(lo), v.max(hi))
            }
            _ => (at, v, v),
        };
        self.run = Some(run);
        at.millis_since(run.0) >= self.window_ms
    }

    /// A value that was not Good: the run is broken (a Bad value is not a frozen one).
    pub fn reset(&mut self) {
        self.run = None;
    }
}

/// No new value for more than `max_age_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    pub max_age_ms: u64,
    last: Option<Timestamp>,
}

impl Stale {
    /// `since`: when watching began (a tag that never reports goes stale from there).
    pub fn new(max_age_ms: u64, since: Timestamp) -> Self {
        Stale {
            max_age_ms,
            last: Some(since),
        }
    }

    /// A new value arrived at `at`.
    pub fn seen(&mut self, at: Timestamp) {
        if self.last.is_none_or(|l| at > l) {
            self.last = Some(at);
        }
    }

    /// At the tick: whether the tag is stale at `now`, and how long since its last value.
    pub fn check(&self, now: Timestamp) -> (bool, u64) {
        let age = self.last.map_or(0, |l| now.millis_since(l));
        (age > self.max_age_ms, age)
    }
}

#[cfg(test)]
mod tests;
