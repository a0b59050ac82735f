//! `pdtf-agent batch list|show|export`: a stopped agent's batches, from its journal.

use super::history::{self, BatchView, Filter};
use pdtf_models::{Journal, JournalError, Seq};
use serde_json::Value;
use std::io::Write;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What went wrong, for the exit code: 2 for bad input or an unreadable journal, 1 when the
/// batch asked for is not there.
#[derive(Debug)]
pub enum CliError {
    NotFound(String),
    Journal(JournalError),
    Io(std::io::Error),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::NotFound(what) => write!(f, "{what}"),
            CliError::Journal(e) => write!(f, "journal: {e}"),
            CliError::Io(e) => write!(f, "writing the output: {e}"),
        }
    }
}

impl From<JournalError> for CliError {
    fn from(e: JournalError) -> Self {
        CliError::Journal(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e)
    }
}

/// Every batch in the journal, with progress on `progress` while a scan runs.
fn all(j: &dyn Journal, progress: &mut dyn Write) -> Result<Vec<BatchView>, CliError> {
    let mut last = std::time::Instant::now();
    let records = history::batch_records(j, &mut |done, total| {
        if last.elapsed() >= std::time::Duration::from_secs(2) {
            let _ = writeln!(progress, "scanned {done} of {total} records ...");
            last = std::time::Instant::now();
        }
    })?;
    Ok(history::fold(&records))
}

/// `batch list`: one line per batch (or a JSON array), oldest first.
pub fn list(
    j: &dyn Journal,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<usize, CliError> {
    let batches: Vec<BatchView> = all(j, progress)?
        .into_iter()
        .filter(|b| filter.keeps(b))
        .collect();
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&batches).unwrap_or_default()
        )?,
        Format::Text => {
            writeln!(
                out,
                "{:<12} {:<20} {:<16} {:<10} {:<24} {:<24} seqs",
                "line", "batch", "recipe", "state", "started", "ended"
            )?;
            for b in &batches {
                let recipe = b
                    .recipe
                    .as_ref()
                    .map_or("?".to_owned(), |r| format!("{} v{}", r.id, r.version));
                writeln!(
                    out,
                    "{:<12} {:<20} {:<16} {:<10} {:<24} {:<24} {}..={}",
                    b.line,
                    b.batch_id,
                    recipe,
                    b.state,
                    b.started,
                    b.ended.as_deref().unwrap_or("-"),
                    b.first_seq,
                    b.last_seq
                )?;
            }
        }
    }
    Ok(batches.len())
}

fn one(
    j: &dyn Journal,
    id: &str,
    line: Option<&str>,
    progress: &mut dyn Write,
) -> Result<BatchView, CliError> {
    let batches = all(j, progress)?;
    history::find(&batches, id, line).cloned().ok_or_else(|| {
        CliError::NotFound(format!(
            "no batch {id:?}{} in this journal ({} batches; `pdtf-agent batch list` shows them)",
            line.map(|l| format!(" on line {l:?}")).unwrap_or_default(),
            batches.len()
        ))
    })
}

/// `batch show ID`: the batch with its phases, materials, alarms and summary.
pub fn show(
    j: &dyn Journal,
    id: &str,
    line: Option<&str>,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<(), CliError> {
    let b = one(j, id, line, progress)?;
    let (alarms, count) = history::batch_alarms(j, &b)?;
    let deviations = history::batch_deviations(j, &b)?;
    let v = history::detail(&b, &alarms, count, &deviations);
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )?,
        Format::Text => text(&v, out)?,
    }
    Ok(())
}

