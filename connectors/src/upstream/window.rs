//! Which record ranges are in flight upstream, and how far the acknowledged prefix reaches.
//! Pure protocol state (no I/O), driven by three events in rumqttc's order:
//! `on_sent` when a publish is queued, `on_outgoing(pkid)` when the event loop writes it
//! (same order as queued), `on_puback(pkid)` when the broker acknowledges it.
//!
//! Invariant: `acked_through` only moves forward and only over a contiguous prefix of
//! acknowledged ranges, so persisting it never skips a record the broker did not take.

use std::collections::{BTreeMap, HashMap, VecDeque};

#[derive(Debug, Clone)]
pub struct AckWindow {
    acked_through: u64,
    next_to_send: u64,
    unassigned: VecDeque<(u64, u64)>,
    inflight: HashMap<u16, (u64, u64)>,
    acked_ahead: BTreeMap<u64, u64>,
}

impl AckWindow {
    /// Starts after `acked_through` (0 = nothing acknowledged yet): replay begins there.
    pub fn new(acked_through: u64) -> Self {
        Self {
            acked_through,
            next_to_send: acked_through + 1,
            unassigned: VecDeque::new(),
            inflight: HashMap::new(),
            acked_ahead: BTreeMap::new(),
        }
    }

    pub fn next_to_send(&self) -> u64 {
        self.next_to_send
    }

    pub fn acked_through(&self) -> u64 {
        self.acked_through
    }

    pub fn in_flight(&self) -> usize {
        self.unassigned.len() + self.inflight.len()
    }

    pub fn on_sent(&mut self, first: u64, last: u64) {
        debug_assert_eq!(first, self.next_to_send, "ranges are sent in order");
        self.unassigned.push_back((first, last));
        self.next_to_send = last + 1;
    }

    pub fn on_outgoing(&mut self, pkid: u16) {
        if let Some(range) = self.unassigned.pop_front() {
            self.inflight.insert(pkid, range);
        }
    }

    /// Returns the new `acked_through` when the acknowledged prefix grew.
    pub fn on_puback(&mut self, pkid: u16) -> Option<u64> {
        let (first, last) = self.inflight.remove(&pkid)?;
        self.acked_ahead.insert(first, last);
        let before = self.acked_through;
        while let Some(last) = self.acked_ahead.remove(&(self.acked_through + 1)) {
            self.acked_through = last;
        }
        (self.acked_through > before).then_some(self.acked_through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_acks_advance_the_cursor() {
        let mut w = AckWindow::new(10);
        assert_eq!(w.next_to_send(), 11);
        w.on_sent(11, 20);
        w.on_sent(21, 25);
        w.on_outgoing(1);
        w.on_outgoing(2);
        assert_eq!(w.in_flight(), 2);
        assert_eq!(w.on_puback(1), Some(20));
        assert_eq!(w.on_puback(2), Some(25));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn out_of_order_acks_wait_for_the_gap() {
        let mut w = AckWindow::new(0);
        for (i, (a, b)) in [(1, 5), (6, 9), (10, 10)].into_iter().enumerate() {
            w.on_sent(a, b);
            w.on_outgoing(i as u16 + 1);
        }
        assert_eq!(w.on_puback(3), None);
        assert_eq!(w.on_puback(2), None);
        assert_eq!(w.acked_through(), 0);
        assert_eq!(w.on_puback(1), Some(10));
    }

    #[test]
    fn unknown_and_duplicate_acks_change_nothing() {
        let mut w = AckWindow::new(3);
        w.on_sent(4, 4);
        w.on_outgoing(9);
        assert_eq!(w.on_puback(8), None);
        assert_eq!(w.on_puback(9), Some(4));
        assert_eq!(w.on_puback(9), None);
        assert_eq!(w.acked_through(), 4);
    }

    #[test]
    fn reused_pkid_maps_to_its_latest_range() {
        let mut w = AckWindow::new(0);
        w.on_sent(1, 2);
        w.on_outgoing(1);
        assert_eq!(w.on_puback(1), Some(2));
        w.on_sent(3, 7);
        w.on_outgoing(1);
        assert_eq!(w.on_puback(1), Some(7));
    }
}
