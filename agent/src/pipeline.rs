//! The line pipeline: one task per line owns the twin, the detectors and the compressors (no
//! locks on the hot path), turns source messages into records, commits them, and only then
//! hands them on.
//!
//! Group commit: after the first message it takes whatever else is already queued (up to
//! `MAX_ENTRIES_PER_COMMIT`) into the same transaction. A failed commit is retried with
//! backoff while the input channel fills and the sources wait: nothing is accepted, published
//! or dropped until the commit returns (see `commit`: not-ready and the critical alarm at
//! once, the journal reopened before each retry; only a stop gives up).
//!
//! At each tick (`Control::Tick`, every second): the detectors' ticks, the quota state, the
//! clock watchers (`clock.rs`), the end of a storage outage, and the refused-sample count
//! persisted while over quota.
//!
//! Journal over quota (`stats.store_full`), policy `stop_samples`: samples still update the twin
//! and detectors, but are not recorded; entering and leaving the state are audit records, the
//! `journal_full` system alarm is raised, and the hole becomes a gap record with the count of
//! samples not recorded. Policy `block`: no source message is taken until space is freed (the
//! sources wait on the full channel); shutdown lifts the hold so what was sent is committed.
//!
//! Control messages (`Control`: purges, quota changes) have a channel of their own that is
//! served first and even while data is held back: a purge is what frees space, so it must
//! never queue behind the data it would make room for.
//!
//! Several lines: each runs its own pipeline (own channel, twin, detectors, compressors,
//! refused span); they share the journal, whose writer lock keeps seq contiguous per agent,
//! and the `committed` watch, which only moves forward. The *primary* line (the first) also
//! does what concerns the whole agent: purges, the host clock's steps and synchronisation,
//! and the `journal_full` system alarm.

mod alarms;
mod batch;
mod outage;
mod quota;
mod reload;

use crate::clock::{Clocks, SyncChange};
use crate::config::FullPolicy;
pub use alarms::Commands as AlarmCommands;
pub use outage::{is_disk_full, RECOVERY_HOLD, STOP_GIVE_UP};
use outage::{StorageOutage, MAX_RETRY_DELAY};
use pdtf_connectors::repeat::Repeats;
use pdtf_connectors::{alert::AlertBoard, SourceMsg, Stats};
use pdtf_models::compress::TagCompressor;
use pdtf_models::detect::Detector;
use pdtf_models::record::Audit;
use pdtf_models::twin::LineTwin;
use pdtf_models::{Entry, Journal, Record, RecordBody, Sample, Seq, TagId, Timestamp};
use quota::Refusal;
pub use quota::{refusal_cursors, REFUSED_COUNT_CURSOR, REFUSED_SINCE_CURSOR};
pub use reload::TagPlan;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub const MAX_ENTRIES_PER_COMMIT: usize = 4_096;

/// Capacity of a line's control channel. Senders wait when it is full (housekeeping does
/// one round at a time, so it never is for long).
pub const CONTROL_CHANNEL: usize = 16;

/// Messages from the agent itself to a line pipeline, served before any source data.
#[derive(Debug)]
pub enum Control {
    /// Purge records through `through` (acknowledged upstream and past retention). The
    /// pipeline executes it so the journal keeps one writer.
    Purge {
        through: Seq,
        records: u64,
        oldest: Timestamp,
    },
    /// `stats.store_full` changed: re-decide whether to hold data back, record the change.
    QuotaChanged,
    /// The periodic tick: an idle pipeline still shows it is alive (the watchdog's heartbeat).
    Tick,
    /// An audit record the agent itself makes (e.g. a supervised task failed).
    Audit { event: String, detail: String },
    /// A payload received on the line's `P/cmd/batch`: decided, committed, then applied and
    /// answered (`pipeline/batch.rs`).
    BatchCommand { topic: String, payload: Vec<u8> },
    /// A payload received on the line's `P/cmd/alarm`: decided, committed, then applied and
    /// answered (`pipeline/alarms.rs`).
    AlarmCommand { topic: String, payload: Vec<u8> },
    /// A validated tag-map change: committed, then applied; `done` gets the audit record's
    /// seq, or why nothing was applied.
    Reload {
        plan: Box<TagPlan>,
        done: tokio::sync::oneshot::Sender<Result<u64, String>>,
    },
}

