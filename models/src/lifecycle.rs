//! The alarm lifecycle of ANSI/ISA-18.2 (and OPC UA Part 9's acknowledgeable conditions), as
//! a pure transition function, for one condition, and its record (`LifecycleEvent`, record
//! format 6): the agent's line pipeline keeps one `Lifecycle` per condition and records every
//! change, and every operator action, before it takes effect.
//!
//! The **alarm state** combines the process (is the condition active?) with the operator
//! (has it been acknowledged?):
//!
//! | state | process | acknowledged | on `Activate` | on `Clear` | on `Ack` |
//! |---|---|---|---|---|---|
//! | Normal | normal | yes | UnackActive | — | refused |
//! | UnackActive | abnormal | no | — | ReturnedUnack (latching: stays, `latched`) | AckActive |
//! | AckActive | abnormal | yes | — | Normal (latching: stays, `latched`) | refused |
//! | ReturnedUnack | normal | no | UnackActive | — | Normal |
//!
//! A **latching** alarm does not return by itself: once its process is normal again it stays
//! where it was, marked `latched`, until acknowledged (from UnackActive) or reset (from
//! AckActive, the operator's `Reset`). `Activate` in an active state and `Clear` in a normal
//! one change nothing (the detector reports levels, not edges).
//!
//! Beside the alarm state, what hides an alarm from the operator, each on its own:
//! - **shelved** by an operator, one-shot (until the alarm next returns to Normal) or timed
//!   (until a time, expiring by itself at the tick); a condition configured not shelvable
//!   (a safety alarm) refuses it;
//! - **suppressed by design** (the batch state or phase says the alarm is meaningless now);
//! - **out of service** (maintenance): process transitions are still followed, nothing is
//!   shown, and shelving is refused meanwhile.
//!
//! `annunciated` is what SCADA should show: an alarm state other than Normal, and none of the
//! three. Every accepted input that changes anything returns the new lifecycle; the caller
//! records it (a journal record per transition) before it takes effect.

use crate::{Condition, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmStatus {
    Normal,
    UnackActive,
    AckActive,
    ReturnedUnack,
}

impl AlarmStatus {
    pub const ALL: [AlarmStatus; 4] = [
        AlarmStatus::Normal,
        AlarmStatus::UnackActive,
        AlarmStatus::AckActive,
        AlarmStatus::ReturnedUnack,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            AlarmStatus::Normal => "normal",
            AlarmStatus::UnackActive => "unack_active",
            AlarmStatus::AckActive => "ack_active",
            AlarmStatus::ReturnedUnack => "returned_unack",
        }
    }

    pub const fn acknowledged(self) -> bool {
        matches!(self, AlarmStatus::Normal | AlarmStatus::AckActive)
    }
}

/// How an alarm is shelved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shelf {
    /// Until the alarm next returns to Normal.
    OneShot,
    /// Until this time.
    Until(Timestamp),
}

/// What can happen to an alarm. Stored (record format 6): variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The detector says the condition holds.
    Activate,
    /// The detector says it no longer holds.
    Clear,
    Ack,
    /// Releases a latched, acknowledged alarm whose process is normal.
    Reset,
    Shelve(Shelf),
    Unshelve,
    /// The design suppression (by batch state or phase) now applies, or not.
    Suppress(bool),
    OutOfService,
    InService,
    /// The periodic tick: a timed shelf past its time expires.
    Tick(Timestamp),
    /// An operator's comment (the text is the record's `reason`): changes nothing.
    Comment,
}

impl Input {
    pub fn name(&self) -> &'static str {
        match self {
            Input::Activate => "activate",
            Input::Clear => "clear",
            Input::Ack => "ack",
            Input::Reset => "reset",
            Input::Shelve(_) => "shelve",
            Input::Unshelve => "unshelve",
            Input::Suppress(_) => "suppress",
            Input::OutOfService => "out_of_service",
            Input::InService => "in_service",
            Input::Tick(_) => "tick",
            Input::Comment => "comment",
        }
    }
}

/// An input refused in the current lifecycle; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub input: &'static str,
    pub why: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refused: {}", self.input, self.why)
    }
}

/// One condition's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub status: AlarmStatus,
    /// Latching and its process has returned to normal: waits for ack or reset.
    pub latched: bool,
    pub shelved: Option<Shelf>,
    pub suppressed: bool,
    pub out_of_service: bool,
    /// Configuration: the alarm latches.
    pub latching: bool,
    /// Configuration: the alarm may be shelved (a safety alarm may not).
    pub shelvable: bool,
}

