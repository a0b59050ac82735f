//! Topology wiring: builds the tag table, sources, line pipeline and sinks from a `Config`
//! and runs them until shutdown.
//!
//! Shutdown order keeps the invariants: sources stop first (flushing their batches), the
//! pipeline commits everything they sent and writes the `agent_stop` audit record, the
//! upstream sync gets a bounded grace period to deliver it, then the sinks stop.

use crate::config::{CompressionModeConfig, Config, DeadbandKind, SourceConfig, SourceKind};
use crate::housekeeping::Housekeeping;
use crate::journal::Store;
use crate::pipeline::LinePipeline;
use futures_util::FutureExt;
use pdtf_connectors::alert::{AlertBoard, AlertPublisher};
use pdtf_connectors::mqtt::{MqttSource, TopicBinding, TopicMap};
use pdtf_connectors::opcua::{Deadband, OpcuaItem, OpcuaSource};
use pdtf_connectors::upstream::{UpstreamSettings, UpstreamSync};
use pdtf_connectors::{Stats, SOURCE_CHANNEL_BATCHES};
use pdtf_models::compress::{CompressionMode, CompressionSpec, TagCompressor};
use pdtf_models::detect::LimitDetector;
use pdtf_models::record::Audit;
use pdtf_models::twin::LineTwin;
use pdtf_models::{Entry, Gap, Journal, LimitSpec, RecordBody, Seq, TagId, TagSpec, TagTable};
use rumqttc::QoS;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

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
    pub tags: TagTable,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, when configured.
    pub health_addr: Option<std::net::SocketAddr>,
    sources_stop: CancellationToken,
    sinks_stop: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    pipeline: JoinHandle<()>,
    sinks: Vec<JoinHandle<()>>,
}

fn tag_table(c: &Config) -> (TagTable, Vec<Option<LimitSpec>>) {
    let limits: Vec<Option<LimitSpec>> = c
        .tags
        .iter()
        .map(|t| {
            t.limits.map(|l| LimitSpec {
                lolo: l.lolo,
                lo: l.lo,
                hi: l.hi,
                hihi: l.hihi,
                deadband: l.deadband,
                on_delay_ms: l.on_delay_ms,
            })
        })
        .collect();
    let specs = c
        .tags
        .iter()
        .zip(&limits)
        .map(|(t, l)| TagSpec {
            name: t.name.clone(),
            unit: t.unit.clone(),
            limits: *l,
        })
        .collect();
    (TagTable::new(specs), limits)
}

/// How far back the start-up scan for the last alarm state of each tag looks.
const ALARM_RESTORE_SCAN_RECORDS: usize = 500_000;

/// The last alarm transition of each limited tag, newest first from the journal end, within
/// `ALARM_RESTORE_SCAN_RECORDS`: it seeds the detector and the retained alarm board so a
/// restart neither forgets an active alarm nor leaves a stale one standing.
fn restore_alarms(
    journal: &dyn Journal,
    last: u64,
    limits: &[Option<LimitSpec>],
    detector: &mut LimitDetector,
    board: Option<&AlertBoard>,
) -> Result<usize, pdtf_models::JournalError> {
    let mut wanted: std::collections::BTreeSet<usize> = limits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_some())
        .map(|(i, _)| i)
        .collect();
    let mut before = last + 1;
    let mut scanned = 0;
    let mut active = 0;
    while !wanted.is_empty() && scanned < ALARM_RESTORE_SCAN_RECORDS && before > 1 {
        let chunk = journal.read_back(Seq(before), 10_000)?;
        let Some(oldest) = chunk.last() else { break };
        before = oldest.seq.0;
        scanned += chunk.len();
        for r in &chunk {
            let RecordBody::Alarm(a) = &r.body else {
                continue;
            };
            if !wanted.remove(&a.tag.index()) {
                continue;
            }
            if let pdtf_models::AlarmState::Active(level) = a.state {
                detector.restore(a.tag, Some(level));
                active += 1;
            }
            if let Some(b) = board {
                b.accept(r);
            }
        }
    }
    Ok(active)
}

