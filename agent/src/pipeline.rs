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

use crate::clock::{Clocks, SyncChange};
use crate::config::FullPolicy;
use pdtf_connectors::repeat::{Repeats, Report};
use pdtf_connectors::{alert::AlertBoard, SourceMsg, Stats};
use pdtf_models::compress::TagCompressor;
use pdtf_models::detect::Detector;
use pdtf_models::record::Audit;
use pdtf_models::twin::LineTwin;
use pdtf_models::{Entry, Gap, Journal, Record, RecordBody, Sample, Seq, TagId, Timestamp};
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
#[derive(Debug, Clone, PartialEq)]
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

/// Longest pause between retries of a failed commit: recovery follows freed space this fast.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// How long commits must keep succeeding before a storage outage is over.
pub const RECOVERY_HOLD: Duration = Duration::from_secs(3);

/// How long a stopping agent keeps retrying a failing journal before it gives up.
pub const STOP_GIVE_UP: Duration = Duration::from_secs(10);

/// An error that says the filesystem is out of space (ENOSPC, or its quota twin EDQUOT).
pub fn is_disk_full(error: &str) -> bool {
    [
        "No space left on device",
        "os error 28",
        "Disk quota exceeded",
        "os error 122",
    ]
    .iter()
    .any(|m| error.contains(m))
}

/// Journal commits failing since `since`.
struct StorageOutage {
    since: Timestamp,
    disk_full: bool,
    /// What the last successful reopen checked.
    reopened: Option<String>,
    /// Commits have succeeded since then (none failed after).
    writable_since: Option<Instant>,
}

impl StorageOutage {
    /// The system alarm: a full disk is the journal being full, anything else a failure.
    fn alarm(&self) -> &'static str {
        if self.disk_full {
            "journal_full"
        } else {
            "journal_failed"
        }
    }

    fn recovered_detail(&self, failures: u64) -> String {
        format!(
            "journal commits failed from {} ({}; {failures} failed attempts); {}; the records held back were committed when writes succeeded again, nothing accepted was lost",
            pdtf_connectors::alert::rfc3339(self.since),
            if self.disk_full { "filesystem full" } else { "write error" },
            self.reopened.as_deref().unwrap_or("the store accepted a retry without a reopen")
        )
    }
}

/// Journal cursors holding a refused span while it lasts (start in unix ns, samples so far),
/// written at each tick: after a crash the next start still records the span with its count.
pub const REFUSED_SINCE_CURSOR: &str = "refused_since_ns";
pub const REFUSED_COUNT_CURSOR: &str = "refused_samples";

/// Samples not recorded while the journal was full.
struct Refusal {
    since: Timestamp,
    samples: u64,
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

    /// Records entering and leaving the over-quota state.
    fn track_full(&mut self, out: &mut Vec<Entry>) {
        let full =
            Stats::flag(&self.stats.store_full) && self.full_policy == FullPolicy::StopSamples;
        match (&self.refusal, full) {
            (None, true) => {
                let t = now();
                error!("Journal over quota: samples are no longer recorded (alarms and audit entries still are). Free space or raise journal.max_size_bytes.");
                out.push(audit(
                    "storage_full",
                    "journal over max_size_bytes; policy stop_samples".into(),
                ));
                if let Some(b) = &self.board {
                    b.set_system(
                        "journal_full",
                        true,
                        "journal over quota: samples are not being recorded",
                        t,
                    );
                }
                self.refusal = Some(Refusal {
                    since: t,
                    samples: 0,
                });
            }
            (Some(r), false) => {
                info!(
                    samples_not_recorded = r.samples,
                    "Journal back under quota; recording samples again."
                );
                let detail = format!(
                    "journal under quota again; {} samples were not recorded",
                    r.samples
                );
                self.end_refusal(out, "storage_ok", detail);
                if let Some(b) = &self.board {
                    b.set_system("journal_full", false, "journal under quota", now());
                }
            }
            _ => {}
        }
    }

