//! The user's side: [`Client::builder`], the cheap [`Client`] handle and the
//! [`Connection`] future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rand::RngCore;
use serde::Serialize;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::actor::{self, Command};
use crate::behaviour::{AuthHandler, SubscriptionHandler};
use crate::behaviour::{ConnectionHandler, ErrorHandler, Handlers, MessageHandler};
use crate::config::{ClientConfig, OfflinePolicy, OverflowPolicy, RestartLimit, RootCertificates};
use crate::error::{Error, ErrorKind};
use crate::event::Events;
use crate::frame::{CloseCode, Frame};
use crate::json::RawJson;
use crate::jsonrpc::{self, JsonRpcConfig};
use crate::keepalive::KeepaliveConfig;
use crate::lifecycle::State;
use crate::ratelimit::{DefaultRateLimitHandler, RateLimit, RateLimitHandler};
use crate::reconnect::ReconnectPolicy;
use crate::subscription::Subscription;
use serde::de::DeserializeOwned;

/// A snapshot of the connection's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The lifecycle state.
    pub state: State,
    /// The current connect attempt (1-based).
    pub attempt: u32,
    /// How many times the link has been Ready.
    pub connects: u64,
}

/// A handle to one resilient connection. `Clone + Send + Sync` and cheap to clone.
///
/// When the last handle is dropped the connection runs its close handshake and ends.
///
/// ```no_run
/// # async fn demo() -> Result<(), websockex_nova::Error> {
/// use websockex_nova::{Client, Event};
///
/// let (client, mut events) = Client::builder("wss://test.deribit.com/ws/api/v2")
///     .connect()
///     .await?;
/// client.send_text(r#"{"jsonrpc":"2.0","id":1,"method":"public/test"}"#).await?;
/// while let Some(event) = events.next().await {
///     if let Event::Message(frame) = event {
///         println!("{}", frame.as_text().unwrap_or("<binary>"));
///         break;
///     }
/// }
/// client.close().await
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    closer: Arc<Closer>,
    codec: Option<Arc<dyn crate::codec::CodecHandler>>,
}

