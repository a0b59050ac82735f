//! Housekeeping: measures the journal against its quota and decides purges.
//!
//! Every `housekeeping_interval_s`: the stored record bytes set `stats.store_full` (cleared
//! again below 95 % of the quota, so the state does not flap), and the oldest records that are
//! both acknowledged upstream and older than `retention_hours` are handed to the pipeline as
//! a purge (at most `PURGE_CHUNK` per round; the pipeline is the journal's only writer).
//! Nothing is purged that upstream has not acknowledged. Purges travel on the pipeline's
//! control path, which it serves before source data and even while `full_policy = "block"`
//! holds the data back: the purge is what frees the space that policy waits for.
//!
//! Each round also moves the verified checkpoint over the records committed since the last
//! round (`crate::verified`), so the next start verifies seconds of records, not the journal.

use crate::config::JournalConfig;
use crate::pipeline::now;
use crate::pipeline::Control;
use pdtf_connectors::repeat::{Repeats, Report};
use pdtf_connectors::Stats;
use pdtf_models::{Journal, JournalError, Seq, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub const PURGE_CHUNK: usize = 10_000;

pub struct Housekeeping {
    pub config: JournalConfig,
    pub journal: Arc<dyn crate::journal::Store>,
    pub stats: Arc<Stats>,
    /// Every line's control channel; the first (the primary line) executes purges.
    pub out: Vec<mpsc::Sender<Control>>,
}

/// The purge to do now, if any: the longest run from the first stored record that is
/// acknowledged (`<= acked`) and older than `cutoff`, at most `PURGE_CHUNK` long.
pub fn plan_purge(
    journal: &dyn Journal,
    acked: u64,
    cutoff: Timestamp,
) -> Result<Option<Control>, JournalError> {
    let first = journal.first_seq()?.0;
    if first > acked {
        return Ok(None);
    }
    let max = usize::try_from(acked - first + 1)
        .unwrap_or(usize::MAX)
        .min(PURGE_CHUNK);
    let records = journal.read_from(Seq(first), max)?;
    let oldest = records.first().map(|r| r.time);
    let through = records
        .iter()
        .take_while(|r| r.time < cutoff && r.seq.0 <= acked)
        .last()
        .map(|r| r.seq.0);
    Ok(match (through, oldest) {
        (Some(t), Some(oldest)) => Some(Control::Purge {
            through: Seq(t),
            records: t - first + 1,
            oldest,
        }),
        _ => None,
    })
}

impl Housekeeping {
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(
            self.config.housekeeping_interval_s.max(1),
        ));
        let mut failures = Repeats::default();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = std::time::Instant::now();
            let result = self.round().await;
            crate::memory::trim_off_runtime().await;
            match result {
                Ok(()) => {
                    if let Some(e) = failures.succeeded(now) {
                        info!(failures = e.failures, "Housekeeping works again.");
                    }
                }
                Err(e) => match failures.failed(&e, now) {
                    Report::First => {
                        error!(error = %e, "Housekeeping failed; retrying every round. Repeats are counted, not logged.")
                    }
                    Report::Summary { failures, .. } => {
                        warn!(error = %e, failures, "Housekeeping still failing.")
                    }
                    Report::Quiet => {}
                },
            }
        }
    }

    async fn round(&self) -> Result<(), String> {
        let j = self.journal.clone();
        let retention = Duration::from_secs(self.config.retention_hours * 3600);
        let cutoff = Timestamp::from_unix_nanos(
            now().as_nanos() - i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX),
        );
        let st = self.stats.clone();
        let (bytes, purge) = tokio::task::spawn_blocking(move || -> Result<_, JournalError> {
            crate::verified::keep_up(j.as_ref(), &st);
            // The persisted cursor, not the in-memory ack: the journal checks against it.
            let acked = j.cursor(pdtf_connectors::upstream::CURSOR)?.0;
            Ok((j.stored_bytes()?, plan_purge(j.as_ref(), acked, cutoff)?))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Stats::set(&self.stats.journal_bytes, bytes);
        let quota = self.config.max_size_bytes;
        let was_full = Stats::flag(&self.stats.store_full);
        let full = if was_full {
            bytes * 100 >= quota * 95
        } else {
            bytes > quota
        };
        if full != was_full {
            if full {
                warn!(bytes, quota, "Journal reached its quota.");
            }
            Stats::set_flag(&self.stats.store_full, full);
            // Wakes a pipeline that holds data back under the block policy.
            for line in &self.out {
                if line.send(Control::QuotaChanged).await.is_err() {
                    return Ok(()); // the pipelines are stopping
                }
            }
        }
        if let Some(p) = purge {
            let Some(primary) = self.out.first() else {
                return Ok(());
            };
            if primary.send(p).await.is_err() {
                return Ok(()); // the pipeline is stopping
            }
        }
        Ok(())
    }
}
