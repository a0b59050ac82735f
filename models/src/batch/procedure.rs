//! The ISA-88 procedural state of a batch (ANSI/ISA-88.01, the example state model without
//! Pausing/Paused), as a pure transition function.
//!
//! Two kinds of transition: a **command** (`Start`, `Hold`, `Restart`, `Stop`, `Abort`,
//! `Reset`) from an operator, the MES or the equipment's tags, and **state complete**, the
//! end of a transient ("…ing") state's logic: Running → Complete, Holding → Held,
//! Restarting → Running, Stopping → Stopped, Aborting → Aborted. Everything else is refused
//! with the reason and leaves the state as it was; the caller records the refusal.
//!
//! | state      | Start   | Hold    | Restart    | Stop     | Abort    | Reset | complete |
//! |------------|---------|---------|------------|----------|----------|-------|----------|
//! | Idle       | Running |         |            |          |          |       |          |
//! | Running    |         | Holding |            | Stopping | Aborting |       | Complete |
//! | Holding    |         |         |            | Stopping | Aborting |       | Held     |
//! | Held       |         |         | Restarting | Stopping | Aborting |       |          |
//! | Restarting |         | Holding |            | Stopping | Aborting |       | Running  |
//! | Stopping   |         |         |            |          | Aborting |       | Stopped  |
//! | Stopped    |         |         |            |          | Aborting | Idle  |          |
//! | Aborting   |         |         |            |          |          |       | Aborted  |
//! | Aborted    |         |         |            |          |          | Idle  |          |
//! | Complete   |         |         |            |          |          | Idle  |          |

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a batch's procedure is. `Idle` means no batch is on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProcState {
    Idle,
    Running,
    Holding,
    Held,
    Restarting,
    Stopping,
    Stopped,
    Aborting,
    Aborted,
    Complete,
}

/// An ISA-88 procedural command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProcCommand {
    Start,
    Hold,
    Restart,
    Stop,
    Abort,
    Reset,
}

/// A command or completion that does not apply in the current state; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub state: ProcState,
    /// `None`: the transient state's completion was refused (the state is not transient).
    pub command: Option<ProcCommand>,
    /// The states that would have accepted it.
    pub accepted_in: Vec<ProcState>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.command {
            Some(c) => c.name(),
            None => "state complete",
        };
        let list: Vec<&str> = self.accepted_in.iter().map(|s| s.name()).collect();
        write!(
            f,
            "{what} is not accepted while the batch is {}; it is accepted only in {}",
            self.state.name(),
            list.join(", ")
        )
    }
}

impl ProcState {
    pub const ALL: [ProcState; 10] = [
        ProcState::Idle,
        ProcState::Running,
        ProcState::Holding,
        ProcState::Held,
        ProcState::Restarting,
        ProcState::Stopping,
        ProcState::Stopped,
        ProcState::Aborting,
        ProcState::Aborted,
        ProcState::Complete,
    ];

    /// The state `command` leads to from here, or why it does not apply.
    pub fn on_command(self, command: ProcCommand) -> Result<ProcState, Refused> {
        self.after(command).ok_or_else(|| Refused {
            state: self,
            command: Some(command),
            accepted_in: ProcState::ALL
                .into_iter()
                .filter(|s| s.after(command).is_some())
                .collect(),
        })
    }

    /// The table: the state after `command`, `None` where it does not apply.
    fn after(self, command: ProcCommand) -> Option<ProcState> {
        use ProcCommand as C;
        use ProcState as S;
        match (self, command) {
            (S::Idle, C::Start) => Some(S::Running),
            (S::Running | S::Restarting, C::Hold) => Some(S::Holding),
            (S::Held, C::Restart) => Some(S::Restarting),
            (S::Running | S::Holding | S::Held | S::Restarting, C::Stop) => Some(S::Stopping),
            (
                S::Running | S::Holding | S::Held | S::Restarting | S::Stopping | S::Stopped,
                C::Abort,
            ) => Some(S::Aborting),
            (S::Stopped | S::Aborted | S::Complete, C::Reset) => Some(S::Idle),
            _ => None,
        }
    }

    /// The state that follows when this transient state's logic has finished.
    pub fn on_complete(self) -> Result<ProcState, Refused> {
        use ProcState as S;
        let next = match self {
            S::Running => Some(S::Complete),
            S::Holding => Some(S::Held),
            S::Restarting => Some(S::Running),
            S::Stopping => Some(S::Stopped),
            S::Aborting => Some(S::Aborted),
            _ => None,
        };
        next.ok_or_else(|| Refused {
            state: self,
            command: None,
            accepted_in: S::ALL.into_iter().filter(|s| s.is_transient()).collect(),
        })
    }