impl Lifecycle {
    pub fn new(latching: bool, shelvable: bool) -> Self {
        Lifecycle {
            status: AlarmStatus::Normal,
            latched: false,
            shelved: None,
            suppressed: false,
            out_of_service: false,
            latching,
            shelvable,
        }
    }

    /// Whether SCADA should show it.
    pub fn annunciated(&self) -> bool {
        self.status != AlarmStatus::Normal
            && self.shelved.is_none()
            && !self.suppressed
            && !self.out_of_service
    }

    /// The lifecycle after `input`: `Ok(None)` when nothing changes, `Ok(Some(next))` to
    /// record and apply, or refused with the reason.
    pub fn apply(&self, input: Input) -> Result<Option<Lifecycle>, Refused> {
        use AlarmStatus as S;
        let refuse = |why: &str| Refused {
            input: input.name(),
            why: why.to_owned(),
        };
        let mut n = self.clone();
        match input {
            Input::Activate => match self.status {
                S::Normal | S::ReturnedUnack => {
                    n.status = S::UnackActive;
                    n.latched = false;
                }
                S::UnackActive | S::AckActive if self.latched => n.latched = false,
                S::UnackActive | S::AckActive => {}
            },
            Input::Clear => match self.status {
                S::UnackActive | S::AckActive if self.latching => n.latched = true,
                S::UnackActive => n.status = S::ReturnedUnack,
                S::AckActive => n.status = S::Normal,
                S::Normal | S::ReturnedUnack => {}
            },
            Input::Ack => match self.status {
                S::UnackActive if self.latched => {
                    n.status = S::Normal;
                    n.latched = false;
                }
                S::UnackActive => n.status = S::AckActive,
                S::ReturnedUnack => n.status = S::Normal,
                S::AckActive => return Err(refuse("the alarm is already acknowledged")),
                S::Normal => {
                    return Err(refuse("the alarm is not active (nothing to acknowledge)"))
                }
            },
            Input::Reset => {
                if !(self.status == S::AckActive && self.latched) {
                    return Err(refuse(
                        "only a latched, acknowledged alarm whose condition has cleared is reset",
                    ));
                }
                n.status = S::Normal;
                n.latched = false;
            }
            Input::Shelve(shelf) => {
                if !self.shelvable {
                    return Err(refuse("this alarm is configured not shelvable"));
                }
                if self.out_of_service {
                    return Err(refuse("the alarm is out of service"));
                }
                n.shelved = Some(shelf);
            }
            Input::Unshelve => {
                if self.shelved.is_none() {
                    return Err(refuse("the alarm is not shelved"));
                }
                n.shelved = None;
            }
            Input::Suppress(on) => n.suppressed = on,
            Input::OutOfService => {
                if self.out_of_service {
                    return Err(refuse("the alarm is already out of service"));
                }
                n.out_of_service = true;
                n.shelved = None;
            }
            Input::InService => {
                if !self.out_of_service {
                    return Err(refuse("the alarm is in service"));
                }
                n.out_of_service = false;
            }
            Input::Tick(now) => {
                if matches!(self.shelved, Some(Shelf::Until(t)) if now >= t) {
                    n.shelved = None;
                }
            }
            Input::Comment => {}
        }
        // A one-shot shelf lasts until the alarm is Normal again.
        if n.status == S::Normal && n.shelved == Some(Shelf::OneShot) && self.status != S::Normal {
            n.shelved = None;
        }
        Ok((n != *self).then_some(n))
    }
}

/// One lifecycle change or operator action on a condition, as recorded (record format 6).
/// A detector's raise or clear is an `alarm` record followed, in the same commit, by this
/// record when the lifecycle moved; an operator's action is a `command` record followed by
/// this one; a shelf's expiry and a design suppression are this record alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub condition: Condition,
    /// The line the condition belongs to.
    pub line: String,
    pub input: Input,
    /// The alarm state before.
    pub previous: AlarmStatus,
    /// The whole lifecycle after (unchanged for a comment).
    pub lifecycle: Lifecycle,
    pub time: Timestamp,
    /// Who: absent when the agent itself made the change (a detector, a shelf's expiry, a
    /// phase's design suppression).
    pub user: Option<String>,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub batch_id: Option<String>,
    pub phase: Option<String>,
}

#[cfg(test)]
mod tests;
