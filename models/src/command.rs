//! Commands as received over MQTT (`P/cmd/batch`, later `P/cmd/alarm`), with their outcome.
//!
//! Every command that reaches the agent is one record — accepted, refused or a duplicate —
//! committed *before* it takes effect and before it is answered, so the journal holds who
//! asked for what, why, and what the agent did about it, including the commands it refused.
//! Stored (record format 5): a change is a format bump with a migration.

use serde::{Deserialize, Serialize};

/// The largest command payload the agent reads; a larger one is refused and recorded with
/// an excerpt.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// The part of a refused payload a record keeps.
pub const REFUSED_EXCERPT_BYTES: usize = 512;

/// A signature manifestation sent with a command (21 CFR Part 11 §11.50): kept verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub printed_name: String,
    /// As the signer's system wrote it (an RFC 3339 time, kept as text).
    pub time: String,
    /// What the signature means: performed, reviewed, approved, …
    pub meaning: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Applied after this record was committed.
    Accepted,
    /// Not applied, and why.
    Refused(String),
    /// The same `request_id` was accepted or refused before, in record `first_seq`: this
    /// copy is recorded and answered as that one was, and not applied again.
    Duplicate { first_seq: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub line: String,
    /// The topic it came on.
    pub topic: String,
    /// The command's name (`start`, `hold`, …) when it could be read.
    pub command: Option<String>,
    pub request_id: Option<String>,
    pub user: Option<String>,
    pub reason: Option<String>,
    pub signature: Option<Signature>,
    /// The payload as received when it was read; at most `REFUSED_EXCERPT_BYTES` of it,
    /// lossily as text, when it was not (oversized, not UTF-8, not JSON).
    pub payload: String,
    pub outcome: CommandOutcome,
}

impl CommandRecord {
    pub fn is_accepted(&self) -> bool {
        matches!(self.outcome, CommandOutcome::Accepted)
    }
}

/// The start of `payload` as text, for a record of a command that could not be read.
pub fn excerpt(payload: &[u8]) -> String {
    let cut = &payload[..payload.len().min(REFUSED_EXCERPT_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}
