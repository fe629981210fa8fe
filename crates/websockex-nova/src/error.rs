//! The one error type of the crate.
//!
//! [`Error`] is opaque: match on [`Error::kind`] or, better, ask the predicates
//! ([`Error::is_disconnected`], [`Error::is_timeout`], [`Error::is_transient`], …).
//! The underlying cause is kept as [`std::error::Error::source`], never stringified.
//!
//! ```
//! use websockex_nova::Error;
//!
//! fn retry_worthy(err: &Error) -> bool {
//!     err.is_transient() && !err.is_closed()
//! }
//! # let _ = retry_worthy;
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::frame::CloseCode;

type Source = Arc<dyn StdError + Send + Sync + 'static>;

/// What went wrong, coarse enough to match on.
///
/// The enum is `#[non_exhaustive]`: later versions add kinds (authentication, rate limits, …).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration (or a URL, header, close code, …) given by the user is invalid.
    Config,
    /// The TCP connection (or DNS lookup) failed.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The server answered the upgrade request with this HTTP status instead of `101`.
    UpgradeRejected {
        /// The HTTP status the server sent.
        status: u16,
    },
    /// The HTTP upgrade failed for another reason (bad accept key, garbled response, …).
    Upgrade,
    /// The server accepted the upgrade with a subprotocol the client did not offer
    /// (RFC 6455 §4.1: the client fails the connection). Permanent: the server answers the
    /// same offer the same way.
    SubprotocolNotOffered,
    /// An operation did not finish in time.
    Timeout(TimeoutKind),
    /// The server violated the WebSocket protocol (bad opcode, bad close code, masked frame, …).
    Protocol,
    /// The server sent a text message that is not valid UTF-8.
    InvalidUtf8,
    /// A message or frame exceeded the configured size limit.
    MessageTooBig {
        /// The size limit in bytes.
        limit: usize,
    },
    /// A read or write on the socket failed.
    Io,
    /// The server closed the connection with a close frame.
    ClosedByServer {
        /// The close code, if the server sent one.
        code: Option<CloseCode>,
        /// The close reason the server sent (may be empty).
        reason: String,
    },
    /// The link dropped while this operation was pending.
    Disconnected {
        /// Whether the frame or request had been written to the socket before the drop.
        sent: bool,
    },
    /// The connection has been closed (by the user, or for good after an error); it will not come back.
    Closed,
    /// Reconnecting gave up: [`ReconnectPolicy::max_retries`](crate::ReconnectPolicy::max_retries)
    /// consecutive reconnect attempts failed (the count resets only after a link stayed up
    /// for [`ReconnectPolicy::reset_after`](crate::ReconnectPolicy::reset_after)).
    RetriesExhausted {
        /// The number of reconnect attempts made (not counting the connect before them).
        attempts: u32,
    },
    /// A bounded queue was full and the configured policy is to reject.
    QueueFull,
    /// The connection is not ready and the offline policy rejects sends.
    NotReady,
    /// A user handler panicked. Within the [`RestartLimit`](crate::RestartLimit) the
    /// connection is restarted and this is the error its `Disconnected` event and the error
    /// handler see (the default handler reconnects); beyond the limit supervision gives up and
    /// the connection closes with it.
    HandlerPanicked,
    /// The connection was restarted after panics more often than the
    /// [`RestartLimit`](crate::RestartLimit) allows and is closed for good.
    RestartLimit {
        /// Restarts within the window, the last one included.
        restarts: u32,
    },
    /// Serializing a value to JSON failed.
    Encode,
    /// Received JSON did not have the expected shape.
    Decode,
    /// The API answered a request with its error object.
    Api(crate::json::ApiError),
    /// Authentication was refused (bad credentials, a refused grant) or is required.
    /// Retrying cannot help: the default error handler stops.
    Auth,
    /// The authentication call failed for a reason that may pass (the venue's rate limit,
    /// a busy server): the default error handler backs off and retries.
    AuthUnavailable,
    /// The local rate limiter refused: its queue was full, or the frame waited longer than
    /// the configured wait timeout.
    RateLimited,
    /// The venue did not confirm any of the channels asked for.
    SubscriptionRefused {
        /// The channels left out of the acknowledgement.
        channels: Vec<String>,
    },
    /// This connection's message handler cannot encode requests (configure a JSON-RPC
    /// handler, e.g. with `ClientBuilder::json_rpc`).
    Unsupported,
    /// The consumer did not keep up: a full stream under
    /// [`OverflowPolicy::Disconnect`](crate::OverflowPolicy::Disconnect), or one blocked
    /// longer than [`ClientConfig::max_block`](crate::ClientConfig::max_block). The link is
    /// replaced (transient).
    SlowConsumer,
}

