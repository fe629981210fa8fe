//! A bounded inbound stream (events, a subscription): putting items in after what the
//! stream owes its reader, and the receiving half, made so that the connection can evict
//! its oldest data item under [`OverflowPolicy::DropOldest`].
//!
//! Every item goes in behind the announcements its stream owes ([`Lag`]): a gap is announced
//! where it is, before the next message.
//!
//! Streams of the other policies hold the tokio receiver directly: no lock on the reader's
//! path. A `DropOldest` stream shares it behind a mutex with the connection, which, when the
//! stream is full, pops items from the head until it finds a data item to drop. Lifecycle
//! items met on the way are never dropped: they move to a small `kept` queue that the reader
//! takes first, so the order stays as sent, and the drop itself is announced there, right
//! where the dropped item was (a `Lagged` after them, merged with one just before).
//!
//! [`OverflowPolicy::DropOldest`]: crate::OverflowPolicy::DropOldest

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::event::Event;
use crate::lag::{Lag, Owed};
use crate::subscription::SubscriptionEvent;

/// What a stream carries: data the overflow policy may drop, lifecycle items it never
/// drops, and the announcements of drops.
pub(crate) trait StreamItem: Sized {
    fn is_data(&self) -> bool;
    /// The announcement of `dropped` drops.
    fn lagged(dropped: u64) -> Self;
    /// The marker of a restored subscription (`None`: this stream never owes one).
    fn resubscribed() -> Option<Self>;
    /// Counts one more drop if this is a drop announcement.
    fn merge_drop(&mut self) -> bool;

    /// The announcement of `owed`.
    fn announcement(owed: Owed) -> Option<Self> {
        match owed {
            Owed::Lagged(dropped) => Some(Self::lagged(dropped)),
            Owed::Resubscribed => Self::resubscribed(),
        }
    }
}

impl StreamItem for Event {
    fn is_data(&self) -> bool {
        matches!(self, Event::Message(_))
    }

    fn lagged(dropped: u64) -> Self {
        Event::Lagged { dropped }
    }

    /// Markers are per subscription; the event stream has `Event::Resubscribed` itself.
    fn resubscribed() -> Option<Self> {
        None
    }

    fn merge_drop(&mut self) -> bool {
        match self {
            Event::Lagged { dropped } => {
                *dropped += 1;
                true
            }
            _ => false,
        }
    }
}

impl StreamItem for SubscriptionEvent {
    fn is_data(&self) -> bool {
        matches!(self, SubscriptionEvent::Notification { .. })
    }

    fn lagged(dropped: u64) -> Self {
        SubscriptionEvent::Lagged { dropped }
    }

    fn resubscribed() -> Option<Self> {
        Some(SubscriptionEvent::Resubscribed)
    }

    fn merge_drop(&mut self) -> bool {
        match self {
            SubscriptionEvent::Lagged { dropped } => {
                *dropped += 1;
                true
            }
            _ => false,
        }
    }
}

/// With room for one item: what `lag` owes takes it first. Gives `item` back if the room
/// went to an announcement.
#[inline]
pub(crate) fn put_one<T: StreamItem>(permit: mpsc::Permit<'_, T>, lag: &Lag, item: T) -> Option<T> {
    if lag.owes() {
        if let Some(owed) = lag.take_owed() {
            if let Some(announcement) = T::announcement(owed) {
                permit.send(announcement);
                return Some(item);
            }
        }
    }
    permit.send(item);
    None
}

