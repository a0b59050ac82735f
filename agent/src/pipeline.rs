//! The line pipeline: one task per line owns the twin and the detectors (no locks on the hot
//! path), turns source messages into records, commits them, and only then hands them on.
//!
//! Group commit: after the first message it takes whatever else is already queued (up to
//! `MAX_ENTRIES_PER_COMMIT`) into the same transaction. A failed commit is retried with
//! backoff while the input channel fills and the sources wait: nothing is accepted, published
//! or dropped until the commit returns.

use pdtf_connectors::{alert::AlertBoard, SourceMsg, Stats};
use pdtf_models::detect::{Detector, LimitDetector};
use pdtf_models::record::Audit;
use pdtf_models::twin::LineTwin;
use pdtf_models::{Entry, Journal, Record, RecordBody, Timestamp};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tracing::error;

pub const MAX_ENTRIES_PER_COMMIT: usize = 4_096;

pub fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

pub struct LinePipeline {
    pub twin: LineTwin,
    pub limits: LimitDetector,
    pub journal: Arc<dyn Journal>,
    pub board: Option<Arc<AlertBoard>>,
    pub committed: watch::Sender<u64>,
    pub stats: Arc<Stats>,
}

impl LinePipeline {
    /// Runs until every sender is gone (the sources stopped), committing what they sent.
    pub async fn run(&mut self, mut rx: mpsc::Receiver<SourceMsg>) {
        let mut bodies = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut entries = Vec::new();
            self.apply(first, &mut entries, &mut bodies);
            while entries.len() < MAX_ENTRIES_PER_COMMIT {
                match rx.try_recv() {
                    Ok(m) => self.apply(m, &mut entries, &mut bodies),
                    Err(_) => break,
                }
            }
            self.commit(entries).await;
        }
    }

    fn apply(&mut self, msg: SourceMsg, out: &mut Vec<Entry>, scratch: &mut Vec<RecordBody>) {
        match msg {
            SourceMsg::Samples(samples) => {
                for s in samples {
                    self.twin.update(&s);
                    self.limits.on_sample(&s, &self.twin, scratch);
                    out.push(Entry {
                        time: s.agent_time,
                        body: RecordBody::Sample(s),
                    });
                    out.extend(scratch.drain(..).map(|body| Entry {
                        time: s.agent_time,
                        body,
                    }));
                }
            }
            SourceMsg::Malformed(m) => out.push(Entry {
                time: now(),
                body: RecordBody::Malformed(m),
            }),
            SourceMsg::LinkDown { tags, at, .. } => self.twin.mark_bad(&tags, at),
            SourceMsg::Gap(g) => out.push(Entry {
                time: g.end,
                body: RecordBody::Gap(g),
            }),
            SourceMsg::Batch(b) => {
                if b.event == "start" {
                    self.twin.start_batch(b.batch_id.clone(), b.product.clone());
                } else {
                    self.twin.end_batch();
                }
                out.push(Entry {
                    time: now(),
                    body: RecordBody::Batch(b),
                });
            }
        }
    }

    /// Commits with retry; returns the accepted records after handing them on.
    pub async fn commit(&mut self, entries: Vec<Entry>) -> Vec<Record> {
        if entries.is_empty() {
            return vec![];
        }
        let mut delay = Duration::from_millis(100);
        let records = loop {
            let j = self.journal.clone();
            let batch = entries.clone();
            match tokio::task::spawn_blocking(move || j.append(batch)).await {
                Ok(Ok(records)) => break records,
                Ok(Err(e)) => {
                    Stats::add(&self.stats.commit_errors, 1);
                    error!(error = %e, records = entries.len(), retry_in_ms = delay.as_millis() as u64, "Journal commit failed; sources are held back until it succeeds.");
                }
                Err(e) => error!(error = %e, "Journal commit task failed; retrying."),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        for r in &records {
            if let RecordBody::Alarm(a) = &r.body {
                if a.is_raise() {
                    Stats::add(&self.stats.alarms_raised, 1);
                }
                if let Some(b) = &self.board {
                    b.accept(r);
                }
            }
        }
        let last = records.last().map_or(0, |r| r.seq.0);
        Stats::add(&self.stats.records_committed, records.len() as u64);
        Stats::set(&self.stats.last_seq, last);
        Stats::set(&self.stats.alarms_active, self.limits.active_count() as u64);
        self.committed.send_replace(last);
        records
    }

    pub async fn audit(&mut self, event: &str, detail: String) {
        let body = RecordBody::Audit(Audit {
            event: event.to_owned(),
            detail,
        });
        self.commit(vec![Entry { time: now(), body }]).await;
    }
}
