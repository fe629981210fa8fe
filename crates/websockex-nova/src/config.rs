//! Connection configuration: plain data with documented defaults and a `validate()`.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use crate::error::Error;
use crate::keepalive::KeepaliveConfig;
use crate::reconnect::ReconnectPolicy;

/// What happens to sends made while the connection is not Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfflinePolicy {
    /// Keep up to `capacity` frames, in order, and write them right after the next
    /// connect; a send beyond that fails at once with [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull).
    Queue {
        /// The most frames kept while offline.
        capacity: usize,
    },
    /// Fail at once with [`ErrorKind::NotReady`](crate::ErrorKind::NotReady).
    Reject,
}

impl Default for OfflinePolicy {
    /// Queue up to 1,024 frames: a short outage loses nothing, a long one cannot eat memory.
    fn default() -> Self {
        OfflinePolicy::Queue { capacity: 1024 }
    }
}

/// What happens when the event stream, or a subscription's stream, is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Wait for room: the connection stops reading its socket and TCP pushes back on the
    /// server. Nothing is dropped. Commands (sends, pings, close) are still served, so a
    /// consumer that sends from its event loop cannot deadlock; keepalive checks wait, so a
    /// consumer that stops reading for longer than the keepalive timeout may see its link
    /// replaced. While closing, the final lifecycle events wait at most the close timeout.
    #[default]
    Block,
    /// Drop the newest message, count it, and announce the count with
    /// [`Event::Lagged`](crate::Event::Lagged) (on a subscription's stream:
    /// [`SubscriptionEvent::Lagged`](crate::SubscriptionEvent::Lagged)) where the gap is:
    /// before the next message the reader gets, or as soon as the reader has drained the
    /// stream. Lifecycle events are never dropped.
    DropNewest,
    /// Drop the oldest message waiting in the stream to make room for the newest (the
    /// latest data wins), count it and announce it in its place (a `Lagged` where the dropped
    /// message was, merged with the one before it if nothing came between). Lifecycle
    /// events are never dropped. Choose it when building the client: its streams are made
    /// for eviction (the reader takes an uncontended lock per item), so a live change into or
    /// out of it is refused.
    DropOldest,
    /// Replace the link (error [`SlowConsumer`](crate::ErrorKind::SlowConsumer)): the
    /// message that did not fit is counted and announced as dropped, what is queued is still
    /// delivered, and the connection reconnects and restores its subscriptions (which tell
    /// their readers [`Resubscribed`](crate::SubscriptionEvent::Resubscribed): a gap). What
    /// the server had sent but the socket had not yet read goes with the old link.
    Disconnect,
}

/// When the event stream is said to be under pressure: [`Event::Backpressure`] with
/// `active: true` when its depth reaches `high` (a fraction of its capacity), `active:
/// false` when it is back to `low` or below. Defaults: 0.75 and 0.25.
///
/// [`Event::Backpressure`]: crate::Event::Backpressure
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermarks {
    /// Fraction of the capacity (0 < low < high ≤ 1).
    pub high: f64,
    /// Fraction of the capacity.
    pub low: f64,
}

impl Default for Watermarks {
    fn default() -> Self {
        Watermarks {
            high: 0.75,
            low: 0.25,
        }
    }
}

impl Watermarks {
    /// (high, low) as item counts of a stream of `capacity`: high ≥ 1, low < high.
    pub(crate) fn counts(&self, capacity: usize) -> (usize, usize) {
        let high = ((capacity as f64 * self.high).ceil() as usize).clamp(1, capacity.max(1));
        let low = ((capacity as f64 * self.low).floor() as usize).min(high - 1);
        (high, low)
    }
}

/// Which certificate authorities TLS trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RootCertificates {
    /// Mozilla's roots, compiled in (`webpki-roots`): the same everywhere, no OS dependency.
    #[default]
    WebPki,
    /// The operating system's store (feature `native-roots`).
    Native,
}

/// TLS settings for `wss://` URLs (rustls with the ring provider).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Which root store to trust.
    pub roots: RootCertificates,
    /// Extra trusted roots, DER-encoded (a private CA, a test certificate).
    pub extra_roots_der: Vec<Vec<u8>>,
}

