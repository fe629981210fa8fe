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

use crate::config::OverflowPolicy;
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

/// What became of an item offered to a stream without waiting.
#[derive(Debug)]
pub(crate) enum Offer<T> {
    /// In the stream.
    Put,
    /// The stream was full: this many dropped by the policy (counted here, announced where
    /// the gap is; under `DropOldest` the offered item went in).
    Dropped(u64),
    /// Full under `Block`: the caller waits for room, for what is owed and then the item.
    Full(T),
    /// Full under `Disconnect`: the item is counted as dropped; the caller replaces the link.
    Overflow,
    /// The reader is gone.
    Closed,
}

/// Offers `item` to a stream under `policy`, without waiting: behind what the stream owes
/// (a gap is announced before the next message); when full, dropping the newest (counted,
/// owed), evicting the oldest data (announced in its place), or handing the item back to
/// wait or to replace the link.
#[inline]
pub(crate) fn offer<T: StreamItem>(
    tx: &mpsc::Sender<T>,
    lag: &Lag,
    evictor: Option<&Evictor<T>>,
    policy: OverflowPolicy,
    item: T,
) -> Offer<T> {
    let item = match try_put(tx, lag, item) {
        Ok(()) => return Offer::Put,
        Err(TrySendError::Full(item)) => item,
        Err(TrySendError::Closed(_)) => return Offer::Closed,
    };
    match (policy, evictor) {
        (OverflowPolicy::Block, _) => Offer::Full(item),
        (OverflowPolicy::DropOldest, Some(evictor)) => evict_for(tx, lag, evictor, item),
        (OverflowPolicy::Disconnect, _) => {
            lag.add();
            Offer::Overflow
        }
        // `DropNewest` (and a `DropOldest` stream that cannot evict, which is never built).
        _ => {
            lag.add();
            Offer::Dropped(1)
        }
    }
}

/// `DropOldest` on a full stream: each eviction makes room for one (and announces itself
/// in place); what is owed may take that room first.
#[cold]
fn evict_for<T: StreamItem>(
    tx: &mpsc::Sender<T>,
    lag: &Lag,
    evictor: &Evictor<T>,
    mut item: T,
) -> Offer<T> {
    let mut dropped = 0;
    loop {
        if !evict_oldest(evictor) {
            // Nothing but lifecycle items queued: the newest goes.
            lag.add();
            return Offer::Dropped(dropped + 1);
        }
        dropped += 1;
        match try_put(tx, lag, item) {
            Ok(()) => return Offer::Dropped(dropped),
            Err(TrySendError::Full(back)) => item = back,
            Err(TrySendError::Closed(_)) => return Offer::Closed,
        }
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

    /// The reader's side of a subscription stream: queued items, then what is owed.
    fn read(rx: &mut Rx<Item>, lag: &Lag) -> Option<Item> {
        rx.try_recv()
            .or_else(|| lag.take_owed().and_then(Item::announcement))
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// The connection offers the next numbered message.
        Offer,
        /// The reader takes one item.
        Read,
        /// A reconnect restored the subscription: its marker.
        Resubscribed,
    }

    proptest::proptest! {
        /// Any interleaving of offers, reads and markers under either dropping policy: every
        /// gap between two messages the reader gets is announced right there, with exactly
        /// its size; every drop is counted once; no marker is lost or put on the wrong side
        /// of a message.
        #[test]
        fn every_gap_is_announced_in_place_exactly(
            capacity in 1usize..5,
            oldest: bool,
            ops in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::strategy::Just(Op::Offer),
                    3 => proptest::strategy::Just(Op::Read),
                    1 => proptest::strategy::Just(Op::Resubscribed),
                ],
                0..300,
            ),
        ) {
            let policy = if oldest { OverflowPolicy::DropOldest } else { OverflowPolicy::DropNewest };
            let (tx, mut rx, evictor) = channel::<Item>(capacity, oldest);
            let lag = Lag::default();
            let (mut next, mut counted) = (0u32, 0u64);
            let mut markers = Vec::new(); // the first message number after each marker
            let mut seen = Vec::new();
            for op in ops {
                match op {
                    Op::Offer => {
                        match offer(&tx, &lag, evictor.as_ref(), policy, Item::Data(next)) {
                            Offer::Put => {}
                            Offer::Dropped(n) => counted += n,
                            other => panic!("{other:?}"),
                        }
                        next += 1;
                    }
                    Op::Read => seen.extend(read(&mut rx, &lag)),
                    Op::Resubscribed => {
                        markers.push(next);
                        lag.owe_marker();
                        let _ = flush_owed(&tx, &lag);
                    }
                }
            }
            seen.extend(std::iter::from_fn(|| read(&mut rx, &lag)));

            let (mut expected, mut announced, mut total) = (0u32, 0u64, 0u64);
            for item in &seen {
                match item {
                    Item::Data(m) => {
                        proptest::prop_assert!(*m >= expected, "{m} after {expected}: {seen:?}");
                        proptest::prop_assert_eq!(announced, u64::from(m - expected), "before {}: {:?}", m, seen);
                        expected = m + 1;
                        announced = 0;
                    }
                    Item::Lagged(n) => {
                        announced += n;
                        total += n;
                    }
                    Item::Resubscribed => {}
                    Item::Mark(_) => unreachable!(),
                }
            }
            proptest::prop_assert_eq!(announced, u64::from(next - expected), "after the last: {:?}", seen);
            proptest::prop_assert_eq!(total, counted, "announced once each");
            // Markers made with no message between them may go in as one; each must sit
            // after every message before it and before every message after it.
            for m in markers {
                proptest::prop_assert!(
                    marker_in_place(&seen, m),
                    "marker before {} lost or misplaced: {:?}", m, seen
                );
            }
        }
    }

    /// Some `Resubscribed` lies after every message numbered below `boundary` and before
    /// every message numbered `boundary` or above.
    fn marker_in_place(seen: &[Item], boundary: u32) -> bool {
        let last_before = seen
            .iter()
            .rposition(|i| matches!(i, Item::Data(d) if *d < boundary));
        let first_after = seen
            .iter()
            .position(|i| matches!(i, Item::Data(d) if *d >= boundary))
            .unwrap_or(seen.len());
        seen.iter().enumerate().any(|(k, i)| {
            matches!(i, Item::Resubscribed) && last_before.is_none_or(|b| k > b) && k < first_after
        })
    }
}
