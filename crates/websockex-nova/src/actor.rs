//! The connection actor: one task per connection that owns all its mutable state.
//!
//! A thin `tokio::select!` loop over the command channel, one timer and the socket.
//! Decisions live in the sans-IO parts ([`Lifecycle`], [`Backoff`], [`Keepalive`],
//! [`Outbox`], [`Pending`]) and in the behaviours; this module only carries them out.
//!
//! After every upgrade the link is *restored* before it is Ready: authenticate (if an
//! [`AuthHandler`](crate::behaviour::AuthHandler) is set), then resubscribe every
//! confirmed channel in batches, acks checked channel by channel; inbound traffic is
//! served all the while (notifications that arrive meanwhile are delivered). Only then
//! does user traffic queued while offline flow, through the single writer: the outbox,
//! metered by the rate limiter, with the framework's own calls ahead of the user's.
//!
//! A panic anywhere inside a session (a handler bug) is caught by [`Actor::supervise`],
//! which restarts the session within the configured restart intensity.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use rand::RngCore;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use crate::behaviour::{
    Call, Classified, ConnectInfo, DisconnectDecision, DisconnectInfo, ErrorContext, ErrorDecision,
    ErrorPhase, FrameDecision, Handlers,
};
use crate::client::Status;
use crate::config::{ClientConfig, OfflinePolicy, OverflowPolicy};
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::event::Event;
use crate::frame::{CloseCode, CloseFrame, Frame};
use crate::inbox::{self, Offer};
use crate::json::{ApiError, RawJson, Secret};
use crate::keepalive::{Keepalive, KeepaliveAction};
pub(crate) use crate::lag::Lag;
use crate::lifecycle::{Lifecycle, State};
use crate::logging::{telemetry, Direction, LogValue, Logger};
use crate::metrics::{ConnectionMetric, MessageKind, QueueKind};
use crate::outbox::{Next, Outbox, Queued};
use crate::ratelimit::{OnLimit, Outgoing, RateLimitHandler, TokenBucket};
use crate::reconfigure::{self, Reconfigured};
use crate::reconnect::{Backoff, Strategy};
use crate::rpc::Pending;
use crate::subscription::{Registry, Route, SubscriptionEvent};
use crate::transport::{Connector, Link};

/// What a [`Client`](crate::Client) asks of its actor. Every variant carries a reply slot
/// that is answered (or dropped, which the handle reads as `Closed`).
pub(crate) enum Command {
    Send {
        frame: Frame,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Request {
        method: String,
        params: String,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Result<RawJson, Error>>,
    },
    Subscribe {
        channels: Vec<String>,
        reply: oneshot::Sender<Result<SubscribeOk, Error>>,
    },
    Unsubscribe {
        channels: Vec<String>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Ping {
        reply: oneshot::Sender<Result<Duration, Error>>,
    },
    Close {
        frame: Frame,
        reply: oneshot::Sender<()>,
    },
    Reconfigure {
        update: ConfigUpdate,
        reply: oneshot::Sender<Result<Reconfigured, Error>>,
    },
    Config {
        reply: oneshot::Sender<ClientConfig>,
    },
}

/// A change to the live configuration, run on the actor against its current one.
pub(crate) type ConfigUpdate = Box<dyn FnOnce(&mut ClientConfig) + Send>;

/// A confirmed subscription handed back to the handle.
pub(crate) struct SubscribeOk {
    pub(crate) rx: inbox::Rx<SubscriptionEvent>,
    pub(crate) lagged: Lag,
    pub(crate) confirmed: Vec<String>,
    pub(crate) refused: Vec<String>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// "Never", as a time to wait: a year.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// `t + d`, or `FAR` from `t` where the sum would overflow the clock (a timeout of
/// `Duration::MAX` is a valid configuration and means "never").
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(FAR)).unwrap_or(t + FAR)
}

/// How often a stream under pressure is looked at for relief when nothing else happens.
const PRESSURE_CHECK: Duration = Duration::from_millis(50);

/// Most inbound frames handled per wakeup before commands and timers get a turn.
const INBOUND_BATCH: usize = 64;

/// Builds the actor and returns its future, instrumented with the connection span.
#[allow(clippy::too_many_arguments)] // internal: the parts `ClientBuilder::build` made
pub(crate) fn run(
    config: ClientConfig,
    handlers: Handlers,
    rate_limit: Box<dyn RateLimitHandler>,
    rng: Option<Box<dyn RngCore + Send>>,
    close_wanted: Arc<Notify>,
    commands: mpsc::Receiver<Command>,
    events: EventParts,
    status: watch::Sender<Status>,
) -> Result<impl std::future::Future<Output = Result<(), Error>> + Send, Error> {
    let connector = Arc::new(Connector::new(&config)?);
    let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "websockex_nova.connection",
        conn_id,
        host = connector.host(),
        attempt = tracing::field::Empty,
    );
    Ok(Actor::new(
        conn_id,
        config,
        connector,
        handlers,
        rate_limit,
        rng,
        close_wanted,
        commands,
        events,
        status,
    )
    .supervise()
    .instrument(span))
}

/// The sending side of the event stream, as the handle built it.
pub(crate) type EventParts = (mpsc::Sender<Event>, Lag, Option<inbox::Evictor<Event>>);

/// What became of a data event.
enum Delivery {
    Delivered,
    /// This many dropped by the overflow policy (counted, announced before the next).
    Dropped(u64),
    /// Full under `Block`: the caller waits for room.
    Full(Event),
    /// Full under `Disconnect`: counted; the caller replaces the link.
    Overflow,
}

/// Delivers events under the overflow policy.
struct EventSink {
    tx: mpsc::Sender<Event>,
    policy: OverflowPolicy,
    /// Announcements owed (messages dropped), put in before the next event or taken by
    /// the reader once drained.
    lag: Lag,
    gone: bool,
    /// While closing, lifecycle events wait at most this long for room: a consumer that
    /// neither reads nor drops its stream must not make `close()` hang.
    closing_wait: Option<Duration>,
    /// Notified by the handles on `close()` and when the last one is dropped.
    close_wanted: Arc<Notify>,
    /// The close timeout, applied once a close is wanted.
    close_timeout: Duration,
    /// Under `DropOldest`: the stream's head, for evicting.
    evictor: Option<inbox::Evictor<Event>>,
    /// The stream's capacity and its (high, low) watermarks in events.
    capacity: usize,
    watermarks: (usize, usize),
    /// Above the high watermark, not yet back to the low one.
    pressure: bool,
}

impl EventSink {
    /// Lifecycle events: never dropped (waits for room).
    async fn emit(&mut self, event: Event) {
        if self.gone {
            return;
        }
        self.send(event).await;
    }

    /// Waits for room, for what the stream owes first, then for `event`.
    async fn send(&mut self, event: Event) {
        let mut event = event;
        while let Some(back) = self.send_one(event).await {
            event = back;
        }
    }

    /// Waits for room for one item: what is owed takes it first (`event` is given back).
    async fn send_one(&mut self, event: Event) -> Option<Event> {
        let permit = match self.closing_wait {
            Some(wait) => tokio::time::timeout(wait, self.tx.reserve()).await,
            None => tokio::select! {
                biased;
                permit = self.tx.reserve() => Ok(permit),
                () = self.close_wanted.notified() => {
                    self.closing_wait = Some(self.close_timeout);
                    tokio::time::timeout(self.close_timeout, self.tx.reserve()).await
                }
            },
        };
        match permit {
            Ok(Ok(permit)) => return inbox::put_one(permit, &self.lag, event),
            Ok(Err(_)) => self.gone = true,
            Err(_) => {
                tracing::warn!(target: "websockex_nova", event = "dropped", "event stream full while closing; later events are dropped");
                // Nobody is reading: the remaining events would wait in vain too.
                self.gone = true;
            }
        }
        None
    }

    /// Data messages, without waiting, under the overflow policy.
    #[inline]
    fn try_deliver(&mut self, event: Event) -> Delivery {
        if self.gone {
            return Delivery::Delivered;
        }
        match inbox::offer(
            &self.tx,
            &self.lag,
            self.evictor.as_ref(),
            self.policy,
            event,
        ) {
            Offer::Put => Delivery::Delivered,
            Offer::Dropped(n) => Delivery::Dropped(n),
            Offer::Full(event) => Delivery::Full(event),
            Offer::Overflow => Delivery::Overflow,
            Offer::Closed => {
                self.gone = true;
                Delivery::Delivered
            }
        }
    }

    /// Events queued now.
    #[inline]
    fn depth(&self) -> usize {
        self.capacity.saturating_sub(self.tx.capacity())
    }