impl ErrorKind {
    /// The variant's name (`"Io"`, `"Timeout"`, …): a stable label for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorKind::Config => "Config",
            ErrorKind::Connect => "Connect",
            ErrorKind::Tls => "Tls",
            ErrorKind::UpgradeRejected { .. } => "UpgradeRejected",
            ErrorKind::Upgrade => "Upgrade",
            ErrorKind::SubprotocolNotOffered => "SubprotocolNotOffered",
            ErrorKind::Timeout(_) => "Timeout",
            ErrorKind::Protocol => "Protocol",
            ErrorKind::InvalidUtf8 => "InvalidUtf8",
            ErrorKind::MessageTooBig { .. } => "MessageTooBig",
            ErrorKind::Io => "Io",
            ErrorKind::ClosedByServer { .. } => "ClosedByServer",
            ErrorKind::Disconnected { .. } => "Disconnected",
            ErrorKind::Closed => "Closed",
            ErrorKind::RetriesExhausted { .. } => "RetriesExhausted",
            ErrorKind::QueueFull => "QueueFull",
            ErrorKind::NotReady => "NotReady",
            ErrorKind::HandlerPanicked => "HandlerPanicked",
            ErrorKind::RestartLimit { .. } => "RestartLimit",
            ErrorKind::Encode => "Encode",
            ErrorKind::Decode => "Decode",
            ErrorKind::Api(_) => "Api",
            ErrorKind::Auth => "Auth",
            ErrorKind::AuthUnavailable => "AuthUnavailable",
            ErrorKind::RateLimited => "RateLimited",
            ErrorKind::SubscriptionRefused { .. } => "SubscriptionRefused",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::SlowConsumer => "SlowConsumer",
        }
    }
}

/// Which operation timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The TCP (and TLS) connect.
    Connect,
    /// The HTTP upgrade handshake.
    Upgrade,
    /// No traffic (and no pong) arrived within the keepalive timeout.
    Keepalive,
    /// A write to the socket did not complete.
    Write,
    /// The close handshake.
    Close,
    /// A ping did not get its pong.
    Ping,
    /// A request did not get its response.
    Request,
}

/// The error type of websockex-nova.
///
/// Opaque: match on [`Error::kind`] or, better, ask the predicates ([`Error::is_disconnected`],
/// [`Error::is_timeout`], [`Error::is_transient`], …). The underlying cause is kept as
/// [`std::error::Error::source`], never stringified.
///
/// Cheap to clone: the source is shared, so one failure can be reported to several waiters.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    source: Option<Source>,
    context: Option<Box<str>>,
}

