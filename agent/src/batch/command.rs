//! Batch commands on `P/cmd/batch`: reading one, deciding it against the line's batch twin,
//! and the reply. Pure: the line pipeline commits the decision's records, then applies its
//! plan, then publishes the reply (`reply`), so nothing takes effect or is answered before
//! it is durable.
//!
//! The command schema (JSON object, at most 16 KiB, unknown keys refused):
//! ```json
//! {"request_id": "r-1", "user": "alice", "reason": "shift start", "command": "start",
//!  "batch_id": "B-1", "recipe": "gran-pcm500", "version": 3,
//!  "signature": {"printed_name": "Alice Example", "time": "2026-12-03T18:00:00Z",
//!                "meaning": "performed"}}
//! ```
//! `command` is one of `start` (`batch_id`, `recipe`, optional `version`: the highest
//! configured), `hold`, `restart`, `stop`, `abort`, `reset`, `phase` (optional `phase`: the
//! next one), `material` (`material`, `lot`, `quantity`, `unit`), `comment` (`text`).
//! `request_id`, `user` and `reason` are required; `request_id` becomes a topic level of the
//! reply, so it may not hold `/`, `+` or `#` (at most 128 characters).

use super::requests::RequestWindow;
use pdtf_models::batch::{Actor, BatchTwin, Charge, Plan, ProcCommand, Recipe};
use pdtf_models::command::{excerpt, CommandOutcome, CommandRecord, Signature, MAX_COMMAND_BYTES};
use pdtf_models::Timestamp;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The commands `P/cmd/batch` takes, in the order the errors list them.
pub const COMMANDS: [&str; 9] = [
    "start", "hold", "restart", "stop", "abort", "reset", "phase", "material", "comment",
];

/// The longest request id (it becomes a topic level of the reply).
pub const MAX_REQUEST_ID_CHARS: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCommand {
    request_id: String,
    user: String,
    reason: String,
    command: String,
    batch_id: Option<String>,
    recipe: Option<String>,
    version: Option<u32>,
    phase: Option<String>,
    material: Option<String>,
    lot: Option<String>,
    quantity: Option<f64>,
    unit: Option<String>,
    text: Option<String>,
    signature: Option<Signature>,
}

/// Who may send which command: command name → users. A command not listed is open to
/// every user (the broker's ACLs decide who can publish at all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub allow_users: BTreeMap<String, Vec<String>>,
}

/// What to do with one received command.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Always committed, whatever the outcome.
    pub record: CommandRecord,
    /// Applied after the commit, when accepted.
    pub plan: Option<Plan>,
    /// The request id to answer on `P/cmd/reply/{id}`, when it can name a topic.
    pub reply_to: Option<String>,
}

/// A command's common part (size, JSON, request id, user, reason, duplicate) as read: the
/// record so far, the JSON to decide by the command's own schema, and the reply's id.
pub(crate) type Read = (CommandRecord, serde_json::Value, Option<String>);

/// A command already decided (refused, or a duplicate): its record and the reply's id.
pub(crate) type Done = Box<(CommandRecord, Option<String>)>;

/// Reads the common part of a payload received on `topic`; `name_key` is the key naming what
/// to do (`command`, `action`).
pub(crate) fn envelope(
    line: &str,
    topic: &str,
    payload: &[u8],
    name_key: &str,
    seen: &RequestWindow,
) -> Result<Read, Done> {
    let mut record = CommandRecord {
        line: line.to_owned(),
        topic: topic.to_owned(),
        command: None,
        request_id: None,
        user: None,
        reason: None,
        signature: None,
        payload: String::new(),
        outcome: CommandOutcome::Accepted,
    };
    let refuse = |mut record: CommandRecord, why: String, reply_to: Option<String>| {
        record.outcome = CommandOutcome::Refused(why);
        Err(Box::new((record, reply_to)))
    };
    if payload.len() > MAX_COMMAND_BYTES {
        record.payload = excerpt(payload);
        let why = format!(
            "the command is {} bytes, over the {MAX_COMMAND_BYTES}-byte limit",
            payload.len()
        );
        return refuse(record, why, None);
    }
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            record.payload = excerpt(payload);
            return refuse(record, format!("the command is not JSON: {e}"), None);
        }
    };
    // The payload is valid UTF-8 JSON of bounded size: kept whole.
    record.payload = String::from_utf8_lossy(payload).into_owned();
    let text = |k: &str| {
        value
            .get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    record.request_id = text("request_id");
    record.user = text("user");
    record.reason = text("reason");
    record.command = text(name_key);
    let reply_to = record.request_id.clone().filter(|id| usable_request_id(id));
    if let Some(id) = record
        .request_id
        .as_deref()
        .filter(|id| !usable_request_id(id))
    {
        let why = format!(
            "request_id {id:?} cannot name a reply topic: it must be 1..={MAX_REQUEST_ID_CHARS} characters without '/', '+' or '#'"
        );
        return refuse(record, why, None);
    }
    if let Some(first) = reply_to.as_deref().and_then(|id| seen.get(id)) {
        record.outcome = CommandOutcome::Duplicate {
            first_seq: first.seq,
        };
        return Err(Box::new((record, reply_to)));
    }
    Ok((record, value, reply_to))
}