    /// Writes the refused span's count to the journal's cursors when it changed, or clears
    /// them once the span's gap record is committed (see `REFUSED_COUNT_CURSOR`).
    async fn persist_refusal(&mut self) {
        let now = self.refusal.as_ref().map(|r| (r.since, r.samples));
        if now.map(|(_, n)| n) == self.refusal_persisted {
            return;
        }
        let j = self.journal.clone();
        let (since, samples) = now.map_or((0, 0), |(t, n)| {
            (u64::try_from(t.as_nanos()).unwrap_or(0), n)
        });
        let written = tokio::task::spawn_blocking(move || {
            j.set_cursor(REFUSED_SINCE_CURSOR, Seq(since))?;
            j.set_cursor(REFUSED_COUNT_CURSOR, Seq(samples))
        })
        .await;
        match written {
            Ok(Ok(())) => self.refusal_persisted = now.map(|(_, n)| n),
            Ok(Err(e)) => {
                warn!(error = %e, "Refused-sample count not persisted; retried at the next tick.")
            }
            Err(e) => {
                warn!(error = %e, "Refused-sample count not persisted; retried at the next tick.")
            }
        }
    }

    /// Wall-clock steps and time synchronisation, at each tick (see `clock.rs`).
    fn track_clock(&mut self, now: Timestamp, out: &mut Vec<Entry>) {
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

    /// Closes a refused span: its gap record with the exact count, and an audit entry.
    fn end_refusal(&mut self, out: &mut Vec<Entry>, event: &str, detail: String) {
        let Some(r) = self.refusal.take() else {
            return;
        };
        let t = now();
        out.push(Entry {
            time: t,
            body: RecordBody::Gap(Gap {
                source: "journal".into(),
                start: r.since,
                end: t,
                reason: format!("journal over quota: {} samples not recorded", r.samples),
                tags: self.configured.clone(),
            }),
        });
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
                    for d in &mut self.detectors {
                        d.on_sample(&s, &self.twin, scratch);
                    }
                    match self.compressors.get_mut(s.tag.index()) {
                        Some(c) => c.push(s, &mut kept),
                        None => kept.push(s),
                    }
                    self.record_samples(&mut kept, out);
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
            } => self.purge(through, records, oldest).await,
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
                entries.extend(out.into_iter().map(|body| Entry { time: now, body }));
                self.commit(entries).await;
                self.end_outage().await;
                self.persist_refusal().await;
            }
            Control::Audit { event, detail } => self.audit(&event, detail).await,
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

    /// After a stop was asked for, a failing journal is given `STOP_GIVE_UP` more.
    fn giving_up(&mut self, pending: usize) -> bool {
        if !self.stopping.is_cancelled() {
            return false;
        }
        let since = *self.stop_seen.get_or_insert_with(Instant::now);
        if since.elapsed() < STOP_GIVE_UP {
            return false;
        }
        error!(
            entries = pending,
            "Stopping with entries not committed: the journal is not writable. They were never accepted, and they are lost: MQTT sources acknowledge a message to the broker on receipt."
        );
        true
    }

    fn storage_failed(&mut self, error: &str, pending: usize) {
        let now_i = Instant::now();
        let o = self.outage.get_or_insert_with(|| StorageOutage {
            since: now(),
            disk_full: is_disk_full(error),
            reopened: None,
            writable_since: None,
        });
        o.writable_since = None;
        match self.commit_log.failed(error, now_i) {
            Report::First => {
                Stats::set_flag(&self.stats.store_failed, true);
                Stats::set_flag(&self.stats.store_disk_full, o.disk_full);
                let what = if o.disk_full {
                    "journal write failed: the filesystem is full"
                } else {
                    "journal write failed"
                };
                self.stats
                    .problem("journal_write", Some(format!("{what}: {error}")));
                if let Some(b) = &self.board {
                    b.set_system(o.alarm(), true, &format!("{what}: {error}"), o.since);
                }
                error!(error, entries = pending, "Journal commit failed: the agent is not ready and intake waits (nothing more is read from the sources) while the journal is reopened and retried. Repeats of this error are counted, not logged.");
            }
            Report::Summary { failures, lasting } => warn!(
                failures,
                secs = lasting.as_secs(),
                last_error = error,
                "Journal commits still failing; intake is waiting."
            ),
            Report::Quiet => {}
        }
    }

    /// Ends a storage outage once commits have succeeded for `RECOVERY_HOLD`: the audit
    /// record, the alarm cleared, ready again.
    async fn end_outage(&mut self) {
        let held = self
            .outage
            .as_ref()
            .and_then(|o| o.writable_since)
            .is_some_and(|t| t.elapsed() >= RECOVERY_HOLD);
        if !held {
            return;
        }
        let Some(o) = self.outage.take() else { return };
        let ended = self.commit_log.succeeded(Instant::now());
        let failures = ended.as_ref().map_or(0, |e| e.failures);
        self.commit(vec![audit(
            "storage_recovered",
            o.recovered_detail(failures),
        )])
        .await;
        Stats::set_flag(&self.stats.store_failed, false);
        Stats::set_flag(&self.stats.store_disk_full, false);
        self.stats.problem("journal_write", None);
        if let Some(b) = &self.board {
            // The quota's alarm shares the name with the full disk's: kept while over quota.
            if o.alarm() != "journal_full" || !Stats::flag(&self.stats.store_full) {
                b.set_system(o.alarm(), false, "journal writable again", now());
            }
        }
        warn!(
            failures,
            secs = ended.as_ref().map_or(0.0, |e| e.lasting.as_secs_f64()),
            "Journal writable again; the outage is recorded as a storage_recovered audit record."
        );
    }

