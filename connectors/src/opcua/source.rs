//! OPC UA tag source: one session, one subscription, monitored items per mapped tag.
//!
//! The session event loop (async-opcua) reconnects forever with capped exponential backoff
//! (plus jitter, see `client::Jitter`). When the server still has the session, the
//! subscription is transferred to the new connection; otherwise the library recreates it
//! and its monitored items, in chunks. Either way the server sends every item's current
//! value again (`sendInitialValues`).
//!
//! Truth over an outage: the first lost connection sends `LinkDown` (the tags go Bad in the
//! twin at once), and the first connection with the subscription back sends the `Gap`
//! (start, end, reason, tags). Values are flushed to the pipeline on a timer or when a
//! batch is full; while the pipeline is busy this task does not poll the session, so
//! back-pressure reaches the server's queues instead of memory here.
//!
//! A tag-map reload arrives on `reload` as the new item list. Make before break: a new
//! subscription with every item is created on the same session, and only then is the old
//! one deleted, so no value change is missed; the new subscription's initial values are
//! recorded again (one extra sample per item, the current value re-read).

use super::client::{self, explain};
use super::{NodeAddr, OpcuaServerConfig, ValueType};
use crate::stats::{SourceEvent, SourceStats};
use crate::{Backoff, Outage, SourceMsg, Stats};
use futures_util::StreamExt;
use opcua::client::{
    DataChangeCallback, MonitoredItem, Session, SessionConnectMode, SessionPollResult,
};
use opcua::types::{
    DataChangeFilter, DataChangeTrigger, DeadbandType, ExtensionObject, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn,
};
use pdtf_models::{Malformed, Sample, TagId, Timestamp};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The OPC UA deadband filter of a monitored item (evaluated by the server).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    Absolute(f64),
    /// Percent of the variable's EURange (the server needs an EURange property).
    Percent(f64),
}

/// One monitored item: a mapped tag and how the server should sample it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcuaItem {
    pub tag: TagId,
    pub node: NodeAddr,
    pub value_type: ValueType,
    pub sampling_interval_ms: f64,
    pub queue_size: u32,
    pub discard_oldest: bool,
    pub deadband: Option<Deadband>,
}

pub struct OpcuaSource {
    pub id: String,
    pub agent_id: String,
    pub server: OpcuaServerConfig,
    pub pki_dir: PathBuf,
    pub publishing_interval: Duration,
    /// Monitored items per CreateMonitoredItems request (also when the library recreates
    /// them on a new session).
    pub chunk_size: usize,
    /// Asked of the server for each publish response (0: the server decides).
    pub max_notifications_per_publish: u32,
    pub items: Vec<OpcuaItem>,
    pub max_batch_samples: usize,
    pub flush_interval: Duration,
    /// Tag-map reloads: each new value replaces `items` while the source runs.
    pub reload: Option<watch::Receiver<Vec<OpcuaItem>>>,
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// The subscription in place: the node id each item was resolved to.
#[derive(Clone)]
struct Current {
    nodes: Vec<Option<NodeId>>,
    subscription: u32,
}

/// What creating the subscription found.
struct Subscribed {
    current: Current,
    items: usize,
    /// (node, the server's reason) of each item it refused.
    failed: Vec<(String, String)>,
}

type Buffer = Arc<Mutex<Vec<Sample>>>;

/// What outlives one session: the pipeline, the outage and the backoff.
struct Link<'a> {
    out: &'a mpsc::Sender<SourceMsg>,
    stats: SourceStats<'a>,
    tags: &'a mut Vec<TagId>,
    outage: &'a mut Outage,
    backoff: &'a mut Backoff,
    reload: &'a mut Option<watch::Receiver<Vec<OpcuaItem>>>,
}

impl OpcuaSource {
    fn component(&self) -> String {
        format!("source {}", self.id)
    }

    fn tags(&self) -> Vec<TagId> {
        self.items.iter().map(|i| i.tag).collect()
    }

    /// Takes the latest items (`pending`: only if not seen yet). True when it took them.
    fn take_reload(
        &mut self,
        reload: &mut Option<watch::Receiver<Vec<OpcuaItem>>>,
        tags: &mut Vec<TagId>,
        pending: bool,
    ) -> bool {
        let Some(r) = reload else { return false };
        // `changed()` marks the value seen as it returns: after it, take it regardless.
        if pending && !r.has_changed().unwrap_or(false) {
            return false;
        }
        self.items = r.borrow_and_update().clone();
        *tags = self.tags();
        info!(source = %self.id, items = self.items.len(), "Tag map reloaded.");
        true
    }