/// The first of `keys` whose value is blank, as a refusal.
pub(crate) fn blank<const N: usize>(keys: [(&str, &str); N]) -> Result<(), String> {
    match keys.iter().find(|(_, v)| v.trim().is_empty()) {
        Some((key, _)) => Err(format!("{key} must not be empty")),
        None => Ok(()),
    }
}

impl Policy {
    /// Whether `user` may send `name`.
    pub fn allows(&self, name: &str, user: &str) -> Result<(), String> {
        match self.allow_users.get(name) {
            Some(users) if !users.iter().any(|u| u == user) => {
                Err(format!("user {user:?} is not allowed to send {name}"))
            }
            _ => Ok(()),
        }
    }
}

/// Reads a payload received on `topic` and decides it by `decide_as` on its own schema `C`
/// (whose `signature` is kept in the record): the record (its outcome set), what was
/// decided when accepted, and the reply's id.
pub(crate) fn read_and_decide<C: serde::de::DeserializeOwned, T>(
    (line, topic, name_key): (&str, &str, &str),
    payload: &[u8],
    seen: &RequestWindow,
    signature: fn(&C) -> Option<Signature>,
    decide_as: impl FnOnce(&C) -> Result<T, String>,
) -> (CommandRecord, Option<T>, Option<String>) {
    let (mut record, value, reply_to) = match envelope(line, topic, payload, name_key, seen) {
        Ok(read) => read,
        Err(done) => {
            let (record, reply_to) = *done;
            return (record, None, reply_to);
        }
    };
    let decided = serde_json::from_value::<C>(value)
        .map_err(|e| format!("the command does not match the schema: {e}"))
        .and_then(|cmd| {
            record.signature = signature(&cmd);
            decide_as(&cmd)
        });
    match decided {
        Ok(t) => (record, Some(t), reply_to),
        Err(why) => {
            record.outcome = CommandOutcome::Refused(why);
            (record, None, reply_to)
        }
    }
}

/// Reads and decides one payload received on `topic`.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    twin: &BatchTwin,
    recipes: &[Recipe],
    policy: &Policy,
    seen: &RequestWindow,
    topic: &str,
    payload: &[u8],
    now: Timestamp,
) -> Decision {
    let (record, plan, reply_to) = read_and_decide(
        (&twin.line, topic, "command"),
        payload,
        seen,
        |c: &BatchCommand| c.signature.clone(),
        |cmd| decide_read(twin, recipes, policy, cmd, now),
    );
    Decision {
        record,
        plan,
        reply_to,
    }
}

fn decide_read(
    twin: &BatchTwin,
    recipes: &[Recipe],
    policy: &Policy,
    cmd: &BatchCommand,
    now: Timestamp,
) -> Result<Plan, String> {
    blank([
        ("request_id", cmd.request_id.as_str()),
        ("user", cmd.user.as_str()),
        ("reason", cmd.reason.as_str()),
    ])?;
    if !COMMANDS.contains(&cmd.command.as_str()) {
        return Err(format!(
            "unknown command {:?} (known: {})",
            cmd.command,
            COMMANDS.join(", ")
        ));
    }
    policy.allows(&cmd.command, &cmd.user)?;
    let by = Actor::Command {
        request_id: cmd.request_id.clone(),
        user: cmd.user.clone(),
    };
    plan(twin, recipes, cmd, now, by)
}

