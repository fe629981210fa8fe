//! The harness's readers: raw subscriptions and the typed book (each checking continuity),
//! and the event streams.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use websockex_nova::{Error, Event, Events, Subscription, SubscriptionEvent};
use websockex_nova_deribit::{BookEvent, BookStream};

use super::continuity::{cover, Chain, Check, Cover, Step};
use super::setup::{book_interval, NAMES, STREAMS};
use super::state::{lock, Shared, StreamTally};

/// Waits while the harness pauses this client's readers.
async fn wait_unpaused(paused: &mut watch::Receiver<bool>) {
    if *paused.borrow_and_update() {
        let _ = paused.wait_for(|p| !*p).await;
    }
}

/// Retries `subscribe` until it works, or the client is closed (`None`).
async fn until_subscribed<T, F>(mut subscribe: impl FnMut() -> F) -> Option<T>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    loop {
        match subscribe().await {
            Ok(sub) => return Some(sub),
            Err(e) if e.is_closed() => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Subscribes to a raw channel again (see [`until_subscribed`]).
async fn subscribe_again(sh: &Shared, i: usize, channel: &str) -> Option<Subscription> {
    until_subscribed(|| sh.sides[i].client().subscribe([channel])).await
}

/// Per-stream state of the announcement rule.
struct Watch {
    chain: Chain,
    /// An announcement since the last message in order.
    announced: bool,
    /// Book changes in a row while waiting for a snapshot.
    ignored: u32,
}

impl Watch {
    fn new() -> Self {
        Watch {
            chain: Chain::default(),
            announced: true,
            ignored: 0,
        }
    }

    /// A new stream (or a resynced one): its first message starts the chain.
    fn restart(&mut self) {
        self.chain.restart();
        self.announced = true;
        self.ignored = 0;
    }

    fn settled(&mut self) {
        self.announced = false;
    }
}

/// Reads one raw subscription, checking continuity; resubscribes by hand if the client
/// gives the channel up while still open (see the module docs).
pub(super) async fn read_raw(sh: Arc<Shared>, s: usize, mut sub: Subscription) {
    let spec = &STREAMS[s];
    let i = spec.client;
    let mut paused = sh.sides[i].paused.subscribe();
    let mut w = Watch::new();
    loop {
        wait_unpaused(&mut paused).await;
        let event = tokio::select! {
            e = sub.next() => e,
            _ = paused.changed() => continue,
        };
        let resync = match event {
            None if sh.closing(i) => return,
            None => {
                // The client dropped the channel while still open: take it again.
                lock(&sh.streams)[s].by_hand += 1;
                match subscribe_again(&sh, i, spec.channel).await {
                    Some(new) => sub = new,
                    None => return,
                }
                w.restart();
                false
            }
            Some(SubscriptionEvent::Notification { data, .. }) => {
                match serde_json::from_str::<Value>(data.as_str()) {
                    Ok(v) => on_notification(&sh, s, &mut w, &v),
                    Err(_) => {
                        lock(&sh.streams)[s].malformed += 1;
                        sh.violation(format!("{}: undecodable notification", spec.channel));
                        false
                    }
                }
            }
            Some(SubscriptionEvent::Lagged { dropped }) => {
                {
                    let mut t = lock(&sh.streams);
                    t[s].lagged += 1;
                    t[s].dropped += dropped;
                }
                sh.lagged[i].fetch_add(1, Ordering::SeqCst);
                w.announced = true;
                // A book that lost changes cannot be trusted.
                spec.check == Check::Book
            }
            Some(SubscriptionEvent::Resubscribed) => {
                // The new link starts the book with a snapshot of its own.
                lock(&sh.streams)[s].resubscribed += 1;
                w.announced = true;
                false
            }
            Some(_) => false,
        };
        if resync {
            // Unsubscribe and subscribe: the venue sends a fresh snapshot.
            {
                let mut t = lock(&sh.streams);
                t[s].resyncs += 1;
                t[s].consistent = false;
            }
            drop(sub);
            let _ = sh.sides[i].client().unsubscribe([spec.channel]).await;
            match subscribe_again(&sh, i, spec.channel).await {
                Some(new) => sub = new,
                None => return,
            }
            w.restart();
        }
    }
}

/// Checks one notification; returns whether the book must be resynced.
fn on_notification(sh: &Shared, s: usize, w: &mut Watch, v: &Value) -> bool {
    let spec = &STREAMS[s];
    let steps: Vec<Step> = match spec.check {
        Check::Ticker => vec![w.chain.time(v["timestamp"].as_u64().unwrap_or(0))],
        Check::Trades => v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| w.chain.seq(t["trade_seq"].as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default(),
        Check::Book => vec![w.chain.book(
            v["type"] == "snapshot",
            v["change_id"].as_u64().unwrap_or(0),
            v["prev_change_id"].as_u64(),
        )],
    };
    let mut resync = false;
    let mut t = lock(&sh.streams);
    let tally = &mut t[s];
    tally.received += 1;
    tally.last_at = Some(Instant::now());
    for step in steps {
        match step {
            Step::First | Step::InOrder => {
                tally.consistent = true;
                w.ignored = 0;
                w.settled();
            }
            Step::Ignored => {
                // A venue that kept the channel through a failed unsubscribe acks the
                // subscribe without a snapshot: after a second of changes, resync again.
                w.ignored += 1;
                if w.ignored > 40 {
                    resync = true;
                }
            }
            Step::Repeat => {
                tally.repeats += 1;
                sh.violation(format!("{}: a message came twice", spec.channel));
            }
            Step::Backwards => {
                tally.backwards += 1;
                sh.violation(format!("{}: a message came out of order", spec.channel));
            }
            Step::Gap { after, got } => {
                let venue = spec.check == Check::Book && sh.is_venue_gap(spec.channel, got);
                let c = cover(w.announced, venue);
                record_gap(sh, tally, spec.client, c, || {
                    format!(
                        "{} ({}): silent loss between {after} and {got} (connects {})",
                        spec.channel,
                        NAMES[spec.client],
                        sh.sides[spec.client].client().status().connects
                    )
                });
                w.settled();
                if spec.check == Check::Book {
                    tally.consistent = false;
                    resync = true;
                }
            }
        }
    }
    resync
}

/// Counts a gap under its cover; a venue gap is what `book_gap` waits for, a silent one is a
/// violation (`what` says where).
fn record_gap(
    sh: &Shared,
    tally: &mut StreamTally,
    client: usize,
    c: Cover,
    what: impl FnOnce() -> String,
) {
    *tally.gaps.entry(c.name()).or_default() += 1;
    match c {
        Cover::Venue => {
            tally.venue_gaps += 1;
            sh.venue_gaps[client].fetch_add(1, Ordering::SeqCst);
        }
        Cover::Silent => {
            tally.silent += 1;
            sh.violation(what());
        }
        Cover::Announced => {}
    }
}

/// Reads the typed book of `market`: its gaps must be announced or the venue's.
pub(super) async fn read_book(sh: Arc<Shared>, s: usize, mut book: BookStream) {
    let spec = &STREAMS[s];
    let i = spec.client;
    let instrument = spec
        .channel
        .split('.')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut paused = sh.sides[i].paused.subscribe();
    let mut w = Watch::new();
    loop {
        wait_unpaused(&mut paused).await;
        let event = tokio::select! {
            e = book.next() => e,
            _ = paused.changed() => continue,
        };
        let Some(event) = event else {
            if sh.closing(i) {
                return;
            }
            lock(&sh.streams)[s].by_hand += 1;
            let interval = book_interval(spec.channel);
            match until_subscribed(|| sh.sides[i].deribit.subscribe_book(&instrument, interval))
                .await
            {
                Some(b) => book = b,
                None => return,
            }
            w.announced = true;
            continue;
        };
        let mut t = lock(&sh.streams);
        let tally = &mut t[s];
        match event {
            BookEvent::Snapshot | BookEvent::Updated => {
                tally.received += 1;
                tally.last_at = Some(Instant::now());
                tally.consistent = !book.book().is_resyncing();
                w.settled();
            }
            BookEvent::Gap { expected, got } => {
                tally.resyncs += 1;
                tally.consistent = false;
                // `got == 0`: the stream said Lagged; the BookStream resyncs instead.
                let c = if got == 0 {
                    tally.lagged += 1;
                    sh.lagged[i].fetch_add(1, Ordering::SeqCst);
                    Cover::Announced
                } else {
                    let venue = sh.is_venue_gap(spec.channel, got);
                    cover(w.announced, venue)
                };
                record_gap(&sh, tally, i, c, || {
                    format!(
                        "{} ({}): silent loss between {expected} and {got}",
                        spec.channel, NAMES[i]
                    )
                });
                w.settled();
            }
            BookEvent::Reconnected => {
                tally.resubscribed += 1;
                tally.consistent = false;
                w.announced = true;
            }
            BookEvent::Malformed => {
                // The simulator only sends well-formed books: the frame was damaged here.
                tally.resyncs += 1;
                tally.consistent = false;
                tally.malformed += 1;
                sh.violation(format!("{}: undecodable book message", spec.channel));
            }
            _ => {}
        }
    }
}

/// Drains a client's event stream (it must be read: a full one stops the socket reads).
pub(super) async fn drain_events(sh: Arc<Shared>, i: usize, mut events: Events) {
    while let Some(event) = events.next().await {
        let mut t = lock(&sh.events);
        let e = &mut t[i];
        match event {
            Event::Connected { .. } => {
                e.reconnects += u64::from(e.connected > 0);
                e.connected += 1;
            }
            Event::Disconnected { code, .. } => {
                let key = code.map_or_else(|| "none".to_owned(), |c| c.as_u16().to_string());
                *e.disconnects.entry(key).or_default() += 1;
            }
            Event::Resubscribed { refused, .. } => {
                e.resubscribes += 1;
                e.refused += refused.len() as u64;
            }
            Event::SubscriptionRefused { channels } => e.refused += channels.len() as u64,
            Event::Authenticated { refreshed, .. } => {
                e.authenticated += 1;
                e.refreshed += u64::from(refreshed);
            }
            Event::Lagged { dropped } => {
                e.lagged += 1;
                e.dropped += dropped;
            }
            Event::UnmatchedResponse { .. } => e.late_responses += 1,
            Event::Message(_) => e.messages += 1,
            Event::Error(_) => e.errors += 1,
            Event::Restarted { .. } => e.restarts += 1,
            Event::Closed { .. } => break,
            _ => {}
        }
    }
}
