//! A local order book kept consistent with `change_id` / `prev_change_id` (reference §4.5).
//!
//! A change applies only if its `prev_change_id` equals the last applied `change_id`
//! (never assumed +1: the counter is shared across instruments and jumps). A mismatch,
//! or a change before any snapshot, is a gap: the book refuses it, marks itself
//! resyncing, and stays so until the next snapshot. Readers therefore see either a
//! consistent book or a clear "resyncing" state, never a silently corrupted one.
//!
//! ```
//! use websockex_nova_deribit::book::{Applied, OrderBook};
//! use websockex_nova_deribit::types::BookData;
//!
//! let mut book = OrderBook::new("BTC-PERPETUAL");
//! let snap: BookData = serde_json::from_str(r#"{"type":"snapshot","timestamp":1,"instrument_name":"BTC-PERPETUAL","change_id":10,"bids":[["new",100.0,5]],"asks":[["new",101.0,7]]}"#).unwrap();
//! assert_eq!(book.apply(&snap), Applied::Snapshot);
//! let gap: BookData = serde_json::from_str(r#"{"type":"change","timestamp":2,"instrument_name":"BTC-PERPETUAL","prev_change_id":12,"change_id":15,"bids":[],"asks":[]}"#).unwrap();
//! assert_eq!(book.apply(&gap), Applied::Gap { expected: 10, got: 12 });
//! assert!(book.is_resyncing());
//! ```

use std::collections::BTreeMap;

use crate::types::{BookData, LevelAction};

/// A price as an ordered key (prices are finite; NaN never comes from Deribit and is
/// ordered last if it ever did).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Price(f64);

impl Eq for Price {}

impl PartialOrd for Price {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Price {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What applying a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A snapshot replaced the book.
    Snapshot,
    /// A change applied in sequence.
    Change,
    /// A change out of sequence (or before any snapshot): refused; the book is resyncing.
    Gap {
        /// The last applied change id (0 before any snapshot).
        expected: u64,
        /// The change's `prev_change_id`.
        got: u64,
    },
    /// A change for a book already resyncing: ignored until the next snapshot.
    Ignored,
}

/// One instrument's book.
#[derive(Debug, Clone)]
pub struct OrderBook {
    instrument: String,
    bids: BTreeMap<Price, f64>,
    asks: BTreeMap<Price, f64>,
    change_id: Option<u64>,
    resyncing: bool,
    timestamp: u64,
}

impl OrderBook {
    /// An empty book, waiting for its snapshot.
    pub fn new(instrument: impl Into<String>) -> Self {
        OrderBook {
            instrument: instrument.into(),
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            change_id: None,
            resyncing: true,
            timestamp: 0,
        }
    }

    /// The instrument.
    pub fn instrument(&self) -> &str {
        &self.instrument
    }

    /// Whether the book is waiting for a snapshot (at the start, or after a gap).
    pub fn is_resyncing(&self) -> bool {
        self.resyncing
    }

    /// The last applied change id.
    pub fn change_id(&self) -> Option<u64> {
        self.change_id
    }

    /// Milliseconds since the epoch of the last applied message.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Best bid `(price, amount)`; `None` while resyncing or empty.
    pub fn best_bid(&self) -> Option<(f64, f64)> {
        if self.resyncing {
            return None;
        }
        self.bids.iter().next_back().map(|(p, a)| (p.0, *a))
    }

    /// Best ask `(price, amount)`; `None` while resyncing or empty.
    pub fn best_ask(&self) -> Option<(f64, f64)> {
        if self.resyncing {
            return None;
        }
        self.asks.iter().next().map(|(p, a)| (p.0, *a))
    }

    /// Bids best first (empty while resyncing).
    pub fn bids(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.bids
            .iter()
            .rev()
            .filter(|_| !self.resyncing)
            .map(|(p, a)| (p.0, *a))
    }

    /// Asks best first (empty while resyncing).
    pub fn asks(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.asks
            .iter()
            .filter(|_| !self.resyncing)
            .map(|(p, a)| (p.0, *a))
    }

