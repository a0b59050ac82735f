//! What a start reads from the journal and writes to it, before any task runs: the tag
//! table by durable id, the alarm states to restore, the configuration digest, and the
//! records that open a run (the downtime gap, crash recovery, `agent_start`).

use crate::config::Config;
use pdtf_connectors::alert::AlertBoard;
use pdtf_models::detect::Detector;
use pdtf_models::lifecycle::LifecycleEvent;
use pdtf_models::record::Audit;
use pdtf_models::{
    Condition, Entry, Gap, Journal, LimitSpec, RecordBody, Seq, TagId, TagSpec, TagTable,
};
use tracing::warn;

/// The configured tags by durable id: `ids[i]` is the id the registry gave `c.tags[i]`;
/// ids of tags not configured now have no spec.
pub fn tag_table(c: &Config, ids: &[TagId], id_space: usize) -> TagTable {
    line_tag_table(c, ids, id_space, None)
}

/// The tags of line `line` (an index into `Config::lines`; `None`: every line).
pub fn line_tag_table(c: &Config, ids: &[TagId], id_space: usize, line: Option<usize>) -> TagTable {
    let mut specs = vec![None; id_space];
    let on_line = |t: &&crate::config::TagConfig| line.is_none_or(|l| c.line_of(&t.source) == l);
    for (t, id) in c.tags.iter().zip(ids).filter(|(t, _)| on_line(t)) {
        specs[id.index()] = Some(TagSpec {
            name: t.name.clone(),
            unit: t.unit.clone(),
            limits: t.limits.as_ref().map(limit_spec),
            signals: t.detect.as_ref().map(|d| d.spec()).unwrap_or_default(),
        });
    }
    TagTable::new(specs)
}

/// The detector's view of configured limits.
pub fn limit_spec(l: &crate::config::LimitsConfig) -> LimitSpec {
    LimitSpec {
        lolo: l.lolo,
        lo: l.lo,
        hi: l.hi,
        hihi: l.hihi,
        deadband: l.deadband,
        on_delay_ms: l.on_delay_ms,
    }
}

/// The recipes of line `line` (`[batch]`'s `recipes`, or all; none without `[batch]`) and a
/// lookup of its tags' durable ids by name.
fn line_recipes<'a>(
    c: &'a Config,
    ids: &'a [TagId],
    line: usize,
) -> (
    Vec<&'a crate::config::RecipeConfig>,
    impl Fn(&str) -> Option<TagId> + 'a,
) {
    let allowed = c
        .lines()
        .get(line)
        .and_then(|l| l.batch.as_ref())
        .map(|b| b.recipes.clone());
    let recipes = match allowed {
        None => Vec::new(),
        Some(only) => c
            .recipes
            .iter()
            .filter(|r| only.is_empty() || only.contains(&r.id))
            .collect(),
    };
    let id_of = move |name: &str| {
        c.tags
            .iter()
            .zip(ids)
            .find(|(t, _)| t.name == name && c.line_of(&t.source) == line)
            .map(|(_, id)| *id)
    };
    (recipes, id_of)
}

/// The per-phase centre lines (`targets`) of line `line`'s recipes, by durable tag id.
pub fn phase_targets(
    c: &Config,
    ids: &[TagId],
    id_space: usize,
    line: usize,
) -> Vec<pdtf_models::detect::signals::PhaseTargets> {
    let (recipes, id_of) = line_recipes(c, ids, line);
    recipes
        .into_iter()
        .flat_map(|r| {
            r.phases.iter().filter(|p| !p.targets.is_empty()).map(|p| {
                let mut targets = vec![None; id_space];
                for (tag, v) in &p.targets {
                    if let Some(id) = id_of(tag) {
                        targets[id.index()] = Some(*v);
                    }
                }
                pdtf_models::detect::signals::PhaseTargets {
                    recipe: r.id.clone(),
                    phase: p.name.clone(),
                    targets,
                }
            })
        })
        .collect()
}