/// Shared by all clones of one handle. Signals "close wanted" to the actor even while it is
/// not reading commands (waiting for room in a full event stream): on an explicit close,
/// and when the last handle is dropped.
#[derive(Debug)]
struct Closer(Arc<Notify>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("status", &*self.status.borrow())
            .field("codec", &self.codec.as_ref().map(|c| c.name()))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts configuring a connection to `url` (`ws://` or `wss://`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(ClientConfig::new(url))
    }

    /// Sends one frame. Resolves once it is written to the socket. While the connection is
    /// not Ready, the [`OfflinePolicy`] applies: by default the frame waits in a bounded queue
    /// and is written right after the next connect.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::QueueFull`] / [`ErrorKind::NotReady`] per the offline policy;
    /// [`ErrorKind::Disconnected`] if the link dropped during the write; [`ErrorKind::Closed`]
    /// once the connection is closed; a configuration error for an invalid control frame.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not withdraw the frame: once handed to the connection it
    /// is written (or fails) regardless.
    pub async fn send(&self, frame: impl Into<Frame>) -> Result<(), Error> {
        let frame = frame.into();
        frame.validate_outgoing()?;
        let (reply, rx) = oneshot::channel();
        self.command(Command::Send { frame, reply }).await?;
        rx.await.map_err(|_| Error::closed())?
    }

    /// Hands one frame to the connection without waiting for room: fails at once with
    /// [`ErrorKind::QueueFull`] when the command channel
    /// ([`ClientConfig::command_capacity`]) or the outbound queue is full, where
    /// [`send`](Self::send) waits for the command channel. The returned future resolves
    /// once the frame is written, as `send`'s does; drop it to fire and forget.
    ///
    /// The outbound path is bounded end to end: the command channel, the outbound queue
    /// (the offline queue's capacity) and one frame at a time in the socket's write buffer,
    /// each write within [`ClientConfig::write_timeout`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::QueueFull`] at once when there is no room; then as [`send`](Self::send).
    pub fn try_send(
        &self,
        frame: impl Into<Frame>,
    ) -> Result<impl std::future::Future<Output = Result<(), Error>> + Send + 'static, Error> {
        use tokio::sync::mpsc::error::TrySendError;
        let frame = frame.into();
        frame.validate_outgoing()?;
        let (reply, rx) = oneshot::channel();
        match self.commands.try_send(Command::Send { frame, reply }) {
            Ok(()) => Ok(async move { rx.await.map_err(|_| Error::closed())? }),
            Err(TrySendError::Full(_)) => Err(Error::new(ErrorKind::QueueFull)
                .with_context("command channel full (try_send does not wait)")),
            Err(TrySendError::Closed(_)) => Err(Error::closed()),
        }
    }

    /// Sends a text frame. See [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), Error> {
        self.send(Frame::text(text.into())).await
    }

    /// Sends a binary frame. See [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send(Frame::binary(data)).await
    }

    /// Encodes `value` with the connection's codec (JSON text without one) on the caller's
    /// task and sends the frame. See [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Encode`] / [`ErrorKind::Unsupported`] from the codec, else as
    /// [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn send_value<T: Serialize>(&self, value: &T) -> Result<(), Error> {
        let frame = match &self.codec {
            Some(codec) => codec.encode(value)?,
            None => Frame::text(
                serde_json::to_string(value)
                    .map_err(|e| Error::new(ErrorKind::Encode).with_source(e))?,
            ),
        };
        self.send(frame).await
    }

    /// Serializes `value` to JSON and sends it as a text frame. See [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Encode`] if serialization fails, else as [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let text = serde_json::to_string(value)
            .map_err(|e| Error::new(ErrorKind::Encode).with_source(e))?;
        self.send(Frame::text(text)).await
    }

    /// Calls `method` with `params` and resolves with the response's `result`, matched by
    /// id (responses may arrive in any order). Needs a message handler that encodes
    /// requests ([`ClientBuilder::json_rpc`]). While not Ready the request waits in the
    /// offline queue (or is rejected, per [`OfflinePolicy`]); it is written through the
    /// rate limiter and counts against [`ClientConfig::max_in_flight`].
    ///
    /// # Errors
    ///
    /// Exactly one of: [`ErrorKind::Api`] (the venue's error object),
    /// [`ErrorKind::Timeout`] (`Request`, after the request timeout),
    /// [`ErrorKind::Disconnected`] with [`Error::was_sent`] telling whether it had been
    /// written, [`ErrorKind::Closed`], [`ErrorKind::QueueFull`] / [`ErrorKind::NotReady`] /
    /// [`ErrorKind::RateLimited`] per policy, [`ErrorKind::Encode`] for unserializable
    /// params, [`ErrorKind::Unsupported`] without a request-capable handler.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not withdraw the request; its response is then discarded.
    pub async fn request<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<RawJson, Error> {
        self.request_inner(method, params, None).await
    }

    /// [`request`](Self::request) with its own timeout.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    ///
    /// # Cancel safety
    ///
    /// As [`request`](Self::request).
    pub async fn request_with_timeout<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<RawJson, Error> {
        self.request_inner(method, params, Some(timeout)).await
    }

    /// [`request`](Self::request), decoding the result into `T`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), plus [`ErrorKind::Decode`] if the result does not
    /// fit `T`.
    ///
    /// # Cancel safety
    ///
    /// As [`request`](Self::request).
    pub async fn request_as<T: DeserializeOwned, P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<T, Error> {
        self.request(method, params).await?.decode_owned()
    }

    async fn request_inner<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        timeout: Option<Duration>,
    ) -> Result<RawJson, Error> {
        let params = jsonrpc::params_text(params)?;
        let (reply, rx) = oneshot::channel();
        self.command(Command::Request {
            method: method.to_owned(),
            params,
            timeout,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::closed())?
    }

    /// Subscribes to `channels` and resolves once the venue acknowledged them, channel by
    /// channel: the [`Subscription`] streams the confirmed ones; [`Subscription::refused`]
    /// lists those the venue left out. The channels stay desired across reconnects and are
    /// restored after each one (after re-authentication).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::SubscriptionRefused`] if none was confirmed; a configuration error for
    /// no channels or a channel already subscribed; [`ErrorKind::Unsupported`] without a
    /// subscription behaviour; else as [`request`](Self::request).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, confirmed channels are unsubscribed again.
    pub async fn subscribe<I, S>(&self, channels: I) -> Result<Subscription, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let channels: Vec<String> = channels.into_iter().map(Into::into).collect();
        let (reply, rx) = oneshot::channel();
        self.command(Command::Subscribe { channels, reply }).await?;
        let ok = rx.await.map_err(|_| Error::closed())??;
        Ok(Subscription {
            rx: ok.rx,
            lagged: ok.lagged,
            channels: ok.confirmed,
            refused: ok.refused,
            client: self.clone(),
        })
    }

    /// Unsubscribes from `channels` (they are no longer restored after reconnects).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Api`] if the venue refuses; else as [`request`](Self::request).
    ///
    /// # Cancel safety
    ///
    /// The unsubscribe proceeds even if the future is dropped.
    pub async fn unsubscribe<I, S>(&self, channels: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let channels: Vec<String> = channels.into_iter().map(Into::into).collect();
        let (reply, rx) = oneshot::channel();
        self.command(Command::Unsubscribe { channels, reply })
            .await?;
        rx.await.map_err(|_| Error::closed())?
    }

    /// Changes the live configuration: `update` runs on the connection's task against the
    /// configuration in force; the result is validated and applied atomically (all of it or
    /// nothing), without dropping the link. Which fields apply at once and which on the next
    /// connect: [`reconfigure`](crate::reconfigure).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] if the new configuration does not validate or changes a field
    /// fixed for the connection's lifetime (the old configuration stays);
    /// [`ErrorKind::Closed`] once closed.
    pub async fn reconfigure(
        &self,
        update: impl FnOnce(&mut ClientConfig) + Send + 'static,
    ) -> Result<crate::Reconfigured, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Reconfigure {
            update: Box::new(update),
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::closed())?
    }

    /// The configuration in force (with every live change applied), e.g. to save it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] once closed.
    pub async fn config(&self) -> Result<ClientConfig, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Config { reply }).await?;
        rx.await.map_err(|_| Error::closed())
    }

    /// Sends a WebSocket ping and resolves with the round-trip time when its pong arrives.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotReady`] while not connected; [`ErrorKind::Disconnected`] if the
    /// link drops first; [`ErrorKind::Closed`] once closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the pong is then ignored.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Ping { reply }).await?;
        rx.await.map_err(|_| Error::closed())?
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Waits until the connection is Ready (returns at once if it is).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] if the connection closes first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn ready(&self) -> Result<(), Error> {
        let mut status = self.status.clone();
        let seen = status
            .wait_for(|s| matches!(s.state, State::Ready | State::Closed))
            .await
            .map_err(|_| Error::closed())?;
        if seen.state == State::Ready {
            Ok(())
        } else {
            Err(Error::closed())
        }
    }

    /// Waits until the connection has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn closed(&self) {
        let mut status = self.status.clone();
        let _ = status.wait_for(|s| s.state == State::Closed).await;
    }

    /// Closes with `1000 Normal Closure`. See [`close_with`](Self::close_with).
    ///
    /// # Errors
    ///
    /// As [`close_with`](Self::close_with).
    ///
    /// # Cancel safety
    ///
    /// As [`close_with`](Self::close_with).
    pub async fn close(&self) -> Result<(), Error> {
        self.close_with(CloseCode::NORMAL, "").await
    }

    /// Runs the close handshake (bounded by the close timeout), fails queued sends with
    /// [`ErrorKind::Closed`], stops reconnecting and ends the connection task. Closing an
    /// already closed connection succeeds.
    ///
    /// # Errors
    ///
    /// A configuration error if `reason` is longer than 123 bytes.
    ///
    /// # Cancel safety
    ///
    /// The close proceeds even if this future is dropped.
    pub async fn close_with(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = Frame::close(code, reason);
        frame.validate_outgoing()?;
        self.closer.0.notify_one();
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Close { frame, reply })
            .await
            .is_err()
        {
            return Ok(());
        }
        let _ = rx.await;
        self.closed().await;
        Ok(())
    }

    async fn command(&self, cmd: Command) -> Result<(), Error> {
        self.commands.send(cmd).await.map_err(|_| Error::closed())
    }
}