/// How often the actor may be restarted after a panic before it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartLimit {
    /// At most this many restarts …
    pub max_restarts: u32,
    /// … within this window.
    pub window: Duration,
}

impl Default for RestartLimit {
    /// Three restarts a minute: a one-off handler bug is survived, a handler that panics on
    /// every message is not looped on forever.
    fn default() -> Self {
        RestartLimit {
            max_restarts: 3,
            window: Duration::from_secs(60),
        }
    }
}

/// The largest capacity of a bounded channel (commands, events, a subscription): 16 Mi
/// items. Far beyond any sensible buffer, far below the channel's own limit.
pub const MAX_CHANNEL_CAPACITY: usize = 1 << 24;

/// Everything that configures one client connection. Its `Debug` form hides the URL's
/// user-info and query and the header values, where credentials are often carried.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `ws://` or `wss://` URL.
    pub url: String,
    /// Extra headers on the upgrade request.
    pub headers: Vec<(String, String)>,
    /// Subprotocols to offer, in order of preference.
    pub subprotocols: Vec<String>,
    /// TCP connect plus TLS handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// HTTP upgrade. Default 10 s.
    pub upgrade_timeout: Duration,
    /// One socket write; a peer that stops reading is declared dead after this. Default 10 s.
    pub write_timeout: Duration,
    /// Waiting for the server's close reply. Default 5 s.
    pub close_timeout: Duration,
    /// Pings and dead-peer detection.
    pub keepalive: KeepaliveConfig,
    /// Backoff between attempts.
    pub reconnect: ReconnectPolicy,
    /// Largest inbound message (and frame) in bytes; more closes the link with 1009.
    /// Default 16 MiB: venue snapshots fit, a runaway server cannot exhaust memory.
    pub max_message_size: usize,
    /// Outgoing messages are split into frames of at most this size. Default 4 MiB.
    pub max_frame_size: usize,
    /// Commands from all handles waiting for the actor. Default 256.
    pub command_capacity: usize,
    /// Events waiting for the user. Default 1,024.
    pub event_capacity: usize,
    /// Sends and requests while not Ready (and the bound of the writer's user queue).
    pub offline: OfflinePolicy,
    /// A full event stream.
    pub overflow: OverflowPolicy,
    /// When the event stream reports pressure ([`Watermarks`]).
    pub watermarks: Watermarks,
    /// Under [`OverflowPolicy::Block`], the longest the connection waits for a consumer
    /// before it replaces the link with [`SlowConsumer`](crate::ErrorKind::SlowConsumer)
    /// (`None`: wait for ever). While blocked it reads nothing, so venue heartbeats go
    /// unanswered: set this below the venue's heartbeat timeout and a slow consumer costs a
    /// reconnect instead of a heartbeat close. Default `None`.
    pub max_block: Option<Duration>,
    /// Supervision after panics.
    pub restart: RestartLimit,
    /// Default time a request waits for its response. Default 30 s: long enough for a
    /// loaded venue, short enough that a lost answer surfaces.
    pub request_timeout: Duration,
    /// Most user requests written and not yet answered; more wait in the queue. Default 256.
    pub max_in_flight: usize,
    /// Notifications waiting in each subscription's stream. Default 1,024.
    pub subscription_capacity: usize,
    /// Credit budget for outgoing traffic (`None`: unlimited). Default `None`.
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
    /// TLS.
    pub tls: TlsConfig,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "[redacted]"))
            .collect();
        f.debug_struct("ClientConfig")
            .field("url", &crate::logging::redact_url(&self.url))
            .field("headers", &headers)
            .field("subprotocols", &self.subprotocols)
            .field("connect_timeout", &self.connect_timeout)
            .field("upgrade_timeout", &self.upgrade_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("keepalive", &self.keepalive)
            .field("reconnect", &self.reconnect)
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("command_capacity", &self.command_capacity)
            .field("event_capacity", &self.event_capacity)
            .field("offline", &self.offline)
            .field("overflow", &self.overflow)
            .field("watermarks", &self.watermarks)
            .field("max_block", &self.max_block)
            .field("restart", &self.restart)
            .field("request_timeout", &self.request_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("rate_limit", &self.rate_limit)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClientConfig {
    /// Defaults for `url` (see each field).
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            headers: Vec::new(),
            subprotocols: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            upgrade_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            keepalive: KeepaliveConfig::default(),
            reconnect: ReconnectPolicy::default(),
            max_message_size: 16 << 20,
            max_frame_size: 4 << 20,
            command_capacity: 256,
            event_capacity: 1024,
            offline: OfflinePolicy::default(),
            overflow: OverflowPolicy::default(),
            watermarks: Watermarks::default(),
            max_block: None,
            restart: RestartLimit::default(),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 256,
            subscription_capacity: 1024,
            rate_limit: None,
            tls: TlsConfig::default(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A configuration error naming the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        parse_url(&self.url)?;
        for (name, value) in &self.headers {
            header(name, value)?;
        }
        for p in &self.subprotocols {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(Error::config(format!("invalid subprotocol {p:?}")));
            }
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("upgrade_timeout", self.upgrade_timeout),
            ("write_timeout", self.write_timeout),
            ("close_timeout", self.close_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::config(format!("{name} must be > 0")));
            }
        }
        for (name, n) in [
            ("max_message_size", self.max_message_size),
            ("max_frame_size", self.max_frame_size),
            ("command_capacity", self.command_capacity),
            ("event_capacity", self.event_capacity),
            ("max_in_flight", self.max_in_flight),
            ("subscription_capacity", self.subscription_capacity),
        ] {
            if n == 0 {
                return Err(Error::config(format!("{name} must be > 0")));
            }
        }
        for (name, n) in [
            ("command_capacity", self.command_capacity),
            ("event_capacity", self.event_capacity),
            ("subscription_capacity", self.subscription_capacity),
        ] {
            if n > MAX_CHANNEL_CAPACITY {
                return Err(Error::config(format!(
                    "{name} must be <= {MAX_CHANNEL_CAPACITY}, got {n}"
                )));
            }
        }
        if self.offline == (OfflinePolicy::Queue { capacity: 0 }) {
            return Err(Error::config(
                "offline queue capacity must be > 0 (or use Reject)",
            ));
        }
        let w = self.watermarks;
        if !(w.low >= 0.0 && w.low < w.high && w.high <= 1.0) {
            return Err(Error::config(format!(
                "watermarks must satisfy 0 <= low < high <= 1 (low {}, high {})",
                w.low, w.high
            )));
        }
        if self.max_block.is_some_and(|d| d.is_zero()) {
            return Err(Error::config("max_block must be > 0 (or None)"));
        }
        if self.restart.window.is_zero() {
            return Err(Error::config("restart window must be > 0"));
        }
        if self.tls.roots == RootCertificates::Native && !cfg!(feature = "native-roots") {
            return Err(Error::config(
                "native root certificates need the `native-roots` feature",
            ));
        }
        if let Some(rl) = &self.rate_limit {
            rl.validate()?;
        }
        self.keepalive.validate()?;
        self.reconnect.validate()
    }
}

