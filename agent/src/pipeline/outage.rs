//! A journal that cannot be written (a full disk, a broken store): how the pipeline's commit
//! retry reports it, when it ends, and when a stopping agent gives up (see `LinePipeline::commit`).

use super::{audit, now, LinePipeline};
use pdtf_connectors::repeat::Report;
use pdtf_connectors::Stats;
use pdtf_models::Timestamp;
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// Longest pause between retries of a failed commit: recovery follows freed space this fast.
pub(super) const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

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
pub(super) struct StorageOutage {
    pub(super) since: Timestamp,
    pub(super) disk_full: bool,
    /// What the last successful reopen checked.
    pub(super) reopened: Option<String>,
    /// Commits have succeeded since then (none failed after).
    pub(super) writable_since: Option<Instant>,
}

impl StorageOutage {
    /// The system alarm: a full disk is the journal being full, anything else a failure.
    pub(super) fn alarm(&self) -> &'static str {
        if self.disk_full {
            "journal_full"
        } else {
            "journal_failed"
        }
    }

    pub(super) fn recovered_detail(&self, failures: u64) -> String {
        format!(
            "journal commits failed from {} ({}; {failures} failed attempts); {}; the records held back were committed when writes succeeded again, nothing accepted was lost",
            pdtf_connectors::alert::rfc3339(self.since),
            if self.disk_full { "filesystem full" } else { "write error" },
            self.reopened.as_deref().unwrap_or("the store accepted a retry without a reopen")
        )
    }
}

impl LinePipeline {
    /// After a stop was asked for, a failing journal is given `STOP_GIVE_UP` more.
    pub(super) fn giving_up(&mut self, pending: usize) -> bool {
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

    pub(super) fn storage_failed(&mut self, error: &str, pending: usize) {
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
    pub(super) async fn end_outage(&mut self) {
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
}