/// The connection's work, as a future for users who drive it themselves (hyper-style).
///
/// Returned by [`ClientBuilder::build`]; nothing happens until it is polled (spawned).
/// It resolves when the connection is closed for good: `Ok(())` after a requested close
/// (or after the last handle was dropped), the cause otherwise.
#[must_use = "the connection does nothing unless polled; spawn it"]
pub struct Connection {
    fut: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Future for Connection {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// Configures and opens a connection. Setters never fail: errors surface from
/// [`build`](Self::build) / [`connect`](Self::connect).
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
    handlers: Handlers,
    rate_limit: Box<dyn RateLimitHandler>,
    rng: Option<Box<dyn RngCore + Send>>,
    error: Option<Error>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Starts from a complete configuration.
    pub fn new(config: ClientConfig) -> Self {
        ClientBuilder {
            config,
            handlers: Handlers::default(),
            rate_limit: Box::new(DefaultRateLimitHandler),
            rng: None,
            error: None,
        }
    }

    /// Adds a header to the upgrade request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol (call again to offer several, in order of preference).
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.config.subprotocols.push(protocol.into());
        self
    }

    /// TCP connect plus TLS handshake timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// HTTP upgrade timeout.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.config.upgrade_timeout = timeout;
        self
    }

    /// Socket write timeout.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// Close handshake timeout.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Keepalive settings.
    pub fn keepalive(mut self, keepalive: KeepaliveConfig) -> Self {
        self.config.keepalive = keepalive;
        self
    }

    /// Ping interval (`None`: no client pings).
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.keepalive.ping_interval = interval;
        self
    }

    /// Dead-peer timeout: no traffic for this long replaces the link (`None`: never).
    pub fn ping_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.keepalive.timeout = timeout;
        self
    }

    /// Reconnect policy.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.config.reconnect = policy;
        self
    }

    /// Largest inbound message in bytes.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// What sends do while not Ready.
    pub fn offline_policy(mut self, policy: OfflinePolicy) -> Self {
        self.config.offline = policy;
        self
    }

    /// What happens when the event stream is full.
    pub fn overflow_policy(mut self, policy: OverflowPolicy) -> Self {
        self.config.overflow = policy;
        self
    }

    /// Under [`OverflowPolicy::Block`](crate::OverflowPolicy::Block), the longest wait for a
    /// consumer before the link is replaced with `SlowConsumer` (see
    /// [`ClientConfig::max_block`]).
    pub fn max_block(mut self, max: Option<Duration>) -> Self {
        self.config.max_block = max;
        self
    }

    /// When the event stream reports pressure (see [`Watermarks`](crate::Watermarks)).
    pub fn watermarks(mut self, watermarks: crate::Watermarks) -> Self {
        self.config.watermarks = watermarks;
        self
    }

    /// Event stream capacity.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity;
        self
    }

    /// Restart intensity limit after panics.
    pub fn restart_limit(mut self, limit: RestartLimit) -> Self {
        self.config.restart = limit;
        self
    }

    /// TLS root store.
    pub fn root_certificates(mut self, roots: RootCertificates) -> Self {
        self.config.tls.roots = roots;
        self
    }

    /// Trusts an extra DER-encoded root certificate.
    pub fn add_root_certificate_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.config.tls.extra_roots_der.push(der.into());
        self
    }

    /// Connection behaviour.
    pub fn connection_handler(mut self, handler: impl ConnectionHandler) -> Self {
        self.handlers.connection = Box::new(handler);
        self
    }

    /// Message behaviour.
    pub fn message_handler(mut self, handler: impl MessageHandler) -> Self {
        self.handlers.message = Box::new(handler);
        self
    }

    /// Error behaviour.
    pub fn error_handler(mut self, handler: impl ErrorHandler) -> Self {
        self.handlers.error = Box::new(handler);
        self
    }

    /// Replaces all behaviours at once (what a platform adapter supplies).
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = handlers;
        self
    }

    /// Speaks JSON-RPC 2.0 with the method names of `config`: requests, subscriptions,
    /// authentication and venue heartbeats (keeps the connection and error handlers).
    pub fn json_rpc(mut self, config: JsonRpcConfig) -> Self {
        if let Err(e) = config.validate() {
            self.error.get_or_insert(e);
        }
        let h = config.handlers();
        self.handlers.message = h.message;
        self.handlers.subscription = h.subscription;
        self.handlers.auth = h.auth;
        self
    }

    /// Records metrics (e.g. a [`DefaultMetricsCollector`](crate::metrics::DefaultMetricsCollector)
    /// whose clone you keep for snapshots).
    pub fn metrics(mut self, collector: impl crate::metrics::MetricsCollector) -> Self {
        self.handlers.metrics = Box::new(collector);
        self
    }

    /// The wire format (see [`codec`](crate::codec)): received frames are decoded before
    /// the message handler sees them (a frame that does not decode is counted, reported as
    /// an [`Event::Error`](crate::Event::Error) of kind [`ErrorKind::Decode`], and the link
    /// stays up), and [`Client::send_value`] encodes with it.
    pub fn codec(mut self, codec: impl crate::codec::CodecHandler) -> Self {
        self.handlers.codec = Some(Arc::new(codec));
        self
    }

    /// Logs what happens through `handler` (e.g. a
    /// [`DefaultLoggingHandler`](crate::logging::DefaultLoggingHandler)), besides the
    /// `tracing` events.
    pub fn logging(mut self, handler: impl crate::logging::LoggingHandler) -> Self {
        self.handlers.logging = Some(Box::new(handler));
        self
    }

    /// Subscription behaviour.
    pub fn subscription_handler(mut self, handler: impl SubscriptionHandler) -> Self {
        self.handlers.subscription = Some(Box::new(handler));
        self
    }

    /// Authentication behaviour.
    pub fn auth_handler(mut self, handler: impl AuthHandler) -> Self {
        self.handlers.auth = Some(Box::new(handler));
        self
    }

    /// Meters outgoing traffic (see [`RateLimit`]).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.config.rate_limit = Some(limit);
        self
    }

    /// The credit cost of each outgoing frame (default: 1 each).
    pub fn rate_limit_handler(mut self, handler: impl RateLimitHandler) -> Self {
        self.rate_limit = Box::new(handler);
        self
    }

    /// Default time a request waits for its response.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Most user requests in flight.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = max;
        self
    }

    /// Capacity of each subscription's stream.
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.config.subscription_capacity = capacity;
        self
    }

    /// The random source for backoff jitter (seed one for deterministic tests).
    pub fn backoff_rng(mut self, rng: impl RngCore + Send + 'static) -> Self {
        self.rng = Some(Box::new(rng));
        self
    }

    /// Edits the configuration in place (e.g. applying a
    /// `config_file::ConfigFile`, feature `config-file`); validated by `build`.
    pub fn configure(mut self, edit: impl FnOnce(&mut ClientConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The low-level API: a handle, the event stream, and the [`Connection`] future that
    /// does all the work once you spawn it. No I/O happens here.
    ///
    /// # Errors
    ///
    /// A configuration error if the configuration does not validate.
    pub fn build(self) -> Result<(Client, Events, Connection), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.config.validate()?;
        let codec = self.handlers.codec.clone();
        let (cmd_tx, cmd_rx) = mpsc::channel(self.config.command_capacity);
        let evictable = self.config.overflow == crate::config::OverflowPolicy::DropOldest;
        let (event_tx, event_rx, evictor) =
            crate::inbox::channel(self.config.event_capacity, evictable);
        let lag = actor::Lag::default();
        let initial = Status {
            state: State::Connecting,
            attempt: 1,
            connects: 0,
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let close_wanted = Arc::new(Notify::new());
        let fut = actor::run(
            self.config,
            self.handlers,
            self.rate_limit,
            self.rng,
            Arc::clone(&close_wanted),
            cmd_rx,
            (event_tx, lag.clone(), evictor),
            status_tx,
        )?;
        Ok((
            Client {
                commands: cmd_tx,
                status: status_rx,
                closer: Arc::new(Closer(close_wanted)),
                codec,
            },
            Events { rx: event_rx, lag },
            Connection { fut: Box::pin(fut) },
        ))
    }

    /// Builds and spawns the connection on the current tokio runtime without waiting for it
    /// to come up. Sends made before it is Ready follow the offline policy.
    ///
    /// # Errors
    ///
    /// A configuration error if the configuration does not validate.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(self) -> Result<(Client, Events), Error> {
        let (client, events, connection) = self.build()?;
        tokio::spawn(connection);
        Ok((client, events))
    }

    /// Builds, spawns, and waits until the connection is Ready for the first time. Failed
    /// attempts are retried per the reconnect policy first (so with unlimited retries this
    /// waits until the server is reachable; wrap it in a timeout if that is not wanted).
    ///
    /// # Errors
    ///
    /// A configuration error, or the error that closed the connection before it was Ready
    /// (for instance [`ErrorKind::RetriesExhausted`] or an upgrade refused with a 4xx).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the only handle, which closes the connection.
    pub async fn connect(self) -> Result<(Client, Events), Error> {
        let (client, events, connection) = self.build()?;
        let mut task = tokio::spawn(connection);
        let mut status = client.status.clone();
        // `connects` rather than the state: a link that was Ready and died at once still
        // counts as connected (its events say what followed). Biased, and checked again
        // after the task ended, so that race never turns a connect into an error.
        let outcome = tokio::select! {
            biased;
            ready = status.wait_for(|s| s.connects > 0) => {
                if ready.is_ok() {
                    return Ok((client, events));
                }
                task.await
            }
            done = &mut task => done,
        };
        if client.status().connects > 0 {
            return Ok((client, events));
        }
        match outcome {
            Ok(Err(e)) => Err(e),
            _ => Err(Error::closed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_handle<T: Clone + Send + Sync + 'static>() {}

    #[test]
    fn client_is_a_cheap_shareable_handle() {
        assert_handle::<Client>();
    }

    #[test]
    fn build_defers_config_errors() {
        let err = Client::builder("http://nope").build().unwrap_err();
        assert!(err.is_config());
        let err = Client::builder("ws://h")
            .ping_interval(Some(Duration::from_secs(10)))
            .ping_timeout(Some(Duration::from_secs(5)))
            .build()
            .unwrap_err();
        assert!(err.is_config());
    }
}
