//! Topology wiring: builds the sources, line pipeline and sinks from a `Config` (with what
//! `startup` reads from the journal) and runs them, supervised, until shutdown.
//!
//! Shutdown order keeps the invariants: sources stop first (flushing their batches), the
//! pipeline commits everything they sent and writes the `agent_stop` audit record, the
//! upstream sync gets a bounded grace period to deliver it, then the sinks stop.

mod batch;
mod sources;

use sources::{broker, mqtt_source, opcua_source};
pub(crate) use sources::{compression_spec, named, opcua_items, topic_map};

use crate::config::{Config, SourceSpec};
use crate::housekeeping::Housekeeping;
use crate::journal::Store;
use crate::pipeline::Control;
use crate::startup::{config_digest, startup_records, tag_table};
use crate::supervise::Supervisor;
use futures_util::FutureExt;
use pdtf_connectors::alert::{AlertBoard, AlertPublisher};
use pdtf_connectors::upstream::{UpstreamSettings, UpstreamSync};
use pdtf_connectors::{Stats, SOURCE_CHANNEL_BATCHES};
use pdtf_models::record::Audit;
use pdtf_models::{Entry, RecordBody, TagId, TagRegistry, TagTable};
use rumqttc::QoS;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

pub struct Agent {
    pub journal: Arc<dyn Store>,
    pub stats: Arc<Stats>,
    pub board: Option<Arc<AlertBoard>>,
    /// The configured tags, by durable id.
    pub tags: TagTable,
    /// The durable id of each configured tag, in configuration order.
    pub tag_ids: Vec<TagId>,
    /// Every tag name the journal ever gave an id.
    pub registry: TagRegistry,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, when configured.
    pub health_addr: Option<std::net::SocketAddr>,
    /// Each batch-tracking line's current batch state (its `P/batch` payload).
    pub batches: crate::batch::Live,
    sources_stop: CancellationToken,
    sinks_stop: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    /// One pipeline task per line; the first is the primary's.
    pipelines: Vec<JoinHandle<()>>,
    sinks: Vec<JoinHandle<()>>,
    supervisor: Supervisor,
    /// Each line's control channel, in `Config::lines` order (the first is the primary's).
    pub(crate) controls: Vec<mpsc::Sender<Control>>,
    /// The running configuration (a reload replaces its tags).
    pub(crate) config: Config,
    pub(crate) feeds: crate::reload::Feeds,
    /// The upstream sync's tag names, when it runs.
    pub(crate) names: Option<Arc<pdtf_connectors::TagNames>>,
}

/// Why the agent could not start. Each is something validation cannot see (the machine, not
/// the file): the caller reports it plainly and exits 2, like an invalid configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("health.listen = {listen:?}: cannot listen there: {error}")]
    Health {
        listen: String,
        error: std::io::Error,
    },
    #[error("agent.state_dir = {:?}: {error}", state_dir.display())]
    Journal {
        state_dir: std::path::PathBuf,
        error: pdtf_models::JournalError,
    },
    /// The journal opened, but reading what a start needs from it failed.
    #[error("journal: {0}")]
    Store(#[from] pdtf_models::JournalError),
    /// The configuration does not pass validation (one built or changed in code, since
    /// `config::load` refuses an invalid file): the runtime runs only a valid one.
    #[error("invalid configuration:\n{}", errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        errors: Vec<crate::config::ConfigError>,
    },
    /// A name the configuration uses has no section (validation refuses this).
    #[error("configuration: {0}")]
    Unresolved(String),
}