    /// A watermark crossing, if this is one: `Some((active, depth))`. Announced on the
    /// stream itself when there is room (there is, below the capacity).
    #[inline]
    fn check_pressure(&mut self) -> Option<(bool, usize)> {
        let depth = self.depth();
        let (high, low) = self.watermarks;
        let crossed = if self.pressure {
            depth <= low
        } else {
            depth >= high
        };
        crossed.then(|| self.cross(depth))
    }

    #[cold]
    fn cross(&mut self, depth: usize) -> (bool, usize) {
        let active = !self.pressure;
        self.pressure = active;
        if !self.gone {
            let _ = inbox::try_put(&self.tx, &self.lag, Event::Backpressure { active, depth });
        }
        (active, depth)
    }
}

/// A ping waiting for its pong.
struct PendingPing {
    payload: Bytes,
    sent: Instant,
    reply: Option<oneshot::Sender<Result<Duration, Error>>>,
}

/// Something queued for the single writer.
enum Job {
    /// A user frame; answered once written.
    Send {
        frame: Frame,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A call (user request or the framework's own); its response goes to `waiter`.
    Call {
        method: String,
        params: String,
        timeout: Duration,
        waiter: Waiter,
    },
}

/// Who waits for a response.
enum Waiter {
    /// A user request, and when it was written (for the latency metric).
    User(oneshot::Sender<Result<RawJson, Error>>, Option<Instant>),
    Auth {
        refresh: bool,
    },
    Subscribe {
        group: u64,
        channels: Vec<String>,
    },
    Unsubscribe(Option<oneshot::Sender<Result<(), Error>>>),
    /// A framework call whose answer nobody waits for (connect calls, auth follow-ups).
    Notice(String),
}

/// The acks of one subscribe (user call or restore), possibly over several batches.
struct Group {
    remaining: usize,
    confirmed: Vec<String>,
    refused: Vec<String>,
    error: Option<Error>,
    /// A user's call: its reply slot and the stream to hand over. `None`: a restore.
    user: Option<UserSubscribe>,
}

/// A user's subscribe call: its reply slot and the stream to hand over.
type UserSubscribe = (
    oneshot::Sender<Result<SubscribeOk, Error>>,
    inbox::Rx<SubscriptionEvent>,
    Lag,
);

/// Where a link is in its restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Auth,
    Subscribe { group: u64 },
    Ready,
}

/// What is left to do about an inbound frame after the synchronous part.
enum Inbound {
    /// Nothing.
    Done,
    /// Send the connection hook's reply, then handle the frame as data.
    HookReply(Frame, Frame),
    /// Send the message handler's reply now.
    Reply(Frame),
    /// Answer a venue heartbeat at once, ahead of everything queued.
    Heartbeat(Frame),
    /// The event stream is full under `OverflowPolicy::Block`: wait for room.
    Blocked(Event),
    /// A subscription's stream is full under `OverflowPolicy::Block`: wait for room.
    SubscriptionFull(mpsc::Sender<SubscriptionEvent>, Lag, SubscriptionEvent),
    /// A stream is full under `OverflowPolicy::Disconnect`: replace the link.
    Overflow(&'static str),
    /// An answer to the framework's own call.
    Internal(Waiter, Result<RawJson, ApiError>),
    /// A user request was answered: its in-flight slot is free, write what waits.
    Pump,
    /// A subscription stream was dropped by its user: unsubscribe.
    Abandoned,
    /// The server closed: finish the handshake.
    ServerClose(Option<CloseFrame>),
}

/// How a link ended.
enum LinkEnd {
    /// Lost: decide whether to come back.
    Lost(Error),
    /// Closed on purpose (the user, or all handles dropped).
    Closed,
}

/// A command after the part that needs no link.
enum Accepted {
    Done,
    Ping(oneshot::Sender<Result<Duration, Error>>),
    Close(Frame),
}

struct Actor {
    log: Logger,
    config: ClientConfig,
    connector: Arc<Connector>,
    handlers: Handlers,
    rate_limit: Box<dyn RateLimitHandler>,
    commands: mpsc::Receiver<Command>,
    events: EventSink,
    status: watch::Sender<Status>,
    lifecycle: Lifecycle,
    backoff: Backoff,
    restarts: VecDeque<Instant>,
    close_waiters: Vec<oneshot::Sender<()>>,
    ping_seq: u64,
    outbox: Outbox<Job>,
    pending: Pending<Waiter>,
    registry: Registry,
    groups: HashMap<u64, Group>,
    next_group: u64,
    phase: Phase,
    supports_requests: bool,
    refresh_token: Option<Secret>,
    refresh_at: Option<Instant>,
    limiter_wake: Option<Instant>,
    /// Since when the head of the outbox waits for rate-limit credits.
    limited_since: Option<Instant>,
    /// The keepalive configuration changed: the live link re-arms it.
    keepalive_changed: bool,
    ready_since: Option<Instant>,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    fn new(
        conn_id: u64,
        config: ClientConfig,
        connector: Arc<Connector>,
        mut handlers: Handlers,
        rate_limit: Box<dyn RateLimitHandler>,
        rng: Option<Box<dyn RngCore + Send>>,
        close_wanted: Arc<Notify>,
        commands: mpsc::Receiver<Command>,
        (events, lag, evictor): EventParts,
        status: watch::Sender<Status>,
    ) -> Actor {
        let backoff = match rng {
            Some(rng) => Backoff::with_rng(config.reconnect.clone(), rng),
            None => Backoff::new(config.reconnect.clone()),
        };
        let now = Instant::now().into_std();
        let bucket = config
            .rate_limit
            .map(|rl| TokenBucket::new(rl.burst, rl.per_second, now));
        let capacity = outbox_capacity(&config);
        let supports_requests = handlers
            .message
            .encode_request(0, "probe", "null")
            .is_some();
        let log = Logger {
            conn_id,
            handler: handlers.logging.take(),
        };
        Actor {
            log,
            events: EventSink {
                tx: events,
                policy: config.overflow,
                lag,
                gone: false,
                closing_wait: None,
                close_wanted,
                close_timeout: config.close_timeout,
                evictor,
                capacity: config.event_capacity,
                watermarks: config.watermarks.counts(config.event_capacity),
                pressure: false,
            },
            outbox: Outbox::new(
                capacity,
                bucket,
                config.rate_limit.and_then(|rl| rl.max_wait),
                config.max_in_flight,
            ),
            pending: Pending::new(),
            registry: Registry::new(config.overflow),
            groups: HashMap::new(),
            next_group: 1,
            phase: Phase::Ready,
            supports_requests,
            refresh_token: None,
            refresh_at: None,
            limiter_wake: None,
            limited_since: None,
            keepalive_changed: false,
            ready_since: None,
            config,
            connector,
            handlers,
            rate_limit,
            commands,
            status,
            lifecycle: Lifecycle::new(),
            backoff,
            restarts: VecDeque::new(),
            close_waiters: Vec::new(),
            ping_seq: 0,
        }
    }

    /// Runs sessions until one ends; restarts after panics within the restart intensity.
    async fn supervise(mut self) -> Result<(), Error> {
        let mut resume: Option<Error> = None;
        loop {
            let outcome = AssertUnwindSafe(self.session(resume.take()))
                .catch_unwind()
                .await;
            match outcome {
                Ok(result) => return Box::pin(self.finish(result)).await,
                Err(panic) => {
                    let cause = panic_message(panic.as_ref());
                    let now = Instant::now();
                    let window = self.config.restart.window;
                    while self
                        .restarts
                        .front()
                        .is_some_and(|t| now.duration_since(*t) >= window)
                    {
                        self.restarts.pop_front();
                    }
                    self.restarts.push_back(now);
                    let restarts = self.restarts.len() as u32;
                    let error = Error::new(ErrorKind::HandlerPanicked).with_context(cause.clone());
                    if restarts > self.config.restart.max_restarts {
                        telemetry!(
                            self.log,
                            Connection,
                            ERROR,
                            "restart_limit",
                            restarts = restarts,
                            cause = &*cause
                        );
                        let fatal =
                            Error::new(ErrorKind::RestartLimit { restarts }).with_source(error);
                        return Box::pin(self.finish(Err(fatal))).await;
                    }
                    telemetry!(
                        self.log,
                        Connection,
                        ERROR,
                        "restarted",
                        restarts = restarts,
                        cause = &*cause
                    );
                    // The panicked session dropped its link without the usual cleanup.
                    self.link_gone(false);
                    self.events.emit(Event::Restarted { restarts, cause }).await;
                    resume = Some(error);
                }
            }
        }
    }

