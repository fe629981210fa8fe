//! Behaviours: the hooks a user (or a platform adapter) fills to customise a connection.
//!
//! Each concern is one small trait, **synchronous**, taking `&mut self` (its own state)
//! and returning a *decision* that the connection actor carries out. Behaviours never hold
//! a handle to their own connection, and they run on the actor's task, so they must be
//! cheap: heavy work belongs to the user's own task, fed from the event stream.
//!
//! | trait | decides | default |
//! |---|---|---|
//! | [`ConnectionHandler`] | frames to send on connect, reconnect or stop on disconnect, raw frame hook | [`DefaultConnectionHandler`] |
//! | [`MessageHandler`] | the envelope: classify a data message (response, notification, heartbeat, other), encode requests | [`DefaultMessageHandler`], [`JsonRpcHandler`](crate::jsonrpc::JsonRpcHandler) |
//! | [`SubscriptionHandler`] | subscribe / unsubscribe calls, which channels an ack confirms, batch size | [`JsonRpcSubscriptions`](crate::jsonrpc::JsonRpcSubscriptions) |
//! | [`AuthHandler`] | the auth call, reading the grant, refresh margin | [`JsonRpcAuth`](crate::jsonrpc::JsonRpcAuth) |
//! | [`ErrorHandler`] | ignore, reconnect (now or after a delay) or stop | [`DefaultErrorHandler`] |
//!
//! Rate limiting is configuration ([`RateLimit`](crate::RateLimit)) applied at the single
//! writer. The remaining concerns of the design (logging, metrics, codec) join [`Handlers`]
//! the same way: one trait, one `Default…` type, one boxed field.
//!
//! A closure is an [`ErrorHandler`]:
//!
//! ```
//! use websockex_nova::behaviour::{ErrorContext, ErrorDecision};
//! use websockex_nova::{Client, Error};
//!
//! let builder = Client::builder("ws://127.0.0.1:9/")
//!     .error_handler(|err: &Error, _ctx: &ErrorContext| {
//!         if err.is_protocol() { ErrorDecision::Stop } else { ErrorDecision::Reconnect }
//!     });
//! # let _ = builder;
//! ```

use std::time::Duration;

use crate::error::Error;
use crate::frame::{CloseCode, Frame};
use crate::json::{ApiError, RawJson, Secret, TextSlice};
use crate::lifecycle::State;

/// What a [`ConnectionHandler`] learns when a link comes up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectInfo<'a> {
    /// The URL connected to.
    pub url: &'a str,
    /// Connect attempt number (1-based).
    pub attempt: u32,
    /// How many times the link was Ready before (0 on the first connect).
    pub previous_connects: u64,
    /// The subprotocol the server chose.
    pub subprotocol: Option<&'a str>,
}

/// What a [`ConnectionHandler`] learns when a link is lost.
#[derive(Debug)]
#[non_exhaustive]
pub struct DisconnectInfo<'a> {
    /// Why it was lost.
    pub error: &'a Error,
    /// The close code, if any.
    pub code: Option<CloseCode>,
    /// Connect attempt number (1-based).
    pub attempt: u32,
}

/// After a disconnect: come back or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectDecision {
    /// Reconnect per the reconnect policy (if the error handler agrees).
    Reconnect,
    /// Close for good.
    Stop,
}

/// The raw-frame hook's verdict on an inbound frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameDecision {
    /// Process the frame normally.
    Continue,
    /// Drop it here (it is not delivered).
    Skip,
    /// Send this frame ahead of queued traffic, then process the inbound frame normally.
    Reply(Frame),
}

/// Connection-level hooks.
pub trait ConnectionHandler: Send + 'static {
    /// Frames to send as soon as the link is up, before any queued user frame.
    fn on_connect(&mut self, info: &ConnectInfo<'_>) -> Vec<Frame> {
        let _ = info;
        Vec::new()
    }

    /// Calls to make right after the upgrade, before authentication (a venue heartbeat
    /// setup, a hello). They are metered like all framework traffic; their answers are
    /// not waited for (an error answer becomes an [`Event::Error`](crate::Event::Error)).
    fn connect_calls(&mut self, info: &ConnectInfo<'_>) -> Vec<Call> {
        let _ = info;
        Vec::new()
    }

    /// Whether to come back after a lost link. The error handler is asked first; a `Stop`
    /// from either wins.
    fn on_disconnect(&mut self, info: &DisconnectInfo<'_>) -> DisconnectDecision {
        let _ = info;
        DisconnectDecision::Reconnect
    }

    /// Sees every inbound frame, control frames included, before anything else.
    fn on_frame(&mut self, frame: &Frame) -> FrameDecision {
        let _ = frame;
        FrameDecision::Continue
    }
}

