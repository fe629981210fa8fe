//! The single writer's queues (sans-IO): what goes out next, and when.
//!
//! Two queues: *control* (the framework's own calls: auth, subscribe batches) is served
//! first and even while not Ready; *user* (sends, requests, subscribe calls from handles)
//! is served only when Ready, in order, bounded. Both pay the [`TokenBucket`] when a rate
//! limit is set; user requests also respect the in-flight cap. Heartbeat answers never
//! come here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ratelimit::TokenBucket;

/// One queued item with its bookkeeping.
#[derive(Debug)]
pub(crate) struct Queued<T> {
    pub(crate) item: T,
    pub(crate) cost: u32,
    pub(crate) is_request: bool,
    pub(crate) enqueued: Instant,
}

/// What to do next.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// Write this now.
    Write(Queued<T>),
    /// Nothing can go before this instant (credits).
    WaitUntil(Instant),
    /// Nothing to do until something changes (empty, offline, or in-flight cap).
    Idle,
}

#[derive(Debug)]
pub(crate) struct Outbox<T> {
    control: VecDeque<Queued<T>>,
    user: VecDeque<Queued<T>>,
    capacity: usize,
    max_wait: Option<Duration>,
    bucket: Option<TokenBucket>,
    in_flight: usize,
    max_in_flight: usize,
}

impl<T> Outbox<T> {
    pub(crate) fn new(
        capacity: usize,
        bucket: Option<TokenBucket>,
        max_wait: Option<Duration>,
        max_in_flight: usize,
    ) -> Self {
        Outbox {
            control: VecDeque::new(),
            user: VecDeque::new(),
            capacity,
            max_wait,
            bucket,
            in_flight: 0,
            max_in_flight,
        }
    }

    /// A new credit budget: credits left carry over, capped at the new burst.
    pub(crate) fn set_rate_limit(
        &mut self,
        limit: Option<(u32, f64)>,
        max_wait: Option<Duration>,
        now: Instant,
    ) {
        self.bucket = limit.map(|(burst, per_second)| match self.bucket.take() {
            Some(old) => old.resized(burst, per_second, now),
            None => TokenBucket::new(burst, per_second, now),
        });
        self.max_wait = max_wait;
    }

    pub(crate) fn set_max_in_flight(&mut self, max: usize) {
        self.max_in_flight = max;
    }

    /// A new bound for the user queue; what is queued beyond it stays (nothing is dropped)
    /// and further pushes wait for room.
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Queues user traffic; `Err` hands it back when the queue is full.
    pub(crate) fn push_user(&mut self, q: Queued<T>) -> Result<(), Queued<T>> {
        if self.user.len() >= self.capacity {
            return Err(q);
        }
        self.user.push_back(q);
        Ok(())
    }

    /// Queues the framework's own traffic (bounded by what the framework issues).
    pub(crate) fn push_control(&mut self, q: Queued<T>) {
        self.control.push_back(q);
    }

    /// Whether the bucket can pay `cost` right now without queueing (for `OnLimit::Reject`):
    /// true when nothing waits ahead and credits are there (they are *not* taken).
    pub(crate) fn could_send_now(&self, cost: u32, now: Instant) -> bool {
        self.user.is_empty()
            && self.control.is_empty()
            && self
                .bucket
                .as_ref()
                .is_none_or(|b| b.ready_at(cost, now) <= now)
    }

    /// Whether `cost` can ever be paid.
    pub(crate) fn payable(&self, cost: u32) -> bool {
        self.bucket.as_ref().is_none_or(|b| b.can_ever_pay(cost))
    }