    /// Connect, run, and reconnect until closed for good.
    async fn session(&mut self, resume: Option<Error>) -> Result<(), Error> {
        if let Some(error) = resume {
            if let ControlFlow::Break(result) =
                Box::pin(self.after_loss(error, ErrorPhase::Link)).await
            {
                return result;
            }
        }
        loop {
            // Rare, large futures are boxed so the resident task stays small (a connect
            // future alone holds the upgrade codec and the TLS handshake state).
            let link = match Box::pin(self.establish()).await {
                Ok(link) => link,
                Err(ControlFlow::Break(result)) => return result,
                Err(ControlFlow::Continue(error)) => {
                    match Box::pin(self.after_loss(error, ErrorPhase::Connect)).await {
                        ControlFlow::Continue(()) => continue,
                        ControlFlow::Break(result) => return result,
                    }
                }
            };
            match self.run_link(link).await {
                LinkEnd::Closed => return Ok(()),
                LinkEnd::Lost(error) => {
                    if let ControlFlow::Break(result) =
                        Box::pin(self.after_loss(error, ErrorPhase::Link)).await
                    {
                        return result;
                    }
                }
            }
        }
    }

    /// Connecting → Upgrading; commands keep being served meanwhile.
    /// `Err(Continue(e))`: the attempt failed; `Err(Break(r))`: closed while connecting.
    async fn establish(&mut self) -> Result<Link, ControlFlow<Result<(), Error>, Error>> {
        tracing::Span::current().record("attempt", self.lifecycle.attempt());
        let connector = Arc::clone(&self.connector);
        let stream = self
            .serve_offline(connector.open())
            .await
            .map_err(ControlFlow::Break)?
            .map_err(ControlFlow::Continue)?;
        self.set_state(State::Upgrading).await;
        self.serve_offline(connector.upgrade(stream))
            .await
            .map_err(ControlFlow::Break)?
            .map_err(ControlFlow::Continue)
    }