/// The phase limits of the recipes line `line` may run (`[batch]`'s `recipes`, or all), by
/// durable tag id over an id space of `id_space`; none for a line without `[batch]`.
pub fn phase_limits(
    c: &Config,
    ids: &[TagId],
    id_space: usize,
    line: usize,
) -> Vec<pdtf_models::detect::PhaseLimits> {
    let (recipes, id_of) = line_recipes(c, ids, line);
    recipes
        .into_iter()
        .flat_map(|r| {
            r.phases.iter().filter(|p| !p.limits.is_empty()).map(|p| {
                let mut specs = vec![None; id_space];
                for (tag, l) in &p.limits {
                    if let Some(id) = id_of(tag) {
                        specs[id.index()] = Some(limit_spec(l));
                    }
                }
                pdtf_models::detect::PhaseLimits {
                    recipe: r.id.clone(),
                    phase: p.name.clone(),
                    specs,
                }
            })
        })
        .collect()
}

/// How far back the start-up scan for the last alarm state of each tag looks, where the
/// journal's alarm index does not reach (records from before it existed, or an engine
/// without one).
const ALARM_RESTORE_SCAN_RECORDS: usize = 500_000;

/// The last alarm transition of each detector condition: it seeds the detectors and the
/// retained alarm board so a restart neither forgets an active alarm nor leaves a stale one
/// standing; and each condition's last lifecycle record (acknowledged, shelved, …), returned
/// for the lines' alarm books, and each condition's last deviation. Read from the journal's alarm index (a record or two per
/// condition, whatever the journal's size); older than the index, by scanning back from
/// where it starts, newest first, within `ALARM_RESTORE_SCAN_RECORDS`.
pub fn restore_alarms(
    journal: &dyn Journal,
    last: u64,
    detectors: &mut [Box<dyn Detector>],
    board: Option<&AlertBoard>,
) -> Result<Restored, pdtf_models::JournalError> {
    let conditions: std::collections::BTreeSet<Condition> =
        detectors.iter().flat_map(|d| d.conditions()).collect();
    let mut wanted = conditions.clone();
    let mut wanted_lifecycle = conditions;
    let mut out = Restored::default();
    let mut deviations = std::collections::BTreeSet::new();
    let mut take =
        |r: &pdtf_models::Record,
         wanted: &mut std::collections::BTreeSet<Condition>,
         wanted_lifecycle: &mut std::collections::BTreeSet<Condition>| {
            match &r.body {
                RecordBody::Alarm(a) if wanted.remove(&a.condition) => {
                    if detectors.iter_mut().any(|d| d.restore(a)) && a.is_raise() {
                        out.active += 1;
                        out.raised.push((a.condition.clone(), a.time));
                    }
                }
                RecordBody::Lifecycle(l) if wanted_lifecycle.remove(&l.condition) => {
                    out.lifecycles.push((**l).clone());
                }
                // Each condition's last deviation (the index keeps one; a scan may meet an
                // older record of the same deviation after its latest).
                RecordBody::Deviation(d) if deviations.insert(d.id.clone()) => {
                    out.deviations.push((**d).clone());
                }
                _ => return,
            }
            if let Some(b) = board {
                b.accept(r);
            }
        };
    let mut before = last + 1;
    if let Some((since, records)) = journal.last_alarm_transitions()? {
        for r in &records {
            take(r, &mut wanted, &mut wanted_lifecycle);
        }
        before = since.0.min(before);
    }
    let mut scanned = 0;
    while !(wanted.is_empty() && wanted_lifecycle.is_empty())
        && scanned < ALARM_RESTORE_SCAN_RECORDS
        && before > 1
    {
        let chunk = journal.read_back(Seq(before), 10_000)?;
        let Some(oldest) = chunk.last() else { break };
        before = oldest.seq.0;
        scanned += chunk.len();
        for r in &chunk {
            take(r, &mut wanted, &mut wanted_lifecycle);
        }
    }
    Ok(out)
}

/// What `restore_alarms` found beyond the detectors' states.
#[derive(Debug, Default)]
pub struct Restored {
    /// Active alarms restored.
    pub active: usize,
    /// Each restored active alarm, with the time of its last transition (for the stale-alarm
    /// KPI: the original raise may be older, if the level changed since).
    pub raised: Vec<(Condition, pdtf_models::Timestamp)>,
    /// Each condition's last lifecycle record.
    pub lifecycles: Vec<LifecycleEvent>,
    /// The last record of each deviation found (open ones carry on).
    pub deviations: Vec<pdtf_models::deviation::Deviation>,
}