    /// The next thing to write. `ready`: whether user traffic may flow.
    pub(crate) fn next(&mut self, now: Instant, ready: bool) -> Next<T> {
        let from_control = !self.control.is_empty();
        let queue = if from_control {
            &mut self.control
        } else if ready {
            &mut self.user
        } else {
            return Next::Idle;
        };
        let Some(front) = queue.front() else {
            return Next::Idle;
        };
        if !from_control && front.is_request && self.in_flight >= self.max_in_flight {
            return Next::Idle;
        }
        if let Some(bucket) = &mut self.bucket {
            if !bucket.try_take(front.cost, now) {
                return Next::WaitUntil(bucket.ready_at(front.cost, now));
            }
        }
        let q = queue.pop_front().expect("front exists");
        if !from_control && q.is_request {
            self.in_flight += 1;
        }
        Next::Write(q)
    }

    /// A user request left the in-flight set (answered, timed out or lost).
    pub(crate) fn request_done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The link is gone: nothing is in flight any more; control traffic is void.
    pub(crate) fn link_lost(&mut self) -> Vec<T> {
        self.in_flight = 0;
        self.control.drain(..).map(|q| q.item).collect()
    }

    /// User items that waited longer than `max_wait` while Ready.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<T> {
        let Some(max) = self.max_wait else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while self
            .user
            .front()
            .is_some_and(|q| now.saturating_duration_since(q.enqueued) >= max)
        {
            out.push(self.user.pop_front().expect("front exists").item);
        }
        out
    }

    /// When the oldest user item expires (only meaningful while Ready).
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let max = self.max_wait?;
        self.user.front().and_then(|q| q.enqueued.checked_add(max))
    }

    /// Everything still queued (for the final close).
    pub(crate) fn drain_all(&mut self) -> Vec<T> {
        self.control
            .drain(..)
            .chain(self.user.drain(..))
            .map(|q| q.item)
            .collect()
    }

    pub(crate) fn user_len(&self) -> usize {
        self.user.len()
    }

    /// Everything waiting: control and user items.
    pub(crate) fn len(&self) -> usize {
        self.control.len() + self.user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(item: u32, is_request: bool, now: Instant) -> Queued<u32> {
        Queued {
            item,
            cost: 1,
            is_request,
            enqueued: now,
        }
    }

    #[test]
    fn control_first_user_only_when_ready() {
        let t = Instant::now();
        let mut o = Outbox::new(10, None, None, 10);
        o.push_user(q(1, false, t)).unwrap();
        o.push_control(q(2, true, t));
        assert!(matches!(
            o.next(t, false),
            Next::Write(Queued { item: 2, .. })
        ));
        assert!(matches!(o.next(t, false), Next::Idle));
        assert!(matches!(
            o.next(t, true),
            Next::Write(Queued { item: 1, .. })
        ));
    }

    #[test]
    fn bounded_and_capped_and_metered() {
        let t = Instant::now();
        let mut o = Outbox::new(2, Some(TokenBucket::new(1, 1.0, t)), None, 1);
        o.push_user(q(1, true, t)).unwrap();
        o.push_user(q(2, true, t)).unwrap();
        assert!(o.push_user(q(3, true, t)).is_err());
        assert!(matches!(
            o.next(t, true),
            Next::Write(Queued { item: 1, .. })
        ));
        assert!(matches!(o.next(t, true), Next::Idle), "in-flight cap");
        o.request_done();
        match o.next(t, true) {
            Next::WaitUntil(at) => assert_eq!(at, t + Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            o.next(t + Duration::from_secs(1), true),
            Next::Write(Queued { item: 2, .. })
        ));
    }

    #[test]
    fn expiry_only_for_old_items() {
        let t = Instant::now();
        let mut o = Outbox::new(10, None, Some(Duration::from_secs(1)), 10);
        o.push_user(q(1, false, t)).unwrap();
        o.push_user(q(2, false, t + Duration::from_millis(500)))
            .unwrap();
        assert_eq!(o.next_expiry(), Some(t + Duration::from_secs(1)));
        assert_eq!(o.expired(t + Duration::from_secs(1)), vec![1]);
        assert_eq!(o.user_len(), 1);
    }
}