    /// Runs until `shutdown`; never gives up on the server.
    pub async fn run(
        mut self,
        out: mpsc::Sender<SourceMsg>,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new(
            self.server.retry_initial(),
            Duration::from_millis(self.server.retry_max_ms),
        );
        let mut outage = Outage::default();
        let mut tags = self.tags();
        let own = stats.source(&self.id);
        let counts = SourceStats {
            all: &stats,
            own: &own,
        };
        let mut reload = self.reload.take();
        loop {
            self.take_reload(&mut reload, &mut tags, true);
            let attempt = async {
                let c =
                    client::clients(&self.server, &self.pki_dir, &self.agent_id, self.chunk_size)
                        .map_err(|m| (StatusCode::BadConfigurationError, m))?;
                let token = client::identity_token(&self.server)
                    .map_err(|m| (StatusCode::BadConfigurationError, m))?;
                client::connect(&c, &self.server, token).await
            };
            let connection = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = attempt => c,
            };
            let reason = match connection {
                Ok(connection) => {
                    let mut link = Link {
                        out: &out,
                        stats: counts,
                        tags: &mut tags,
                        outage: &mut outage,
                        backoff: &mut backoff,
                        reload: &mut reload,
                    };
                    match self.drive(connection, &mut link, &shutdown).await {
                        None => return,
                        Some(reason) => reason,
                    }
                }
                Err((status, detail)) => explain(status, &detail, &self.pki_dir, None),
            };
            stats.problem(
                &self.component(),
                Some(format!("{}: {reason}", self.server.endpoint)),
            );
            counts.count(SourceEvent::Reconnect, 1);
            if backoff.attempts() < 2 {
                warn!(source = %self.id, endpoint = %self.server.endpoint, %reason, "OPC UA server not reachable; retrying.");
            }
            if !outage.begin(&out, &self.id, &tags, &reason, now()).await {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn flush(
        &self,
        buffer: &Buffer,
        out: &mpsc::Sender<SourceMsg>,
        stats: SourceStats<'_>,
    ) -> bool {
        let batch = std::mem::take(&mut *buffer.lock().expect("buffer lock"));
        if batch.is_empty() {
            return true;
        }
        stats.count(SourceEvent::Samples, batch.len() as u64);
        for b in crate::batches(batch, self.max_batch_samples) {
            if out.send(SourceMsg::Samples(b)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Polls one session until shutdown (`None`) or until it cannot go on (`Some(reason)`).
    async fn drive(
        &mut self,
        connection: client::Connection,
        link: &mut Link<'_>,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let client::Connection {
            session,
            event_loop,
            server_cert_file,
        } = connection;
        let (out, stats) = (link.out, link.stats);
        let buffer: Buffer = Arc::default();
        let stream = event_loop.enter();
        tokio::pin!(stream);
        let mut tick = tokio::time::interval(self.flush_interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut subscribing: Option<tokio::task::JoinHandle<Result<Option<Subscribed>, String>>> =
            None;
        let mut current: Option<Current> = None;
        // A reload came while a subscription was being made: replace it once that is done.
        let mut replace = false;
        let mut failures = 0u32;
        let close = |session: Arc<Session>| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.flush(&buffer, out, stats).await;
                    if let Some(t) = subscribing.take() { t.abort(); }
                    // Keep polling the loop while the session closes.
                    let s = session.clone();
                    let closing = close(s);
                    tokio::pin!(closing);
                    loop {
                        tokio::select! {
                            _ = &mut closing => break,
                            ev = stream.next() => if ev.is_none() { break },
                        }
                    }
                    return None;
                }
                _ = tick.tick() => {
                    if !self.flush(&buffer, out, stats).await {
                        return None;
                    }
                }
                changed = async { link.reload.as_mut().expect("guarded").changed().await }, if link.reload.is_some() => {
                    if changed.is_err() {
                        *link.reload = None; // the agent dropped its handle: no more reloads
                    } else if self.take_reload(link.reload, link.tags, false) {
                        replace = current.is_some() || subscribing.is_some();
                    }
                }
                done = async { subscribing.as_mut().expect("guarded").await }, if subscribing.is_some() => {
                    subscribing = None;
                    let failed = match done {
                        Ok(Ok(Some(report))) => {
                            current = Some(report.current.clone());
                            if !self.report(report, out, stats).await
                                || !self.connected(&buffer, link).await
                            {
                                return None;
                            }
                            None
                        }
                        // The namespace table did not change; the library's recreation stands.
                        Ok(Ok(None)) => None,
                        Ok(Err(reason)) => Some(reason),
                        Err(join) => Some(join.to_string()),
                    };
                    if let Some(reason) = failed {
                        error!(source = %self.id, %reason, "Creating the subscription failed; reconnecting.");
                        close(session.clone()).await;
                        return Some(format!("subscription failed: {reason}"));
                    }
                }
                ev = stream.next() => {
                    let ev = match ev {
                        None => return Some("session closed".into()),
                        Some(Err(code)) => return Some(format!("session ended: {code}")),
                        Some(Ok(ev)) => ev,
                    };
                    match ev {
                        SessionPollResult::Reconnected(mode) => {
                            failures = 0;
                            if let Some(cur) = &current {
                                info!(source = %self.id, ?mode, "OPC UA session back; subscription transferred or recreated.");
                                // The library's publish loop can sit idle after recreating a
                                // subscription on a new session; start it explicitly.
                                session.trigger_publish_now();
                                if !self.connected(&buffer, link).await {
                                    return None;
                                }
                                // A new session may come with a reordered namespace table, and
                                // the library recreated the items with the old indices: check.
                                if matches!(mode, SessionConnectMode::NewSession(_)) && subscribing.is_none() {
                                    let task = self.subscribe(session.clone(), buffer.clone(), Some(cur.clone()), None);
                                    subscribing = Some(tokio::spawn(task));
                                }
                            } else if subscribing.is_none() {
                                let task = self.subscribe(session.clone(), buffer.clone(), None, None);
                                subscribing = Some(tokio::spawn(task));
                            }
                        }
                        SessionPollResult::ConnectionLost(code) => {
                            self.flush(&buffer, out, stats).await;
                            let reason = format!("connection lost: {code}");
                            warn!(source = %self.id, endpoint = %self.server.endpoint, %reason, "OPC UA link lost; its tags are Bad until it is back.");
                            stats.problem(&self.component(), Some(format!("{}: {reason}", self.server.endpoint)));
                            stats.count(SourceEvent::Reconnect, 1);
                            if !link.outage.begin(out, &self.id, link.tags, &reason, now()).await {
                                return None;
                            }
                        }
                        SessionPollResult::ReconnectFailed(code) => {
                            failures += 1;
                            let reason = explain(code, "reconnect failed", &self.pki_dir, server_cert_file.as_deref());
                            if failures <= 2 {
                                warn!(source = %self.id, endpoint = %self.server.endpoint, %reason, "OPC UA reconnect failed; retrying.");
                            }
                            stats.problem(&self.component(), Some(format!("{}: {reason}", self.server.endpoint)));
                            if !link.outage.begin(out, &self.id, link.tags, &reason, now()).await {
                                return None;
                            }
                        }
                        _ => {}
                    }
                }
            }
            if replace && subscribing.is_none() {
                if let Some(cur) = &current {
                    replace = false;
                    let task = self.subscribe(
                        session.clone(),
                        buffer.clone(),
                        None,
                        Some(cur.subscription),
                    );
                    subscribing = Some(tokio::spawn(task));
                }
            }
            // By availability, not by the timer: what the last poll delivered goes now.
            let ready = !buffer.lock().expect("buffer lock").is_empty();
            if ready && !self.flush(&buffer, out, stats).await {
                return None;
            }
        }
    }

    /// The subscription is (back) in place: clear the problem and close the gap.
    async fn connected(&self, buffer: &Buffer, link: &mut Link<'_>) -> bool {
        link.stats.problem(&self.component(), None);
        link.stats.link_up();
        link.backoff.reset();
        let Some(gap) = link.outage.end(&self.id, link.tags, now()) else {
            return true;
        };
        link.stats.count(SourceEvent::Gap, 1);
        self.flush(buffer, link.out, link.stats).await
            && link.out.send(SourceMsg::Gap(gap)).await.is_ok()
    }

    /// Items the server refused are recorded (malformed, with the server's reason) so the
    /// missing tag is explained; the others work.
    async fn report(
        &self,
        r: Subscribed,
        out: &mpsc::Sender<SourceMsg>,
        stats: SourceStats<'_>,
    ) -> bool {
        info!(source = %self.id, endpoint = %self.server.endpoint, items = r.items - r.failed.len(), refused = r.failed.len(), "OPC UA source subscribed.");
        for (node, reason) in r.failed {
            error!(source = %self.id, %node, %reason, "The server refused this monitored item; its tag gets no data.");
            stats.count(SourceEvent::Malformed, 1);
            let m = Malformed::new(&self.id, &node, reason, b"");
            if out.send(SourceMsg::Malformed(m)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Creates the subscription and its monitored items, `chunk_size` per request. With
    /// `previous` (a subscription the library recreated on a new session), only when the
    /// node ids resolve differently now; the session's subscriptions (the source has one,
    /// whose id changed when the library recreated it) are deleted first. `None`: unchanged.
    /// With `replace` (a reload), that subscription is deleted once the new one is in place.
    fn subscribe(
        &self,
        session: Arc<Session>,
        buffer: Buffer,
        previous: Option<Current>,
        replace: Option<u32>,
    ) -> impl std::future::Future<Output = Result<Option<Subscribed>, String>> + Send + 'static
    {
        let items = self.items.clone();
        let chunk = self.chunk_size.max(1);
        let publishing = self.publishing_interval;
        let max_per_publish = self.max_notifications_per_publish;
        let source = self.id.clone();
        async move {
            let namespaces = session
                .read_namespace_array()
                .await
                .map_err(|e| format!("reading the namespace array: {e}"))?;
            let resolved: Vec<Result<NodeId, String>> =
                items.iter().map(|i| i.node.resolve(&namespaces)).collect();
            let nodes: Vec<Option<NodeId>> = resolved.iter().map(|r| r.clone().ok()).collect();
            if let Some(prev) = previous {
                if prev.nodes == nodes {
                    return Ok(None);
                }
                warn!(%source, "The server's namespace table changed; recreating the subscription with the new indices.");
                let outdated = session.subscription_state().lock().subscription_ids();
                if let Some(ids) = outdated.filter(|ids| !ids.is_empty()) {
                    if let Err(e) = session.delete_subscriptions(&ids).await {
                        warn!(%source, error = %e, "Deleting the outdated subscription failed; creating the new one anyway.");
                    }
                }
            }
            let kinds: Vec<(TagId, ValueType)> =
                items.iter().map(|i| (i.tag, i.value_type)).collect();
            let callback = DataChangeCallback::new(move |dv, item: &MonitoredItem| {
                let Some(&(tag, ty)) = (item.client_handle() as usize)
                    .checked_sub(1)
                    .and_then(|i| kinds.get(i))
                else {
                    return;
                };
                let s = super::value::to_sample(&dv, tag, ty, now());
                buffer.lock().expect("buffer lock").push(s);
            });
            let sub = session
                .create_subscription(publishing, 60, 10, max_per_publish, 0, true, callback)
                .await
                .map_err(|e| format!("CreateSubscription: {e}"))?;
            let mut failed = Vec::new();
            let mut requests = Vec::new();
            for (i, (item, node)) in items.iter().zip(resolved).enumerate() {
                match node {
                    Ok(node) => requests.push((i, create_request(item, node, i as u32 + 1))),
                    Err(e) => failed.push((items[i].node.to_string(), e)),
                }
            }
            for part in requests.chunks(chunk) {
                let reqs = part.iter().map(|(_, r)| r.clone()).collect();
                let results = session
                    .create_monitored_items(sub, TimestampsToReturn::Both, reqs)
                    .await
                    .map_err(|e| format!("CreateMonitoredItems: {e}"))?;
                for ((i, _), r) in part.iter().zip(results) {
                    if !r.result.status_code.is_good() {
                        failed.push((
                            items[*i].node.to_string(),
                            format!("CreateMonitoredItems: {}", r.result.status_code),
                        ));
                    }
                }
            }
            if let Some(old) = replace {
                if let Err(e) = session.delete_subscriptions(&[old]).await {
                    warn!(%source, error = %e, "Deleting the subscription the reload replaced failed; its values may arrive twice until the session ends.");
                }
            }
            Ok(Some(Subscribed {
                current: Current {
                    nodes,
                    subscription: sub,
                },
                items: items.len(),
                failed,
            }))
        }
    }
}

fn create_request(
    item: &OpcuaItem,
    node: opcua::types::NodeId,
    handle: u32,
) -> MonitoredItemCreateRequest {
    let filter = match item.deadband {
        None => ExtensionObject::null(),
        Some(d) => {
            let (kind, value) = match d {
                Deadband::Absolute(v) => (DeadbandType::Absolute, v),
                Deadband::Percent(v) => (DeadbandType::Percent, v),
            };
            ExtensionObject::from_message(DataChangeFilter {
                trigger: DataChangeTrigger::StatusValue,
                deadband_type: kind as u32,
                deadband_value: value,
            })
        }
    };
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId::from(node),
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: handle,
            sampling_interval: item.sampling_interval_ms,
            filter,
            queue_size: item.queue_size,
            discard_oldest: item.discard_oldest,
        },
    }
}