impl Error {
    /// An error of `kind`. For behaviours and adapters that report errors of their own.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            source: None,
            context: None,
        }
    }

    /// Keeps `source` as the cause ([`std::error::Error::source`]).
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Adds a short context (what was being done) to the message.
    #[must_use]
    pub fn with_context(mut self, context: impl Into<Box<str>>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub(crate) fn config(context: impl Into<Box<str>>) -> Self {
        Self::new(ErrorKind::Config).with_context(context)
    }

    pub(crate) fn timeout(kind: TimeoutKind, after: Duration) -> Self {
        Self::new(ErrorKind::Timeout(kind)).with_context(format!("after {after:?}"))
    }

    pub(crate) fn closed() -> Self {
        Self::new(ErrorKind::Closed)
    }

    pub(crate) fn disconnected(sent: bool) -> Self {
        Self::new(ErrorKind::Disconnected { sent })
    }

    /// What kind of error this is.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The kind's name, for logs and metrics (`"Io"`, `"Timeout"`, `"UpgradeRejected"`, …).
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// The link dropped (or never came up) while this operation was pending.
    pub fn is_disconnected(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Disconnected { .. }
                | ErrorKind::Connect
                | ErrorKind::Io
                | ErrorKind::ClosedByServer { .. }
        )
    }

    /// For a [`ErrorKind::Disconnected`] error: whether the payload had been written to the socket.
    /// `None` for other kinds.
    pub fn was_sent(&self) -> Option<bool> {
        match self.kind {
            ErrorKind::Disconnected { sent } => Some(sent),
            _ => None,
        }
    }

    /// Something did not finish in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout(_))
    }

    /// The connection is closed for good.
    pub fn is_closed(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Closed | ErrorKind::RetriesExhausted { .. } | ErrorKind::RestartLimit { .. }
        )
    }

    /// Authentication failed or is required.
    pub fn is_auth(&self) -> bool {
        matches!(self.kind, ErrorKind::Auth | ErrorKind::AuthUnavailable)
    }

    /// The local limiter refused, or the server did for rate reasons (HTTP 429 on upgrade).
    pub fn is_rate_limited(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::RateLimited | ErrorKind::UpgradeRejected { status: 429 }
        )
    }

    /// The API's error object, for [`ErrorKind::Api`].
    pub fn api_error(&self) -> Option<&crate::json::ApiError> {
        match &self.kind {
            ErrorKind::Api(e) => Some(e),
            _ => None,
        }
    }

    /// Received JSON did not fit the expected type.
    pub fn is_decode(&self) -> bool {
        matches!(self.kind, ErrorKind::Decode)
    }

    /// The server broke the protocol or sent bad data (protocol violation, invalid UTF-8, too big).
    pub fn is_protocol(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Protocol | ErrorKind::InvalidUtf8 | ErrorKind::MessageTooBig { .. }
        )
    }

    /// Bad configuration or bad input from the user.
    pub fn is_config(&self) -> bool {
        matches!(self.kind, ErrorKind::Config | ErrorKind::Encode)
    }

    /// Trying again later may succeed: network faults, timeouts, server-side closes, 5xx / 429 / 408
    /// on upgrade, bad input from the server (a fresh connection starts clean).
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            ErrorKind::Connect
            | ErrorKind::Io
            | ErrorKind::Timeout(_)
            | ErrorKind::Disconnected { .. }
            | ErrorKind::ClosedByServer { .. }
            | ErrorKind::Protocol
            | ErrorKind::InvalidUtf8
            | ErrorKind::MessageTooBig { .. }
            | ErrorKind::Upgrade
            | ErrorKind::QueueFull
            | ErrorKind::NotReady
            | ErrorKind::HandlerPanicked
            | ErrorKind::RateLimited
            | ErrorKind::SlowConsumer
            | ErrorKind::AuthUnavailable => true,
            ErrorKind::UpgradeRejected { status } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            ErrorKind::Config
            | ErrorKind::Tls
            | ErrorKind::SubprotocolNotOffered
            | ErrorKind::Closed
            | ErrorKind::RetriesExhausted { .. }
            | ErrorKind::RestartLimit { .. }
            | ErrorKind::Encode
            | ErrorKind::Decode
            | ErrorKind::Api(_)
            | ErrorKind::Auth
            | ErrorKind::SubscriptionRefused { .. }
            | ErrorKind::Unsupported => false,
        }
    }

    /// The close code this error implies we send (or the server sent).
    pub fn close_code(&self) -> Option<CloseCode> {
        match &self.kind {
            ErrorKind::Protocol => Some(CloseCode::PROTOCOL_ERROR),
            ErrorKind::InvalidUtf8 => Some(CloseCode::INVALID_PAYLOAD),
            ErrorKind::MessageTooBig { .. } => Some(CloseCode::MESSAGE_TOO_BIG),
            ErrorKind::ClosedByServer { code, .. } => *code,
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Config => f.write_str("invalid configuration")?,
            ErrorKind::Connect => f.write_str("connect failed")?,
            ErrorKind::Tls => f.write_str("TLS handshake failed")?,
            ErrorKind::UpgradeRejected { status } => {
                write!(f, "server refused the WebSocket upgrade with HTTP {status}")?
            }
            ErrorKind::Upgrade => f.write_str("WebSocket upgrade failed")?,
            ErrorKind::SubprotocolNotOffered => {
                f.write_str("server chose a subprotocol that was not offered")?
            }
            ErrorKind::Timeout(kind) => write!(f, "{kind:?} timed out")?,
            ErrorKind::Protocol => f.write_str("server violated the WebSocket protocol")?,
            ErrorKind::InvalidUtf8 => {
                f.write_str("server sent a text message that is not UTF-8")?
            }
            ErrorKind::MessageTooBig { limit } => {
                write!(f, "message exceeds the size limit of {limit} bytes")?
            }
            ErrorKind::Io => f.write_str("socket I/O failed")?,
            ErrorKind::ClosedByServer { code, reason } => {
                f.write_str("server closed the connection")?;
                if let Some(code) = code {
                    write!(f, " with code {}", code.as_u16())?;
                }
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
            }
            ErrorKind::Disconnected { sent: true } => {
                f.write_str("connection lost after the frame was written")?
            }
            ErrorKind::Disconnected { sent: false } => {
                f.write_str("connection lost before the frame was written")?
            }
            ErrorKind::Closed => f.write_str("connection closed")?,
            ErrorKind::RetriesExhausted { attempts } => {
                write!(f, "gave up reconnecting after {attempts} attempts")?
            }
            ErrorKind::QueueFull => f.write_str("queue full")?,
            ErrorKind::NotReady => {
                f.write_str("connection not ready and offline sends are rejected")?
            }
            ErrorKind::HandlerPanicked => f.write_str("a handler panicked")?,
            ErrorKind::RestartLimit { restarts } => {
                write!(f, "gave up after {restarts} restarts caused by panics")?
            }
            ErrorKind::Encode => f.write_str("could not encode the message")?,
            ErrorKind::Decode => f.write_str("could not decode the message")?,
            ErrorKind::Api(e) => write!(f, "{e}")?,
            ErrorKind::Auth => f.write_str("authentication refused")?,
            ErrorKind::AuthUnavailable => f.write_str("authentication failed for now")?,
            ErrorKind::RateLimited => f.write_str("rate limited")?,
            ErrorKind::SubscriptionRefused { channels } => {
                write!(f, "subscription refused for {}", channels.join(", "))?
            }
            ErrorKind::Unsupported => f.write_str("not supported by this connection")?,
            ErrorKind::SlowConsumer => f.write_str("the consumer did not keep up")?,
        }
        if let Some(context) = &self.context {
            write!(f, ": {context}")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(context) = &self.context {
            d.field("context", context);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Maps a transport error of the WebSocket crate to ours, keeping it as the source.
pub(crate) fn from_ws(err: tokio_websockets::Error, max_message: usize) -> Error {
    use tokio_websockets::proto::ProtocolError;
    use tokio_websockets::Error as W;
    let kind = match &err {
        W::Protocol(ProtocolError::InvalidUtf8) => ErrorKind::InvalidUtf8,
        W::Protocol(_) => ErrorKind::Protocol,
        W::PayloadTooLong { .. } => ErrorKind::MessageTooBig { limit: max_message },
        W::Io(_) | W::AlreadyClosed => ErrorKind::Io,
        W::CannotResolveHost => ErrorKind::Connect,
        W::Upgrade(tokio_websockets::upgrade::Error::DidNotSwitchProtocols(status)) => {
            ErrorKind::UpgradeRejected { status: *status }
        }
        W::Upgrade(_) => ErrorKind::Upgrade,
        W::InvalidDNSName(_) | W::Rustls(_) => ErrorKind::Tls,
        W::UnsupportedScheme | W::NoUriConfigured | W::DisallowedHeader => ErrorKind::Config,
        _ => ErrorKind::Io,
    };
    Error::new(kind).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync_static::<Error>();
    }

    #[test]
    fn predicates_follow_kind() {
        let e = Error::disconnected(true);
        assert!(e.is_disconnected() && e.is_transient() && !e.is_closed());
        assert_eq!(e.was_sent(), Some(true));
        assert!(Error::new(ErrorKind::UpgradeRejected { status: 503 }).is_transient());
        assert!(!Error::new(ErrorKind::UpgradeRejected { status: 403 }).is_transient());
        assert!(Error::new(ErrorKind::UpgradeRejected { status: 429 }).is_rate_limited());
        assert!(Error::timeout(TimeoutKind::Keepalive, Duration::from_secs(1)).is_timeout());
        assert!(Error::config("x").is_config());
        assert!(Error::new(ErrorKind::RetriesExhausted { attempts: 3 }).is_closed());
    }

    #[test]
    fn display_keeps_context_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::new(ErrorKind::Connect)
            .with_context("127.0.0.1:1")
            .with_source(io);
        assert_eq!(e.to_string(), "connect failed: 127.0.0.1:1: refused");
        assert!(StdError::source(&e).is_some());
    }
}
