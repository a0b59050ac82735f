//! Batch tracking and commands at start: each line that has `[batch]` gets its batch twin
//! (restored by `batch::prepare` before the start's commit); when a line takes batch commands
//! (`[batch] commands`) or alarm actions (`[sinks.alerts] commands`), the command link (on
//! `[sinks.alerts]`'s broker) and the task that hands each command to its line's control
//! channel.

use super::{broker, StartError};
use crate::batch::{LineBatch, REPLY_CHANNEL};
use crate::config::{Config, LineConfig};
use crate::pipeline::{Control, LinePipeline};
use crate::supervise::Supervisor;
use pdtf_connectors::command::{CommandLink, Incoming};
use pdtf_connectors::Stats;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

/// Commands waiting for their line's control channel.
const INCOMING_CHANNEL: usize = 64;

#[allow(clippy::too_many_arguments)]
pub(crate) fn wire(
    c: &Config,
    lines: &[LineConfig],
    pipelines: &mut [LinePipeline],
    batches: Vec<Option<LineBatch>>,
    live: &crate::batch::Live,
    names: Arc<[String]>,
    controls: &[mpsc::Sender<Control>],
    stats: &Arc<Stats>,
    sup: &Supervisor,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let (reply_tx, reply_rx) = mpsc::channel(REPLY_CHANNEL);
    let mut topics = Vec::new();
    for (i, ((p, l), b)) in pipelines.iter_mut().zip(lines).zip(batches).enumerate() {
        let Some(mut b) = b else {
            continue;
        };
        if l.batch.as_ref().is_some_and(|b| b.commands) {
            b.replies = Some(reply_tx.clone());
            topics.push((format!("{}/cmd/batch", c.line_prefix(l)), i));
        }
        b.set_context(&mut p.twin);
        b.live = Some(live.clone());
        p.batch = Some(b);
        p.publish_batch_state();
    }
    if let Some(a) = c.sinks.alerts.as_ref().filter(|a| a.commands) {
        for (i, (p, l)) in pipelines.iter_mut().zip(lines).enumerate() {
            let prefix = c.line_prefix(l);
            p.alarm_commands = Some(crate::pipeline::AlarmCommands {
                policy: crate::batch::command::Policy {
                    allow_users: a.allow_users.clone(),
                },
                max_shelve_s: a.max_shelve_s,
                names: names.clone(),
                reply_prefix: format!("{prefix}/cmd/reply"),
                replies: reply_tx.clone(),
            });
            topics.push((format!("{prefix}/cmd/alarm"), i));
            topics.push((format!("{prefix}/cmd/deviation"), i));
        }
    }
    drop(reply_tx);
    let Some(alerts) = c.sinks.alerts.as_ref().filter(|_| !topics.is_empty()) else {
        return Ok(Vec::new());
    };
    let link = CommandLink {
        agent_id: c.agent.id.clone(),
        broker: broker(c, &alerts.broker)?.clone(),
        topics,
    };
    let (in_tx, mut in_rx) = mpsc::channel::<Incoming>(INCOMING_CHANNEL);
    let span = tracing::info_span!("sink", kind = "commands");
    let link_task = sup.spawn(
        "commands",
        stop,
        link.run(in_tx, reply_rx, stats.clone(), stop.clone())
            .instrument(span),
    );
    let controls = controls.to_vec();
    let stop_fwd = stop.clone();
    let forward = sup.spawn("command intake", stop, async move {
        loop {
            let cmd = tokio::select! {
                _ = stop_fwd.cancelled() => return,
                m = in_rx.recv() => match m {
                    Some(m) => m,
                    None => {
                        // The link ended (only on its stop): wait for ours.
                        stop_fwd.cancelled().await;
                        return;
                    }
                },
            };
            let Some(tx) = controls.get(cmd.line) else {
                continue;
            };
            let msg = if cmd.topic.ends_with("/cmd/alarm") || cmd.topic.ends_with("/cmd/deviation")
            {
                Control::AlarmCommand {
                    topic: cmd.topic,
                    payload: cmd.payload,
                }
            } else {
                Control::BatchCommand {
                    topic: cmd.topic,
                    payload: cmd.payload,
                }
            };
            if tx.send(msg).await.is_err() {
                warn!("A command arrived after its line stopped; not applied and not answered.");
            }
        }
    });
    Ok(vec![link_task, forward])
}