    /// A state whose logic is acting and ends by itself ("…ing", and Running).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ProcState::Running
                | ProcState::Holding
                | ProcState::Restarting
                | ProcState::Stopping
                | ProcState::Aborting
        )
    }

    /// The batch has ended (it only waits for `Reset`).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ProcState::Complete | ProcState::Stopped | ProcState::Aborted
        )
    }

    /// The name in configuration, commands and messages.
    pub fn name(self) -> &'static str {
        match self {
            ProcState::Idle => "idle",
            ProcState::Running => "running",
            ProcState::Holding => "holding",
            ProcState::Held => "held",
            ProcState::Restarting => "restarting",
            ProcState::Stopping => "stopping",
            ProcState::Stopped => "stopped",
            ProcState::Aborting => "aborting",
            ProcState::Aborted => "aborted",
            ProcState::Complete => "complete",
        }
    }

    pub fn from_name(name: &str) -> Option<ProcState> {
        ProcState::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl ProcCommand {
    pub const ALL: [ProcCommand; 6] = [
        ProcCommand::Start,
        ProcCommand::Hold,
        ProcCommand::Restart,
        ProcCommand::Stop,
        ProcCommand::Abort,
        ProcCommand::Reset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProcCommand::Start => "start",
            ProcCommand::Hold => "hold",
            ProcCommand::Restart => "restart",
            ProcCommand::Stop => "stop",
            ProcCommand::Abort => "abort",
            ProcCommand::Reset => "reset",
        }
    }

    pub fn from_name(name: &str) -> Option<ProcCommand> {
        ProcCommand::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::{ProcCommand as C, ProcState as S};

    /// The standard's table, written out independently of `on_command`: every pair not
    /// listed must be refused.
    const TABLE: &[(S, C, S)] = &[
        (S::Idle, C::Start, S::Running),
        (S::Running, C::Hold, S::Holding),
        (S::Running, C::Stop, S::Stopping),
        (S::Running, C::Abort, S::Aborting),
        (S::Holding, C::Stop, S::Stopping),
        (S::Holding, C::Abort, S::Aborting),
        (S::Held, C::Restart, S::Restarting),
        (S::Held, C::Stop, S::Stopping),
        (S::Held, C::Abort, S::Aborting),
        (S::Restarting, C::Hold, S::Holding),
        (S::Restarting, C::Stop, S::Stopping),
        (S::Restarting, C::Abort, S::Aborting),
        (S::Stopping, C::Abort, S::Aborting),
        (S::Stopped, C::Abort, S::Aborting),
        (S::Stopped, C::Reset, S::Idle),
        (S::Aborted, C::Reset, S::Idle),
        (S::Complete, C::Reset, S::Idle),
    ];

    #[test]
    fn every_state_and_command_follows_the_table() {
        let mut accepted = 0;
        for s in S::ALL {
            for c in C::ALL {
                let want = TABLE.iter().find(|(a, b, _)| (*a, *b) == (s, c));
                match (s.on_command(c), want) {
                    (Ok(next), Some((_, _, expected))) => {
                        assert_eq!(next, *expected, "{s:?} + {c:?}");
                        accepted += 1;
                    }
                    (Err(r), None) => {
                        assert_eq!((r.state, r.command), (s, Some(c)));
                        assert!(!r.accepted_in.contains(&s), "{s:?} + {c:?}");
                        for ok in &r.accepted_in {
                            assert!(TABLE.iter().any(|(a, b, _)| (*a, *b) == (*ok, c)));
                        }
                    }
                    (got, want) => panic!("{s:?} + {c:?}: got {got:?}, table says {want:?}"),
                }
            }
        }
        assert_eq!(accepted, TABLE.len());
    }

    #[test]
    fn transient_states_complete_into_their_wait_state_and_no_other_does() {
        let done = [
            (S::Running, S::Complete),
            (S::Holding, S::Held),
            (S::Restarting, S::Running),
            (S::Stopping, S::Stopped),
            (S::Aborting, S::Aborted),
        ];
        for s in S::ALL {
            match (s.on_complete(), done.iter().find(|(a, _)| *a == s)) {
                (Ok(next), Some((_, expected))) => assert_eq!(next, *expected),
                (Err(r), None) => {
                    assert!(!s.is_transient());
                    assert_eq!(r.command, None);
                    assert!(r.to_string().starts_with("state complete is not accepted"));
                }
                (got, want) => panic!("{s:?}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_says_the_state_and_where_the_command_would_apply() {
        let r = S::Running.on_command(C::Restart).unwrap_err();
        assert_eq!(
            r.to_string(),
            "restart is not accepted while the batch is running; it is accepted only in held"
        );
        let r = S::Aborting.on_command(C::Reset).unwrap_err();
        assert_eq!(r.accepted_in, vec![S::Stopped, S::Aborted, S::Complete]);
    }

    #[test]
    fn only_complete_stopped_and_aborted_are_final_and_names_round_trip() {
        let finals: Vec<S> = S::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, vec![S::Stopped, S::Aborted, S::Complete]);
        for s in S::ALL {
            assert_eq!(S::from_name(s.name()), Some(s));
            // A final state leaves only by Reset, to Idle.
            if s.is_final() {
                assert_eq!(s.on_command(C::Reset), Ok(S::Idle));
            }
        }
        for c in C::ALL {
            assert_eq!(C::from_name(c.name()), Some(c));
        }
        assert_eq!(
            S::from_name("Running"),
            None,
            "names are lower case, exactly"
        );
    }
}
