//! systemd integration for `Type=notify`: `READY=1` once the journal is open and its
//! verification finished, `WATCHDOG=1` only while the line pipeline makes progress (a wedged
//! pipeline gets the agent restarted), `STATUS=` with a one-line summary, and
//! `EXTEND_TIMEOUT_USEC` while a long verification runs. Without `NOTIFY_SOCKET` (not under
//! systemd) every notification is a no-op.
//!
//! Progress is the pipeline's heartbeat: it beats on every batch and control message, and a
//! ticker sends it a `Control::Tick` every `TICK_INTERVAL`, so an idle pipeline still beats
//! and a blocked one (stuck commit, a deadlock) stops beating.

use pdtf_connectors::Stats;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

/// How often the pipeline is sent a tick (its heartbeat when idle).
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// How long a start may take per extension while the journal verifies.
const EXTEND_BY: Duration = Duration::from_secs(30);

/// Whether to feed the watchdog: only when the pipeline beat within the watchdog interval
/// less one tick (so one missed tick is tolerated, a stuck pipeline is not).
#[derive(Debug, Clone, Copy)]
pub struct WatchdogGate {
    pub interval: Duration,
}

impl WatchdogGate {
    pub fn should_feed(&self, last_beat: Instant, now: Instant) -> bool {
        let allowed = self
            .interval
            .saturating_sub(TICK_INTERVAL)
            .max(TICK_INTERVAL);
        now.saturating_duration_since(last_beat) < allowed
    }

    /// Feed twice per interval, as sd_watchdog_enabled(3) recommends.
    pub fn period(&self) -> Duration {
        (self.interval / 2).max(Duration::from_millis(100))
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "systemd notification not sent.");
    }
}

/// One line for `systemctl status`.
pub fn status_line(stats: &Stats) -> String {
    let problems = stats.problems();
    let health = if problems.is_empty() {
        "ok".to_owned()
    } else {
        problems
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "seq {} | upstream backlog {} | alarms active {} | {}",
        Stats::get(&stats.last_seq),
        stats.upstream_backlog(),
        Stats::get(&stats.alarms_active),
        health
    )
}

/// Tells systemd a configuration reload has begun (`RELOADING=1` with the monotonic time,
/// as systemd 253 and later require); `reloaded` ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => notify(&[NotifyState::Status("reloading the configuration")]),
    }
}

/// The reload is over (applied or refused): ready again.
pub fn reloaded() {
    notify(&[NotifyState::Ready]);
}

/// Tells systemd the agent is stopping (call when shutdown begins).
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Runs until `stop`: readiness, then watchdog and status.
/// `beats` has one heartbeat per line: the watchdog is fed only while every line beats (a
/// wedged line gets the agent restarted even when the others run).
pub async fn run(
    stats: Arc<Stats>,
    beats: Vec<(String, watch::Receiver<Instant>)>,
    stop: CancellationToken,
) {
    let oldest = || {
        beats
            .iter()
            .map(|(line, b)| (line.as_str(), *b.borrow()))
            .min_by_key(|(_, at)| *at)
    };
    let mut extended = Instant::now();
    while !Stats::flag(&stats.store_verify_done) {
        if extended.elapsed() >= EXTEND_BY / 2 {
            let usec = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
            notify(&[
                NotifyState::ExtendTimeoutUsec(usec),
                NotifyState::Status("verifying the journal"),
            ]);
            extended = Instant::now();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let line = status_line(&stats);
    notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
    let gate = sd_notify::watchdog_enabled().map(|interval| WatchdogGate { interval });
    let period = gate.map_or(Duration::from_secs(5), |g| g.period());
    let mut starved = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let line = status_line(&stats);
        let (stalled, last_beat) = oldest().unwrap_or(("", Instant::now()));
        match gate {
            Some(g) if g.should_feed(last_beat, Instant::now()) => {
                starved = false;
                notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
            }
            Some(g) => {
                if !starved {
                    error!(line = stalled, silent_for_s = last_beat.elapsed().as_secs(), watchdog_s = g.interval.as_secs(), "Line pipeline makes no progress; the systemd watchdog is no longer fed and will restart the agent.");
                    stats.problem(
                        "pipeline",
                        Some(format!("line {stalled}: no progress; watchdog not fed")),
                    );
                }
                starved = true;
            }
            None => notify(&[NotifyState::Status(&line)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_while_the_pipeline_beats() {
        let g = WatchdogGate {
            interval: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        assert!(g.should_feed(t0, t0 + Duration::from_secs(1)));
        assert!(g.should_feed(t0, t0 + Duration::from_millis(8_900)));
        assert!(
            !g.should_feed(t0, t0 + Duration::from_secs(9)),
            "a wedged pipeline"
        );
        assert!(!g.should_feed(t0, t0 + Duration::from_secs(60)));
        assert_eq!(g.period(), Duration::from_secs(5));
        // A watchdog shorter than two ticks still tolerates one tick of silence.
        let short = WatchdogGate {
            interval: Duration::from_millis(1_500),
        };
        assert!(short.should_feed(t0, t0 + Duration::from_millis(900)));
        assert!(!short.should_feed(t0, t0 + Duration::from_millis(1_100)));
    }
}
