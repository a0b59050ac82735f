//! Several lines per agent: each `Config::lines` entry gets its own pipeline (channel, twin,
//! detectors, compressors) over the shared journal. The first line is the *primary*: it
//! executes purges, watches the host clock and writes `agent_stop` once every other line has
//! committed what its sources sent.

use crate::config::Config;
use crate::pipeline::{refusal_cursors, Control, LinePipeline};
use crate::startup::line_tag_table;
use pdtf_connectors::alert::AlertBoard;
use pdtf_connectors::Stats;
use pdtf_models::compress::TagCompressor;
use pdtf_models::detect::signals::SignalDetector;
use pdtf_models::detect::{Detector, LimitDetector};

/// The detectors of each line, in `pipelines` order.
const DETECTORS_PER_LINE: usize = 2;
use pdtf_models::twin::LineTwin;
use pdtf_models::{Journal, Record, TagId, TagRegistry};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The configured tags of line `line` (an index into `Config::lines`), in configuration order.
pub(crate) fn line_ids(c: &Config, ids: &[TagId], line: usize) -> Vec<TagId> {
    c.tags
        .iter()
        .zip(ids)
        .filter(|(t, _)| c.line_of(&t.source) == line)
        .map(|(_, id)| *id)
        .collect()
}

/// Each line's refused-span cursors with the line's tags (for the start-up records).
pub(crate) fn refusals(c: &Config, ids: &[TagId]) -> Vec<((String, String), Vec<TagId>)> {
    c.lines()
        .iter()
        .enumerate()
        .map(|(i, l)| (refusal_cursors(i, &l.id), line_ids(c, ids, i)))
        .collect()
}

/// The alarm-topic prefix of every tag id on an agent with `[[lines]]` (empty otherwise: the
/// board then uses the agent's prefix). A removed tag keeps the prefix of `agent.line`.
pub(crate) fn tag_prefixes(c: &Config, ids: &[TagId], id_space: usize) -> Vec<String> {
    if c.lines.is_empty() {
        return Vec::new();
    }
    let lines = c.lines();
    let mut prefixes = vec![c.topic_prefix(); id_space];
    for (t, id) in c.tags.iter().zip(ids) {
        prefixes[id.index()] = c.line_prefix(&lines[c.line_of(&t.source)]);
    }
    prefixes
}

/// What every line's pipeline shares.
pub(crate) struct Shared<'a> {
    pub journal: Arc<dyn Journal>,
    pub registry: &'a TagRegistry,
    pub tag_ids: &'a [TagId],
    pub board: Option<Arc<AlertBoard>>,
    pub committed: watch::Sender<u64>,
    pub stats: Arc<Stats>,
    pub live: Option<mpsc::Sender<Record>>,
}

/// One pipeline per line, with the alarm states of its conditions restored from the journal.
/// Returns them and the number of active alarms restored.
pub(crate) fn pipelines(
    c: &Config,
    s: Shared<'_>,
    last: u64,
) -> Result<(Vec<LinePipeline>, usize), pdtf_models::JournalError> {
    let lines = c.lines();
    let space = s.registry.len();
    let tables: Vec<_> = (0..lines.len())
        .map(|i| line_tag_table(c, s.tag_ids, space, Some(i)))
        .collect();
    // One restore over every line's detectors (one scan of the journal), then each line
    // takes its own back.
    // Each line: its limit alarms (with its recipes' phase limits) and its detectors beyond
    // limits (`[tags.detect]`; kept
    // when none is configured, so a reload can add some).
    let mut detectors: Vec<Box<dyn Detector>> = tables
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            let phases = crate::startup::phase_limits(c, s.tag_ids, space, i);
            let targets = crate::startup::phase_targets(c, s.tag_ids, space, i);
            [
                Box::new(LimitDetector::new(t.limits()).with_phases(phases)) as Box<dyn Detector>,
                Box::new(SignalDetector::new(t.signals()).with_phase_targets(targets)),
            ]
        })
        .collect();
    let restored_alarms = crate::startup::restore_alarms(
        s.journal.as_ref(),
        last,
        &mut detectors,
        s.board.as_deref(),
    )?;
    let mut out = Vec::with_capacity(lines.len());
    let mut detectors = detectors.into_iter();
    for (i, line) in lines.iter().enumerate() {
        let d: Vec<Box<dyn Detector>> = detectors.by_ref().take(DETECTORS_PER_LINE).collect();
        let mut compressors: Vec<TagCompressor> =
            (0..space).map(|_| TagCompressor::new(None)).collect();
        for (t, id) in c.tags.iter().zip(s.tag_ids) {
            if c.line_of(&t.source) == i {
                compressors[id.index()] = TagCompressor::new(crate::runtime::compression_spec(t));
            }
        }
        let active = d.iter().map(|d| d.active_count() as u64).sum();
        let mut p = LinePipeline::new(
            LineTwin::new(space),
            d,
            compressors,
            s.journal.clone(),
            s.board.clone(),
            s.committed.clone(),
            s.stats.clone(),
            c.journal.full_policy,
        );
        p.live = s.live.clone();
        p.configured = line_ids(c, s.tag_ids, i);
        p.clocks = crate::clock::Clocks::new(&c.clock, s.registry.names().into());
        p.primary = i == 0;
        p.refused_cursors = refusal_cursors(i, &line.id);
        p.active_reported = active;
        p.line = line.id.clone();
        p.alarms =
            crate::alarms::AlarmBook::new(&line.id, crate::alarms::settings(c, s.tag_ids, space));
        for l in restored_alarms
            .lifecycles
            .iter()
            .filter(|l| l.line == line.id)
        {
            p.alarms.restore(l);
        }
        p.deviations = pdtf_models::deviation::Tracker::new(
            &line.id,
            crate::alarms::critical(c, s.tag_ids, space),
        );
        for d in restored_alarms
            .deviations
            .iter()
            .filter(|d| d.line == line.id)
        {
            p.deviations.restore(d);
        }
        out.push(p);
    }
    Ok((out, restored_alarms.active))
}

/// Sends every line its periodic tick. A full control channel means that pipeline is not
/// serving control messages: its tick is skipped, and the missing heartbeat is what the
/// watchdog acts on.
pub(crate) async fn ticker(out: Vec<mpsc::Sender<Control>>, stop: CancellationToken) {
    let mut every = tokio::time::interval(crate::systemd::TICK_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        for line in &out {
            if let Err(mpsc::error::TrySendError::Closed(_)) = line.try_send(Control::Tick) {
                return;
            }
        }
    }
}