    /// Marks the book stale (e.g. after a reconnect) until the next snapshot.
    pub fn invalidate(&mut self) {
        self.resyncing = true;
    }

    /// Applies one notification.
    pub fn apply(&mut self, data: &BookData) -> Applied {
        if data.is_snapshot() {
            self.bids.clear();
            self.asks.clear();
            apply_levels(&mut self.bids, data, true);
            apply_levels(&mut self.asks, data, false);
            self.change_id = Some(data.change_id);
            self.timestamp = data.timestamp;
            self.resyncing = false;
            return Applied::Snapshot;
        }
        if self.resyncing {
            return Applied::Ignored;
        }
        let prev = data.prev_change_id.unwrap_or(0);
        match self.change_id {
            Some(last) if last == prev => {
                apply_levels(&mut self.bids, data, true);
                apply_levels(&mut self.asks, data, false);
                self.change_id = Some(data.change_id);
                self.timestamp = data.timestamp;
                Applied::Change
            }
            last => {
                self.resyncing = true;
                Applied::Gap {
                    expected: last.unwrap_or(0),
                    got: prev,
                }
            }
        }
    }
}

fn apply_levels(side: &mut BTreeMap<Price, f64>, data: &BookData, bids: bool) {
    let levels = if bids { &data.bids } else { &data.asks };
    for level in levels {
        match level.action {
            LevelAction::Delete => {
                side.remove(&Price(level.price));
            }
            LevelAction::New | LevelAction::Change => {
                if level.amount == 0.0 {
                    side.remove(&Price(level.price));
                } else {
                    side.insert(Price(level.price), level.amount);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(json: &str) -> BookData {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn snapshot_changes_and_jumping_ids() {
        let mut b = OrderBook::new("X");
        assert_eq!(
            b.apply(&msg(r#"{"type":"change","timestamp":1,"instrument_name":"X","prev_change_id":1,"change_id":2}"#)),
            Applied::Ignored,
            "a change before any snapshot waits for one"
        );
        b.apply(&msg(r#"{"type":"snapshot","timestamp":1,"instrument_name":"X","change_id":5000,"bids":[["new",100.0,5],["new",99.5,1]],"asks":[["new",101.0,7]]}"#));
        assert_eq!(b.best_bid(), Some((100.0, 5.0)));
        // change_id jumps by 7: fine, continuity is prev_change_id.
        assert_eq!(
            b.apply(&msg(r#"{"type":"change","timestamp":2,"instrument_name":"X","prev_change_id":5000,"change_id":5007,"bids":[["delete",100.0,0.0],["change",99.5,3]],"asks":[["new",100.5,2]]}"#)),
            Applied::Change
        );
        assert_eq!(b.best_bid(), Some((99.5, 3.0)));
        assert_eq!(b.best_ask(), Some((100.5, 2.0)));
        assert_eq!(b.asks().count(), 2);
        // A skipped message: gap, resyncing, nothing exposed.
        assert_eq!(
            b.apply(&msg(r#"{"type":"change","timestamp":3,"instrument_name":"X","prev_change_id":5010,"change_id":5012}"#)),
            Applied::Gap { expected: 5007, got: 5010 }
        );
        assert!(b.is_resyncing());
        assert_eq!(b.best_bid(), None);
        assert_eq!(b.bids().count(), 0);
        assert_eq!(
            b.apply(&msg(r#"{"type":"change","timestamp":4,"instrument_name":"X","prev_change_id":5012,"change_id":5013}"#)),
            Applied::Ignored
        );
        b.apply(&msg(r#"{"type":"snapshot","timestamp":5,"instrument_name":"X","change_id":6000,"bids":[["new",98.0,1]],"asks":[]}"#));
        assert!(!b.is_resyncing());
        assert_eq!(b.best_bid(), Some((98.0, 1.0)));
        assert_eq!(b.best_ask(), None);
    }
}
