//! The journal over its quota under policy `stop_samples` (see the pipeline's header): the
//! refused span, its alarm and audit records, and the cursors that let a crash inside the span
//! still end in a gap record with the exact count.

use super::{audit, now, LinePipeline};
use crate::config::FullPolicy;
use pdtf_connectors::Stats;
use pdtf_models::{Entry, Gap, RecordBody, Seq, Timestamp};
use tracing::{error, info, warn};

/// Journal cursors holding a refused span while it lasts (start in unix ns, samples so far),
/// written at each tick: after a crash the next start still records the span with its count.
pub const REFUSED_SINCE_CURSOR: &str = "refused_since_ns";
pub const REFUSED_COUNT_CURSOR: &str = "refused_samples";

/// Samples not recorded while the journal was full.
pub(super) struct Refusal {
    pub(super) since: Timestamp,
    pub(super) samples: u64,
}

/// The journal cursors of line `index`'s refused span: the primary keeps the names of a
/// one-line agent, so a journal written before `[[lines]]` reads the same.
pub fn refusal_cursors(index: usize, line_id: &str) -> (String, String) {
    if index == 0 {
        (REFUSED_SINCE_CURSOR.into(), REFUSED_COUNT_CURSOR.into())
    } else {
        (
            format!("{REFUSED_SINCE_CURSOR}.{line_id}"),
            format!("{REFUSED_COUNT_CURSOR}.{line_id}"),
        )
    }
}

impl LinePipeline {
    /// Records entering and leaving the over-quota state.
    pub(super) fn track_full(&mut self, out: &mut Vec<Entry>) {
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
                if let Some(b) = self.board.as_ref().filter(|_| self.primary) {
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
                if let Some(b) = self.board.as_ref().filter(|_| self.primary) {
                    b.set_system("journal_full", false, "journal under quota", now());
                }
            }
            _ => {}
        }
    }

    /// Writes the refused span's count to the journal's cursors when it changed, or clears
    /// them once the span's gap record is committed (see `REFUSED_COUNT_CURSOR`).
    pub(super) async fn persist_refusal(&mut self) {
        let now = self.refusal.as_ref().map(|r| (r.since, r.samples));
        if now.map(|(_, n)| n) == self.refusal_persisted {
            return;
        }
        let j = self.journal.clone();
        let (since, samples) = now.map_or((0, 0), |(t, n)| {
            (u64::try_from(t.as_nanos()).unwrap_or(0), n)
        });
        let (since_key, count_key) = self.refused_cursors.clone();
        let written = tokio::task::spawn_blocking(move || {
            j.set_cursor(&since_key, Seq(since))?;
            j.set_cursor(&count_key, Seq(samples))
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

    /// Closes a refused span: its gap record with the exact count, and an audit entry.
    pub(super) fn end_refusal(&mut self, out: &mut Vec<Entry>, event: &str, detail: String) {
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
}
