//! The window of recent command request ids, so a redelivered command (MQTT QoS 1 after a
//! reconnect, an MES retry) is answered as the first copy was and never applied twice.
//!
//! Bounded: the oldest request falls out after `CAPACITY` newer ones. It is part of the
//! line's batch snapshot, so the window survives a restart.

use pdtf_models::batch::SeenRequest;
use pdtf_models::command::CommandOutcome;
use std::collections::{HashMap, VecDeque};

/// Requests remembered per line.
pub const CAPACITY: usize = 4_096;

#[derive(Debug, Clone, Default)]
pub struct RequestWindow {
    order: VecDeque<String>,
    by_id: HashMap<String, SeenRequest>,
}

impl RequestWindow {
    pub fn get(&self, request_id: &str) -> Option<&SeenRequest> {
        self.by_id.get(request_id)
    }

    /// Remembers an answered request (the first copy only).
    pub fn insert(&mut self, seen: SeenRequest) {
        if self.by_id.contains_key(&seen.request_id) {
            return;
        }
        if self.order.len() == CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        self.order.push_back(seen.request_id.clone());
        self.by_id.insert(seen.request_id.clone(), seen);
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Oldest first, for the snapshot.
    pub fn to_vec(&self) -> Vec<SeenRequest> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id).cloned())
            .collect()
    }

    /// A command answered as record `seq`: remembers its request id (the first copy only)
    /// and returns, for a duplicate, how the first copy was answered (its refusal, if it
    /// was refused).
    pub fn answered(
        &mut self,
        outcome: &CommandOutcome,
        reply_to: Option<&str>,
        seq: u64,
    ) -> Option<Option<String>> {
        let id = reply_to?;
        match outcome {
            CommandOutcome::Duplicate { .. } => self.get(id).map(|s| s.refused.clone()),
            outcome => {
                self.insert(SeenRequest {
                    request_id: id.to_owned(),
                    seq,
                    refused: match outcome {
                        CommandOutcome::Refused(r) => Some(r.clone()),
                        _ => None,
                    },
                });
                None
            }
        }
    }

    pub fn from_vec(seen: Vec<SeenRequest>) -> Self {
        let mut w = RequestWindow::default();
        for s in seen {
            w.insert(s);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: usize) -> SeenRequest {
        SeenRequest {
            request_id: format!("r-{id}"),
            seq: id as u64,
            refused: None,
        }
    }

    #[test]
    fn the_window_is_bounded_keeps_the_first_copy_and_round_trips() {
        let mut w = RequestWindow::default();
        for i in 0..CAPACITY + 10 {
            w.insert(seen(i));
        }
        assert_eq!(w.len(), CAPACITY);
        assert!(w.get("r-9").is_none(), "the oldest fell out");
        assert_eq!(w.get("r-10").map(|s| s.seq), Some(10));
        let mut again = seen(10);
        again.seq = 99;
        w.insert(again);
        assert_eq!(
            w.get("r-10").map(|s| s.seq),
            Some(10),
            "the first copy stays"
        );
        let back = RequestWindow::from_vec(w.to_vec());
        assert_eq!(back.to_vec(), w.to_vec());
    }
}