pub fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

fn audit(event: &str, detail: String) -> Entry {
    Entry {
        time: now(),
        body: RecordBody::Audit(Audit {
            event: event.to_owned(),
            detail,
        }),
    }
}

pub struct LinePipeline {
    pub twin: LineTwin,
    /// Every detector of the line; each sample, tick and line event goes to all of them.
    pub detectors: Vec<Box<dyn Detector>>,
    pub compressors: Vec<TagCompressor>,
    pub journal: Arc<dyn Journal>,
    pub board: Option<Arc<AlertBoard>>,
    pub committed: watch::Sender<u64>,
    pub stats: Arc<Stats>,
    pub full_policy: FullPolicy,
    /// Live copies of alarm records for upstream `.../events` (never waited on).
    pub live: Option<mpsc::Sender<Record>>,
    /// The configured tags' ids (a journal-full gap names them).
    pub configured: Vec<TagId>,
    /// Beats after every message served: the systemd watchdog feeds on it.
    pub beat: watch::Sender<Instant>,
    refusal: Option<Refusal>,
    kept: Vec<Sample>,
    /// The sources' stop: a commit that keeps failing gives up `STOP_GIVE_UP` after it.
    stopping: CancellationToken,
    stop_seen: Option<Instant>,
    commit_log: Repeats,
    outage: Option<StorageOutage>,
    /// Wall-clock steps, host time synchronisation, source clocks far off (`clock.rs`).
    pub clocks: Clocks,
    /// The refused-span count last written to the journal's cursors (`None`: cleared).
    refusal_persisted: Option<u64>,
    /// The line's id (`[[lines]]` id, or `agent.line`).
    pub line: String,
    /// The first line: purges, the host clock, the `journal_full` system alarm.
    pub primary: bool,
    /// This line's refused-span cursors (`refusal_cursors`).
    pub refused_cursors: (String, String),
    /// The active alarms of this line last added to `stats.alarms_active` (a sum over lines).
    pub active_reported: u64,
    /// The line's batch twin, when the line tracks batches (`[batch]`).
    pub batch: Option<crate::batch::LineBatch>,
    /// The lifecycle of every alarm of the line (`alarms`).
    pub alarms: crate::alarms::AlarmBook,
    /// What operator actions on `P/cmd/alarm` need (`None`: the line takes none).
    pub alarm_commands: Option<alarms::Commands>,
    /// GMP deviations in progress (critical limits exceeded inside a batch).
    pub deviations: pdtf_models::deviation::Tracker,
    /// Alarm-management KPIs of the line, and where the HTTP API reads them.
    pub kpis: pdtf_models::kpi::Kpis,
    pub kpi_live: Option<crate::batch::Live>,
    /// `[sinks.alerts] chatter_republish_s` (zero: off), and the conditions held back.
    pub chatter_republish: Duration,
    held: std::collections::BTreeMap<pdtf_models::Condition, alarms::Held>,
    /// Audit records made between commits (holding back a chattering alarm), committed at
    /// the next tick.
    pending_audits: Vec<Entry>,
}