fn usable_request_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_REQUEST_ID_CHARS && !id.contains(['/', '+', '#'])
}

fn required<'a, T>(v: &'a Option<T>, key: &str, command: &str) -> Result<&'a T, String> {
    v.as_ref().ok_or_else(|| format!("{command} needs {key:?}"))
}

fn plan(
    twin: &BatchTwin,
    recipes: &[Recipe],
    c: &BatchCommand,
    now: Timestamp,
    by: Actor,
) -> Result<Plan, String> {
    let name = c.command.as_str();
    match name {
        "start" => {
            let batch_id = required(&c.batch_id, "batch_id", name)?;
            let id = required(&c.recipe, "recipe", name)?;
            let recipe = find_recipe(recipes, id, c.version)?;
            twin.start(batch_id, recipe, now, by, true)
        }
        "phase" => twin.phase_to(c.phase.as_deref(), now, by),
        "material" => {
            let charge = Charge {
                material: required(&c.material, "material", name)?.clone(),
                lot: required(&c.lot, "lot", name)?.clone(),
                quantity: *required(&c.quantity, "quantity", name)?,
                unit: required(&c.unit, "unit", name)?.clone(),
            };
            twin.material(charge, now, by)
        }
        "comment" => twin.comment(required(&c.text, "text", name)?, now, by),
        other => {
            let command = ProcCommand::from_name(other)
                .ok_or_else(|| format!("unknown command {other:?}"))?;
            twin.command(command, now, by)
        }
    }
}

/// Recipe `id` at `version`, or its highest configured version.
pub fn find_recipe<'a>(
    recipes: &'a [Recipe],
    id: &str,
    version: Option<u32>,
) -> Result<&'a Recipe, String> {
    let mut of_id = recipes.iter().filter(|r| r.reference.id == id).peekable();
    if of_id.peek().is_none() {
        let mut ids: Vec<&str> = recipes.iter().map(|r| r.reference.id.as_str()).collect();
        ids.dedup();
        return Err(format!("no recipe {id:?} (configured: {})", ids.join(", ")));
    }
    match version {
        Some(v) => of_id
            .find(|r| r.reference.version == v)
            .ok_or_else(|| format!("recipe {id:?} has no version {v}")),
        None => of_id
            .max_by_key(|r| r.reference.version)
            .ok_or_else(|| format!("no recipe {id:?}")),
    }
}

/// The reply on `P/cmd/reply/{request_id}` once the command's record is committed as `seq`
/// (for a duplicate: as the first copy was answered, `first` its refusal if it was refused).
pub fn reply(
    record: &CommandRecord,
    seq: u64,
    twin: &BatchTwin,
    first: Option<&Option<String>>,
) -> Vec<u8> {
    let mut body = reply_head(record, seq, first);
    body["batch_id"] = twin.batch_id().into();
    body["state"] = twin.state.name().into();
    body["phase"] = twin.phase().into();
    body.to_string().into_bytes()
}

/// What every reply says: the request, whether it was accepted and why not, whether it was
/// a duplicate, and the seq of the record that answers it.
pub(crate) fn reply_head(
    record: &CommandRecord,
    seq: u64,
    first: Option<&Option<String>>,
) -> serde_json::Value {
    let (accepted, reason, duplicate, answered_seq) = match (&record.outcome, first) {
        (CommandOutcome::Accepted, _) => (true, None, false, seq),
        (CommandOutcome::Refused(r), _) => (false, Some(r.clone()), false, seq),
        (CommandOutcome::Duplicate { first_seq }, Some(refused)) => {
            (refused.is_none(), refused.clone(), true, *first_seq)
        }
        (CommandOutcome::Duplicate { first_seq }, None) => (false, None, true, *first_seq),
    };
    serde_json::json!({
        "request_id": record.request_id,
        "accepted": accepted,
        "reason": reason,
        "duplicate": duplicate,
        "seq": answered_seq,
    })
}

#[cfg(test)]
mod tests;