/// Puts what `lag` owes, then `item`, without waiting; gives `item` back if the stream is
/// full (what is still owed stays owed) or closed.
#[inline]
pub(crate) fn try_put<T: StreamItem>(
    tx: &mpsc::Sender<T>,
    lag: &Lag,
    item: T,
) -> Result<(), TrySendError<T>> {
    // One load on the way of every message; the owed path is out of line.
    if lag.owes() {
        if let Err(e) = flush_owed(tx, lag) {
            return Err(match e {
                TrySendError::Full(()) => TrySendError::Full(item),
                TrySendError::Closed(()) => TrySendError::Closed(item),
            });
        }
    }
    tx.try_send(item)
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

/// Puts what `lag` owes while there is room; `Err` if some is still owed (the stream is
/// full or closed).
#[cold]
#[inline(never)]
pub(crate) fn flush_owed<T: StreamItem>(
    tx: &mpsc::Sender<T>,
    lag: &Lag,
) -> Result<(), TrySendError<()>> {
    while lag.owes() {
        let permit = tx.try_reserve()?;
        if let Some(announcement) = lag.take_owed().and_then(T::announcement) {
            permit.send(announcement);
        }
    }
    Ok(())
}

/// Drops the oldest data item of a full stream and announces the drop in its place;
/// `false` if the stream holds no data (then the caller drops the newest instead).
pub(crate) fn evict_oldest<T: StreamItem>(evictor: &Evictor<T>) -> bool {
    let mut s = lock(evictor);
    while let Ok(item) = s.rx.try_recv() {
        if item.is_data() {
            if !s.kept.back_mut().is_some_and(T::merge_drop) {
                s.kept.push_back(T::lagged(1));
            }
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
        Lagged(u64),
        Resubscribed,
    }
    impl StreamItem for Item {
        fn is_data(&self) -> bool {
            matches!(self, Item::Data(_))
        }
        fn lagged(dropped: u64) -> Self {
            Item::Lagged(dropped)
        }
        fn resubscribed() -> Option<Self> {
            Some(Item::Resubscribed)
        }
        fn merge_drop(&mut self) -> bool {
            match self {
                Item::Lagged(n) => {
                    *n += 1;
                    true
                }
                _ => false,
            }
        }
    }

    fn drain(rx: &mut Rx<Item>) -> Vec<Item> {
        std::iter::from_fn(|| rx.try_recv()).collect()
    }

    #[test]
    fn evicts_the_oldest_data_keeps_marks_in_order_and_announces_the_gap_in_place() {
        let (tx, mut rx, evictor) = channel(3, true);
        let evictor = evictor.unwrap();
        tx.try_send(Item::Mark(0)).unwrap();
        tx.try_send(Item::Data(1)).unwrap();
        tx.try_send(Item::Data(2)).unwrap();
        assert!(tx.try_send(Item::Data(3)).is_err());
        assert!(evict_oldest(&evictor)); // Mark(0) kept, Data(1) dropped
        tx.try_send(Item::Data(3)).unwrap();
        assert_eq!(
            drain(&mut rx),
            [Item::Mark(0), Item::Lagged(1), Item::Data(2), Item::Data(3)]
        );

        let (tx2, mut rx2, ev2) = channel(8, true);
        let ev2 = ev2.unwrap();
        for i in 0..500 {
            if let Err(TrySendError::Full(item)) = tx2.try_send(Item::Data(i)) {
                assert!(evict_oldest(&ev2));
                tx2.try_send(item).unwrap();
            }
        }
        let mut want = vec![Item::Lagged(492)];
        want.extend((492..500).map(Item::Data));
        assert_eq!(
            drain(&mut rx2),
            want,
            "one announcement, merged, before the rest"
        );

        tx.try_send(Item::Mark(1)).unwrap();
        assert!(!evict_oldest(&evictor), "no data to drop");
        assert_eq!(rx.try_recv(), Some(Item::Mark(1)));
    }

    #[test]
    fn what_is_owed_goes_in_before_the_next_item() {
        let (tx, mut rx, _) = channel(3, false);
        let lag = Lag::default();
        for i in 0..3 {
            try_put(&tx, &lag, Item::Data(i)).unwrap();
        }
        // Full: the newest are dropped and counted.
        for i in 3..6 {
            assert!(matches!(
                try_put(&tx, &lag, Item::Data(i)),
                Err(TrySendError::Full(_))
            ));
            lag.add();
        }
        lag.owe_marker();
        assert_eq!(rx.try_recv(), Some(Item::Data(0)));
        // Room for one: it goes to the announcement, the item is refused (and dropped).
        assert!(try_put(&tx, &lag, Item::Data(6)).is_err());
        lag.add();
        assert_eq!(
            drain(&mut rx),
            [Item::Data(1), Item::Data(2), Item::Lagged(3)]
        );
        try_put(&tx, &lag, Item::Data(7)).unwrap();
        assert_eq!(
            drain(&mut rx),
            [Item::Lagged(1), Item::Resubscribed, Item::Data(7)]
        );
        assert!(!lag.owes());
    }
}
