//! What a bounded stream owes its reader: messages dropped by the overflow policy and not
//! yet announced, and a `Resubscribed` marker that found the stream full.
//!
//! Owed announcements go into the stream before the next item (see
//! [`inbox::try_put`](crate::inbox::try_put)), so a gap is announced where it is: a reader
//! that sees message *n*, then `Lagged(k)`, then message *n + k + 1* knows exactly what is
//! missing. A reader whose queue is drained takes the drops itself, so an announcement
//! never waits for the next message; the count is taken with one atomic swap, so each drop
//! is announced once, by whichever side takes it first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The owed-marker bit; the bits below count drops (2^63 of them will not happen).
const MARKER: u64 = 1 << 63;

/// Announcements owed to one stream, shared by the connection and the stream's reader.
///
/// Relaxed ordering is enough: the count is one location (its read-modify-writes are
/// totally ordered, so nothing is announced twice) and the position of an announcement is
/// decided by the connection alone, which both adds and takes on its own task.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lag(Arc<AtomicU64>);

/// An announcement owed to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owed {
    /// This many messages were dropped.
    Lagged(u64),
    /// The subscription was restored after a reconnect.
    Resubscribed,
}

impl Lag {
    /// One more message dropped.
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the drops not yet announced (the event stream's reader, once drained).
    pub(crate) fn take(&self) -> u64 {
        self.0.fetch_and(MARKER, Ordering::Relaxed) & !MARKER
    }

    /// A `Resubscribed` marker found the stream full: it is owed.
    pub(crate) fn owe_marker(&self) {
        self.0.fetch_or(MARKER, Ordering::Relaxed);
    }

    /// Anything owed? One load: the check on every delivery.
    #[inline]
    pub(crate) fn owes(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    /// Takes the first announcement owed: drops before the marker. (Drops made while the
    /// marker waited are newer than it; both go in before the next message, which is what
    /// a reader needs to know there is a gap and how big it is.)
    pub(crate) fn take_owed(&self) -> Option<Owed> {
        match self.take() {
            0 => (self.0.fetch_and(!MARKER, Ordering::Relaxed) & MARKER != 0)
                .then_some(Owed::Resubscribed),
            n => Some(Owed::Lagged(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_come_before_the_marker_and_each_is_taken_once() {
        let lag = Lag::default();
        assert!(!lag.owes());
        assert_eq!(lag.take_owed(), None);
        lag.add();
        lag.owe_marker();
        lag.add();
        assert!(lag.owes());
        assert_eq!(lag.take_owed(), Some(Owed::Lagged(2)));
        assert_eq!(lag.take(), 0, "the marker is not a drop");
        assert_eq!(lag.take_owed(), Some(Owed::Resubscribed));
        assert_eq!(lag.take_owed(), None);
        assert!(!lag.owes());

        lag.add();
        lag.owe_marker();
        assert_eq!(lag.take(), 1);
        assert!(
            lag.owes(),
            "the marker stays owed after the reader takes the drops"
        );
        assert_eq!(lag.take_owed(), Some(Owed::Resubscribed));
    }
}