fn text(v: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    writeln!(
        out,
        "batch {} on line {}: {}",
        s("batch_id"),
        s("line"),
        s("state")
    )?;
    if let Some(r) = v["recipe"].as_object() {
        writeln!(
            out,
            "recipe {} v{} ({} {})",
            r["id"].as_str().unwrap_or("?"),
            r["version"],
            r["product"].as_str().unwrap_or(""),
            r["product_code"].as_str().unwrap_or("")
        )?;
    }
    writeln!(out, "started {}, ended {}", s("started"), s("ended"))?;
    writeln!(
        out,
        "downtime {} ms, records seq {}..={}",
        v["downtime_ms"], v["first_seq"], v["last_seq"]
    )?;
    for p in v["phases"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  phase {:<16} {} .. {}",
            p["name"].as_str().unwrap_or(""),
            p["start"].as_str().unwrap_or(""),
            p["end"].as_str().unwrap_or("running")
        )?;
    }
    for m in v["materials"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  charged {} lot {}: {} {}",
            m["material"].as_str().unwrap_or(""),
            m["lot"].as_str().unwrap_or(""),
            m["quantity"],
            m["unit"].as_str().unwrap_or("")
        )?;
    }
    writeln!(out, "alarms in the batch: {}", v["alarm_count"])?;
    let deviations = v["deviations"].as_array().map_or(&[][..], Vec::as_slice);
    writeln!(out, "GMP deviations: {}", deviations.len())?;
    for d in deviations {
        writeln!(
            out,
            "  {} tag id {} {} limit {} in {}: {} .. {}, peak {}, {} s beyond the limit, {} (disposition {})",
            d["id"].as_str().unwrap_or(""),
            d["tag_id"],
            d["level"].as_str().unwrap_or(""),
            d["limit"],
            d["phase"].as_str().unwrap_or("-"),
            d["start"].as_str().unwrap_or(""),
            d["end"].as_str().unwrap_or("open"),
            d["peak"],
            d["beyond_limit_s"],
            d["status"].as_str().unwrap_or(""),
            d["disposition"].as_str().unwrap_or("")
        )?;
    }
    if let Some(sum) = v["summary"].as_object() {
        for p in sum["phases"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {:<16} {:>10.1} s running, {:>8.1} s held, {} alarms{}",
                p["name"].as_str().unwrap_or(""),
                p["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                p["held_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                p["alarms"],
                if p["within_expected"] == false {
                    "  OUTSIDE EXPECTED DURATION"
                } else {
                    ""
                }
            )?;
        }
        for m in sum["materials"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {:<16} charged {} of {} {}{}",
                m["material"].as_str().unwrap_or(""),
                m["charged"],
                m["planned"],
                m["unit"].as_str().unwrap_or(""),
                if m["within_tolerance"] == false {
                    "  OUT OF TOLERANCE"
                } else {
                    ""
                }
            )?;
        }
        writeln!(
            out,
            "chain head at the end: {}",
            sum["chain_head"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

/// `batch export ID`: every record the journal holds from the batch's first record to its
/// last (all lines: samples, alarms, commands, audit), one JSON record per line, as upstream
/// receives them. Returns the count.
pub fn export(
    j: &dyn Journal,
    id: &str,
    line: Option<&str>,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<u64, CliError> {
    let b = one(j, id, line, progress)?;
    let to = if b.is_open() {
        j.last_seq()?.0
    } else {
        b.last_seq
    };
    let mut at = b.first_seq;
    let mut n = 0u64;
    while at <= to {
        let chunk = j.read_from(Seq(at), 10_000)?;
        let Some(end) = chunk.last().map(|r| r.seq.0) else {
            break;
        };
        for r in chunk.iter().filter(|r| r.seq.0 <= to) {
            writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default())?;
            n += 1;
        }
        at = end + 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_show_and_export_read_a_journal_back() {
        use pdtf_models::batch::{Actor, BatchTwin};
        use pdtf_models::Timestamp;
        let dir = tempfile::tempdir().unwrap();
        let j = crate::journal::open(crate::config::Engine::Redb, dir.path()).unwrap();
        let t = Timestamp::from_unix_millis(1_800_000_000_000);
        let recipe = crate::batch::test_recipe(1, &["preheat"]);
        let p = BatchTwin::new("l", true)
            .start("B-9", &recipe, t, Actor::Agent, true)
            .unwrap();
        let entries = crate::batch::event_entries(p.events, t).collect();
        j.append(crate::journal::tests::entries(3)).unwrap();
        j.append(entries).unwrap();
        let (mut out, mut progress) = (Vec::new(), Vec::new());
        let n = list(
            j.as_ref(),
            &Filter::default(),
            Format::Text,
            &mut out,
            &mut progress,
        )
        .unwrap();
        assert_eq!(n, 1);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("B-9") && text.contains("gran v1") && text.contains("running"),
            "{text}"
        );

        let mut out = Vec::new();
        show(
            j.as_ref(),
            "B-9",
            None,
            Format::Json,
            &mut out,
            &mut progress,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["phase"].as_str(), v["alarm_count"].as_u64()),
            (Some("preheat"), Some(0))
        );
        let mut out = Vec::new();
        show(
            j.as_ref(),
            "B-9",
            None,
            Format::Text,
            &mut out,
            &mut progress,
        )
        .unwrap();
        assert!(String::from_utf8(out).unwrap().contains("phase preheat"));

        assert!(matches!(
            show(j.as_ref(), "B-404", None, Format::Text, &mut Vec::new(), &mut progress),
            Err(CliError::NotFound(m)) if m.contains("1 batches")
        ));
        let mut out = Vec::new();
        let n = export(j.as_ref(), "B-9", Some("l"), &mut out, &mut progress).unwrap();
        assert_eq!(
            n, 2,
            "from the batch's first record to the journal's end (it is open)"
        );
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    }
}
