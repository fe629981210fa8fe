//! Subscriptions: the per-subscription stream the user reads, and the registry of desired
//! channels the actor owns (it survives reconnects and is restored after each one).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::config::OverflowPolicy;

use crate::client::Client;
use crate::error::Error;
use crate::json::{RawJson, TextSlice};

/// What a [`Subscription`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// A notification for one of the subscription's channels.
    Notification {
        /// The channel (a slice of the frame).
        channel: TextSlice,
        /// The payload (a slice of the frame; decode it with [`RawJson::decode`]).
        data: RawJson,
    },
    /// This many notifications were dropped because the stream was full.
    Lagged {
        /// How many.
        dropped: u64,
    },
    /// The connection came back and the channels were subscribed again: notifications
    /// sent while the link was down are missing (resync state that depends on continuity).
    Resubscribed,
}

/// A live subscription: a bounded stream of [`SubscriptionEvent`]s for its channels.
///
/// Dropping it unsubscribes (lazily: when the next notification for it arrives).
#[derive(Debug)]
pub struct Subscription {
    pub(crate) rx: crate::inbox::Rx<SubscriptionEvent>,
    pub(crate) lagged: Lag,
    pub(crate) channels: Vec<String>,
    pub(crate) refused: Vec<String>,
    pub(crate) client: Client,
}

impl Subscription {
    /// The channels the venue confirmed.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// The channels asked for but left out of the acknowledgement (refused).
    pub fn refused(&self) -> &[String] {
        &self.refused
    }

    /// The next event; `None` once the connection is closed for good.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Queued notifications first; once the queue is drained, the drops it caused.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<SubscriptionEvent>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(event)),
            other => match self.lagged.take() {
                0 => other,
                dropped => Poll::Ready(Some(SubscriptionEvent::Lagged { dropped })),
            },
        }
    }

    /// Unsubscribes from all of its channels and waits for the venue's answer.
    ///
    /// # Errors
    ///
    /// As [`Client::unsubscribe`].
    ///
    /// # Cancel safety
    ///
    /// The unsubscribe proceeds even if the future is dropped.
    pub async fn unsubscribe(self) -> Result<(), Error> {
        self.client.unsubscribe(self.channels.clone()).await
    }
}

impl futures_util::Stream for Subscription {
    type Item = SubscriptionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_event(cx)
    }
}

/// Drops counted by the connection, announced by the reader when its queue is drained (so
/// an announcement never waits for the next notification).
#[derive(Debug, Clone, Default)]
pub(crate) struct Lag(Arc<LagState>);

#[derive(Debug, Default)]
pub(crate) struct LagState {
    dropped: AtomicU64,
    /// A `Resubscribed` marker found the stream full: it goes in before the next
    /// notification (never dropped, never overtaken).
    marker: std::sync::atomic::AtomicBool,
}

impl Lag {
    pub(crate) fn add(&self) {
        self.0.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn take(&self) -> u64 {
        self.0.dropped.swap(0, Ordering::Relaxed)
    }

    fn set_marker(&self, pending: bool) {
        self.0.marker.store(pending, Ordering::Relaxed);
    }

    #[inline]
    fn marker_pending(&self) -> bool {
        self.0.marker.load(Ordering::Relaxed)
    }
}

/// One desired channel.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) tx: mpsc::Sender<SubscriptionEvent>,
    /// Confirmed by the venue at least once: restored after every reconnect.
    pub(crate) confirmed: bool,
    /// Drops for lack of room, shared with the stream's reader.
    pub(crate) lagged: Lag,
    /// Under `DropOldest`: the stream's head, for evicting.
    pub(crate) evictor: Option<crate::inbox::Evictor<SubscriptionEvent>>,
}

/// Where a notification went.
#[derive(Debug)]
pub(crate) enum Route {
    Delivered,
    /// The subscription's stream is full: counted, announced later.
    Dropped,
    /// The stream is full and the policy is to wait: the caller waits for room, for one
    /// event then maybe a second (a pending `Resubscribed` marker, then the notification).
    Full(
        mpsc::Sender<SubscriptionEvent>,
        SubscriptionEvent,
        Option<Box<SubscriptionEvent>>,
    ),
    /// The stream is full and the policy is to replace the link (the message is counted).
    Overflow,
    /// The user dropped the subscription: unsubscribe.
    Gone,
    /// Nobody subscribed to this channel.
    Unknown,
}

/// The desired channels and their streams.
#[derive(Debug)]
pub(crate) struct Registry {
    entries: HashMap<String, Entry>,
    /// What a full stream does (follows live changes of the overflow policy).
    policy: OverflowPolicy,
}

impl Registry {
    pub(crate) fn new(policy: OverflowPolicy) -> Self {
        Registry {
            entries: HashMap::new(),
            policy,
        }
    }

    pub(crate) fn set_policy(&mut self, policy: OverflowPolicy) {
        self.policy = policy;
    }