/// SHA-256 over the agent file and every included tag file (in load order, each prefixed
/// by its path), so the audit trail names the exact configuration a run used.
fn config_digest(c: &Config) -> String {
    use sha2::{Digest, Sha256};
    let mut files = vec![c.file.clone()];
    for o in &c.tag_origins {
        if !files.contains(&o.file) {
            files.push(o.file.clone());
        }
    }
    let mut d = Sha256::new();
    for f in files {
        d.update(f.as_bytes());
        d.update(std::fs::read(&f).unwrap_or_default());
    }
    pdtf_models::record::hex(&d.finalize().into())
}

/// The records that open a run: the downtime since the last record as a gap (every restart
/// is a hole in the data), a `crash_recovery` audit when the last run did not end with
/// `agent_stop`, then `agent_start`.
fn startup_records(
    journal: &dyn Journal,
    last: u64,
    tag_count: usize,
    detail: String,
) -> Result<Vec<Entry>, pdtf_models::JournalError> {
    let now = crate::pipeline::now();
    let audit = |event: &str, detail: String| Entry {
        time: now,
        body: RecordBody::Audit(Audit {
            event: event.to_owned(),
            detail,
        }),
    };
    let mut out = Vec::new();
    if let Some(prev) = journal.read_from(Seq(last), 1)?.pop() {
        let clean = matches!(&prev.body, RecordBody::Audit(a) if a.event == "agent_stop");
        let reason = if clean {
            "agent stopped"
        } else {
            "agent stopped without a clean shutdown (crash, kill or power loss)"
        };
        out.push(Entry {
            time: now,
            body: RecordBody::Gap(Gap {
                source: "agent".into(),
                start: prev.time,
                end: now,
                reason: reason.into(),
                tags: (0..tag_count as u32).map(TagId).collect(),
            }),
        });
        if !clean {
            warn!(
                last_seq = last,
                "Previous run ended without a clean stop; recording crash recovery."
            );
            out.push(audit(
                "crash_recovery",
                format!("previous run ended after seq {last} without agent_stop; the journal reopened intact"),
            ));
        }
    }
    out.push(audit("agent_start", detail));
    Ok(out)
}

