//! What the run's tasks share: the clients, the tallies and the violations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;
use websockex_nova::metrics::DefaultMetricsCollector;
use websockex_nova::{Client, State};
use websockex_nova_deribit::DeribitClient;
use websockex_nova_testkit::deribit::DeribitSim;

use super::setup::ACCOUNTS;

#[derive(Debug, Default)]
pub(super) struct RequestTally {
    pub(super) sent: u64,
    pub(super) resolved: u64,
    pub(super) ok: u64,
    pub(super) api_error: u64,
    pub(super) timeout: u64,
    pub(super) disconnected_sent: u64,
    pub(super) disconnected_unsent: u64,
    pub(super) other: u64,
    pub(super) abandoned: u64,
    pub(super) api_codes: BTreeMap<i64, u64>,
    pub(super) other_kinds: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub(super) struct StreamTally {
    pub(super) client: usize,
    pub(super) channel: String,
    pub(super) received: u64,
    pub(super) last_at: Option<Instant>,
    pub(super) lagged: u64,
    pub(super) dropped: u64,
    pub(super) resubscribed: u64,
    pub(super) gaps: BTreeMap<&'static str, u64>,
    pub(super) venue_gaps: u64,
    pub(super) resyncs: u64,
    pub(super) by_hand: u64,
    pub(super) silent: u64,
    pub(super) repeats: u64,
    pub(super) backwards: u64,
    /// Notifications that did not decode.
    pub(super) malformed: u64,
    /// The book is consistent (for `BookStream`: not resyncing).
    pub(super) consistent: bool,
}

#[derive(Debug, Default)]
pub(super) struct EventTally {
    /// `Connected` after the first (the attempt number restarts after a stable link).
    pub(super) reconnects: u64,
    pub(super) connected: u64,
    pub(super) disconnects: BTreeMap<String, u64>,
    pub(super) resubscribes: u64,
    pub(super) refused: u64,
    pub(super) authenticated: u64,
    pub(super) refreshed: u64,
    pub(super) lagged: u64,
    pub(super) dropped: u64,
    pub(super) late_responses: u64,
    pub(super) messages: u64,
    pub(super) errors: u64,
    pub(super) restarts: u64,
}

/// One client of the run and what the harness keeps about it.
pub(super) struct Side {
    pub(super) deribit: DeribitClient,
    pub(super) metrics: DefaultMetricsCollector,
    /// The harness's own readers stop while `true` (`lagging_reader`).
    pub(super) paused: watch::Sender<bool>,
}

impl Side {
    pub(super) fn client(&self) -> &Client {
        self.deribit.client()
    }

    pub(super) fn drops(&self) -> u64 {
        self.metrics.snapshot().dropped
    }
}

/// Everything the tasks share.
pub(super) struct Shared {
    pub(super) sim: DeribitSim,
    pub(super) sides: Vec<Side>,
    pub(super) requests: Mutex<RequestTally>,
    pub(super) streams: Mutex<Vec<StreamTally>>,
    pub(super) events: Mutex<Vec<EventTally>>,
    pub(super) violations: Mutex<Vec<String>>,
    /// Workers stop after their current request.
    pub(super) stop: AtomicBool,
    /// Venue gaps seen per client (`book_gap` waits for one).
    pub(super) venue_gaps: [AtomicU64; 3],
    /// `Lagged` seen per client (`lagging_reader` waits for one).
    pub(super) lagged: [AtomicU64; 3],
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(super) fn violation(&self, text: String) {
        let mut v = lock(&self.violations);
        if v.len() < 20 {
            v.push(text);
        }
    }

    /// The simulator's connection of client `i`: the newest one of its account.
    pub(super) fn conn_of(&self, i: usize) -> Option<usize> {
        self.sim
            .connections()
            .into_iter()
            .rev()
            .find(|c| self.sim.account(*c).as_deref() == Some(ACCOUNTS[i].0))
    }

    pub(super) fn is_venue_gap(&self, channel: &str, skipped: u64) -> bool {
        self.sim
            .gaps()
            .iter()
            .any(|g| g.channel == channel && g.change_id == skipped)
    }

    pub(super) fn closing(&self, i: usize) -> bool {
        self.sides[i].client().status().state == State::Closed
    }
}