/// Sends nothing on connect, always reconnects, lets every frame through.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultConnectionHandler;

impl ConnectionHandler for DefaultConnectionHandler {}

/// What an inbound data message is, decided once from its envelope.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Classified {
    /// The reply to request `id`: its `result`, or the API's error object.
    Response {
        /// The request id.
        id: u64,
        /// `result` (a slice of the frame) or `error`.
        result: Result<RawJson, ApiError>,
    },
    /// A push for a subscribed channel.
    Notification {
        /// The channel (a slice of the frame).
        channel: TextSlice,
        /// The payload (a slice of the frame).
        data: RawJson,
    },
    /// A venue heartbeat that wants this answer; it is sent ahead of all queued traffic
    /// and never waits for the rate limiter.
    Heartbeat(Frame),
    /// Answer with this frame right away, before the next frame is read; the message is
    /// not delivered.
    Reply(Frame),
    /// The handler consumed the message.
    Consume,
    /// Anything else: delivered as [`Event::Message`](crate::Event::Message).
    Other,
}

/// Message-level hooks: the envelope format of a venue.
///
/// The default ([`DefaultMessageHandler`]) classifies nothing: every data message is
/// delivered as it came, and requests are not supported. [`JsonRpcHandler`] understands
/// JSON-RPC 2.0; a venue with another envelope (`{"op":"subscribe"}`, `{"event":…}`)
/// implements this trait instead of forking the core.
///
/// [`JsonRpcHandler`]: crate::jsonrpc::JsonRpcHandler
pub trait MessageHandler: Send + 'static {
    /// Says what a data message is. Called once per text or binary message.
    fn classify(&mut self, frame: &Frame) -> Classified {
        let _ = frame;
        Classified::Other
    }

    /// The frame for request `id` calling `method` with `params` (JSON text), or `None`
    /// when this envelope has no requests.
    fn encode_request(&mut self, id: u64, method: &str, params: &str) -> Option<Frame> {
        let _ = (id, method, params);
        None
    }
}

/// Classifies nothing and delivers everything: the cheapest possible path.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultMessageHandler;

impl MessageHandler for DefaultMessageHandler {}

/// One call the framework makes on its own behalf (auth, subscribe, unsubscribe).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Method name.
    pub method: String,
    /// Parameters.
    pub params: serde_json::Value,
}

/// Subscription hooks: the frames for subscribe and unsubscribe, and the reading of acks.
pub trait SubscriptionHandler: Send + 'static {
    /// The call that subscribes to `channels` (at most [`batch_size`](Self::batch_size)).
    fn subscribe(&mut self, channels: &[String]) -> Call;

    /// The call that unsubscribes from `channels`.
    fn unsubscribe(&mut self, channels: &[String]) -> Call;

    /// The channels an acknowledgement confirms. Channels asked for but missing here are
    /// reported as refused.
    ///
    /// # Errors
    ///
    /// A decode error if the ack has an unexpected shape.
    fn confirmed(&mut self, requested: &[String], ack: &RawJson) -> Result<Vec<String>, Error>;

    /// The most channels one subscribe call may carry.
    fn batch_size(&self) -> usize {
        64
    }
}

/// A successful authentication.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct AuthGrant {
    /// How long the grant is valid (`None`: until the connection ends).
    pub expires_in: Option<Duration>,
    /// A credential to refresh with before expiry, when the venue has one.
    pub refresh_token: Option<Secret>,
    /// Calls to make right after a fresh authentication (not after a refresh), before
    /// subscriptions are restored, e.g. enabling cancel-on-disconnect. Answers are not
    /// waited for; an error answer becomes an [`Event::Error`](crate::Event::Error).
    pub follow_up: Vec<Call>,
}

/// Authentication hooks. Run after every (re)connect before subscriptions are restored,
/// and again before the grant expires.
pub trait AuthHandler: Send + 'static {
    /// The call that authenticates; `refresh` is the refresh credential of the previous
    /// grant when refreshing on a live connection (`None` after a connect).
    fn authenticate(&mut self, refresh: Option<&Secret>) -> Call;

    /// Reads the answer to [`authenticate`](Self::authenticate).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Auth`](crate::ErrorKind::Auth) for a refusal (bad credentials: the
    /// default error handler stops rather than hammer the server); other kinds for
    /// transient failures, which back off and retry.
    fn granted(&mut self, result: Result<&RawJson, &ApiError>) -> Result<AuthGrant, Error>;

    /// How long before expiry to refresh. Default 30 s.
    fn refresh_margin(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// Where an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorPhase {
    /// While connecting or upgrading.
    Connect,
    /// On an established link.
    Link,
}