    fn accepted(&mut self, records: &[Record]) {
        for r in records {
            if let RecordBody::Alarm(a) = &r.body {
                if a.is_raise() {
                    Stats::add(&self.stats.alarms_raised, 1);
                }
                if let Some(b) = &self.board {
                    b.accept(r);
                }
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
        Stats::add(&self.stats.records_committed, records.len() as u64);
        Stats::set(&self.stats.last_seq, last);
        let active: usize = self.detectors.iter().map(|d| d.active_count()).sum();
        Stats::set(&self.stats.alarms_active, active as u64);
        self.committed.send_replace(last);
    }

    pub async fn audit(&mut self, event: &str, detail: String) {
        self.commit(vec![audit(event, detail)]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SyncState;

    fn pipeline(dir: &std::path::Path) -> LinePipeline {
        let journal = Arc::new(crate::journal::RedbJournal::open(dir).unwrap());
        LinePipeline::new(
            LineTwin::new(2),
            Vec::new(),
            Vec::new(),
            journal,
            None,
            watch::channel(0).0,
            Arc::new(Stats::default()),
            FullPolicy::StopSamples,
        )
    }

    fn audits(p: &LinePipeline) -> Vec<(String, String)> {
        p.journal
            .read_from(Seq(1), usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r.body {
                RecordBody::Audit(a) => Some((a.event, a.detail)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn an_unsynchronised_host_clock_is_recorded_at_the_first_tick_and_its_return_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pipeline(dir.path());
        p.clocks.read_sync = || {
            Some(SyncState {
                synchronized: false,
                max_error_us: 16_000_000,
            })
        };
        p.control(Control::Tick).await;
        p.control(Control::Tick).await;
        assert_eq!(Stats::get(&p.stats.clock_synchronized), 0);
        p.clocks.read_sync = || {
            Some(SyncState {
                synchronized: true,
                max_error_us: 30,
            })
        };
        p.control(Control::Tick).await;
        assert_eq!(Stats::get(&p.stats.clock_synchronized), 1);
        let events: Vec<String> = audits(&p).into_iter().map(|(e, _)| e).collect();
        assert_eq!(events, vec!["clock_unsynchronized", "clock_synchronized"]);
    }

    #[tokio::test]
    async fn a_crash_while_over_quota_leaves_the_refused_count_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pipeline(dir.path());
        Stats::set_flag(&p.stats.store_full, true);
        let t = now();
        let samples: Vec<Sample> = (0..7)
            .map(|i| Sample::new(TagId(1), f64::from(i), pdtf_models::Quality::Good, None, t))
            .collect();
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        p.track_full(&mut out);
        p.apply(SourceMsg::Samples(samples), &mut out, &mut scratch)
            .await;
        p.commit(out).await;
        p.control(Control::Tick).await;
        let last = p.journal.last_seq().unwrap().0;
        drop(p); // the crash: no end of the span, no stop record
        let j = crate::journal::RedbJournal::open(dir.path()).unwrap();
        let records = crate::startup::startup_records(&j, last, &[TagId(1)], "x".into()).unwrap();
        let gap = records
            .iter()
            .find_map(|e| match &e.body {
                RecordBody::Gap(g) if g.source == "journal" => Some(g.clone()),
                _ => None,
            })
            .expect("the refused span's gap");
        assert!(gap.reason.contains("at least 7 samples"), "{}", gap.reason);
        assert!(gap.start <= gap.end);
        assert!(records.iter().any(
            |e| matches!(&e.body, RecordBody::Audit(a) if a.event == "storage_full_at_crash")
        ));
        j.append(records).unwrap();
        crate::startup::clear_refusal_cursors(&j).unwrap();
        let again = crate::startup::startup_records(&j, last, &[TagId(1)], "x".into()).unwrap();
        assert!(!again
            .iter()
            .any(|e| matches!(&e.body, RecordBody::Gap(g) if g.source == "journal")));
    }
}