impl LinePipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        twin: LineTwin,
        detectors: Vec<Box<dyn Detector>>,
        compressors: Vec<TagCompressor>,
        journal: Arc<dyn Journal>,
        board: Option<Arc<AlertBoard>>,
        committed: watch::Sender<u64>,
        stats: Arc<Stats>,
        full_policy: FullPolicy,
    ) -> Self {
        Self {
            twin,
            detectors,
            compressors,
            journal,
            board,
            committed,
            stats,
            full_policy,
            live: None,
            configured: Vec::new(),
            beat: watch::channel(Instant::now()).0,
            refusal: None,
            kept: Vec::new(),
            stopping: CancellationToken::new(),
            stop_seen: None,
            commit_log: Repeats::default(),
            outage: None,
            clocks: Clocks::new(&crate::clock::ClockConfig::default(), Arc::from(Vec::new())),
            refusal_persisted: None,
            line: String::new(),
            primary: true,
            refused_cursors: refusal_cursors(0, ""),
            active_reported: 0,
            batch: None,
            alarms: crate::alarms::AlarmBook::default(),
            alarm_commands: None,
            deviations: pdtf_models::deviation::Tracker::default(),
            kpis: pdtf_models::kpi::Kpis::default(),
            kpi_live: None,
            chatter_republish: Duration::ZERO,
            held: std::collections::BTreeMap::new(),
            pending_audits: Vec::new(),
        }
    }

    /// Runs until every source sender is gone (the sources stopped), committing what they
    /// sent. `stop` is the sources' shutdown: it lifts a block-policy hold so they can finish.
    pub async fn run(
        &mut self,
        mut rx: mpsc::Receiver<SourceMsg>,
        mut control: mpsc::Receiver<Control>,
        stop: CancellationToken,
    ) {
        self.stopping = stop.clone();
        let mut scratch = Vec::new();
        let mut control_open = true;
        let mut holding = false;
        loop {
            self.beat.send_replace(Instant::now());
            let hold = self.full_policy == FullPolicy::Block
                && Stats::flag(&self.stats.store_full)
                && !stop.is_cancelled();
            if hold != holding {
                holding = hold;
                if hold {
                    error!("Journal over quota with full_policy = \"block\": intake is held back (sources wait) until a purge frees space.");
                } else {
                    info!("Journal intake resumed.");
                }
            }
            let first = tokio::select! {
                biased;
                c = control.recv(), if control_open => {
                    match c {
                        Some(c) => self.control(c).await,
                        None => control_open = false,
                    }
                    continue;
                }
                _ = stop.cancelled(), if hold => continue,
                m = rx.recv(), if !hold => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let mut entries = Vec::new();
            self.track_full(&mut entries);
            self.apply(first, &mut entries, &mut scratch).await;
            while entries.len() < MAX_ENTRIES_PER_COMMIT {
                match rx.try_recv() {
                    Ok(m) => self.apply(m, &mut entries, &mut scratch).await,
                    Err(_) => break,
                }
            }
            self.commit(entries).await;
            if self.refusal.is_none() && self.refusal_persisted.is_some() {
                self.persist_refusal().await;
            }
        }
        // Held samples of compressed tags belong to the record before the agent stops.
        let mut kept = Vec::new();
        for c in &mut self.compressors {
            c.flush(&mut kept);
        }
        let mut entries = Vec::new();
        self.record_samples(&mut kept, &mut entries);
        // Stopping while over quota: the refused span so far is recorded now, with its
        // count, instead of vanishing with the process.
        let detail = format!(
            "agent stopping while the journal is over quota; {} samples were not recorded",
            self.refusal.as_ref().map_or(0, |r| r.samples)
        );
        self.end_refusal(&mut entries, "storage_full_at_stop", detail);
        self.commit(entries).await;
    }

    /// Wall-clock steps and time synchronisation, at each tick (see `clock.rs`).
    fn track_clock(&mut self, now: Timestamp, out: &mut Vec<Entry>) {
        if !self.primary {
            return; // the host clock is the agent's, watched once
        }
        let (step, state, change) = self.clocks.on_tick(Instant::now(), now);
        if let Some((_, detail)) = step {
            warn!(%detail, "Wall clock stepped.");
            Stats::add(&self.stats.clock_steps, 1);
            out.push(audit("clock_step", detail));
        }
        match state {
            Some(s) => {
                Stats::set(&self.stats.clock_synchronized, u64::from(s.synchronized));
                Stats::set_flag(&self.stats.clock_sync_known, true);
            }
            None if !self.clocks.unreadable_reported => {
                self.clocks.unreadable_reported = true;
                warn!("The kernel's time-synchronisation state cannot be read (adjtimex refused; a seccomp filter such as systemd's ProtectClock=yes blocks it): pdtf_clock_synchronized is not shown and no clock_unsynchronized alarm can be raised.");
            }
            None => {}
        }
        let Some(change) = change else { return };
        let (event, active, detail) = match change {
            SyncChange::Unsynchronized(d) => ("clock_unsynchronized", true, d),
            SyncChange::Synchronized(d) => ("clock_synchronized", false, d),
        };
        if active {
            warn!(%detail, "Host clock not synchronised.");
        } else {
            info!(%detail, "Host clock synchronised.");
        }
        if let Some(b) = &self.board {
            b.set_system("clock_unsynchronized", active, &detail, now);
        }
        out.push(audit(event, detail));
    }

    fn record_samples(&mut self, kept: &mut Vec<Sample>, out: &mut Vec<Entry>) {
        if let Some(r) = &mut self.refusal {
            r.samples += kept.len() as u64;
            Stats::add(&self.stats.samples_refused, kept.len() as u64);
            kept.clear();
            return;
        }
        out.extend(kept.drain(..).map(|s| Entry {
            time: s.agent_time,
            body: RecordBody::Sample(s),
        }));
    }

    async fn apply(&mut self, msg: SourceMsg, out: &mut Vec<Entry>, scratch: &mut Vec<RecordBody>) {
        // Reused across messages: the compressors' output for this message.
        let mut kept = std::mem::take(&mut self.kept);
        match msg {
            SourceMsg::Samples(samples) => {
                for s in samples {
                    let at = s.agent_time;
                    if let Some((event, detail)) = self.clocks.on_sample(&s) {
                        warn!(%detail, "Source clock far from agent time.");
                        out.push(audit(event, detail));
                    }
                    self.twin.update(&s);
                    self.deviations.on_sample(&s);
                    self.batch_tag(&s, out);
                    for d in &mut self.detectors {
                        d.on_sample(&s, &self.twin, scratch);
                    }
                    match self.compressors.get_mut(s.tag.index()) {
                        Some(c) => c.push(s, &mut kept),
                        None => kept.push(s),
                    }
                    self.record_samples(&mut kept, out);
                    self.count_batch_alarms(scratch);
                    self.follow_alarms(scratch, at);
                    out.extend(scratch.drain(..).map(|body| Entry { time: at, body }));
                }
            }
            SourceMsg::Malformed(m) => out.push(Entry {
                time: now(),
                body: RecordBody::Malformed(m),
            }),
            SourceMsg::LinkDown { tags, at, .. } => {
                for t in &tags {
                    if let Some(c) = self.compressors.get_mut(t.index()) {
                        c.flush(&mut kept);
                    }
                }
                self.record_samples(&mut kept, out);
                self.twin.mark_bad(&tags, at);
            }
            SourceMsg::Gap(g) => out.push(Entry {
                time: g.end,
                body: RecordBody::Gap(g),
            }),
        }
        self.kept = kept;
    }

    async fn control(&mut self, c: Control) {
        match c {
            Control::Purge {
                through,
                records,
                oldest,
            } if self.primary => self.purge(through, records, oldest).await,
            Control::Purge { .. } => {
                warn!("A purge reached a line that is not the primary; ignored.")
            }
            Control::QuotaChanged => {
                let mut entries = Vec::new();
                self.track_full(&mut entries);
                self.commit(entries).await;
            }
            Control::Tick => {
                let (now, mut out) = (now(), Vec::new());
                let mut entries = Vec::new();
                self.track_full(&mut entries);
                self.track_clock(now, &mut entries);
                for d in &mut self.detectors {
                    d.on_tick(now, &self.twin, &mut out);
                }
                self.follow_alarms(&mut out, now);
                out.extend(self.alarms.tick(now, &self.twin));
                self.deviation_tick(now, &mut out);
                self.kpi_tick(now, &mut entries);
                entries.extend(out.into_iter().map(|body| Entry { time: now, body }));
                self.commit(entries).await;
                self.batch_tick(now).await;
                self.end_outage().await;
                self.persist_refusal().await;
            }
            Control::Audit { event, detail } => self.audit(&event, detail).await,
            Control::BatchCommand { topic, payload } => self.batch_command(topic, payload).await,
            Control::AlarmCommand { topic, payload } => self.alarm_command(topic, payload).await,
            Control::Reload { plan, done } => {
                let result = self.reload(*plan).await;
                let _gone = done.send(result);
            }
        }
    }

    async fn purge(&mut self, through: Seq, records: u64, oldest: Timestamp) {
        let detail = format!(
            "purged seq ..={} ({records} records, oldest from {}): acknowledged upstream and past retention",
            through.0,
            pdtf_connectors::alert::rfc3339(oldest)
        );
        let j = self.journal.clone();
        let entry = audit("purge", detail);
        match tokio::task::spawn_blocking(move || j.purge_through(through, entry)).await {
            Ok(Ok(recs)) => {
                Stats::add(&self.stats.records_purged, records);
                info!(
                    through = through.0,
                    records, "Purged acknowledged records past retention."
                );
                self.accepted(&recs);
            }
            Ok(Err(e)) => warn!(error = %e, "Purge not done; records are kept."),
            Err(e) => warn!(error = %e, "Purge task failed; records are kept."),
        }
    }

    /// Commits with retry; returns the accepted records after handing them on.
    ///
    /// A failure (a full disk, a broken store) makes the agent not-ready and raises the
    /// critical system alarm at once; the journal is closed, reopened and verified before
    /// each retry, because redb refuses every write on a handle that saw an I/O error; the
    /// sources wait meanwhile. The first error is logged in full, repeats are counted. Once
    /// commits have succeeded for `RECOVERY_HOLD` (a disk at the edge of full lets some
    /// through), the outage ends with a `storage_recovered` audit record (`end_outage`).
    /// Only a stop gives up, `STOP_GIVE_UP` after it was asked for: the process must end
    /// within systemd's stop timeout. What was never committed was never accepted, but it is
    /// lost: an MQTT source acknowledged it to the broker on receipt (see the README).
    pub async fn commit(&mut self, entries: Vec<Entry>) -> Vec<Record> {
        if entries.is_empty() {
            return vec![];
        }
        let mut delay = Duration::from_millis(100);
        let records = loop {
            self.beat.send_replace(Instant::now());
            let j = self.journal.clone();
            let batch = entries.clone();
            let started = Instant::now();
            let failure = match tokio::task::spawn_blocking(move || j.append(batch)).await {
                Ok(Ok(records)) => {
                    self.stats.observe_commit(started.elapsed());
                    if let Some(o) = &mut self.outage {
                        o.writable_since.get_or_insert_with(Instant::now);
                    }
                    break records;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("journal commit task failed: {e}"),
            };
            Stats::add(&self.stats.commit_errors, 1);
            self.storage_failed(&failure, entries.len());
            if self.giving_up(entries.len()) {
                return vec![];
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stopping.cancelled() => {}
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            let j = self.journal.clone();
            match tokio::task::spawn_blocking(move || j.reopen()).await {
                Ok(Ok(None)) => {} // the engine keeps its handle
                Ok(Ok(Some(what))) => {
                    Stats::add(&self.stats.store_reopens, 1);
                    if let Some(o) = &mut self.outage {
                        o.reopened = Some(what);
                    }
                }
                Ok(Err(e)) => self.storage_failed(&format!("reopen: {e}"), entries.len()),
                Err(e) => self.storage_failed(&format!("reopen task failed: {e}"), entries.len()),
            }
        };
        self.accepted(&records);
        records
    }

    fn accepted(&mut self, records: &[Record]) {
        for r in records {
            if matches!(
                r.body,
                RecordBody::Alarm(_) | RecordBody::Lifecycle(_) | RecordBody::Deviation(_)
            ) {
                if matches!(&r.body, RecordBody::Alarm(a) if a.is_raise()) {
                    Stats::add(&self.stats.alarms_raised, 1);
                }
                self.publish_retained(r);
                if let Some(live) = &self.live {
                    if live.try_send(r.clone()).is_err() {
                        Stats::add(&self.stats.live_events_dropped, 1);
                    }
                }
            }
        }
        let Some(last) = records.last().map(|r| r.seq.0) else {
            return;
        };
        self.batch_committed(records);
        Stats::add(&self.stats.records_committed, records.len() as u64);
        self.stats
            .last_seq
            .fetch_max(last, std::sync::atomic::Ordering::Relaxed);
        let active = self
            .detectors
            .iter()
            .map(|d| d.active_count() as u64)
            .sum::<u64>();
        // A sum over lines: each adds the change of its own count (wrapping = signed).
        let delta = active.wrapping_sub(std::mem::replace(&mut self.active_reported, active));
        self.stats
            .alarms_active
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        // Shared by every line; commits are serialised by the journal, so the highest
        // accepted seq has every lower one committed before it.
        self.committed.send_if_modified(|c| {
            let moved = last > *c;
            *c = (*c).max(last);
            moved
        });
    }

    pub async fn audit(&mut self, event: &str, detail: String) {
        self.commit(vec![audit(event, detail)]).await;
    }
}

#[cfg(test)]
mod tests;