    pub(crate) fn contains(&self, channel: &str) -> bool {
        self.entries.contains_key(channel)
    }

    pub(crate) fn insert(
        &mut self,
        channel: String,
        tx: mpsc::Sender<SubscriptionEvent>,
        lagged: Lag,
        evictor: Option<crate::inbox::Evictor<SubscriptionEvent>>,
    ) {
        self.entries.insert(
            channel,
            Entry {
                tx,
                confirmed: false,
                lagged,
                evictor,
            },
        );
    }

    pub(crate) fn confirm(&mut self, channel: &str) {
        if let Some(e) = self.entries.get_mut(channel) {
            e.confirmed = true;
        }
    }

    pub(crate) fn remove(&mut self, channel: &str) -> Option<Entry> {
        self.entries.remove(channel)
    }

    /// Channels to restore after a reconnect, sorted for a stable order.
    pub(crate) fn confirmed_channels(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.confirmed)
            .map(|(c, _)| c.clone())
            .collect();
        v.sort();
        v
    }

    /// Sends a marker to every stream of `channels` (deduplicated per stream).
    pub(crate) fn announce(&mut self, channels: &[String], event: &SubscriptionEvent) {
        let mut seen: Vec<&mpsc::Sender<SubscriptionEvent>> = Vec::new();
        for c in channels {
            if let Some(e) = self.entries.get(c) {
                // Several channels may share one stream; tell it once.
                if !seen.iter().any(|s| s.same_channel(&e.tx)) {
                    seen.push(&e.tx);
                    if let Err(mpsc::error::TrySendError::Full(_)) = e.tx.try_send(event.clone()) {
                        // Full: the marker waits for the stream's next notification.
                        e.lagged.set_marker(true);
                    }
                }
            }
        }
    }

    /// Routes one notification.
    pub(crate) fn route(&mut self, channel: TextSlice, data: RawJson) -> Route {
        let Some(entry) = self.entries.get_mut(channel.as_str()) else {
            return Route::Unknown;
        };
        use mpsc::error::TrySendError;
        if entry.lagged.marker_pending() {
            let marker = SubscriptionEvent::Resubscribed;
            match entry.tx.try_send(marker) {
                Ok(()) => entry.lagged.set_marker(false),
                Err(TrySendError::Closed(_)) => return Route::Gone,
                Err(TrySendError::Full(marker)) => {
                    let event = SubscriptionEvent::Notification { channel, data };
                    match self.policy {
                        OverflowPolicy::Block => {
                            entry.lagged.set_marker(false);
                            return Route::Full(entry.tx.clone(), marker, Some(Box::new(event)));
                        }
                        OverflowPolicy::DropOldest
                            if entry
                                .evictor
                                .as_ref()
                                .is_some_and(crate::inbox::evict_oldest) =>
                        {
                            entry.lagged.add();
                            entry.lagged.set_marker(false);
                            let _ = entry.tx.try_send(marker);
                            // Then this notification, under the policy.
                            if entry
                                .evictor
                                .as_ref()
                                .is_some_and(crate::inbox::evict_oldest)
                            {
                                entry.lagged.add();
                                let _ = entry.tx.try_send(event);
                            } else {
                                entry.lagged.add();
                            }
                            return Route::Dropped;
                        }
                        OverflowPolicy::Disconnect => {
                            entry.lagged.add();
                            return Route::Overflow;
                        }
                        _ => {
                            entry.lagged.add();
                            return Route::Dropped;
                        }
                    }
                }
            }
        }
        match entry
            .tx
            .try_send(SubscriptionEvent::Notification { channel, data })
        {
            Ok(()) => Route::Delivered,
            Err(TrySendError::Full(event)) => match self.policy {
                OverflowPolicy::Block => Route::Full(entry.tx.clone(), event, None),
                OverflowPolicy::DropOldest => {
                    entry.lagged.add();
                    let evicted = entry
                        .evictor
                        .as_ref()
                        .is_some_and(crate::inbox::evict_oldest);
                    // Room made: the newest goes in (else it is the one dropped).
                    if evicted {
                        let _ = entry.tx.try_send(event);
                    }
                    Route::Dropped
                }
                OverflowPolicy::Disconnect => {
                    entry.lagged.add();
                    Route::Overflow
                }
                _ => {
                    entry.lagged.add();
                    Route::Dropped
                }
            },
            Err(TrySendError::Closed(_)) => Route::Gone,
        }
    }

    /// The drop counter of the stream `tx` feeds.
    pub(crate) fn lag_of(&self, tx: &mpsc::Sender<SubscriptionEvent>) -> Option<Lag> {
        self.entries
            .values()
            .find(|e| e.tx.same_channel(tx))
            .map(|e| e.lagged.clone())
    }

    /// Channels whose stream was dropped by the user.
    pub(crate) fn abandoned(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.tx.is_closed())
            .map(|(c, _)| c.clone())
            .collect()
    }
}
