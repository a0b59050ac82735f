//! The line's batch twin in the agent: batch commands over MQTT (`command`) with their
//! duplicate window (`requests`). The decisions are pure; the line pipeline commits them
//! and only then applies them and answers.

pub mod cli;
pub mod command;
pub mod feed;
pub mod history;
pub mod requests;
pub mod restore;
pub mod state;
pub mod tags;

use crate::config::{Config, LineConfig, RecipeConfig};
use command::Policy;
use pdtf_models::batch::{BatchTwin, MaterialPlan, QualitySpec, Recipe, RecipePhase, RecipeRef};
use pdtf_models::{Entry, Journal, JournalError, Record, RecordBody, Seq, TagId, Timestamp};
use requests::RequestWindow;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::info;

/// A reply to publish: topic and payload (QoS 1, not retained).
pub type Reply = (String, Vec<u8>);

/// Each batch-tracking line's latest `P/batch` payload, for the HTTP API (`/lines`).
pub type Live = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>;

/// Replies waiting for the publisher, per agent; when full the reply is dropped and
/// counted (the command's record, with its outcome, is already committed).
pub const REPLY_CHANNEL: usize = 256;

/// A line's batch twin with what it needs to take commands; owned by the line pipeline.
pub struct LineBatch {
    pub twin: BatchTwin,
    /// The recipes this line may run.
    pub recipes: Vec<Recipe>,
    pub policy: Policy,
    pub seen: RequestWindow,
    /// The line's batch tags (tag-driven batches).
    pub tags: tags::BatchTags,
    /// `P/cmd/reply`: a reply goes to `{reply_prefix}/{request_id}`.
    pub reply_prefix: String,
    /// `P/batch`: the retained batch state.
    pub state_topic: String,
    pub replies: Option<mpsc::Sender<Reply>>,
    /// When to snapshot and which snapshot cursors to move (see `restore`).
    pub snap: Snapshots,
    /// Where the HTTP API reads the line's batch state.
    pub live: Option<Live>,
    /// Trajectories and quality values from the line's samples.
    pub feed: feed::Feed,
}

/// A line's snapshot book-keeping.
#[derive(Debug)]
pub struct Snapshots {
    pub every: Duration,
    pub last: Instant,
    /// A command was answered since the last snapshot (the window changed).
    pub dirty: bool,
    /// A committed snapshot whose cursors are not written yet.
    pub pending: Option<u64>,
    /// The same for a snapshot that holds trajectories.
    pub pending_trajectories: Option<u64>,
    /// `restore::cursors` of the line.
    pub cursors: (String, String),
    /// `restore::trajectory_cursor` of the line.
    pub trajectory_cursor: String,
}

impl Snapshots {
    pub fn new(line: &str, every: Duration) -> Self {
        Snapshots {
            every,
            last: Instant::now(),
            dirty: false,
            pending: None,
            pending_trajectories: None,
            cursors: restore::cursors(line),
            trajectory_cursor: restore::trajectory_cursor(line),
        }
    }
}

impl LineBatch {
    /// The batch twin of `line`, when its configuration drives one.
    pub fn of(c: &Config, line: &LineConfig, ids: &dyn Fn(&str) -> Option<TagId>) -> Option<Self> {
        let b = line.batch.as_ref()?;
        let recipes = c
            .recipes
            .iter()
            .filter(|r| b.recipes.is_empty() || b.recipes.contains(&r.id))
            .map(|r| recipe(r, ids))
            .collect();
        Some(LineBatch {
            twin: BatchTwin::new(line.name(), b.state_tag.is_none()),
            recipes,
            policy: Policy {
                allow_users: b.allow_users.clone(),
            },
            seen: RequestWindow::default(),
            tags: tags::BatchTags::of(b, &c.recipes, ids),
            reply_prefix: format!("{}/cmd/reply", c.line_prefix(line)),
            state_topic: format!("{}/batch", c.line_prefix(line)),
            replies: None,
            snap: Snapshots::new(line.name(), Duration::from_secs(b.snapshot_interval_s)),
            live: None,
            feed: feed::Feed::new(
                c.recipes
                    .iter()
                    .filter_map(|r| {
                        let t = r.trajectories.as_ref()?;
                        let tags = t.tags.iter().filter_map(|n| ids(n)).collect();
                        Some((r.id.clone(), t.spec(), tags))
                    })
                    .collect(),
            ),
        })
    }

    /// The batch context every later alarm carries, into the line twin.
    pub fn set_context(&self, line: &mut pdtf_models::twin::LineTwin) {
        let recipe = self
            .twin
            .batch
            .as_ref()
            .map(|b| b.recipe.reference.id.as_str());
        line.set_batch(self.twin.batch_id(), recipe, self.twin.phase());
    }

    /// The twin's open batch, if any (not yet Complete, Stopped or Aborted).
    pub fn open(&self) -> bool {
        self.twin.batch.as_ref().is_some_and(|b| b.ended.is_none())
    }