impl Agent {
    /// Opens the journal and starts every task. Must be called inside a tokio runtime.
    pub fn start(c: &Config) -> Result<Agent, StartError> {
        let errors = crate::config::validate(c);
        if !errors.is_empty() {
            return Err(StartError::Invalid { errors });
        }
        // What validation cannot see is checked before anything connects.
        let health = match &c.health {
            None => None,
            Some(h) => Some(
                std::net::TcpListener::bind(&h.listen)
                    .and_then(|l| l.set_nonblocking(true).map(|_| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|e| StartError::Health {
                        listen: h.listen.clone(),
                        error: e,
                    })?,
            ),
        };
        let cache = c.journal.cache_mib as usize * 1024 * 1024;
        let journal = crate::journal::open_with_cache(c.journal.engine, &c.agent.state_dir, cache)
            .map_err(|e| StartError::Journal {
                state_dir: c.agent.state_dir.clone(),
                error: e,
            })?;
        let stats = Arc::new(Stats::default());
        stats.set_line(&c.agent.line);
        stats.set_build_info(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("PDTF_GIT_COMMIT")),
            ("target", env!("PDTF_TARGET")),
            ("features", env!("PDTF_FEATURES")),
        ]);
        for s in &c.sources {
            stats.source(&s.id); // every configured source is shown, data or not
        }
        // Durable identities: names resolve through the journal's registry, never by their
        // position in today's files.
        let mut registry = journal.tag_registry()?;
        let names: Vec<&str> = c.tags.iter().map(|t| t.name.as_str()).collect();
        let (tag_ids, change) = registry.configure(&names);
        let tags = tag_table(c, &tag_ids, registry.len());
        let previous_last = journal.last_seq()?.0;
        let detail = format!(
            "version={} config={} config_sha256={} tags={} sources={}",
            env!("CARGO_PKG_VERSION"),
            c.file,
            config_digest(c),
            tag_ids.len(),
            c.sources.len()
        );
        let refusals = crate::lines::refusals(c, &tag_ids);
        let mut startup =
            startup_records(journal.as_ref(), previous_last, &tag_ids, &refusals, detail)?;
        startup.push(Entry {
            time: crate::pipeline::now(),
            body: RecordBody::Audit(Audit {
                event: "tag_registry".into(),
                detail: registry.describe(&change),
            }),
        });
        // Each line's batch state as the journal left it; a batch left open records its
        // downtime, in the same commit.
        let id_of = |name: &str| {
            c.tags
                .iter()
                .zip(&tag_ids)
                .find(|(t, _)| t.name == name)
                .map(|(_, id)| *id)
        };
        let (batches, batch_entries) = crate::batch::prepare(
            c,
            &id_of,
            journal.as_ref(),
            previous_last,
            crate::pipeline::now(),
        )?;
        startup.extend(batch_entries);
        // The registry and the records that open the run commit together, before any source
        // can deliver a sample under a new id.
        let opened = journal.append_with_registry(&registry, startup)?;
        crate::batch::cursors_after_start(
            journal.as_ref(),
            &batches,
            &opened,
            opened.last().map_or(previous_last, |r| r.seq.0),
        )?;
        crate::startup::clear_refusal_cursors(journal.as_ref(), refusals.iter().map(|(c, _)| c))?;
        if !change.is_empty() {
            info!(change = %registry.describe(&change), "Tag registry changed.");
        }
        let last = opened.last().map_or(previous_last, |r| r.seq.0);
        Stats::add(&stats.records_committed, opened.len() as u64);
        Stats::set(&stats.last_seq, last);
        Stats::set(
            &stats.upstream_acked_seq,
            journal.cursor(pdtf_connectors::upstream::CURSOR)?.0,
        );
        let (committed_tx, committed_rx) = watch::channel(last);
        let sources_stop = CancellationToken::new();
        let sinks_stop = CancellationToken::new();
        let sup = Supervisor::new(stats.clone());
        let prefix = c.topic_prefix();
        let mut health_addr = None;

