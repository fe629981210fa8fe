//! Requests in flight (sans-IO): id allocation, matching responses by id, deadlines.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Requests written and waiting for their response, with their deadlines.
#[derive(Debug)]
pub(crate) struct Pending<W> {
    next_id: u64,
    waiting: HashMap<u64, (W, Instant)>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl<W> Pending<W> {
    pub(crate) fn new() -> Self {
        Pending {
            next_id: 1,
            waiting: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    /// A fresh id (never reused on this connection, across reconnects too).
    pub(crate) fn allocate(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn insert(&mut self, id: u64, waiter: W, deadline: Instant) {
        self.waiting.insert(id, (waiter, deadline));
        self.deadlines.push(Reverse((deadline, id)));
    }

    /// The waiter for a response, if the id is ours and still waiting.
    pub(crate) fn take(&mut self, id: u64) -> Option<W> {
        self.waiting.remove(&id).map(|(w, _)| w)
    }

    /// Waiters whose deadline has passed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(u64, W)> {
        let mut out = Vec::new();
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            // Skip stale heap entries (answered already).
            if self.waiting.get(&id).is_some_and(|(_, d)| *d == deadline) {
                let (w, _) = self.waiting.remove(&id).expect("present");
                out.push((id, w));
            }
        }
        out
    }

    /// The earliest deadline still pending.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if self.waiting.get(&id).is_some_and(|(_, d)| *d == deadline) {
                return Some(deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Everything pending (the link is gone).
    pub(crate) fn drain(&mut self) -> Vec<W> {
        self.deadlines.clear();
        self.waiting.drain().map(|(_, (w, _))| w).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn matches_by_id_in_any_order_and_expires() {
        let t = Instant::now();
        let mut p = Pending::new();
        let a = p.allocate();
        let b = p.allocate();
        let c = p.allocate();
        p.insert(a, "a", t + Duration::from_secs(3));
        p.insert(b, "b", t + Duration::from_secs(1));
        p.insert(c, "c", t + Duration::from_secs(2));
        assert_eq!(p.take(c), Some("c"));
        assert_eq!(p.take(c), None, "answered once");
        assert_eq!(p.take(99), None, "unknown id");
        assert_eq!(p.next_deadline(), Some(t + Duration::from_secs(1)));
        assert_eq!(p.expired(t + Duration::from_secs(2)), vec![(b, "b")]);
        assert_eq!(p.next_deadline(), Some(t + Duration::from_secs(3)));
        assert_eq!(p.drain(), vec!["a"]);
        assert_eq!(p.len(), 0);
    }
}
