//! The receiving half of a bounded inbound stream (events, a subscription), made so that the
//! connection can evict its oldest data item under [`OverflowPolicy::DropOldest`].
//!
//! Streams of the other policies hold the tokio receiver directly: no lock on the reader's
//! path. A `DropOldest` stream shares it behind a mutex with the connection, which, when the
//! stream is full, pops items from the head until it finds a data item to drop. Lifecycle
//! items met on the way are never dropped: they move to a small `kept` queue that the reader
//! takes first, so the order stays as sent.
//!
//! [`OverflowPolicy::DropOldest`]: crate::OverflowPolicy::DropOldest

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

/// Items the overflow policy may drop (data), as opposed to lifecycle items (never dropped).
pub(crate) trait Droppable {
    fn is_data(&self) -> bool;
}

impl Droppable for crate::event::Event {
    fn is_data(&self) -> bool {
        matches!(self, crate::event::Event::Message(_))
    }
}

impl Droppable for crate::subscription::SubscriptionEvent {
    fn is_data(&self) -> bool {
        matches!(
            self,
            crate::subscription::SubscriptionEvent::Notification { .. }
        )
    }
}

#[derive(Debug)]
pub(crate) struct Shared<T> {
    rx: mpsc::Receiver<T>,
    kept: VecDeque<T>,
}

/// The reader's end.
#[derive(Debug)]
pub(crate) enum Rx<T> {
    Owned(mpsc::Receiver<T>),
    Shared(Arc<Mutex<Shared<T>>>),
}

/// The connection's handle for evicting from a `DropOldest` stream.
pub(crate) type Evictor<T> = Arc<Mutex<Shared<T>>>;

/// A bounded stream; `evictable` makes it a `DropOldest` one.
pub(crate) fn channel<T>(
    capacity: usize,
    evictable: bool,
) -> (mpsc::Sender<T>, Rx<T>, Option<Evictor<T>>) {
    let (tx, rx) = mpsc::channel(capacity);
    if evictable {
        let shared = Arc::new(Mutex::new(Shared {
            rx,
            kept: VecDeque::new(),
        }));
        (tx, Rx::Shared(shared.clone()), Some(shared))
    } else {
        (tx, Rx::Owned(rx), None)
    }
}

fn lock<T>(m: &Mutex<Shared<T>>) -> MutexGuard<'_, Shared<T>> {
    // Nothing in here panics while holding the lock; a poisoned lock is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Rx<T> {
    #[inline]
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self {
            Rx::Owned(rx) => rx.poll_recv(cx),
            Rx::Shared(s) => {
                let mut s = lock(s);
                match s.kept.pop_front() {
                    Some(item) => Poll::Ready(Some(item)),
                    None => s.rx.poll_recv(cx),
                }
            }
        }
    }

    #[inline]
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        match self {
            Rx::Owned(rx) => rx.try_recv().ok(),
            Rx::Shared(s) => {
                let mut s = lock(s);
                s.kept.pop_front().or_else(|| s.rx.try_recv().ok())
            }
        }
    }
}

/// Drops the oldest data item of a full stream; `false` if it holds none (then the caller
/// drops the newest instead).
pub(crate) fn evict_oldest<T: Droppable>(evictor: &Evictor<T>) -> bool {
    let mut s = lock(evictor);
    while let Ok(item) = s.rx.try_recv() {
        if item.is_data() {
            return true;
        }
        s.kept.push_back(item);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Item {
        Data(u32),
        Mark(u32),
    }
    impl Droppable for Item {
        fn is_data(&self) -> bool {
            matches!(self, Item::Data(_))
        }
    }

    #[test]
    fn evicts_the_oldest_data_and_keeps_marks_in_order() {
        let (tx, mut rx, evictor) = channel(3, true);
        let evictor = evictor.unwrap();
        tx.try_send(Item::Mark(0)).unwrap();
        tx.try_send(Item::Data(1)).unwrap();
        tx.try_send(Item::Data(2)).unwrap();
        assert!(tx.try_send(Item::Data(3)).is_err());
        assert!(evict_oldest(&evictor)); // Mark(0) kept, Data(1) dropped
        tx.try_send(Item::Data(3)).unwrap();
        let got: Vec<Item> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got, [Item::Mark(0), Item::Data(2), Item::Data(3)]);

        let (tx2, mut rx2, ev2) = channel(8, true);
        let ev2 = ev2.unwrap();
        for i in 0..500 {
            if let Err(mpsc::error::TrySendError::Full(item)) = tx2.try_send(Item::Data(i)) {
                assert!(evict_oldest(&ev2));
                tx2.try_send(item).unwrap();
            }
        }
        let got: Vec<Item> = std::iter::from_fn(|| rx2.try_recv()).collect();
        assert_eq!(got, (492..500).map(Item::Data).collect::<Vec<_>>());

        tx.try_send(Item::Mark(1)).unwrap();
        assert!(!evict_oldest(&evictor), "no data to drop");
        assert_eq!(rx.try_recv(), Some(Item::Mark(1)));
    }
}
