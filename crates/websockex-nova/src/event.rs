//! What the connection tells its user.
//!
//! Every lifecycle transition, every received data message and every announced drop
//! arrives on the bounded [`Events`] stream returned with the [`Client`](crate::Client).
//! Read it (or drop it): a full stream with the default [`OverflowPolicy::Block`] makes
//! the connection stop reading its socket, so TCP pushes back on the server.
//!
//! [`OverflowPolicy::Block`]: crate::OverflowPolicy::Block

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::Error;
use crate::frame::{CloseCode, Frame};
use crate::lifecycle::State;

/// One thing that happened on the connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The lifecycle moved.
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Connect attempt number (1-based).
        attempt: u32,
    },
    /// The link is up and Ready.
    Connected {
        /// Connect attempt number (1-based).
        attempt: u32,
        /// The subprotocol the server chose, if any.
        subprotocol: Option<String>,
    },
    /// The link was lost (or a connect attempt failed).
    Disconnected {
        /// Connect attempt number (1-based).
        attempt: u32,
        /// Why.
        error: Error,
        /// The close code, when the server sent one or we closed for a protocol reason.
        code: Option<CloseCode>,
    },
    /// The next attempt starts after `delay`.
    Reconnecting {
        /// The attempt about to be made.
        attempt: u32,
        /// The backoff delay before it.
        delay: Duration,
    },
    /// A data message (text or binary) from the server that no behaviour consumed: not
    /// a response, not a notification for a subscribed channel.
    Message(Frame),
    /// A response whose id matches no request waiting (late after a timeout, or not ours).
    UnmatchedResponse {
        /// The id.
        id: u64,
        /// Its result or error object.
        result: Result<crate::json::RawJson, crate::json::ApiError>,
    },
    /// Authentication succeeded (after a connect, or a refresh on a live link).
    Authenticated {
        /// How long the grant lasts, if the venue said.
        expires_in: Option<Duration>,
        /// Whether this was a refresh.
        refreshed: bool,
    },
    /// After a reconnect, the desired channels were subscribed again; notifications sent
    /// while the link was down are missing (each subscription stream also says so).
    Resubscribed {
        /// Channels confirmed again.
        channels: usize,
        /// Channels the venue left out this time (no longer subscribed).
        refused: Vec<String>,
    },
    /// The venue left these channels out of a subscribe acknowledgement.
    SubscriptionRefused {
        /// The channels.
        channels: Vec<String>,
    },
    /// Messages were dropped by the overflow policy, here: between the message before
    /// this announcement and the one after it.
    Lagged {
        /// How many.
        dropped: u64,
    },
    /// The event stream crossed a watermark ([`Watermarks`](crate::Watermarks)): `active`
    /// when it filled to the high one (the overflow policy is about to act), not `active`
    /// when it drained to the low one.
    Backpressure {
        /// Under pressure (true) or relieved (false).
        active: bool,
        /// Events queued when it was noticed.
        depth: usize,
    },
    /// A non-fatal error the error handler chose to ignore.
    Error(Error),
    /// The connection actor panicked (a handler bug) and was restarted.
    Restarted {
        /// Restarts within the current intensity window.
        restarts: u32,
        /// The panic message.
        cause: String,
    },
    /// The connection is closed for good; no more events follow.
    Closed {
        /// `None` after a user-requested close, else why it ended.
        error: Option<Error>,
    },
}

impl Event {
    /// A short `snake_case` name for the event (`state_changed`, `message`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Event::StateChanged { .. } => "state_changed",
            Event::Connected { .. } => "connected",
            Event::Disconnected { .. } => "disconnected",
            Event::Reconnecting { .. } => "reconnecting",
            Event::Message(_) => "message",
            Event::Lagged { .. } => "lagged",
            Event::Backpressure { .. } => "backpressure",
            Event::UnmatchedResponse { .. } => "unmatched_response",
            Event::Authenticated { .. } => "authenticated",
            Event::Resubscribed { .. } => "resubscribed",
            Event::SubscriptionRefused { .. } => "subscription_refused",
            Event::Error(_) => "error",
            Event::Restarted { .. } => "restarted",
            Event::Closed { .. } => "closed",
        }
    }
}

/// The bounded stream of [`Event`]s of one connection. Ends after [`Event::Closed`].
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: crate::inbox::Rx<Event>,
    pub(crate) lag: crate::subscription::Lag,
}

impl Events {
    /// The next event; `None` once the connection has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost by dropping this future.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// An event if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        match self.rx.try_recv() {
            Some(event) => Some(event),
            None => match self.lag.take() {
                0 => None,
                dropped => Some(Event::Lagged { dropped }),
            },
        }
    }

    /// Queued events first (announcements of drops among them, in place); once drained,
    /// the drops not yet announced.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(event)),
            other => match self.lag.take() {
                0 => other,
                dropped => Poll::Ready(Some(Event::Lagged { dropped })),
            },
        }
    }
}

impl futures_util::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.poll_event(cx)
    }
}
