//! A tag-map reload inside the line pipeline (see `crate::reload` for the agent's side).
//!
//! Order: the compressors of the tags that change flush what they hold, those samples and
//! the `config_reload` audit record commit *with the new registry* in one transaction, and
//! only then do the twin, the detectors, the compressors and the clock watchers take the new
//! table. The agent updates the sources after the reply, so no sample under a new id can
//! arrive before its id is durable.

use super::{audit, now, LinePipeline};
use pdtf_models::compress::{CompressionSpec, TagCompressor};
use pdtf_models::{Entry, RecordBody, TagId, TagRegistry, TagTable};
use std::sync::Arc;
use tracing::error;

/// What a valid tag-map change gives the pipeline.
#[derive(Debug)]
pub struct TagPlan {
    /// The registry after the change (it only grows: every old id keeps its name).
    pub registry: TagRegistry,
    /// The configured tags after the change, over the new id space.
    pub tags: TagTable,
    /// Their ids, in configuration order.
    pub configured: Vec<TagId>,
    /// The compressors to replace: tags added, changed or removed (`None`: not compressed).
    pub compressors: Vec<(TagId, Option<CompressionSpec>)>,
    /// Each tag's `critical` after the change, over the new id space.
    pub critical: Vec<bool>,
    /// Each tag's `[tags.alarm]` after the change, over the new id space.
    pub alarm_settings: Vec<Option<std::sync::Arc<crate::config::AlarmConfig>>>,
    /// The `config_reload` audit record's detail (the diff and the new digest).
    pub detail: String,
    /// The primary line's plan commits the registry and the audit record; another line's
    /// plan (sent after the primary's returned) commits only what its compressors held.
    pub primary: bool,
}

impl LinePipeline {
    /// Applies `plan`; returns the seq of its audit record, or why nothing was applied.
    pub(super) async fn reload(&mut self, plan: TagPlan) -> Result<u64, String> {
        let mut held = Vec::new();
        for (id, _) in &plan.compressors {
            if let Some(c) = self.compressors.get_mut(id.index()) {
                c.flush(&mut held);
            }
        }
        let mut entries = Vec::new();
        self.record_samples(&mut held, &mut entries);
        let seq = if plan.primary {
            entries.push(audit("config_reload", plan.detail.clone()));
            let j = self.journal.clone();
            let registry = plan.registry.clone();
            let records = match tokio::task::spawn_blocking(move || {
                j.append_with_registry(&registry, entries)
            })
            .await
            {
                Ok(Ok(records)) => records,
                Ok(Err(e)) => return Err(format!("journal: {e}")),
                Err(e) => return Err(format!("journal task: {e}")),
            };
            self.accepted(&records);
            records.last().map_or(0, |r| r.seq.0)
        } else {
            let records = self.commit(entries).await;
            records.last().map_or(0, |r| r.seq.0)
        };

        let space = plan.registry.len();
        self.twin.grow(space);
        if self.compressors.len() < space {
            self.compressors
                .resize_with(space, || TagCompressor::new(None));
        }
        for (id, spec) in plan.compressors {
            self.compressors[id.index()] = TagCompressor::new(spec);
        }
        let (at, mut out) = (now(), Vec::new());
        for d in &mut self.detectors {
            d.reconfigure(&plan.tags, at, &self.twin, &mut out);
        }
        self.configured = plan.configured;
        let names: Arc<[String]> = Arc::from(plan.registry.names().to_vec());
        self.clocks.set_names(names.clone());
        if let Some(c) = &mut self.alarm_commands {
            c.names = names;
        }
        self.alarms.set_settings(plan.alarm_settings);
        self.deviations.set_critical(plan.critical);
        self.follow_alarms(&mut out, at);
        // Alarms of conditions that no longer exist are cleared on the record.
        let cleared: Vec<Entry> = out
            .into_iter()
            .map(|body: RecordBody| Entry { time: at, body })
            .collect();
        if !cleared.is_empty() && self.commit(cleared).await.is_empty() {
            error!("The clears of alarms whose tags the reload removed were not committed.");
        }
        Ok(seq)
    }
}