    /// Takes over what the journal holds for the line (`restore::find`): the twin as last
    /// snapshotted (under today's transient-completion setting) and the duplicate window.
    /// A batch left open gets its downtime, from the journal's last record (`down_since`) to
    /// `now`, as a batch event in `out`; a line with anything restored gets a fresh snapshot
    /// in `out` (the start's commit), so the next start scans from there.
    pub fn restore(
        &mut self,
        found: restore::Found,
        down_since: Option<Timestamp>,
        now: Timestamp,
        out: &mut Vec<Entry>,
    ) {
        if found.is_empty() {
            return;
        }
        if let Some(s) = found.snapshot {
            let complete_transients = self.twin.complete_transients;
            self.twin = s.twin;
            self.twin.complete_transients = complete_transients;
        }
        self.feed.follow(&self.twin, found.trajectories);
        self.seen = found.seen;
        if let Some(plan) = down_since.and_then(|from| self.twin.downtime(from, now)) {
            out.extend(event_entries(plan.events, now));
            self.twin = plan.next;
        }
        info!(
            line = %self.twin.line,
            batch = self.twin.batch_id().unwrap_or("none"),
            state = self.twin.state.name(),
            phase = self.twin.phase().unwrap_or("none"),
            requests = self.seen.len(),
            scanned = found.scanned,
            "Batch state restored from the journal."
        );
        out.push(Entry {
            time: now,
            body: restore::snapshot(&self.twin, &self.seen, self.feed.current.as_ref(), now),
        });
    }
}

/// Batch events as journal entries made at `at`.
pub fn event_entries(
    events: Vec<pdtf_models::batch::BatchEvent>,
    at: Timestamp,
) -> impl Iterator<Item = Entry> {
    events.into_iter().map(move |e| Entry {
        time: at,
        body: RecordBody::Batch(Box::new(e)),
    })
}

/// Each line's batch twin (`None`: the line tracks no batch), restored from `journal`
/// (last seq `last`), with the records that go into the start's commit (downtime inside an
/// open batch, fresh snapshots).
pub fn prepare(
    c: &Config,
    ids: &dyn Fn(&str) -> Option<TagId>,
    journal: &dyn Journal,
    last: u64,
    now: Timestamp,
) -> Result<(Vec<Option<LineBatch>>, Vec<Entry>), JournalError> {
    let down_since = journal.read_from(Seq(last), 1)?.pop().map(|r| r.time);
    let mut out = Vec::new();
    let mut lines = Vec::new();
    for l in c.lines() {
        let mut b = LineBatch::of(c, &l, ids);
        if let Some(b) = b.as_mut() {
            let found = restore::find(journal, l.name(), last)?;
            b.restore(found, down_since, now, &mut out);
        }
        lines.push(b);
    }
    Ok((lines, out))
}

/// After the start's commit (`opened`, ending at seq `last`): each line's cursors point at
/// its fresh snapshot, or say that nothing up to `last` needs scanning again.
pub fn cursors_after_start(
    journal: &dyn Journal,
    lines: &[Option<LineBatch>],
    opened: &[Record],
    last: u64,
) -> Result<(), JournalError> {
    for b in lines.iter().flatten() {
        let (snap, through) = &b.snap.cursors;
        let (latest, with_trajectories) = restore::snapshot_seqs(opened, &b.twin.line);
        match latest {
            Some(s) => {
                journal.set_cursor(snap, Seq(s))?;
                journal.set_cursor(through, Seq(s))?;
            }
            None => journal.set_cursor(through, Seq(last))?,
        }
        if let Some(s) = with_trajectories {
            journal.set_cursor(&b.snap.trajectory_cursor, Seq(s))?;
        }
    }
    Ok(())
}

/// The batch twin's view of a configured recipe.
pub fn recipe(r: &RecipeConfig, ids: &dyn Fn(&str) -> Option<TagId>) -> Recipe {
    Recipe {
        reference: RecipeRef {
            id: r.id.clone(),
            version: r.version,
            product: r.product.clone(),
            product_code: r.product_code.clone(),
        },
        phases: r
            .phases
            .iter()
            .map(|p| RecipePhase {
                name: p.name.clone(),
                min_duration_s: p.min_duration_s,
                max_duration_s: p.max_duration_s,
            })
            .collect(),
        materials: r
            .materials
            .iter()
            .map(|m| MaterialPlan {
                material: m.material.clone(),
                planned: m.planned,
                unit: m.unit.clone(),
                tolerance_pct: m.tolerance_pct,
            })
            .collect(),
        quality: r
            .quality
            .iter()
            .map(|q| QualitySpec {
                name: q.name.clone(),
                unit: q.unit.clone(),
                lo: q.lo,
                hi: q.hi,
                tag: q.tag.as_deref().and_then(ids),
            })
            .collect(),
    }
}

/// A recipe for unit tests: id `gran`, product `G`, the named phases without durations, no
/// materials or quality attributes.
#[cfg(test)]
pub(crate) fn test_recipe(version: u32, phases: &[&str]) -> Recipe {
    Recipe {
        reference: RecipeRef {
            id: "gran".into(),
            version,
            product: "G".into(),
            product_code: "G1".into(),
        },
        phases: phases
            .iter()
            .map(|n| RecipePhase {
                name: (*n).into(),
                min_duration_s: None,
                max_duration_s: None,
            })
            .collect(),
        materials: vec![],
        quality: vec![],
    }
}
