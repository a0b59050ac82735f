//! QA's dispositions of GMP deviations on `P/cmd/deviation`: reading one and deciding it
//! against the deviation it names. Pure: the line pipeline looks the deviation up (open
//! ones in its tracker, closed ones in the journal's batch index), commits the command
//! record and the deviation's new record together, then answers on
//! `P/cmd/reply/{request_id}`.
//!
//! The schema (JSON object, at most 16 KiB, unknown keys refused):
//! ```json
//! {"request_id": "q-1", "user": "qa.lead", "reason": "no product impact: 40 s over, within the PAR",
//!  "deviation": "B-1-D1", "decision": "accept"}
//! ```
//! `decision` is one of `investigate`, `accept`, `reject` (the last two final);
//! `[sinks.alerts.allow_users] disposition = [...]` names who may send one. `request_id`,
//! `user` and `reason` are required; an optional `signature` is kept verbatim.

use super::AlarmBook;
use crate::batch::command::{blank, read_and_decide, reply_head, Policy};
use pdtf_models::command::{CommandRecord, Signature};
use pdtf_models::deviation::{Deviation, Disposition};
use pdtf_models::Timestamp;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DispositionCommand {
    request_id: String,
    user: String,
    reason: String,
    deviation: String,
    decision: String,
    signature: Option<Signature>,
}

/// The deviation a payload names, if it names one (to look it up before deciding); an
/// oversized payload is not read (deciding refuses it).
pub fn named(payload: &[u8]) -> Option<String> {
    if payload.len() > pdtf_models::command::MAX_COMMAND_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(v.get("deviation")?.as_str()?.to_owned())
}

/// What to do with one received disposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Always committed.
    pub record: CommandRecord,
    /// The deviation with the disposition recorded: committed right after the command.
    pub deviation: Option<Deviation>,
    pub reply_to: Option<String>,
}

/// Reads and decides one payload received on `topic`; `found` is the deviation it names as
/// the line knows it now (`None`: no such deviation on this line; an error: why the line
/// could not look).
pub fn decide(
    book: &AlarmBook,
    policy: &Policy,
    found: Result<Option<&Deviation>, &str>,
    topic: &str,
    payload: &[u8],
    now: Timestamp,
) -> Decision {
    let (record, deviation, reply_to) = read_and_decide(
        (&book.line, topic, "decision"),
        payload,
        &book.seen,
        |c: &DispositionCommand| c.signature.clone(),
        |cmd| {
            blank([
                ("request_id", cmd.request_id.as_str()),
                ("user", cmd.user.as_str()),
                ("reason", cmd.reason.as_str()),
                ("deviation", cmd.deviation.as_str()),
            ])?;
            policy.allows("disposition", &cmd.user)?;
            let d = found
                .map_err(str::to_owned)?
                .ok_or_else(|| format!("no deviation {:?} on line {}", cmd.deviation, book.line))?;
            d.dispose(Disposition {
                time: now,
                decision: cmd.decision.clone(),
                user: cmd.user.clone(),
                reason: cmd.reason.clone(),
                request_id: cmd.request_id.clone(),
            })
        },
    );
    Decision {
        record,
        deviation,
        reply_to,
    }
}

/// The reply once the command's record is committed as `seq`.
pub fn reply(
    record: &CommandRecord,
    seq: u64,
    deviation: Option<&Deviation>,
    first: Option<&Option<String>>,
) -> Vec<u8> {
    let mut body = reply_head(record, seq, first);
    if let Some(d) = deviation {
        body["deviation"] = d.id.clone().into();
        body["disposition"] = d.disposition().into();
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdtf_models::command::CommandOutcome;
    use pdtf_models::deviation::Tracker;
    use pdtf_models::{AlarmEvent, AlarmState, Condition, Level, TagId};

    fn deviation(open: bool) -> Deviation {
        let mut t = Tracker::new("l1", vec![true]);
        let alarm = |ms, state| AlarmEvent {
            condition: Condition::tag_limit(TagId(0)),
            state,
            previous: None,
            value: 81.0,
            limit: 80.0,
            severity: 500,
            time: Timestamp::from_unix_millis(ms),
            batch_id: Some("B-1".into()),
            phase: None,
        };
        let opened = t
            .on_alarm(&alarm(0, AlarmState::Active(Level::Hi)))
            .remove(0);
        if open {
            return opened;
        }
        t.on_alarm(&alarm(1_000, AlarmState::Inactive)).remove(0)
    }

    fn send(policy: &Policy, found: Option<&Deviation>, json: &str) -> Decision {
        let book = AlarmBook::new("l1", Vec::new());
        decide(
            &book,
            policy,
            Ok(found),
            "plant/l1/cmd/deviation",
            json.as_bytes(),
            Timestamp::from_unix_millis(5_000),
        )
    }

    fn refusal(d: &Decision) -> String {
        match &d.record.outcome {
            CommandOutcome::Refused(why) => why.clone(),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn a_disposition_is_attributed_and_refused_when_unknown_open_unnamed_or_not_allowed() {
        let closed = deviation(false);
        let open_one = deviation(true);
        let anyone = Policy::default();
        let ok = r#"{"request_id":"q-1","user":"qa.lead","reason":"within PAR","deviation":"B-1-D1","decision":"accept"}"#;
        let d = send(&anyone, Some(&closed), ok);
        assert_eq!(d.record.outcome, CommandOutcome::Accepted);
        let dev = d.deviation.expect("the deviation's new record");
        assert_eq!(
            (dev.disposition(), dev.dispositions[0].user.as_str()),
            ("accept", "qa.lead")
        );
        assert_eq!(d.reply_to.as_deref(), Some("q-1"));
        let reply: serde_json::Value =
            serde_json::from_slice(&reply(&d.record, 9, Some(&dev), None)).unwrap();
        assert_eq!(
            (reply["disposition"].as_str(), reply["deviation"].as_str()),
            (Some("accept"), Some("B-1-D1"))
        );

        let unknown = send(&anyone, None, ok);
        assert!(refusal(&unknown).contains("no deviation \"B-1-D1\" on line l1"));
        assert!(refusal(&send(&anyone, Some(&open_one), ok)).contains("still open"));
        let no_user = ok.replace(r#""user":"qa.lead""#, r#""user":"""#);
        assert!(refusal(&send(&anyone, Some(&closed), &no_user)).contains("user"));
        let no_reason = ok.replace(r#","reason":"within PAR""#, "");
        assert!(refusal(&send(&anyone, Some(&closed), &no_reason)).contains("reason"));
        let qa_only = Policy {
            allow_users: [("disposition".to_owned(), vec!["qa.lead".to_owned()])].into(),
        };
        let operator = ok.replace("qa.lead", "op1");
        assert!(refusal(&send(&qa_only, Some(&closed), &operator))
            .contains("\"op1\" is not allowed to send disposition"));
        assert_eq!(
            send(&qa_only, Some(&closed), ok).record.outcome,
            CommandOutcome::Accepted
        );
        let book = AlarmBook::new("l1", Vec::new());
        let unread = decide(
            &book,
            &anyone,
            Err("disk"),
            "t",
            ok.as_bytes(),
            Timestamp::from_unix_millis(0),
        );
        assert_eq!(refusal(&unread), "disk");
        assert_eq!(named(ok.as_bytes()).as_deref(), Some("B-1-D1"));
        assert_eq!(named(b"not json"), None);
        let huge = ok.replace("within PAR", &"x".repeat(20_000));
        assert_eq!(named(huge.as_bytes()), None, "not read");
        assert!(refusal(&send(&anyone, Some(&closed), &huge)).contains("over the"));
    }
}