/// Parses and checks a `ws://` / `wss://` URL.
pub(crate) fn parse_url(url: &str) -> Result<Uri, Error> {
    let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
        Error::config(format!("invalid URL {url:?}")).with_source(e)
    })?;
    match uri.scheme_str() {
        Some("ws") | Some("wss") => {}
        _ => {
            return Err(Error::config(format!(
                "URL {url:?} must start with ws:// or wss://"
            )))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::config(format!("URL {url:?} has no host")));
    }
    Ok(uri)
}

const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
];

/// Parses and checks one upgrade header.
pub(crate) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let n = HeaderName::try_from(name)
        .map_err(|e| Error::config(format!("invalid header name {name:?}")).with_source(e))?;
    if RESERVED_HEADERS.contains(&n.as_str()) {
        return Err(Error::config(format!(
            "header {name:?} is set by the WebSocket handshake itself"
        )));
    }
    let v = HeaderValue::try_from(value)
        .map_err(|e| Error::config(format!("invalid value for header {name:?}")).with_source(e))?;
    Ok((n, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ClientConfig::new("ws://127.0.0.1:1/x").validate().unwrap();
        ClientConfig::new("wss://example.com").validate().unwrap();
    }

    /// Every zero or out-of-range setting is refused by name (docs/bad-input.md).
    #[test]
    fn every_bad_setting_is_refused_by_name() {
        type Edit = fn(&mut ClientConfig);
        let cases: [(&str, Edit); 19] = [
            ("connect_timeout", |c| c.connect_timeout = Duration::ZERO),
            ("upgrade_timeout", |c| c.upgrade_timeout = Duration::ZERO),
            ("write_timeout", |c| c.write_timeout = Duration::ZERO),
            ("close_timeout", |c| c.close_timeout = Duration::ZERO),
            ("request_timeout", |c| c.request_timeout = Duration::ZERO),
            ("max_message_size", |c| c.max_message_size = 0),
            ("max_frame_size", |c| c.max_frame_size = 0),
            ("max_in_flight", |c| c.max_in_flight = 0),
            ("subscription_capacity", |c| c.subscription_capacity = 0),
            ("offline queue", |c| {
                c.offline = OfflinePolicy::Queue { capacity: 0 }
            }),
            ("watermarks", |c| {
                c.watermarks = Watermarks {
                    high: 0.5,
                    low: 0.5,
                }
            }),
            ("max_block", |c| c.max_block = Some(Duration::ZERO)),
            ("restart window", |c| c.restart.window = Duration::ZERO),
            ("keepalive", |c| {
                c.keepalive.ping_interval = Some(Duration::ZERO)
            }),
            ("max_wait", |c| {
                c.rate_limit =
                    Some(crate::RateLimit::new(1, 1.0).with_max_wait(Some(Duration::ZERO)))
            }),
            ("max_delay", |c| c.reconnect.max_delay = Duration::ZERO),
            ("factor", |c| {
                c.reconnect = crate::ReconnectPolicy::exponential(
                    Duration::from_millis(1),
                    Duration::from_secs(1),
                );
                if let crate::reconnect::Strategy::Exponential { factor, .. } =
                    &mut c.reconnect.strategy
                {
                    *factor = f64::NAN;
                }
            }),
            ("subprotocol", |c| c.subprotocols.push("a b".into())),
            ("event_capacity", |c| {
                c.event_capacity = MAX_CHANNEL_CAPACITY + 1
            }),
        ];
        for (name, edit) in cases {
            let mut c = ClientConfig::new("ws://h");
            edit(&mut c);
            let e = c.validate().expect_err(name);
            assert_eq!(*e.kind(), crate::ErrorKind::Config, "{name}");
            let words = name.split(' ').next().unwrap();
            assert!(e.to_string().contains(words), "{name}: {e}");
        }
    }

    #[test]
    fn bad_input_is_a_typed_config_error() {
        for url in ["http://x", "ws://", "not a url", ""] {
            assert!(
                ClientConfig::new(url).validate().unwrap_err().is_config(),
                "{url}"
            );
        }
        let mut c = ClientConfig::new("ws://h");
        c.headers.push(("Sec-WebSocket-Key".into(), "x".into()));
        assert!(c.validate().unwrap_err().is_config());
        // Found by fuzzing (fuzz/regressions/config): these used to pass validation and
        // then panic in `build` or on the first wait.
        let mut c = ClientConfig::new("ws://h");
        c.command_capacity = usize::MAX >> 2;
        assert!(c.validate().unwrap_err().is_config());
        let mut c = ClientConfig::new("ws://h");
        c.rate_limit = Some(crate::RateLimit::new(1, 1e-300));
        assert!(c.validate().unwrap_err().is_config());
        // "Never" written as the largest duration is valid, and never comes due.
        let mut c = ClientConfig::new("ws://h");
        c.keepalive.timeout = Some(Duration::MAX);
        c.keepalive.ping_interval = Some(Duration::MAX - Duration::from_secs(1));
        c.validate().unwrap();
        let ka = crate::keepalive::Keepalive::new(c.keepalive, std::time::Instant::now());
        assert_eq!(ka.next_deadline(), None);
        let mut c = ClientConfig::new("ws://h");
        c.headers.push(("X-Ok".into(), "line\nbreak".into()));
        assert!(c.validate().unwrap_err().is_config());
        let mut c = ClientConfig::new("ws://h");
        c.subprotocols.push("a,b".into());
        assert!(c.validate().unwrap_err().is_config());
        let mut c = ClientConfig::new("ws://h");
        c.event_capacity = 0;
        assert!(c.validate().unwrap_err().is_config());
    }
}