    /// Drives `fut` while answering commands as the offline policy says.
    async fn serve_offline<F: std::future::Future>(
        &mut self,
        fut: F,
    ) -> Result<F::Output, Result<(), Error>> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                cmd = self.commands.recv() => match self.accept(cmd) {
                    Accepted::Done => {}
                    Accepted::Ping(reply) => {
                        let _ = reply.send(Err(Error::new(ErrorKind::NotReady)));
                    }
                    Accepted::Close(_) => return Err(Ok(())),
                },
            }
        }
    }

    fn ready(&self) -> bool {
        self.phase == Phase::Ready && self.lifecycle.state() == State::Ready
    }

    /// The link-independent part of a command: queue it, or answer at once.
    fn accept(&mut self, cmd: Option<Command>) -> Accepted {
        let now = Instant::now();
        let Some(cmd) = cmd else {
            return Accepted::Close(Frame::close_normal());
        };
        match cmd {
            Command::Close { frame, reply } => {
                self.close_waiters.push(reply);
                Accepted::Close(frame)
            }
            Command::Ping { reply } => Accepted::Ping(reply),
            Command::Config { reply } => {
                let _ = reply.send(self.config.clone());
                Accepted::Done
            }
            Command::Reconfigure { update, reply } => {
                let _ = reply.send(self.reconfigure(update, now));
                Accepted::Done
            }
            Command::Send { frame, reply } => {
                let cost = self.cost(None, frame.len());
                if let Err(e) = self.admit(cost, now) {
                    let _ = reply.send(Err(e));
                    return Accepted::Done;
                }
                self.push_user(Job::Send { frame, reply }, cost, false, now);
                Accepted::Done
            }
            Command::Request {
                method,
                params,
                timeout,
                reply,
            } => {
                if !self.supports_requests {
                    let _ = reply.send(Err(Error::new(ErrorKind::Unsupported).with_context("the message handler cannot encode requests (configure one, e.g. ClientBuilder::json_rpc)")));
                    return Accepted::Done;
                }
                let cost = self.cost(Some(&method), params.len());
                if let Err(e) = self.admit(cost, now) {
                    let _ = reply.send(Err(e));
                    return Accepted::Done;
                }
                let job = Job::Call {
                    method,
                    params,
                    timeout: timeout.unwrap_or(self.config.request_timeout),
                    waiter: Waiter::User(reply, None),
                };
                self.push_user(job, cost, true, now);
                Accepted::Done
            }
            Command::Subscribe { channels, reply } => {
                self.subscribe(channels, reply, now);
                Accepted::Done
            }
            Command::Unsubscribe { channels, reply } => {
                self.unsubscribe(channels, Some(reply), now);
                Accepted::Done
            }
        }
    }

    /// Validates and applies a new configuration at once, all of it or nothing.
    fn reconfigure(&mut self, update: ConfigUpdate, now: Instant) -> Result<Reconfigured, Error> {
        let mut next = self.config.clone();
        update(&mut next);
        let changes = reconfigure::check(&self.config, &next)?;
        if changes.is_empty() {
            return Ok(changes);
        }
        let connector = if changes.on_connect.is_empty() {
            None
        } else {
            Some(Arc::new(Connector::new(&next)?))
        };
        // Nothing below fails: the switch is atomic.
        if let Some(connector) = connector {
            self.connector = connector;
        }
        if changes.changed("rate_limit") {
            let bucket = next.rate_limit.map(|rl| (rl.burst, rl.per_second));
            let max_wait = next.rate_limit.and_then(|rl| rl.max_wait);
            self.outbox.set_rate_limit(bucket, max_wait, now.into_std());
        }
        if changes.changed("reconnect") {
            self.backoff.set_policy(next.reconnect.clone());
        }
        if changes.changed("max_in_flight") {
            self.outbox.set_max_in_flight(next.max_in_flight);
        }
        if changes.changed("offline") {
            self.outbox.set_capacity(outbox_capacity(&next));
        }
        if changes.changed("overflow") {
            self.events.policy = next.overflow;
            self.registry.set_policy(next.overflow);
        }
        if changes.changed("keepalive") {
            self.keepalive_changed = true;
        }
        if changes.changed("watermarks") {
            self.events.watermarks = next.watermarks.counts(self.events.capacity);
        }
        self.config = next;
        let (at_once, on_connect) = (changes.now.join(","), changes.on_connect.join(","));
        telemetry!(
            self.log,
            Connection,
            INFO,
            "reconfigured",
            now = &at_once,
            on_connect = &on_connect
        );
        Ok(changes)
    }

    fn cost(&mut self, method: Option<&str>, len: usize) -> u32 {
        if self.config.rate_limit.is_none() {
            return 0;
        }
        self.rate_limit.cost(&Outgoing { method, len })
    }

    /// Whether user traffic of `cost` may be queued now (offline and rate-limit policies).
    fn admit(&self, cost: u32, now: Instant) -> Result<(), Error> {
        if self.config.offline == OfflinePolicy::Reject && !self.ready() {
            return Err(Error::new(ErrorKind::NotReady));
        }
        if !self.outbox.payable(cost) {
            return Err(Error::new(ErrorKind::RateLimited)
                .with_context(format!("a cost of {cost} exceeds the rate limit's burst")));
        }
        if let Some(rl) = self.config.rate_limit {
            if rl.on_limit == OnLimit::Reject
                && self.ready()
                && !self.outbox.could_send_now(cost, now.into_std())
            {
                return Err(Error::new(ErrorKind::RateLimited));
            }
        }
        Ok(())
    }

    fn push_user(&mut self, job: Job, cost: u32, is_request: bool, now: Instant) {
        let queued = Queued {
            item: job,
            cost,
            is_request,
            enqueued: now.into_std(),
        };
        if let Err(q) = self.outbox.push_user(queued) {
            let len = self.outbox.user_len();
            fail_job(
                q.item,
                Error::new(ErrorKind::QueueFull).with_context(format!("{len} frames waiting")),
                &mut self.groups,
                &mut self.registry,
            );
        }
    }

    fn push_control(&mut self, method: String, params: serde_json::Value, waiter: Waiter) {
        let params = params.to_string();
        let cost = self.cost(Some(&method), params.len());
        self.outbox.push_control(Queued {
            item: Job::Call {
                method,
                params,
                timeout: self.config.request_timeout,
                waiter,
            },
            cost,
            is_request: true,
            enqueued: Instant::now().into_std(),
        });
    }

    /// A user's subscribe: register the channels, queue the calls (batched).
    fn subscribe(
        &mut self,
        channels: Vec<String>,
        reply: oneshot::Sender<Result<SubscribeOk, Error>>,
        now: Instant,
    ) {
        if self.handlers.subscription.is_none() || !self.supports_requests {
            let _ = reply.send(Err(Error::new(ErrorKind::Unsupported)
                .with_context("no subscription behaviour configured")));
            return;
        }
        if channels.is_empty() {
            let _ = reply.send(Err(Error::config("subscribe needs at least one channel")));
            return;
        }
        let mut unique = channels;
        unique.sort();
        unique.dedup();
        if let Some(c) = unique.iter().find(|c| self.registry.contains(c)) {
            let _ = reply.send(Err(Error::config(format!("already subscribed to {c:?}"))));
            return;
        }
        let evictable = self.config.overflow == OverflowPolicy::DropOldest;
        let (tx, rx, evictor) = inbox::channel(self.config.subscription_capacity, evictable);
        let lagged = Lag::default();
        for c in &unique {
            self.registry
                .insert(c.clone(), tx.clone(), lagged.clone(), evictor.clone());
        }
        self.queue_subscribe_calls(unique, Some((reply, rx, lagged)), now);
    }

    /// Files a group for `channels` and queues one subscribe call per batch: a user's call
    /// in the user queue (in order with the rest of their traffic), a restore in the
    /// control queue (ahead of it). Returns the group id.
    fn queue_subscribe_calls(
        &mut self,
        channels: Vec<String>,
        user: Option<UserSubscribe>,
        now: Instant,
    ) -> u64 {
        let Some(handler) = self.handlers.subscription.as_mut() else {
            return 0;
        };
        let batch = handler.batch_size().max(1);
        let calls: Vec<(Call, Vec<String>)> = channels
            .chunks(batch)
            .map(|c| (handler.subscribe(c), c.to_vec()))
            .collect();
        let group = self.next_group;
        self.next_group += 1;
        let restore = user.is_none();
        self.groups.insert(
            group,
            Group {
                remaining: calls.len(),
                confirmed: Vec::new(),
                refused: Vec::new(),
                error: None,
                user,
            },
        );
        for (call, channels) in calls {
            let params = call.params.to_string();
            let cost = self.cost(Some(&call.method), params.len());
            let queued = Queued {
                item: Job::Call {
                    method: call.method,
                    params,
                    timeout: self.config.request_timeout,
                    waiter: Waiter::Subscribe { group, channels },
                },
                cost,
                is_request: restore,
                enqueued: now.into_std(),
            };
            if restore {
                self.outbox.push_control(queued);
            } else if let Err(q) = self.outbox.push_user(queued) {
                let len = self.outbox.user_len();
                let err =
                    Error::new(ErrorKind::QueueFull).with_context(format!("{len} frames waiting"));
                fail_job(q.item, err, &mut self.groups, &mut self.registry);
            }
        }
        group
    }

    /// Forget channels; tell the venue if the link is up.
    fn unsubscribe(
        &mut self,
        channels: Vec<String>,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
        now: Instant,
    ) {
        let known: Vec<String> = channels
            .into_iter()
            .filter(|c| self.registry.remove(c).is_some())
            .collect();
        let ready = self.ready();
        let Some(handler) = self.handlers.subscription.as_mut() else {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        };
        if known.is_empty() || !ready {
            // Nothing to tell, or nothing subscribed on the server side until restored
            // (and the channels are no longer desired, so the restore skips them).
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        let call = handler.unsubscribe(&known);
        let params = call.params.to_string();
        let cost = self.cost(Some(&call.method), params.len());
        let job = Job::Call {
            method: call.method,
            params,
            timeout: self.config.request_timeout,
            waiter: Waiter::Unsubscribe(reply),
        };
        self.push_user(job, cost, false, now);
    }

    /// A link is up: restore it (auth, subscriptions), then serve until it ends.
    async fn run_link(&mut self, mut link: Link) -> LinkEnd {
        let write_timeout = self.config.write_timeout;
        let info = ConnectInfo {
            url: &self.config.url,
            attempt: self.lifecycle.attempt(),
            previous_connects: self.lifecycle.connects(),
            subprotocol: link.subprotocol.as_deref(),
        };
        for frame in self.handlers.connection.on_connect(&info) {
            if let Err(e) = link.send(frame, write_timeout).await {
                return LinkEnd::Lost(e);
            }
        }
        let info = ConnectInfo {
            url: &self.config.url,
            attempt: self.lifecycle.attempt(),
            previous_connects: self.lifecycle.connects(),
            subprotocol: link.subprotocol.as_deref(),
        };
        for call in self.handlers.connection.connect_calls(&info) {
            let method = call.method.clone();
            self.push_control(call.method, call.params, Waiter::Notice(method));
        }
        if self.handlers.auth.is_some() {
            self.set_state(State::Authenticating).await;
            self.phase = Phase::Auth;
            let call = self
                .handlers
                .auth
                .as_mut()
                .expect("checked")
                .authenticate(None);
            self.push_control(call.method, call.params, Waiter::Auth { refresh: false });
        } else {
            Box::pin(self.restore_subscriptions(&link)).await;
        }

        let mut pings: Vec<PendingPing> = Vec::new();
        let end = self.serve_link(&mut link, &mut pings).await;
        for ping in pings {
            if let Some(reply) = ping.reply {
                let _ = reply.send(Err(Error::disconnected(true)));
            }
        }
        self.link_gone(matches!(end, LinkEnd::Closed));
        end
    }

    /// After auth: resubscribe every confirmed channel, or go Ready if there is none.
    async fn restore_subscriptions(&mut self, link: &Link) {
        let channels = self.registry.confirmed_channels();
        if self.handlers.subscription.is_none() || channels.is_empty() {
            return self.go_ready(link).await;
        }
        let group = self.queue_subscribe_calls(channels, None, Instant::now());
        self.phase = Phase::Subscribe { group };
        self.set_state(State::Subscribing).await;
    }

    async fn go_ready(&mut self, link: &Link) {
        self.phase = Phase::Ready;
        self.ready_since = Some(Instant::now());
        self.handlers.metrics.connection(ConnectionMetric::Opened);
        self.set_state(State::Ready).await;
        telemetry!(
            self.log,
            Connection,
            INFO,
            "connected",
            attempt = self.lifecycle.attempt(),
            subprotocol = link.subprotocol.as_deref()
        );
        self.backoff.on_up(Instant::now().into_std());
        self.events
            .emit(Event::Connected {
                attempt: self.lifecycle.attempt(),
                subprotocol: link.subprotocol.clone(),
            })
            .await;
    }

    /// The link is gone: answer what waited on it; keep what can go on the next one.
    /// `closed`: it ended by a requested close, so calls in flight fail with `Closed`
    /// (DESIGN §4.7) rather than as a lost connection.
    fn link_gone(&mut self, closed: bool) {
        let lost = || {
            if closed {
                Error::closed()
            } else {
                Error::disconnected(true)
            }
        };
        for waiter in self.pending.drain() {
            match waiter {
                Waiter::User(reply, _) => {
                    let _ = reply.send(Err(lost()));
                }
                Waiter::Subscribe { group, channels } => {
                    self.group_failed(group, &channels, lost());
                }
                Waiter::Unsubscribe(reply) => {
                    // The server forgets every subscription with the connection.
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Waiter::Auth { .. } | Waiter::Notice(_) => {}
            }
        }
        for job in self.outbox.link_lost() {
            if let Job::Call {
                waiter: Waiter::Subscribe { group, channels },
                ..
            } = job
            {
                self.group_lost(group, &channels);
            }
        }
        self.phase = Phase::Ready;
        self.refresh_at = None;
        self.limiter_wake = None;
        if let Some(since) = self.ready_since.take() {
            self.handlers
                .metrics
                .connection(ConnectionMetric::Closed(since.elapsed()));
        }
    }

    /// A subscribe call died with the link. A user's call fails (connection lost, like any
    /// request); a restore is simply redone on the next link.
    fn group_lost(&mut self, group: u64, channels: &[String]) {
        self.group_failed(group, channels, Error::disconnected(true));
    }

    fn group_failed(&mut self, group: u64, channels: &[String], err: Error) {
        let Some(g) = self.groups.remove(&group) else {
            return;
        };
        if let Some((reply, _rx, _)) = g.user {
            for c in channels.iter().chain(&g.confirmed) {
                self.registry.remove(c);
            }
            let _ = reply.send(Err(err));
        }
    }

    async fn serve_link(&mut self, link: &mut Link, pings: &mut Vec<PendingPing>) -> LinkEnd {
        let mut keepalive = Keepalive::new(self.config.keepalive, Instant::now().into_std());
        if let Err(e) = self.pump(link).await {
            return LinkEnd::Lost(e);
        }
        // Re-armed when it fires and after commands and answers; traffic only moves the
        // keepalive deadline later, so waking at a stale deadline is harmless and the hot
        // path never touches the timer.
        let timer = tokio::time::sleep_until(self.next_wake(&keepalive));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                cmd = self.commands.recv() => {
                    if let Some(end) = self.on_command(link, pings, cmd).await {
                        return end;
                    }
                    if std::mem::take(&mut self.keepalive_changed) {
                        keepalive = Keepalive::new(self.config.keepalive, Instant::now().into_std());
                    }
                    timer.as_mut().reset(self.next_wake(&keepalive));
                }
                () = &mut timer => {
                    if let Some(end) = Box::pin(self.on_timer(link, pings, &mut keepalive)).await {
                        return end;
                    }
                    timer.as_mut().reset(self.next_wake(&keepalive));
                }
                item = link.recv() => {
                    keepalive.on_traffic(Instant::now().into_std());
                    let mut item = item;
                    let mut rearm = false;
                    // Drain what the socket already delivered before going back to
                    // `select!`: one wakeup, one clock read and one timer/command poll per
                    // batch instead of per message. Bounded so commands still get a turn.
                    for handled in 1..=INBOUND_BATCH {
                        let frame = match item {
                            Some(Ok(frame)) => frame,
                            Some(Err(e)) => {
                                // The backend queued a close with the right code (1002,
                                // 1007, 1009); let it go out before dropping the socket.
                                Box::pin(link.finish_close(None, self.config.close_timeout)).await;
                                return LinkEnd::Lost(e);
                            }
                            None => {
                                return LinkEnd::Lost(Error::new(ErrorKind::Io)
                                    .with_context("connection ended without a close frame"))
                            }
                        };
                        let inbound = self.on_frame(pings, frame);
                        if !matches!(inbound, Inbound::Done) {
                            rearm = true;
                            if let Some(end) = Box::pin(self.finish_inbound(link, pings, inbound)).await {
                                return end;
                            }
                        }
                        // Batch full: leave the rest to the next turn. (Reading one more
                        // frame here would drop it with the loop.)
                        if handled == INBOUND_BATCH {
                            break;
                        }
                        match link.try_recv() {
                            Some(next) => item = next,
                            None => break,
                        }
                    }
                    if rearm {
                        timer.as_mut().reset(self.next_wake(&keepalive));
                    }
                }
            }
        }
    }

    /// The earliest instant something is due.
    fn next_wake(&mut self, keepalive: &Keepalive) -> Instant {
        let far = Instant::now() + FAR;
        let mut wake = keepalive
            .next_deadline()
            .map(Instant::from_std)
            .unwrap_or(far);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = wake.min(t);
            }
        };
        consider(self.pending.next_deadline().map(Instant::from_std));
        consider(self.limiter_wake);
        if self.events.pressure {
            // Notice the relief even if no more messages come.
            consider(Some(Instant::now() + PRESSURE_CHECK));
        }
        if self.ready() {
            consider(self.outbox.next_expiry().map(Instant::from_std));
            consider(self.refresh_at);
        }
        wake
    }

    /// Whatever is due: keepalive, request timeouts, rate-limit waits, auth refresh.
    async fn on_timer(
        &mut self,
        link: &mut Link,
        pings: &mut Vec<PendingPing>,
        keepalive: &mut Keepalive,
    ) -> Option<LinkEnd> {
        let now = Instant::now();
        self.watch_pressure();
        match keepalive.poll(now.into_std()) {
            KeepaliveAction::Dead => {
                let timeout = keepalive.timeout().unwrap_or_default();
                telemetry!(
                    self.log,
                    Connection,
                    WARN,
                    "dead_peer",
                    timeout_ms = LogValue::ms(timeout)
                );
                return Some(LinkEnd::Lost(Error::timeout(
                    TimeoutKind::Keepalive,
                    timeout,
                )));
            }
            KeepaliveAction::SendPing => {
                if let Err(e) = self.send_ping(link, pings, None).await {
                    return Some(LinkEnd::Lost(e));
                }
            }
            KeepaliveAction::Idle => {}
        }
        for (id, waiter) in self.pending.expired(now.into_std()) {
            let err = Error::new(ErrorKind::Timeout(TimeoutKind::Request))
                .with_context(format!("request {id}"));
            match waiter {
                Waiter::User(reply, _) => {
                    self.outbox.request_done();
                    let _ = reply.send(Err(err));
                }
                Waiter::Unsubscribe(reply) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(err));
                    }
                }
                Waiter::Subscribe { group, channels }
                    if self.groups.get(&group).is_some_and(|g| g.user.is_some()) =>
                {
                    self.group_failed(group, &channels, err);
                }
                Waiter::Notice(method) => {
                    telemetry!(self.log, Request, WARN, "call_unanswered", method = &method);
                }
                // The framework's own calls unanswered: the link is not healthy.
                Waiter::Auth { .. } | Waiter::Subscribe { .. } => {
                    return Some(LinkEnd::Lost(err));
                }
            }
        }
        if self.ready() {
            for job in self.outbox.expired(now.into_std()) {
                let err = Error::new(ErrorKind::RateLimited)
                    .with_context("waited longer than the rate limit's max_wait");
                fail_job(job, err, &mut self.groups, &mut self.registry);
            }
            if self.refresh_at.is_some_and(|t| t <= now) {
                self.refresh_at = None;
                let refresh = self.refresh_token.clone();
                if let Some(auth) = self.handlers.auth.as_mut() {
                    let call = auth.authenticate(refresh.as_ref());
                    telemetry!(self.log, Auth, DEBUG, "auth_refresh");
                    self.push_control(
                        call.method,
                        call.params,
                        Waiter::Auth {
                            refresh: refresh.is_some(),
                        },
                    );
                }
            }
        }
        self.pump(link).await.err().map(LinkEnd::Lost)
    }

    /// Writes what the outbox lets go now.
    async fn pump(&mut self, link: &mut Link) -> Result<(), Error> {
        loop {
            let ready = self.ready();
            let now = Instant::now();
            match self.outbox.next(now.into_std(), ready) {
                Next::Write(q) => {
                    self.limit_wait_over(now);
                    self.write_job(link, q.item).await?
                }
                Next::WaitUntil(t) => {
                    let wake = Instant::from_std(t);
                    if self.limited_since.is_none() {
                        self.limited_since = Some(now);
                        telemetry!(
                            self.log,
                            RateLimit,
                            DEBUG,
                            "rate_limited",
                            queued = self.outbox.len(),
                            wait_ms = LogValue::ms(wake - now)
                        );
                    }
                    self.limiter_wake = Some(wake);
                    self.report_depths();
                    return Ok(());
                }
                Next::Idle => {
                    self.limit_wait_over(now);
                    self.limiter_wake = None;
                    self.report_depths();
                    return Ok(());
                }
            }
        }
    }

    /// A wait for rate-limit credits ended (or never began).
    fn limit_wait_over(&mut self, now: Instant) {
        if let Some(since) = self.limited_since.take() {
            self.handlers.metrics.rate_limit_wait(now - since);
        }
    }

    fn report_depths(&mut self) {
        let m = &mut self.handlers.metrics;
        m.queue_depth(QueueKind::Outbound, self.outbox.len());
        m.queue_depth(QueueKind::InFlight, self.pending.len());
    }

    async fn write_job(&mut self, link: &mut Link, job: Job) -> Result<(), Error> {
        let write_timeout = self.config.write_timeout;
        match job {
            Job::Send { frame, reply } => {
                let len = frame.len();
                let kind = message_kind(&frame);
                self.log.message(Direction::Out, &frame);
                match link.send(frame, write_timeout).await {
                    Ok(()) => {
                        self.handlers.metrics.message_out(kind, len);
                        let _ = reply.send(Ok(()));
                        Ok(())
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::disconnected(false).with_source(e.clone())));
                        Err(e)
                    }
                }
            }
            Job::Call {
                method,
                params,
                timeout,
                mut waiter,
            } => {
                let id = self.pending.allocate();
                let Some(frame) = self.handlers.message.encode_request(id, &method, &params) else {
                    fail_waiter(
                        waiter,
                        Error::new(ErrorKind::Unsupported)
                            .with_context("the message handler cannot encode this request"),
                        self,
                    );
                    return Ok(());
                };
                telemetry!(
                    self.log,
                    Request,
                    DEBUG,
                    "request_sent",
                    id = id,
                    method = &method
                );
                let len = frame.len();
                let kind = message_kind(&frame);
                self.log.message(Direction::Out, &frame);
                if let Waiter::User(_, sent) = &mut waiter {
                    *sent = Some(Instant::now());
                }
                match link.send(frame, write_timeout).await {
                    Ok(()) => {
                        self.handlers.metrics.message_out(kind, len);
                        self.pending
                            .insert(id, waiter, later(Instant::now(), timeout).into_std());
                        Ok(())
                    }
                    Err(e) => {
                        fail_waiter(
                            waiter,
                            Error::disconnected(false).with_source(e.clone()),
                            self,
                        );
                        Err(e)
                    }
                }
            }
        }
    }

    /// One inbound frame on a link, synchronously: the hot paths (deliver a message, route
    /// a notification, answer a user request) complete here; anything that needs I/O
    /// comes back as an [`Inbound`] to finish.
    fn on_frame(&mut self, pings: &mut Vec<PendingPing>, frame: Frame) -> Inbound {
        match self.handlers.connection.on_frame(&frame) {
            FrameDecision::Continue => self.on_data(pings, frame),
            FrameDecision::Skip => Inbound::Done,
            FrameDecision::Reply(reply) => Inbound::HookReply(reply, frame),
        }
    }

    fn on_data(&mut self, pings: &mut Vec<PendingPing>, frame: Frame) -> Inbound {
        match frame {
            Frame::Text(_) | Frame::Binary(_) => {
                self.log.message(Direction::In, &frame);
                self.handlers
                    .metrics
                    .message_in(message_kind(&frame), frame.len());
                let frame = match &self.handlers.codec {
                    None => frame,
                    Some(codec) => match codec.decode(&frame) {
                        Ok(None) => frame,
                        Ok(Some(decoded)) => decoded,
                        Err(e) => return self.undecodable(e),
                    },
                };
                match self.handlers.message.classify(&frame) {
                    Classified::Notification { channel, data } => {
                        match self.registry.route(channel, data) {
                            Route::Delivered => Inbound::Done,
                            Route::Dropped(count) => {
                                self.handlers.metrics.dropped(count);
                                telemetry!(
                                    self.log,
                                    Message,
                                    DEBUG,
                                    "dropped",
                                    count = count,
                                    stream = "subscription"
                                );
                                Inbound::Done
                            }
                            Route::Full(tx, lag, event) => {
                                Inbound::SubscriptionFull(tx, lag, event)
                            }
                            Route::Overflow => {
                                self.handlers.metrics.dropped(1);
                                Inbound::Overflow("a subscription's stream")
                            }
                            Route::Gone => Inbound::Abandoned,
                            Route::Unknown => self.deliver(Event::Message(frame)),
                        }
                    }
                    Classified::Response { id, result } => match self.pending.take(id) {
                        Some(Waiter::User(reply, sent)) => {
                            if let Some(sent) = sent {
                                let latency = sent.elapsed();
                                self.handlers.metrics.request_latency(latency);
                                telemetry!(
                                    self.log,
                                    Request,
                                    DEBUG,
                                    "request_answered",
                                    id = id,
                                    latency_us = LogValue::us(latency),
                                    ok = result.is_ok()
                                );
                            }
                            self.outbox.request_done();
                            let _ = reply.send(result.map_err(|e| Error::new(ErrorKind::Api(e))));
                            Inbound::Pump
                        }
                        Some(waiter) => Inbound::Internal(waiter, result),
                        None => self.deliver(Event::UnmatchedResponse { id, result }),
                    },
                    Classified::Heartbeat(answer) => Inbound::Heartbeat(answer),
                    Classified::Reply(reply) => Inbound::Reply(reply),
                    Classified::Consume => Inbound::Done,
                    Classified::Other => self.deliver(Event::Message(frame)),
                }
            }
            Frame::Pong(payload) => {
                if let Some(i) = pings.iter().position(|p| p.payload == payload) {
                    let ping = pings.swap_remove(i);
                    let rtt = ping.sent.elapsed();
                    telemetry!(
                        self.log,
                        Connection,
                        DEBUG,
                        "pong",
                        rtt_us = LogValue::us(rtt)
                    );
                    if let Some(reply) = ping.reply {
                        let _ = reply.send(Ok(rtt));
                    }
                }
                Inbound::Done
            }
            // The backend answers pings itself, on the next read or write.
            Frame::Ping(_) => Inbound::Done,
            Frame::Close(close) => Inbound::ServerClose(close),
        }
    }

    /// A frame the codec could not decode: counted and reported; the link stays up.
    fn undecodable(&mut self, error: Error) -> Inbound {
        self.handlers.metrics.error(error.kind().name());
        telemetry!(
            self.log,
            Error,
            WARN,
            "decode_failed",
            category = error.kind().name(),
            error = LogValue::display(&error)
        );
        self.deliver(Event::Error(error))
    }

    #[inline]
    fn deliver(&mut self, event: Event) -> Inbound {
        let inbound = match self.events.try_deliver(event) {
            Delivery::Delivered => Inbound::Done,
            Delivery::Overflow => {
                self.handlers.metrics.dropped(1);
                Inbound::Overflow("the event stream")
            }
            Delivery::Dropped(count) => {
                self.handlers.metrics.dropped(count);
                telemetry!(
                    self.log,
                    Message,
                    DEBUG,
                    "dropped",
                    count = count,
                    stream = "events"
                );
                Inbound::Done
            }
            Delivery::Full(event) => Inbound::Blocked(event),
        };
        self.watch_pressure();
        inbound
    }

    /// Tells a watermark crossing of the event stream (a `tracing` event and the depth).
    #[inline]
    fn watch_pressure(&mut self) {
        if let Some((active, depth)) = self.events.check_pressure() {
            self.pressure_crossed(active, depth);
        }
    }

    #[cold]
    fn pressure_crossed(&mut self, active: bool, depth: usize) {
        self.handlers.metrics.queue_depth(QueueKind::Inbound, depth);
        telemetry!(
            self.log,
            Message,
            INFO,
            "backpressure",
            active = active,
            depth = depth
        );
    }

    /// The I/O part of handling an inbound frame.
    async fn finish_inbound(
        &mut self,
        link: &mut Link,
        pings: &mut Vec<PendingPing>,
        mut inbound: Inbound,
    ) -> Option<LinkEnd> {
        loop {
            match inbound {
                Inbound::Done => return None,
                Inbound::HookReply(reply, frame) => {
                    if let Err(e) = link.send(reply, self.config.write_timeout).await {
                        return Some(LinkEnd::Lost(e));
                    }
                    inbound = self.on_data(pings, frame);
                }
                Inbound::Heartbeat(answer) => {
                    telemetry!(self.log, Connection, DEBUG, "heartbeat_answered");
                    return link
                        .send(answer, self.config.write_timeout)
                        .await
                        .err()
                        .map(LinkEnd::Lost);
                }
                Inbound::Reply(reply) => {
                    return link
                        .send(reply, self.config.write_timeout)
                        .await
                        .err()
                        .map(LinkEnd::Lost);
                }
                Inbound::Pump => return self.pump(link).await.err().map(LinkEnd::Lost),
                Inbound::Abandoned => {
                    let gone = self.registry.abandoned();
                    self.unsubscribe(gone, None, Instant::now());
                    return self.pump(link).await.err().map(LinkEnd::Lost);
                }
                Inbound::Internal(waiter, result) => {
                    if let Some(end) = self.on_internal(link, waiter, result).await {
                        return Some(end);
                    }
                    return self.pump(link).await.err().map(LinkEnd::Lost);
                }
                Inbound::Blocked(event) => return self.deliver_blocking(link, pings, event).await,
                Inbound::SubscriptionFull(tx, lag, event) => {
                    return self
                        .subscription_blocking(link, pings, tx, lag, event)
                        .await;
                }
                Inbound::Overflow(stream) => {
                    return Some(LinkEnd::Lost(
                        Error::new(ErrorKind::SlowConsumer)
                            .with_context(format!("{stream} is full")),
                    ));
                }
                Inbound::ServerClose(close) => {
                    let (code, reason) = match close {
                        Some(c) => (Some(c.code), c.reason),
                        None => (None, String::new()),
                    };
                    Box::pin(link.finish_close(None, self.config.close_timeout)).await;
                    return Some(LinkEnd::Lost(Error::new(ErrorKind::ClosedByServer {
                        code,
                        reason,
                    })));
                }
            }
        }
    }

    /// An answer to the framework's own call: auth, subscribe, unsubscribe.
    async fn on_internal(
        &mut self,
        link: &mut Link,
        waiter: Waiter,
        result: Result<RawJson, ApiError>,
    ) -> Option<LinkEnd> {
        match waiter {
            Waiter::User(..) => None,
            Waiter::Notice(method) => {
                match result {
                    Ok(_) => {
                        telemetry!(self.log, Request, DEBUG, "call_answered", method = &method)
                    }
                    Err(api) => {
                        telemetry!(
                            self.log,
                            Request,
                            WARN,
                            "call_failed",
                            method = &method,
                            code = api.code
                        );
                        let err = Error::new(ErrorKind::Api(api)).with_context(method);
                        self.events.emit(Event::Error(err)).await;
                    }
                }
                None
            }
            Waiter::Unsubscribe(reply) => {
                if let Some(reply) = reply {
                    let _ = reply.send(
                        result
                            .map(|_| ())
                            .map_err(|e| Error::new(ErrorKind::Api(e))),
                    );
                }
                None
            }
            Waiter::Auth { refresh } => {
                let auth = self.handlers.auth.as_mut()?;
                match auth.granted(result.as_ref()) {
                    Ok(grant) => {
                        let margin = auth.refresh_margin();
                        if !refresh {
                            for call in grant.follow_up {
                                let method = call.method.clone();
                                self.push_control(call.method, call.params, Waiter::Notice(method));
                            }
                        }
                        self.refresh_token = grant.refresh_token;
                        // An expiry too far to add to the clock never needs a refresh.
                        self.refresh_at = grant.expires_in.and_then(|e| {
                            Instant::now()
                                .checked_add(e.saturating_sub(margin).max(Duration::from_millis(1)))
                        });
                        telemetry!(
                            self.log,
                            Auth,
                            INFO,
                            "authenticated",
                            refresh = refresh,
                            expires_in_ms = grant.expires_in.map(LogValue::ms)
                        );
                        self.events
                            .emit(Event::Authenticated {
                                expires_in: grant.expires_in,
                                refreshed: refresh,
                            })
                            .await;
                        if self.phase == Phase::Auth {
                            Box::pin(self.restore_subscriptions(link)).await;
                        }
                        None
                    }
                    Err(e) if refresh => {
                        // A refused refresh: fall back to the full credentials once.
                        telemetry!(
                            self.log,
                            Auth,
                            WARN,
                            "auth_refresh_failed",
                            category = e.kind().name(),
                            error = LogValue::display(&e)
                        );
                        let call = auth.authenticate(None);
                        self.push_control(
                            call.method,
                            call.params,
                            Waiter::Auth { refresh: false },
                        );
                        None
                    }
                    Err(e) => {
                        telemetry!(
                            self.log,
                            Auth,
                            WARN,
                            "auth_failed",
                            category = e.kind().name(),
                            error = LogValue::display(&e)
                        );
                        Some(LinkEnd::Lost(e))
                    }
                }
            }
            Waiter::Subscribe { group, channels } => {
                let confirmed = match &result {
                    Ok(ack) => match self.handlers.subscription.as_mut() {
                        Some(h) => h.confirmed(&channels, ack),
                        None => Ok(Vec::new()),
                    },
                    Err(api) => Err(Error::new(ErrorKind::Api(api.clone()))),
                };
                let g = self.groups.get_mut(&group)?;
                let confirmed = confirmed.unwrap_or_else(|e| {
                    g.error = Some(e);
                    Vec::new()
                });
                for c in channels {
                    if confirmed.contains(&c) {
                        self.registry.confirm(&c);
                        g.confirmed.push(c);
                    } else {
                        self.registry.remove(&c);
                        g.refused.push(c);
                    }
                }
                g.remaining -= 1;
                if g.remaining == 0 {
                    let g = self.groups.remove(&group).expect("present");
                    self.group_done(link, group, g).await;
                }
                None
            }
        }
    }

    async fn group_done(&mut self, link: &Link, group: u64, g: Group) {
        if !g.refused.is_empty() {
            let refused = g.refused.join(",");
            telemetry!(
                self.log,
                Subscription,
                WARN,
                "subscription_refused",
                channels = &refused
            );
            self.events
                .emit(Event::SubscriptionRefused {
                    channels: g.refused.clone(),
                })
                .await;
        }
        match g.user {
            Some((reply, rx, lagged)) => {
                let outcome = if g.confirmed.is_empty() {
                    let mut err = Error::new(ErrorKind::SubscriptionRefused {
                        channels: g.refused,
                    });
                    if let Some(cause) = g.error {
                        err = err.with_source(cause);
                    }
                    Err(err)
                } else {
                    telemetry!(
                        self.log,
                        Subscription,
                        INFO,
                        "subscribed",
                        channels = g.confirmed.len()
                    );
                    Ok(SubscribeOk {
                        rx,
                        lagged,
                        confirmed: g.confirmed,
                        refused: g.refused,
                    })
                };
                if let Err(Ok(ok)) = reply.send(outcome) {
                    // The caller gave up waiting: unsubscribe what was confirmed.
                    let now = Instant::now();
                    self.unsubscribe(ok.confirmed, None, now);
                }
            }
            None => {
                telemetry!(
                    self.log,
                    Subscription,
                    INFO,
                    "resubscribed",
                    channels = g.confirmed.len(),
                    refused = g.refused.len()
                );
                self.registry.announce(&g.confirmed);
                self.events
                    .emit(Event::Resubscribed {
                        channels: g.confirmed.len(),
                        refused: g.refused,
                    })
                    .await;
                if self.phase == (Phase::Subscribe { group }) {
                    self.go_ready(link).await;
                }
            }
        }
    }

    /// A command on a live link.
    async fn on_command(
        &mut self,
        link: &mut Link,
        pings: &mut Vec<PendingPing>,
        cmd: Option<Command>,
    ) -> Option<LinkEnd> {
        match self.accept(cmd) {
            Accepted::Done => self.pump(link).await.err().map(LinkEnd::Lost),
            Accepted::Close(frame) => Some(Box::pin(self.close_link(link, frame)).await),
            Accepted::Ping(reply) => self
                .send_ping(link, pings, Some(reply))
                .await
                .err()
                .map(LinkEnd::Lost),
        }
    }

    /// The event stream is full and the policy is to wait: stop reading the socket (TCP
    /// pushes back) but keep serving commands, so a consumer that sends from its event
    /// loop cannot deadlock against us.
    async fn deliver_blocking(
        &mut self,
        link: &mut Link,
        pings: &mut Vec<PendingPing>,
        mut event: Event,
    ) -> Option<LinkEnd> {
        let tx = self.events.tx.clone();
        let give_up = self.block_deadline();
        loop {
            tokio::select! {
                biased;
                permit = tx.reserve() => {
                    match permit {
                        // What the stream owes goes first (then wait again).
                        Ok(permit) => match inbox::put_one(permit, &self.events.lag, event) {
                            None => return None,
                            Some(back) => event = back,
                        },
                        Err(_) => {
                            self.events.gone = true;
                            return None;
                        }
                    }
                }
                cmd = self.commands.recv() => {
                    if let Some(end) = self.on_command(link, pings, cmd).await {
                        self.events.emit(event).await;
                        return Some(end);
                    }
                }
                () = tokio::time::sleep_until(give_up) => {
                    // The message that waited is counted and announced as dropped.
                    self.events.lag.add();
                    self.handlers.metrics.dropped(1);
                    return Some(self.slow_consumer("the event stream"));
                }
            }
        }
    }

    /// When a wait for a blocked consumer gives up (`max_block`; far away if unset).
    fn block_deadline(&self) -> Instant {
        let wait = self.config.max_block.unwrap_or(FAR);
        later(Instant::now(), wait)
    }

    fn slow_consumer(&mut self, stream: &str) -> LinkEnd {
        let waited = self.config.max_block.unwrap_or_default();
        LinkEnd::Lost(
            Error::new(ErrorKind::SlowConsumer)
                .with_context(format!("{stream} stayed full for {waited:?} (max_block)")),
        )
    }

    /// A subscription's stream is full and the policy is to wait: as
    /// [`deliver_blocking`](Self::deliver_blocking), for that stream.
    async fn subscription_blocking(
        &mut self,
        link: &mut Link,
        pings: &mut Vec<PendingPing>,
        tx: mpsc::Sender<SubscriptionEvent>,
        lag: Lag,
        event: SubscriptionEvent,
    ) -> Option<LinkEnd> {
        let give_up = self.block_deadline();
        let mut event = event;
        loop {
            tokio::select! {
                biased;
                permit = tx.reserve() => {
                    match permit {
                        // What the stream owes goes first (then wait again).
                        Ok(permit) => match inbox::put_one(permit, &lag, event) {
                            None => return None,
                            Some(back) => event = back,
                        },
                        // The user dropped the subscription meanwhile: unsubscribe.
                        Err(_) => {
                            let _ = pings;
                            let gone = self.registry.abandoned();
                            self.unsubscribe(gone, None, Instant::now());
                            return self.pump(link).await.err().map(LinkEnd::Lost);
                        }
                    }
                }
                cmd = self.commands.recv() => {
                    if let Some(end) = self.on_command(link, pings, cmd).await {
                        return Some(end);
                    }
                }
                () = tokio::time::sleep_until(give_up) => {
                    lag.add();
                    self.handlers.metrics.dropped(1);
                    return Some(self.slow_consumer("a subscription's stream"));
                }
            }
        }
    }

    async fn send_ping(
        &mut self,
        link: &mut Link,
        pings: &mut Vec<PendingPing>,
        reply: Option<oneshot::Sender<Result<Duration, Error>>>,
    ) -> Result<(), Error> {
        self.ping_seq += 1;
        let payload = Bytes::copy_from_slice(&self.ping_seq.to_be_bytes());
        // Keepalive pings nobody waits for must not pile up when pongs never come.
        if pings.len() >= 64 {
            pings.retain(|p| p.reply.is_some());
        }
        let sent = Instant::now();
        link.send(Frame::Ping(payload.clone()), self.config.write_timeout)
            .await?;
        pings.push(PendingPing {
            payload,
            sent,
            reply,
        });
        Ok(())
    }

    async fn close_link(&mut self, link: &mut Link, frame: Frame) -> LinkEnd {
        self.events.closing_wait = Some(self.config.close_timeout);
        self.set_state(State::Closing).await;
        let clean = link
            .finish_close(Some(frame), self.config.close_timeout)
            .await;
        telemetry!(
            self.log,
            Connection,
            DEBUG,
            "close_handshake",
            clean = clean
        );
        LinkEnd::Closed
    }

    /// After a failed attempt or a lost link: ask the behaviours, then back off or stop.
    async fn after_loss(
        &mut self,
        error: Error,
        phase: ErrorPhase,
    ) -> ControlFlow<Result<(), Error>> {
        let state = self.lifecycle.state();
        if !matches!(state, State::Disconnected | State::Backoff) {
            self.set_state(State::Disconnected).await;
        }
        self.backoff.on_down(Instant::now().into_std());
        let attempt = self.lifecycle.attempt();
        let code = error.close_code();
        telemetry!(
            self.log,
            Error,
            WARN,
            "disconnected",
            attempt = attempt,
            code = code.map(CloseCode::as_u16),
            category = error.kind().name(),
            error = LogValue::display(&error)
        );
        let context = ErrorContext {
            phase,
            state,
            attempt,
        };
        if phase == ErrorPhase::Connect {
            self.handlers.metrics.connection(ConnectionMetric::Failed);
        }
        self.handlers.metrics.error(error.kind().name());
        let decision = self.handlers.error.on_error(&error, &context);
        let verdict = self.handlers.connection.on_disconnect(&DisconnectInfo {
            error: &error,
            code,
            attempt,
        });
        self.events
            .emit(Event::Disconnected {
                attempt,
                error: error.clone(),
                code,
            })
            .await;
        if decision == ErrorDecision::Stop || verdict == DisconnectDecision::Stop {
            return ControlFlow::Break(Err(error));
        }
        if self.backoff.policy().strategy == Strategy::Never {
            return ControlFlow::Break(Err(error));
        }
        let Some(policy_delay) = self.backoff.next_delay() else {
            let attempts = self.backoff.attempts();
            return ControlFlow::Break(Err(
                Error::new(ErrorKind::RetriesExhausted { attempts }).with_source(error)
            ));
        };
        let delay = match decision {
            ErrorDecision::ReconnectAfter(d) => d,
            _ => policy_delay,
        };
        if self.lifecycle.state() != State::Backoff {
            self.set_state(State::Backoff).await;
        }
        telemetry!(
            self.log,
            Connection,
            INFO,
            "reconnecting",
            attempt = attempt + 1,
            delay_ms = LogValue::ms(delay)
        );
        self.handlers
            .metrics
            .connection(ConnectionMetric::Reconnect);
        self.events
            .emit(Event::Reconnecting {
                attempt: attempt + 1,
                delay,
            })
            .await;
        // The dead link is already dropped; only now do we sleep.
        if let Err(result) = self.serve_offline(tokio::time::sleep(delay)).await {
            return ControlFlow::Break(result);
        }
        self.set_state(State::Connecting).await;
        ControlFlow::Continue(())
    }

    async fn finish(&mut self, result: Result<(), Error>) -> Result<(), Error> {
        self.events.closing_wait = Some(self.config.close_timeout);
        if self.lifecycle.state() != State::Closing {
            self.set_state(State::Closing).await;
        }
        for job in self.outbox.drain_all() {
            fail_job(job, Error::closed(), &mut self.groups, &mut self.registry);
        }
        for (_, g) in self.groups.drain() {
            if let Some((reply, _, _)) = g.user {
                let _ = reply.send(Err(Error::closed()));
            }
        }
        self.set_state(State::Closed).await;
        match &result {
            Ok(()) => telemetry!(self.log, Connection, INFO, "closed"),
            Err(e) => telemetry!(
                self.log,
                Connection,
                WARN,
                "closed",
                error = LogValue::display(e)
            ),
        }
        self.events
            .emit(Event::Closed {
                error: result.as_ref().err().cloned(),
            })
            .await;
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
        // Answer commands still queued so no caller waits on a dropped actor.
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Send { reply, .. } => drop(reply.send(Err(Error::closed()))),
                Command::Request { reply, .. } => drop(reply.send(Err(Error::closed()))),
                Command::Subscribe { reply, .. } => drop(reply.send(Err(Error::closed()))),
                Command::Unsubscribe { reply, .. } => drop(reply.send(Ok(()))),
                Command::Ping { reply } => drop(reply.send(Err(Error::closed()))),
                Command::Close { reply, .. } => drop(reply.send(())),
                Command::Reconfigure { reply, .. } => drop(reply.send(Err(Error::closed()))),
                Command::Config { reply } => drop(reply.send(self.config.clone())),
            }
        }
        result
    }

    async fn set_state(&mut self, to: State) {
        match self.lifecycle.transition(to) {
            Ok(t) => {
                telemetry!(
                    self.log,
                    Connection,
                    INFO,
                    "state_changed",
                    from = t.from.as_str(),
                    to = t.to.as_str(),
                    attempt = t.attempt
                );
                self.status.send_replace(Status {
                    state: t.to,
                    attempt: t.attempt,
                    connects: self.lifecycle.connects(),
                });
                self.events
                    .emit(Event::StateChanged {
                        from: t.from,
                        to: t.to,
                        attempt: t.attempt,
                    })
                    .await;
            }
            Err(e) => telemetry!(
                self.log,
                Connection,
                ERROR,
                "illegal_transition",
                error = LogValue::display(&e)
            ),
        }
    }
}

