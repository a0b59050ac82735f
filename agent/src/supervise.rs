//! Supervision: every task the agent spawns is watched, so a panic or an early end is
//! noticed at once — logged at ERROR, reported on `/readyz`, and handed to the binary, which
//! records it and exits non-zero so systemd restarts the agent. Nothing is discarded at
//! shutdown by an unchecked `handle.await`.
//!
//! A task may end only after its stop token was cancelled; any other end is a failure.

use futures_util::FutureExt;
use pdtf_connectors::Stats;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;

/// Spawns supervised tasks and tells who failed first.
#[derive(Clone)]
pub struct Supervisor {
    failed: watch::Sender<Option<String>>,
    stats: Arc<Stats>,
}

/// What a task's end means, given whether it was told to stop.
pub fn judge(outcome: Result<(), String>, told_to_stop: bool) -> Option<String> {
    match (outcome, told_to_stop) {
        (Err(panic), _) => Some(format!("panicked: {panic}")),
        (Ok(()), false) => Some("ended without being told to stop".into()),
        (Ok(()), true) => None,
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Supervisor {
    pub fn new(stats: Arc<Stats>) -> Self {
        Self {
            failed: watch::channel(None).0,
            stats,
        }
    }

    /// Spawns `task`; `stop` is the token whose cancellation makes its end expected.
    pub fn spawn(
        &self,
        name: impl Into<String>,
        stop: &CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let (name, stop, me) = (name.into(), stop.clone(), self.clone());
        tokio::spawn(async move {
            let outcome = AssertUnwindSafe(task)
                .catch_unwind()
                .await
                .map_err(|p| panic_text(p.as_ref()));
            if let Some(why) = judge(outcome, stop.is_cancelled()) {
                me.fail(&name, &why);
            }
        })
    }

    /// Records a failure: the first one is what the binary reports and exits with.
    pub fn fail(&self, task: &str, why: &str) {
        error!(task, why, "Agent task stopped unexpectedly; the agent reports not-ready and exits non-zero so systemd restarts it.");
        self.stats
            .problem("supervisor", Some(format!("task {task} {why}")));
        self.failed.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            *f = Some(format!("task {task} {why}"));
            true
        });
    }

    /// Resolves with the first failure.
    pub async fn first_failure(&self) -> String {
        let mut rx = self.failed.subscribe();
        loop {
            if let Some(f) = rx.borrow_and_update().clone() {
                return f;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_a_requested_end_is_not_a_failure() {
        assert_eq!(judge(Ok(()), true), None);
        assert!(judge(Ok(()), false).unwrap().contains("without being told"));
        assert!(judge(Err("boom".into()), true)
            .unwrap()
            .contains("panicked: boom"));
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_at_once() {
        let stats = Arc::new(Stats::default());
        let s = Supervisor::new(stats.clone());
        let stop = CancellationToken::new();
        let bad = s.spawn("pipeline", &stop, async { panic!("index out of bounds") });
        let why = tokio::time::timeout(Duration::from_secs(5), s.first_failure())
            .await
            .expect("reported");
        assert_eq!(why, "task pipeline panicked: index out of bounds");
        bad.await.unwrap();
        let problems = stats.problems();
        assert!(problems.iter().any(|(k, _)| k == "supervisor"));
    }

    #[tokio::test]
    async fn a_stopped_task_is_not_a_failure() {
        let s = Supervisor::new(Arc::new(Stats::default()));
        let stop = CancellationToken::new();
        let t = {
            let stop2 = stop.clone();
            s.spawn("source", &stop, async move { stop2.cancelled().await })
        };
        stop.cancel();
        t.await.unwrap();
        let none = tokio::time::timeout(Duration::from_millis(50), s.first_failure()).await;
        assert!(none.is_err(), "no failure reported");
    }
}