/// SHA-256 over the agent file and every included tag file (in load order, each prefixed
/// by its path), so the audit trail names the exact configuration a run used.
pub fn config_digest(c: &Config) -> String {
    use sha2::{Digest, Sha256};
    let mut files = vec![c.file.clone()];
    for o in &c.tag_origins {
        if !files.contains(&o.file) {
            files.push(o.file.clone());
        }
    }
    let mut d = Sha256::new();
    for f in files {
        d.update(f.as_bytes());
        d.update(std::fs::read(&f).unwrap_or_default());
    }
    pdtf_models::record::hex(&d.finalize().into())
}

/// The records that open a run: the downtime since the last record as a gap (every restart
/// is a hole in the data), a `crash_recovery` audit when the last run did not end with
/// `agent_stop`, then `agent_start`.
/// `refusals`: each line's refused-span cursors with the line's tags.
pub fn startup_records(
    journal: &dyn Journal,
    last: u64,
    tags: &[TagId],
    refusals: &[((String, String), Vec<TagId>)],
    detail: String,
) -> Result<Vec<Entry>, pdtf_models::JournalError> {
    let now = crate::pipeline::now();
    let audit = |event: &str, detail: String| Entry {
        time: now,
        body: RecordBody::Audit(Audit {
            event: event.to_owned(),
            detail,
        }),
    };
    let mut out = Vec::new();
    if let Some(prev) = journal.read_from(Seq(last), 1)?.pop() {
        let clean = matches!(&prev.body, RecordBody::Audit(a) if a.event == "agent_stop");
        let reason = if clean {
            "agent stopped"
        } else {
            "agent stopped without a clean shutdown (crash, kill or power loss)"
        };
        out.push(Entry {
            time: now,
            body: RecordBody::Gap(Gap {
                source: "agent".into(),
                start: prev.time,
                end: now,
                reason: reason.into(),
                tags: tags.to_vec(),
            }),
        });
        if !clean {
            warn!(
                last_seq = last,
                "Previous run ended without a clean stop; recording crash recovery."
            );
            out.push(audit(
                "crash_recovery",
                format!("previous run ended after seq {last} without agent_stop; the journal reopened intact"),
            ));
        }
    }
    for (cursors, tags) in refusals {
        out.extend(refusal_at_crash(journal, last, cursors, tags)?);
    }
    out.push(audit("agent_start", detail));
    Ok(out)
}

/// After the start-up records committed: a crashed run's refused span is recorded now.
pub fn clear_refusal_cursors<'a>(
    journal: &dyn Journal,
    cursors: impl IntoIterator<Item = &'a (String, String)>,
) -> Result<(), pdtf_models::JournalError> {
    for (since, count) in cursors {
        if journal.cursor(since)?.0 != 0 {
            journal.set_cursor(since, Seq(0))?;
            journal.set_cursor(count, Seq(0))?;
        }
    }
    Ok(())
}

/// A refused span the previous run did not close (it crashed while over quota): its gap record
/// with the count persisted at the last tick, and a `storage_full_at_crash` audit record. The
/// pipeline clears the cursors once the span is recorded.
fn refusal_at_crash(
    journal: &dyn Journal,
    last: u64,
    (since_key, count_key): &(String, String),
    tags: &[TagId],
) -> Result<Vec<Entry>, pdtf_models::JournalError> {
    let since = journal.cursor(since_key)?.0;
    if since == 0 {
        return Ok(vec![]);
    }
    let samples = journal.cursor(count_key)?.0;
    let now = crate::pipeline::now();
    let end = journal
        .read_from(Seq(last), 1)?
        .pop()
        .map_or(now, |r| r.time);
    warn!(
        samples,
        "The previous run stopped while over quota; recording its refused span."
    );
    let reason = format!(
        "journal over quota until the previous run stopped without a clean shutdown: at least {samples} samples not recorded (the count as of its last second)"
    );
    Ok(vec![
        Entry {
            time: now,
            body: RecordBody::Gap(Gap {
                source: "journal".into(),
                start: pdtf_models::Timestamp::from_unix_nanos(i64::try_from(since).unwrap_or(0)),
                end,
                reason: reason.clone(),
                tags: tags.to_vec(),
            }),
        },
        Entry {
            time: now,
            body: RecordBody::Audit(Audit {
                event: "storage_full_at_crash".into(),
                detail: reason,
            }),
        },
    ])
}
