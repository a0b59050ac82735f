//! The verified checkpoint: how a start is ready in a time that does not grow with the journal.
//!
//! The journal's cursor `verified_through` names the last record whose whole chain, from the
//! anchor, has been verified. Housekeeping moves it every round (verifying only the records
//! committed since, anchored on the checkpoint record's own link), so it trails the head by
//! seconds. A start verifies only the tail after it — the records of the last seconds of the
//! previous run, plus what a crash left — and is ready after that; the whole chain is then
//! verified again in the background, and a failure there makes the agent not-ready with the
//! first bad record named, exactly as a failure of the tail does. Without a checkpoint (a new
//! journal, one from an earlier release) the whole chain is verified before ready.
//!
//! What a start then trusts without reading: the records up to the checkpoint, which this
//! agent verified before, until the background pass confirms them. `pdtf-agent verify`
//! always checks everything.

use crate::journal::{Store, VerifyReport};
use pdtf_connectors::Stats;
use pdtf_models::{JournalError, Seq};
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, info};

pub const CURSOR: &str = "verified_through";

/// Verifies what was committed after the checkpoint (everything, when there is none).
/// Returns the report and the checkpoint it started from.
fn verify_tail(
    j: &dyn Store,
    progress: &mut dyn FnMut(u64),
) -> Result<(VerifyReport, u64), JournalError> {
    let after = j.cursor(CURSOR)?.0;
    let r = if after == 0 {
        j.verify(progress)?
    } else {
        j.verify_after(Seq(after), progress)?
    };
    Ok((r, after))
}

/// Logs a long verification's progress every `PROGRESS_EVERY` records.
const PROGRESS_EVERY: u64 = 1_000_000;

fn progress(what: &'static str, last: u64) -> impl FnMut(u64) {
    move |seq| {
        if seq.is_multiple_of(PROGRESS_EVERY) {
            info!(seq, last, "{what}: seq {seq} of {last} verified.");
        }
    }
}

/// Moves the checkpoint to the end of what `r` verified.
fn mark(j: &dyn Store, r: &VerifyReport, after: u64) -> Result<(), JournalError> {
    if r.records > 0 && r.last > after {
        j.set_cursor(CURSOR, Seq(r.last))?;
    }
    Ok(())
}

/// Verifies what was committed after the checkpoint and moves the checkpoint to the end.
pub fn advance(j: &dyn Store) -> Result<VerifyReport, JournalError> {
    let (r, after) = verify_tail(j, &mut |_| {})?;
    mark(j, &r, after)?;
    Ok(r)
}

fn failed(st: &Stats, e: &JournalError) {
    error!(error = %e, "Journal verification failed: recording continues, the agent reports not-ready. Run `pdtf-agent verify` and keep the store for investigation.");
    st.problem("journal", Some(e.to_string()));
}

/// The start-up verification (blocking; run it off the async threads): the tail after the
/// checkpoint, then ready, then the whole chain; or the whole chain, then ready.
pub fn at_start(j: Arc<dyn Store>, st: Arc<Stats>) {
    let started = Instant::now();
    let mut tail = false;
    let last = j.last_seq().map_or(0, |s| s.0);
    match verify_tail(
        j.as_ref(),
        &mut progress("Verifying the journal before ready", last),
    ) {
        Ok((r, after)) => {
            tail = after > 0;
            info!(
                records = r.records,
                first = r.first,
                last = r.last,
                after_checkpoint = tail.then_some(after),
                secs = started.elapsed().as_secs_f64(),
                "Journal verified: contiguous, checksums and audit chain intact{}.",
                if tail {
                    " after the verified checkpoint (the whole chain is re-checked in the background)"
                } else {
                    ""
                }
            );
            // Ready first; the checkpoint's own commit need not delay it.
            Stats::set_flag(&st.store_verified, true);
            Stats::set_flag(&st.store_verify_done, true);
            if let Err(e) = mark(j.as_ref(), &r, after) {
                tracing::warn!(error = %e, "Verified checkpoint not moved; housekeeping retries.");
            }
        }
        Err(e) => {
            failed(&st, &e);
            Stats::set_flag(&st.store_verify_done, true);
        }
    }
    if !tail || !Stats::flag(&st.store_verified) {
        return;
    }
    let started = Instant::now();
    match j.verify(&mut progress(
        "Verifying the whole journal in the background",
        last,
    )) {
        Ok(r) => info!(
            records = r.records,
            first = r.first,
            last = r.last,
            secs = started.elapsed().as_secs_f64(),
            "Whole journal verified in the background."
        ),
        Err(e) => failed(&st, &e),
    }
}

/// A round of housekeeping: moves the checkpoint over what was committed since, unless
/// verification has not finished or failed (a failure is reported once, not every round).
pub fn keep_up(j: &dyn Store, st: &Stats) {
    let failed_before = st.problems().iter().any(|(k, _)| k == "journal");
    if !Stats::flag(&st.store_verified) || failed_before {
        return;
    }
    if let Err(e) = advance(j) {
        failed(st, &e);
    }
}
