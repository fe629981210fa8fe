//! Subscriptions: the per-subscription stream the user reads, and the registry of desired
//! channels the actor owns (it survives reconnects and is restored after each one).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::config::OverflowPolicy;
use crate::inbox::Offer;

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
    /// This many notifications were dropped because the stream was full, here: between
    /// the notification before this announcement and the one after it (so a sequenced
    /// feed knows its gap at the gap).
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

    /// Queued items first (announcements among them, in place); once the queue is
    /// drained, what is still owed (nothing newer is queued behind it: the connection puts
    /// what is owed before anything new).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<SubscriptionEvent>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(event)),
            other => match self.lagged.take_owed() {
                None => other,
                Some(owed) => {
                    Poll::Ready(<SubscriptionEvent as crate::inbox::StreamItem>::announcement(owed))
                }
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

pub(crate) use crate::lag::Lag;

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
    /// The subscription's stream was full: this many messages dropped, counted and
    /// announced (before the next notification).
    Dropped(u64),
    /// The stream is full and the policy is to wait: the caller waits for room, for what
    /// the stream owes (its [`Lag`]) and then the notification.
    Full(mpsc::Sender<SubscriptionEvent>, Lag, SubscriptionEvent),
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

    /// Sends a `Resubscribed` marker to every stream of `channels` (deduplicated per
    /// stream), behind what the stream already owes; a full stream owes it.
    pub(crate) fn announce(&mut self, channels: &[String]) {
        let mut seen: Vec<&mpsc::Sender<SubscriptionEvent>> = Vec::new();
        for c in channels {
            if let Some(e) = self.entries.get(c) {
                // Several channels may share one stream; tell it once.
                if !seen.iter().any(|s| s.same_channel(&e.tx)) {
                    seen.push(&e.tx);
                    e.lagged.owe_marker();
                    // In now if there is room, else before the next notification.
                    let _ = crate::inbox::flush_owed(&e.tx, &e.lagged);
                }
            }
        }
    }

    /// Routes one notification, behind what its stream owes (a gap is announced before
    /// the next notification).
    #[inline]
    pub(crate) fn route(&mut self, channel: TextSlice, data: RawJson) -> Route {
        let Some(entry) = self.entries.get_mut(channel.as_str()) else {
            return Route::Unknown;
        };
        let event = SubscriptionEvent::Notification { channel, data };
        let evictor = entry.evictor.as_ref();
        match crate::inbox::offer(&entry.tx, &entry.lagged, evictor, self.policy, event) {
            Offer::Put => Route::Delivered,
            Offer::Dropped(n) => Route::Dropped(n),
            Offer::Full(event) => Route::Full(entry.tx.clone(), entry.lagged.clone(), event),
            Offer::Overflow => Route::Overflow,
            Offer::Closed => Route::Gone,
        }
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
