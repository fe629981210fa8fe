//! Sans-IO continuity checks: where a stream's sequence stands, and whether a gap was covered.

/// What a stream's messages are checked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// `timestamp` strictly increasing (no sequence: gaps are invisible).
    Ticker,
    /// `trade_seq` of every trade, +1 each.
    Trades,
    /// `change_id` / `prev_change_id`; a snapshot starts a new chain.
    Book,
}

/// What one message (one trade) says about continuity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The first after a (re)start: nothing to compare with.
    First,
    InOrder,
    /// Something is missing between `after` and `got`.
    Gap {
        after: u64,
        got: u64,
    },
    Repeat,
    Backwards,
    /// A book change while waiting for a snapshot: not part of any chain.
    Ignored,
}

/// Sans-IO: the last position of one stream.
#[derive(Debug, Default)]
pub(super) struct Chain {
    last: Option<u64>,
}

impl Chain {
    pub(super) fn restart(&mut self) {
        self.last = None;
    }

    /// A sequence number that must go up by one (trades).
    pub(super) fn seq(&mut self, seq: u64) -> Step {
        let step = match self.last {
            None => Step::First,
            Some(l) if seq == l + 1 => Step::InOrder,
            Some(l) if seq == l => return Step::Repeat,
            Some(l) if seq < l => return Step::Backwards,
            Some(l) => Step::Gap { after: l, got: seq },
        };
        self.last = Some(seq);
        step
    }

    /// A timestamp that must go up (tickers).
    pub(super) fn time(&mut self, ts: u64) -> Step {
        let step = match self.last {
            None => Step::First,
            Some(l) if ts > l => Step::InOrder,
            Some(l) if ts == l => return Step::Repeat,
            Some(_) => return Step::Backwards,
        };
        self.last = Some(ts);
        step
    }

    /// A book message: a snapshot starts a chain, a change must name the last as previous.
    pub(super) fn book(&mut self, snapshot: bool, change_id: u64, prev: Option<u64>) -> Step {
        if snapshot {
            self.last = Some(change_id);
            return Step::First;
        }
        let Some(l) = self.last else {
            return Step::Ignored;
        };
        let step = match prev {
            Some(p) if p == l => Step::InOrder,
            _ if change_id == l => return Step::Repeat,
            _ if change_id < l => return Step::Backwards,
            p => Step::Gap {
                after: l,
                got: p.unwrap_or(0),
            },
        };
        self.last = Some(change_id);
        step
    }
}

/// Why a gap was allowed, or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cover {
    /// `Lagged` or `Resubscribed` came first on this stream (since the last message in
    /// order: an announcement sits where its gap is).
    Announced,
    /// The venue skipped it on purpose (a `book_gap` fault).
    Venue,
    Silent,
}

impl Cover {
    /// Its key in the report's `gaps` counts.
    pub(super) fn name(self) -> &'static str {
        match self {
            Cover::Announced => "announced",
            Cover::Venue => "venue",
            Cover::Silent => "silent",
        }
    }
}

/// Sans-IO: the verdict on a gap.
pub(super) fn cover(announced: bool, venue: bool) -> Cover {
    if venue {
        Cover::Venue
    } else if announced {
        Cover::Announced
    } else {
        Cover::Silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_see_gaps_repeats_and_reordering() {
        let mut c = Chain::default();
        assert_eq!(c.seq(5), Step::First);
        assert_eq!(c.seq(6), Step::InOrder);
        assert_eq!(c.seq(6), Step::Repeat);
        assert_eq!(c.seq(4), Step::Backwards);
        assert_eq!(c.seq(9), Step::Gap { after: 6, got: 9 });
        assert_eq!(c.seq(10), Step::InOrder);

        let mut t = Chain::default();
        assert_eq!(t.time(100), Step::First);
        assert_eq!(t.time(150), Step::InOrder);
        assert_eq!(t.time(150), Step::Repeat);
        assert_eq!(t.time(120), Step::Backwards);

        let mut b = Chain::default();
        assert_eq!(b.book(false, 10, Some(9)), Step::Ignored);
        assert_eq!(b.book(true, 10, None), Step::First);
        assert_eq!(b.book(false, 14, Some(10)), Step::InOrder);
        assert_eq!(b.book(false, 14, Some(10)), Step::Repeat);
        assert_eq!(
            b.book(false, 20, Some(17)),
            Step::Gap { after: 14, got: 17 }
        );
        assert_eq!(b.book(false, 22, Some(20)), Step::InOrder);
        b.restart();
        assert_eq!(b.book(false, 25, Some(22)), Step::Ignored);
    }

    #[test]
    fn a_gap_is_covered_only_by_an_announcement_in_place_or_the_venue() {
        assert_eq!(cover(true, false), Cover::Announced);
        assert_eq!(cover(true, true), Cover::Venue);
        assert_eq!(cover(false, true), Cover::Venue);
        assert_eq!(cover(false, false), Cover::Silent);
    }
}