        // The quota state is known before anything runs, so a retained `journal_full` left
        // active by an earlier run is cleared at once when the journal is under quota now
        // (and raised by the pipeline within a tick when it is not).
        let bytes = journal.stored_bytes()?;
        Stats::set(&stats.journal_bytes, bytes);
        Stats::set_flag(&stats.store_full, bytes > c.journal.max_size_bytes);
        let board = c.sinks.alerts.as_ref().map(|_| {
            let names = registry
                .names()
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let unit = tags.get(TagId(i as u32)).map(|s| s.unit.clone());
                    (name.clone(), unit.unwrap_or_default())
                })
                .collect();
            let board = AlertBoard::new(c.agent.id.clone(), prefix.clone(), names);
            board.set_prefixes(crate::lines::tag_prefixes(c, &tag_ids, registry.len()));
            Arc::new(board)
        });
        if let Some(b) = &board {
            if !Stats::flag(&stats.store_full) {
                b.set_system(
                    "journal_full",
                    false,
                    "journal under quota",
                    crate::pipeline::now(),
                );
            }
        }
        let mut sinks = Vec::new();
        if let (Some(al), Some(board)) = (&c.sinks.alerts, &board) {
            let p = AlertPublisher {
                agent_id: c.agent.id.clone(),
                broker: broker(c, &al.broker)?.clone(),
                qos: qos(al.qos),
                board: board.clone(),
            };
            let span = tracing::info_span!("sink", kind = "alerts");
            sinks.push(sup.spawn(
                "alerts",
                &sinks_stop,
                p.run(stats.clone(), sinks_stop.clone()).instrument(span),
            ));
        }
        let mut live_tx = None;
        let mut names = None;
        if let Some(u) = &c.sinks.upstream {
            let tag_names = Arc::new(pdtf_connectors::TagNames::new(registry.names().into()));
            names = Some(tag_names.clone());
            let (tx, live) = mpsc::channel(pdtf_connectors::upstream::LIVE_EVENTS_CAPACITY);
            live_tx = Some(tx);
            let sync = UpstreamSync {
                live,
                settings: UpstreamSettings {
                    agent_id: c.agent.id.clone(),
                    topic: u
                        .topic
                        .clone()
                        .unwrap_or_else(|| format!("{prefix}/records")),
                    max_batch_records: u.max_batch_records,
                    max_batch_bytes: u.max_batch_bytes,
                    max_inflight: u.max_inflight,
                    events_topic: format!("{prefix}/events"),
                    backlog_threshold_records: u.backlog_threshold_records,
                    max_drain_records_per_s: u.max_drain_records_per_s,
                    tag_names,
                },
                broker: broker(c, &u.broker)?.clone(),
                journal: journal.clone(),
                committed: committed_rx,
                stats: stats.clone(),
            };
            let span = tracing::info_span!("sink", kind = "upstream");
            sinks.push(sup.spawn(
                "upstream",
                &sinks_stop,
                sync.run(sinks_stop.clone()).instrument(span),
            ));
        }

        let lines = c.lines();
        if !c.lines.is_empty() {
            for s in &c.sources {
                stats.set_source_line(&s.id, lines[c.line_of(&s.id)].name());
            }
        }
        let (line_tx, line_rx): (Vec<_>, Vec<_>) = lines
            .iter()
            .map(|_| mpsc::channel(SOURCE_CHANNEL_BATCHES))
            .unzip();
        let mut sources = Vec::new();
        let mut feeds = crate::reload::Feeds::default();
        for s in &c.sources {
            let tx = &line_tx[c.line_of(&s.id)];
            let task = match &s.spec {
                SourceSpec::Mqtt(m) => {
                    let mut src = mqtt_source(c, &tag_ids, s, m)?;
                    let (feed, reload) = watch::channel(src.map.clone());
                    feeds.mqtt.insert(s.id.clone(), feed);
                    src.reload = Some(reload);
                    src.run(tx.clone(), stats.clone(), sources_stop.clone())
                        .instrument(tracing::info_span!("source", id = %s.id, kind = "mqtt"))
                        .boxed()
                }
                SourceSpec::Opcua(o) => {
                    let mut src = opcua_source(c, &tag_ids, s, o)?;
                    let (feed, reload) = watch::channel(src.items.clone());
                    feeds.opcua.insert(s.id.clone(), feed);
                    src.reload = Some(reload);
                    src.run(tx.clone(), stats.clone(), sources_stop.clone())
                        .instrument(tracing::info_span!("source", id = %s.id, kind = "opcua"))
                        .boxed()
                }
                // Modbus sources run per bus, below.
                SourceSpec::Modbus(_) => continue,
            };
            sources.push(sup.spawn(format!("source {}", s.id), &sources_stop, task));
        }
        let (buses, modbus_feeds) = crate::modbus::buses(c, &tag_ids)?;
        feeds.modbus = modbus_feeds;
        for (key, bus) in buses {
            let ids: Vec<&str> = bus.units.iter().map(|u| u.id.as_str()).collect();
            let span = tracing::info_span!("source", id = %ids.join(","), kind = "modbus");
            // Validation keeps one bus on one line.
            let tx = &line_tx[bus.units.first().map_or(0, |u| c.line_of(&u.id))];
            let task = bus
                .run(tx.clone(), stats.clone(), sources_stop.clone())
                .instrument(span)
                .boxed();
            sources.push(sup.spawn(format!("modbus bus {key}"), &sources_stop, task));
        }

        let (pipelines, restored) = crate::lines::pipelines(
            c,
            crate::lines::Shared {
                journal: journal.clone(),
                registry: &registry,
                tag_ids: &tag_ids,
                board: board.clone(),
                committed: committed_tx,
                stats: stats.clone(),
                live: live_tx,
            },
            last,
        )?;
        if restored > 0 {
            info!(active = restored, "Alarm states restored from the journal.");
        }
        Stats::set(&stats.alarms_active, restored as u64);
        let (controls, control_rx): (Vec<_>, Vec<_>) = lines
            .iter()
            .map(|_| mpsc::channel(crate::pipeline::CONTROL_CHANNEL))
            .unzip();
        let mut pipelines = pipelines;
        let live = crate::batch::Live::default();
        let alarm_kpis = crate::batch::Live::default();
        let republish = c.sinks.alerts.as_ref().map_or(0, |a| a.chatter_republish_s);
        for p in &mut pipelines {
            p.kpi_live = Some(alarm_kpis.clone());
            p.chatter_republish = Duration::from_secs(republish);
        }
        sinks.extend(batch::wire(
            c,
            &lines,
            &mut pipelines,
            batches,
            &live,
            Arc::from(registry.names().to_vec()),
            &controls,
            &stats,
            &sup,
            &sinks_stop,
        )?);
        let housekeeping = Housekeeping {
            config: c.journal.clone(),
            journal: journal.clone(),
            stats: stats.clone(),
            out: controls.clone(),
        };
        sources.push(
            sup.spawn(
                "housekeeping",
                &sources_stop,
                housekeeping
                    .run(sources_stop.clone())
                    .instrument(tracing::info_span!("housekeeping")),
            ),
        );
        sources.push(sup.spawn(
            "ticker",
            &sources_stop,
            crate::lines::ticker(controls.clone(), sources_stop.clone()),
        ));
        let beats = pipelines
            .iter()
            .map(|p| (p.line.clone(), p.beat.subscribe()))
            .collect();
        sinks.push(sup.spawn(
            "systemd",
            &sinks_stop,
            crate::systemd::run(stats.clone(), beats, sinks_stop.clone()),
        ));
        drop(line_tx);
        if let Some(listener) = health {
            info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Health endpoints up: /healthz /readyz /metrics.");
            health_addr = listener.local_addr().ok();
            sinks.push(sup.spawn(
                "health",
                &sinks_stop,
                crate::health::serve(
                    listener,
                    crate::health::Api {
                        stats: stats.clone(),
                        journal: journal.clone(),
                        lines: lines.iter().map(|l| l.name().to_owned()).collect(),
                        batches: live.clone(),
                        alarms: alarm_kpis.clone(),
                    },
                    sinks_stop.clone(),
                ),
            ));
        }
        // Verification before reporting ready: the tail after the verified checkpoint, or the
        // whole store when there is none (`verified.rs`).
        let (j, st) = (journal.clone(), stats.clone());
        tokio::task::spawn_blocking(move || crate::verified::at_start(j, st));
        // The primary writes `agent_stop` last: after its own run and once every other line's
        // task has ended (each holds a clone of `others`, dropped when it ends, even by a panic).
        let (others, others_done) = mpsc::channel::<()>(1);
        let mut others_done = Some(others_done);
        let mut tasks = Vec::with_capacity(lines.len());
        for ((mut p, rx), crx) in pipelines.into_iter().zip(line_rx).zip(control_rx) {
            let span = tracing::info_span!("pipeline", line = %p.line);
            let stop = sources_stop.clone();
            let name = if lines.len() == 1 {
                "pipeline".to_owned()
            } else {
                format!("pipeline {}", p.line)
            };
            let task = if let Some(mut others_done) = others_done.take().filter(|_| p.primary) {
                async move {
                    p.run(rx, crx, stop).await;
                    while others_done.recv().await.is_some() {}
                    p.audit("agent_stop", "clean shutdown".into()).await;
                }
                .instrument(span)
                .boxed()
            } else {
                let held = others.clone();
                async move {
                    p.run(rx, crx, stop).await;
                    drop(held);
                }
                .instrument(span)
                .boxed()
            };
            tasks.push((name, task));
        }
        drop(others);
        let pipelines = tasks
            .into_iter()
            .map(|(name, task)| sup.spawn(name, &sources_stop, task))
            .collect();
        info!(agent = %c.agent.id, journal = %journal.location().display(), last_seq = last, tags = tag_ids.len(), "Agent started.");
        Ok(Agent {
            journal,
            stats,
            board,
            tags,
            tag_ids,
            registry,
            health_addr,
            batches: live,
            sources_stop,
            sinks_stop,
            sources,
            pipelines,
            sinks,
            supervisor: sup,
            controls,
            config: c.clone(),
            feeds,
            names,
        })
    }

    /// The running configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Resolves with the first failure of a supervised task (see `supervise`).
    pub async fn failure(&self) -> String {
        self.supervisor.first_failure().await
    }

    /// Records a task failure as an audit entry: through the pipeline when it still runs,
    /// straight into the journal when the pipeline is what failed.
    pub async fn record_failure(&self, why: &str) {
        let detail = format!("{why}; the agent exits non-zero to be restarted");
        let msg = Control::Audit {
            event: "task_failed".into(),
            detail: detail.clone(),
        };
        let primary = self
            .controls
            .first()
            .filter(|_| !self.pipelines[0].is_finished());
        let sent = match primary {
            Some(p) => p.send(msg).await.is_ok(),
            None => false,
        };
        if !sent {
            let j = self.journal.clone();
            let entry = Entry {
                time: crate::pipeline::now(),
                body: RecordBody::Audit(Audit {
                    event: "task_failed".into(),
                    detail,
                }),
            };
            match tokio::task::spawn_blocking(move || j.append(vec![entry])).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "Task failure not recorded in the journal.")
                }
                Err(e) => tracing::error!(error = %e, "Task failure not recorded in the journal."),
            }
        }
    }

    /// Stops sources, commits what they delivered, lets upstream catch up for at most
    /// `upstream_grace`, then stops the sinks.
    pub async fn shutdown(self, upstream_grace: Duration) {
        self.sources_stop.cancel();
        for s in self.sources {
            let _joined = s.await;
        }
        for p in self.pipelines {
            let _joined = p.await;
        }
        let deadline = tokio::time::Instant::now() + upstream_grace;
        while self.stats.upstream_backlog() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.sinks_stop.cancel();
        for s in self.sinks {
            let _joined = s.await;
        }
        info!(
            last_seq = Stats::get(&self.stats.last_seq),
            upstream_acked = Stats::get(&self.stats.upstream_acked_seq),
            "Agent stopped."
        );
    }
}