impl Agent {
    /// Opens the journal and starts every task. Must be called inside a tokio runtime.
    pub fn start(c: &Config) -> Result<Agent, pdtf_models::JournalError> {
        let journal = crate::journal::open(c.journal.engine, &c.agent.state_dir)?;
        let stats = Arc::new(Stats::default());
        let (tags, limits) = tag_table(c);
        let last = journal.last_seq()?.0;
        Stats::set(&stats.last_seq, last);
        Stats::set(
            &stats.upstream_acked_seq,
            journal.cursor(pdtf_connectors::upstream::CURSOR)?.0,
        );
        let (committed_tx, committed_rx) = watch::channel(last);
        let sources_stop = CancellationToken::new();
        let sinks_stop = CancellationToken::new();
        let prefix = c.topic_prefix();
        let mut health_addr = None;

        let board = c.sinks.alerts.as_ref().map(|_| {
            let names = tags
                .iter()
                .map(|(_, s)| (s.name.clone(), s.unit.clone()))
                .collect();
            Arc::new(AlertBoard::new(c.agent.id.clone(), prefix.clone(), names))
        });
        let mut sinks = Vec::new();
        if let (Some(al), Some(board)) = (&c.sinks.alerts, &board) {
            let p = AlertPublisher {
                agent_id: c.agent.id.clone(),
                broker: c.brokers[&al.broker].clone(),
                qos: qos(al.qos),
                board: board.clone(),
            };
            let span = tracing::info_span!("sink", kind = "alerts");
            sinks.push(tokio::spawn(
                p.run(stats.clone(), sinks_stop.clone()).instrument(span),
            ));
        }
        let mut live_tx = None;
        if let Some(u) = &c.sinks.upstream {
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
                    tag_names: tags.iter().map(|(_, s)| s.name.clone()).collect(),
                },
                broker: c.brokers[&u.broker].clone(),
                journal: journal.clone(),
                committed: committed_rx,
                stats: stats.clone(),
            };
            let span = tracing::info_span!("sink", kind = "upstream");
            sinks.push(tokio::spawn(sync.run(sinks_stop.clone()).instrument(span)));
        }

        let (tx, rx) = mpsc::channel(SOURCE_CHANNEL_BATCHES);
        let mut sources = Vec::new();
        for s in &c.sources {
            let task = match s.kind {
                SourceKind::Mqtt => mqtt_source(c, s)
                    .run(tx.clone(), stats.clone(), sources_stop.clone())
                    .instrument(tracing::info_span!("source", id = %s.id, kind = "mqtt"))
                    .boxed(),
                SourceKind::Opcua => opcua_source(c, s)
                    .run(tx.clone(), stats.clone(), sources_stop.clone())
                    .instrument(tracing::info_span!("source", id = %s.id, kind = "opcua"))
                    .boxed(),
            };
            sources.push(tokio::spawn(task));
        }

        let compressors = c
            .tags
            .iter()
            .map(|t| {
                TagCompressor::new(t.compression.map(|z| CompressionSpec {
                    mode: match z.mode {
                        CompressionModeConfig::Deadband => CompressionMode::Deadband,
                        CompressionModeConfig::SwingingDoor => CompressionMode::SwingingDoor,
                    },
                    error: z.error,
                    max_interval_ms: z.max_interval_ms,
                }))
            })
            .collect();
        let mut detector = LimitDetector::new(limits.clone());
        let restored = restore_alarms(
            journal.as_ref(),
            last,
            &limits,
            &mut detector,
            board.as_deref(),
        )?;
        if restored > 0 {
            info!(active = restored, "Alarm states restored from the journal.");
        }
        Stats::set(&stats.alarms_active, restored as u64);
        let mut pipeline = LinePipeline::new(
            LineTwin::new(tags.len()),
            detector,
            compressors,
            journal.clone(),
            board.clone(),
            committed_tx,
            stats.clone(),
            c.journal.full_policy,
        );
        pipeline.live = live_tx;
        let (control_tx, control_rx) = mpsc::channel(crate::pipeline::CONTROL_CHANNEL);
        let housekeeping = Housekeeping {
            config: c.journal.clone(),
            journal: journal.clone(),
            stats: stats.clone(),
            out: control_tx,
        };
        sources.push(tokio::spawn(
            housekeeping
                .run(sources_stop.clone())
                .instrument(tracing::info_span!("housekeeping")),
        ));
        drop(tx);
        if let Some(h) = &c.health {
            let listener = std::net::TcpListener::bind(&h.listen)
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|e| {
                    pdtf_models::JournalError::Storage(format!("health.listen {}: {e}", h.listen))
                })?;
            info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Health endpoints up: /healthz /readyz /metrics.");
            health_addr = listener.local_addr().ok();
            sinks.push(tokio::spawn(crate::health::serve(
                listener,
                stats.clone(),
                sinks_stop.clone(),
            )));
        }
        // Full verification of the store before reporting ready (progress in the log).
        let (j, st) = (journal.clone(), stats.clone());
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match j.verify(&mut |_| {}) {
                Ok(r) => {
                    info!(
                        records = r.records,
                        first = r.first,
                        last = r.last,
                        secs = started.elapsed().as_secs_f64(),
                        "Journal verified: contiguous, checksums and audit chain intact."
                    );
                    Stats::set_flag(&st.store_verified, true);
                }
                Err(e) => {
                    tracing::error!(error = %e, "Journal verification failed: recording continues, the agent reports not-ready. Run `pdtf-agent verify` and keep the store for investigation.");
                    st.problem("journal", Some(e.to_string()));
                }
            }
        });
        let detail = format!(
            "version={} config={} config_sha256={} tags={} sources={}",
            env!("CARGO_PKG_VERSION"),
            c.file,
            config_digest(c),
            tags.len(),
            c.sources.len()
        );
        let startup = startup_records(journal.as_ref(), last, tags.len(), detail)?;
        let span = tracing::info_span!("pipeline", line = %c.agent.line);
        let pipeline_stop = sources_stop.clone();
        let pipeline = tokio::spawn(
            async move {
                pipeline.commit(startup).await;
                pipeline.run(rx, control_rx, pipeline_stop).await;
                pipeline.audit("agent_stop", "clean shutdown".into()).await;
            }
            .instrument(span),
        );
        info!(agent = %c.agent.id, journal = %journal.location().display(), last_seq = last, tags = tags.len(), "Agent started.");
        Ok(Agent {
            journal,
            stats,
            board,
            tags,
            health_addr,
            sources_stop,
            sinks_stop,
            sources,
            pipeline,
            sinks,
        })
    }

    /// Stops sources, commits what they delivered, lets upstream catch up for at most
    /// `upstream_grace`, then stops the sinks.
    pub async fn shutdown(self, upstream_grace: Duration) {
        self.sources_stop.cancel();
        for s in self.sources {
            let _joined = s.await;
        }
        let _joined = self.pipeline.await;
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

fn mqtt_source(c: &Config, s: &SourceConfig) -> MqttSource {
    let mut map = TopicMap::default();
    for (i, t) in c.tags.iter().enumerate().filter(|(_, t)| t.source == s.id) {
        let Some(topic) = &t.topic else { continue };
        map.insert(
            topic.clone(),
            TopicBinding {
                tag: TagId(i as u32),
                value_pointer: t.value_pointer.clone(),
                time_pointer: t.time_pointer.clone(),
                quality_pointer: t.quality_pointer.clone(),
            },
        );
    }
    MqttSource {
        id: s.id.clone(),
        agent_id: c.agent.id.clone(),
        broker: c.brokers[s
            .broker
            .as_deref()
            .expect("validated: mqtt sources name a broker")]
        .clone(),
        filters: s.topics.clone(),
        qos: qos(s.qos),
        map,
        max_batch_samples: s.max_batch_samples,
        flush_interval: Duration::from_millis(s.flush_interval_ms),
    }
}

fn opcua_source(c: &Config, s: &SourceConfig) -> OpcuaSource {
    let server = c.opcua_servers[s
        .server
        .as_deref()
        .expect("validated: opcua sources name a server")]
    .clone();
    let items = c
        .tags
        .iter()
        .enumerate()
        .filter(|(_, t)| t.source == s.id)
        .filter_map(|(i, t)| {
            let node = t.node.as_deref()?.parse().ok()?;
            Some(OpcuaItem {
                tag: TagId(i as u32),
                node,
                value_type: t.value_type,
                sampling_interval_ms: t
                    .sampling_interval_ms
                    .unwrap_or(s.publishing_interval_ms as f64),
                queue_size: t.queue_size,
                discard_oldest: t.discard_oldest,
                deadband: t.opcua_deadband.map(|d| match d.kind {
                    DeadbandKind::Absolute => Deadband::Absolute(d.value),
                    DeadbandKind::Percent => Deadband::Percent(d.value),
                }),
            })
        })
        .collect();
    OpcuaSource {
        id: s.id.clone(),
        agent_id: c.agent.id.clone(),
        pki_dir: pdtf_connectors::opcua::client::pki_dir(&server, &c.agent.state_dir),
        server,
        publishing_interval: Duration::from_millis(s.publishing_interval_ms),
        chunk_size: s.create_chunk_size,
        max_notifications_per_publish: s.max_notifications_per_publish,
        items,
        max_batch_samples: s.max_batch_samples,
        flush_interval: Duration::from_millis(s.flush_interval_ms),
    }
}