/// Answers a job that will never be written.
fn fail_job(job: Job, err: Error, groups: &mut HashMap<u64, Group>, registry: &mut Registry) {
    match job {
        Job::Send { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Job::Call { waiter, .. } => match waiter {
            Waiter::User(reply, _) => {
                let _ = reply.send(Err(err));
            }
            Waiter::Unsubscribe(reply) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(err));
                }
            }
            Waiter::Subscribe { group, channels } => {
                for c in &channels {
                    registry.remove(c);
                }
                if let Some(g) = groups.remove(&group) {
                    for c in &g.confirmed {
                        registry.remove(c);
                    }
                    if let Some((reply, _, _)) = g.user {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Waiter::Auth { .. } | Waiter::Notice(_) => {}
        },
    }
}

/// Answers a waiter whose call could not be written.
fn fail_waiter(waiter: Waiter, err: Error, actor: &mut Actor) {
    if matches!(waiter, Waiter::User(..)) {
        actor.outbox.request_done();
    }
    let job = Job::Call {
        method: String::new(),
        params: String::new(),
        timeout: Duration::ZERO,
        waiter,
    };
    fail_job(job, err, &mut actor.groups, &mut actor.registry);
}

/// The bound of the outbox's user queue.
fn outbox_capacity(config: &ClientConfig) -> usize {
    match config.offline {
        OfflinePolicy::Queue { capacity } => capacity,
        _ => config.command_capacity.max(1024),
    }
}

fn message_kind(frame: &Frame) -> MessageKind {
    match frame {
        Frame::Binary(_) => MessageKind::Binary,
        _ => MessageKind::Text,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use websockex_nova_testkit::{Script, TestServer};

    /// Every idle connection carries its actor's future; the large, rare futures (connect,
    /// close, backoff) are boxed so that this stays small. Guards against a regression that
    /// would multiply the memory of a client holding thousands of connections.
    #[tokio::test]
    async fn resident_futures_stay_small() {
        let server = TestServer::start(Script::echo()).await.unwrap();
        let config = ClientConfig::new(server.url());
        let (events, _events_rx) = mpsc::channel(1);
        let (status, _status_rx) = watch::channel(Status {
            state: State::Connecting,
            attempt: 1,
            connects: 0,
        });
        let (_commands_tx, commands) = mpsc::channel(1);
        let connector = Arc::new(Connector::new(&config).unwrap());
        let mut actor = Actor::new(
            0,
            config,
            Arc::clone(&connector),
            Handlers::default(),
            Box::new(crate::ratelimit::DefaultRateLimitHandler),
            None,
            Arc::new(Notify::new()),
            commands,
            (events, Lag::default(), None),
            status,
        );
        let link = connector
            .upgrade(connector.open().await.unwrap())
            .await
            .unwrap();
        assert!(std::mem::size_of_val(&link) <= 64);
        let run_link = std::mem::size_of_val(&actor.run_link(link));
        let session = std::mem::size_of_val(&actor.session(None));
        assert!(run_link <= 2048, "run_link future is {run_link} bytes");
        assert!(session <= 3072, "session future is {session} bytes");
    }
}