/// Context for an [`ErrorHandler`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ErrorContext {
    /// Where it happened.
    pub phase: ErrorPhase,
    /// The state when it happened.
    pub state: State,
    /// Connect attempt number (1-based).
    pub attempt: u32,
}

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDecision {
    /// Carry on. (For an error that already cost the link this means `Reconnect`.)
    Ignore,
    /// Reconnect after the reconnect policy's next delay.
    Reconnect,
    /// Reconnect after exactly this delay (it still counts as an attempt).
    ReconnectAfter(Duration),
    /// Close for good with this error.
    Stop,
}

/// Error policy.
pub trait ErrorHandler: Send + 'static {
    /// Decides what an error means for the connection.
    fn on_error(&mut self, error: &Error, context: &ErrorContext) -> ErrorDecision;
}

/// Reconnects after transient errors ([`Error::is_transient`], which includes a handler
/// panic the supervisor restarts from within the [`RestartLimit`](crate::RestartLimit));
/// stops on the rest (bad configuration, TLS failures, an upgrade refused with a 4xx other
/// than 408/429).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultErrorHandler;

impl ErrorHandler for DefaultErrorHandler {
    fn on_error(&mut self, error: &Error, _context: &ErrorContext) -> ErrorDecision {
        if error.is_transient() {
            ErrorDecision::Reconnect
        } else {
            ErrorDecision::Stop
        }
    }
}

impl<F> ErrorHandler for F
where
    F: FnMut(&Error, &ErrorContext) -> ErrorDecision + Send + 'static,
{
    fn on_error(&mut self, error: &Error, context: &ErrorContext) -> ErrorDecision {
        self(error, context)
    }
}

/// The behaviours of one connection, boxed so a platform adapter can supply them as a set.
pub struct Handlers {
    /// Connection hooks.
    pub connection: Box<dyn ConnectionHandler>,
    /// Message hooks (the envelope).
    pub message: Box<dyn MessageHandler>,
    /// Error policy.
    pub error: Box<dyn ErrorHandler>,
    /// Subscriptions (`None`: `subscribe` is unsupported).
    pub subscription: Option<Box<dyn SubscriptionHandler>>,
    /// Authentication (`None`: no authentication).
    pub auth: Option<Box<dyn AuthHandler>>,
    /// Metrics (default `()`: nothing recorded, nothing paid).
    pub metrics: Box<dyn crate::metrics::MetricsCollector>,
    /// Logging (`None`: only the `tracing` events).
    pub logging: Option<Box<dyn crate::logging::LoggingHandler>>,
    /// Wire format (`None`: frames reach the message handler as received, values go out
    /// as JSON text). Shared with the handles, which encode on the caller's task.
    pub codec: Option<std::sync::Arc<dyn crate::codec::CodecHandler>>,
}

impl Default for Handlers {
    fn default() -> Self {
        Handlers {
            connection: Box::new(DefaultConnectionHandler),
            message: Box::new(DefaultMessageHandler),
            error: Box::new(DefaultErrorHandler),
            subscription: None,
            auth: None,
            metrics: Box::new(()),
            logging: None,
            codec: None,
        }
    }
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn default_error_handler_stops_on_permanent_errors() {
        let ctx = ErrorContext {
            phase: ErrorPhase::Connect,
            state: State::Connecting,
            attempt: 1,
        };
        let mut h = DefaultErrorHandler;
        let refused = Error::new(ErrorKind::UpgradeRejected { status: 403 });
        assert_eq!(h.on_error(&refused, &ctx), ErrorDecision::Stop);
        let unavailable = Error::new(ErrorKind::UpgradeRejected { status: 503 });
        assert_eq!(h.on_error(&unavailable, &ctx), ErrorDecision::Reconnect);
        assert_eq!(
            h.on_error(&Error::new(ErrorKind::Protocol), &ctx),
            ErrorDecision::Reconnect
        );
        let panicked = Error::new(ErrorKind::HandlerPanicked);
        assert_eq!(h.on_error(&panicked, &ctx), ErrorDecision::Reconnect);
    }
}
