//! Operator actions on `P/cmd/alarm`: reading one and deciding it against the line's alarm
//! book. Pure, like batch commands: the line pipeline commits the command record and the
//! lifecycle record together, then applies the change, then answers on
//! `P/cmd/reply/{request_id}`.
//!
//! The schema (JSON object, at most 16 KiB, unknown keys refused):
//! ```json
//! {"request_id": "r-7", "user": "alice", "reason": "seen, operator on the way",
//!  "action": "ack", "tag": "TT101", "condition": "limit"}
//! ```
//! `action` is one of `ack`, `reset` (a latched, acknowledged alarm whose condition has
//! cleared), `shelve` (`duration_s`: a timed shelf, at most `[sinks.alerts] max_shelve_s`;
//! absent: until the alarm next returns to normal), `unshelve`, `out_of_service`,
//! `in_service`, `comment` (the `reason` is the comment). `tag` names the condition's tag
//! (or `model` a model's condition), `condition` its kind (`limit` when absent: `rate`,
//! `stale`, `frozen`, `spc`, `ewma`, `cusum`, `state`, …, as in the retained alarm's
//! `condition`). `request_id`, `user` and `reason` are required; an optional `signature`
//! is kept verbatim, as for batch commands.

use super::{AlarmBook, Operator};
use crate::batch::command::{blank, read_and_decide, reply_head, Policy};
use pdtf_models::command::{CommandRecord, Signature};
use pdtf_models::lifecycle::{Input, LifecycleEvent, Shelf};
use pdtf_models::twin::LineTwin;
use pdtf_models::{Condition, ConditionKind, ConditionSource, TagId, Timestamp};
use serde::Deserialize;
use std::collections::BTreeSet;

/// The actions `P/cmd/alarm` takes.
pub const ACTIONS: [&str; 7] = [
    "ack",
    "reset",
    "shelve",
    "unshelve",
    "out_of_service",
    "in_service",
    "comment",
];

const KINDS: [ConditionKind; 10] = [
    ConditionKind::Limit,
    ConditionKind::Rate,
    ConditionKind::Stale,
    ConditionKind::Frozen,
    ConditionKind::Spc,
    ConditionKind::Ewma,
    ConditionKind::Cusum,
    ConditionKind::State,
    ConditionKind::Mspc,
    ConditionKind::Forecast,
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmCommand {
    request_id: String,
    user: String,
    reason: String,
    action: String,
    tag: Option<String>,
    model: Option<String>,
    condition: Option<String>,
    duration_s: Option<u64>,
    signature: Option<Signature>,
}

/// What the line knows to decide a command: its conditions and tag names.
pub struct Context<'a> {
    pub book: &'a AlarmBook,
    /// Every condition the line's detectors watch.
    pub known: &'a BTreeSet<Condition>,
    /// Tag names by `TagId`.
    pub names: &'a [String],
    pub policy: &'a Policy,
    pub max_shelve_s: u64,
    pub twin: &'a LineTwin,
}

/// What to do with one received operator action.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Always committed.
    pub record: CommandRecord,
    /// Committed right after the command record, then applied, when accepted.
    pub event: Option<LifecycleEvent>,
    pub reply_to: Option<String>,
}

/// Reads and decides one payload received on `topic`.
pub fn decide(cx: &Context<'_>, topic: &str, payload: &[u8], now: Timestamp) -> Decision {
    let (record, event, reply_to) = read_and_decide(
        (&cx.book.line, topic, "action"),
        payload,
        &cx.book.seen,
        |c: &AlarmCommand| c.signature.clone(),
        |cmd| decide_read(cx, cmd, now),
    );
    Decision {
        record,
        event,
        reply_to,
    }
}

fn decide_read(
    cx: &Context<'_>,
    cmd: &AlarmCommand,
    now: Timestamp,
) -> Result<LifecycleEvent, String> {
    blank([
        ("request_id", cmd.request_id.as_str()),
        ("user", cmd.user.as_str()),
        ("reason", cmd.reason.as_str()),
    ])?;
    if !ACTIONS.contains(&cmd.action.as_str()) {
        return Err(format!(
            "unknown action {:?} (known: {})",
            cmd.action,
            ACTIONS.join(", ")
        ));
    }
    cx.policy.allows(&cmd.action, &cmd.user)?;
    let condition = condition(cx, cmd)?;
    let input = match cmd.action.as_str() {
        "ack" => Input::Ack,
        "reset" => Input::Reset,
        "shelve" => match cmd.duration_s {
            None => Input::Shelve(Shelf::OneShot),
            Some(0) => return Err("duration_s must be at least 1".into()),
            Some(s) if s > cx.max_shelve_s => {
                return Err(format!(
                "duration_s {s} is over the {} s a shelf may last ([sinks.alerts] max_shelve_s)",
                cx.max_shelve_s
            ))
            }
            Some(s) => {
                let nanos = i64::try_from(s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000_000);
                let until = Timestamp::from_unix_nanos(now.as_nanos().saturating_add(nanos));
                Input::Shelve(Shelf::Until(until))
            }
        },
        "unshelve" => Input::Unshelve,
        "out_of_service" => Input::OutOfService,
        "in_service" => Input::InService,
        _ => Input::Comment,
    };
    if cmd.duration_s.is_some() && cmd.action != "shelve" {
        return Err(format!("duration_s is for shelve, not {}", cmd.action));
    }
    let by = Operator {
        user: cmd.user.clone(),
        request_id: cmd.request_id.clone(),
        reason: cmd.reason.clone(),
    };
    cx.book
        .decide(&condition, input, &by, cx.twin, now)
        .map_err(|r| r.why)
}

fn condition(cx: &Context<'_>, cmd: &AlarmCommand) -> Result<Condition, String> {
    let kind_name = cmd.condition.as_deref().unwrap_or("limit");
    let kind = KINDS
        .into_iter()
        .find(|k| k.name() == kind_name)
        .ok_or_else(|| format!("unknown condition kind {kind_name:?}"))?;
    let source = match (&cmd.tag, &cmd.model) {
        (Some(tag), None) => {
            let id = cx
                .names
                .iter()
                .position(|n| n == tag)
                .ok_or_else(|| format!("no tag {tag:?} on this line"))?;
            ConditionSource::Tag(TagId(id as u32))
        }
        (None, Some(m)) => ConditionSource::Model(m.clone()),
        _ => return Err("name the condition with exactly one of tag and model".into()),
    };
    let c = Condition { source, kind };
    if !cx.known.contains(&c) {
        let what = cmd.tag.as_ref().or(cmd.model.as_ref()).map_or("", |s| s);
        return Err(format!(
            "unknown condition: {what} has no {kind_name} alarm on this line"
        ));
    }
    Ok(c)
}

/// The reply once the command's record is committed as `seq`: the common part, and the
/// condition's lifecycle after it.
pub fn reply(
    record: &CommandRecord,
    seq: u64,
    event: Option<&LifecycleEvent>,
    first: Option<&Option<String>>,
) -> Vec<u8> {
    let mut body = reply_head(record, seq, first);
    if let Some(ev) = event {
        let l = &ev.lifecycle;
        body["alarm_state"] = l.status.name().into();
        body["acked"] = l.status.acknowledged().into();
        body["shelved"] = l.shelved.is_some().into();
        body["out_of_service"] = l.out_of_service.into();
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests;
