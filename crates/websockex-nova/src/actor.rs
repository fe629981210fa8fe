//! The connection actor: one task per connection that owns all its mutable state.
//!
//! A thin `tokio::select!` loop over the command channel, the keepalive timer and the
//! socket. Decisions live in the sans-IO parts ([`Lifecycle`], [`Backoff`], [`Keepalive`])
//! and in the behaviours; this module only carries them out. A panic anywhere inside a
//! session (a handler bug) is caught by [`Actor::supervise`], which restarts the session
//! within the configured restart intensity.

use std::collections::VecDeque;
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
    ConnectInfo, DisconnectDecision, DisconnectInfo, ErrorContext, ErrorDecision, ErrorPhase,
    FrameDecision, Handlers, MessageDecision,
};
use crate::client::Status;
use crate::config::{ClientConfig, OfflinePolicy, OverflowPolicy};
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::event::Event;
use crate::frame::{CloseCode, CloseFrame, Frame};
use crate::keepalive::{Keepalive, KeepaliveAction};
use crate::lifecycle::{Lifecycle, State};
use crate::reconnect::{Backoff, Strategy};
use crate::transport::{Connector, Link};

/// What a [`Client`](crate::Client) asks of its actor. Every variant carries a reply slot
/// that is answered (or dropped, which the handle reads as `Closed`).
pub(crate) enum Command {
    Send {
        frame: Frame,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Ping {
        reply: oneshot::Sender<Result<Duration, Error>>,
    },
    Close {
        frame: Frame,
        reply: oneshot::Sender<()>,
    },
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Most inbound frames handled per wakeup before commands and timers get a turn.
const INBOUND_BATCH: usize = 64;

/// Builds the actor and returns its future, instrumented with the connection span.
pub(crate) fn run(
    config: ClientConfig,
    handlers: Handlers,
    rng: Option<Box<dyn RngCore + Send>>,
    close_wanted: Arc<Notify>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
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
    let backoff = match rng {
        Some(rng) => Backoff::with_rng(config.reconnect.clone(), rng),
        None => Backoff::new(config.reconnect.clone()),
    };
    let actor = Actor {
        events: EventSink {
            tx: events,
            policy: config.overflow,
            lagged: 0,
            gone: false,
            closing_wait: None,
            close_wanted,
            close_timeout: config.close_timeout,
        },
        offline: VecDeque::new(),
        config,
        connector,
        handlers,
        commands,
        status,
        lifecycle: Lifecycle::new(),
        backoff,
        restarts: VecDeque::new(),
        close_waiters: Vec::new(),
        ping_seq: 0,
    };
    Ok(actor.supervise().instrument(span))
}

/// Delivers events under the overflow policy.
struct EventSink {
    tx: mpsc::Sender<Event>,
    policy: OverflowPolicy,
    lagged: u64,
    gone: bool,
    /// While closing, lifecycle events wait at most this long for room: a consumer that
    /// neither reads nor drops its stream must not make `close()` hang.
    closing_wait: Option<Duration>,
    /// Notified by the handles on `close()` and when the last one is dropped.
    close_wanted: Arc<Notify>,
    /// The close timeout, applied once a close is wanted.
    close_timeout: Duration,
}

impl EventSink {
    /// Lifecycle events: never dropped (waits for room).
    async fn emit(&mut self, event: Event) {
        if self.gone {
            return;
        }
        if self.lagged > 0 {
            let dropped = std::mem::take(&mut self.lagged);
            self.send(Event::Lagged { dropped }).await;
        }
        self.send(event).await;
    }

    async fn send(&mut self, event: Event) {
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
            Ok(Ok(permit)) => permit.send(event),
            Ok(Err(_)) => self.gone = true,
            Err(_) => {
                tracing::warn!(target: "websockex_nova", event = "dropped", "event stream full while closing; later events are dropped");
                // Nobody is reading: the remaining events would wait in vain too.
                self.gone = true;
            }
        }
    }

    /// Data messages, without waiting. `Err` hands the event back when the stream is
    /// full under [`OverflowPolicy::Block`]: the caller waits for room (serving commands).
    fn try_deliver(&mut self, event: Event) -> Result<(), Event> {
        use mpsc::error::TrySendError;
        if self.gone {
            return Ok(());
        }
        if self.lagged > 0 {
            match self.tx.try_send(Event::Lagged {
                dropped: self.lagged,
            }) {
                Ok(()) => self.lagged = 0,
                Err(TrySendError::Full(_)) => {
                    self.lagged += 1;
                    tracing::trace!(target: "websockex_nova", event = "dropped", "event stream full");
                    return Ok(());
                }
                Err(TrySendError::Closed(_)) => {
                    self.gone = true;
                    return Ok(());
                }
            }
        }
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(event)) => match self.policy {
                OverflowPolicy::Block => Err(event),
                OverflowPolicy::DropNewest => {
                    self.lagged += 1;
                    tracing::trace!(target: "websockex_nova", event = "dropped", "event stream full");
                    Ok(())
                }
            },
            Err(TrySendError::Closed(_)) => {
                self.gone = true;
                Ok(())
            }
        }
    }
}

/// A ping waiting for its pong.
struct PendingPing {
    payload: Bytes,
    sent: Instant,
    reply: Option<oneshot::Sender<Result<Duration, Error>>>,
}

/// What is left to do about an inbound frame after the synchronous part.
enum Inbound {
    /// Nothing.
    Done,
    /// Send the connection hook's reply, then handle the frame as data.
    HookReply(Frame, Frame),
    /// Send the message handler's reply.
    Reply(Frame),
    /// The event stream is full under `OverflowPolicy::Block`: wait for room.
    Blocked(Event),
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

struct Actor {
    config: ClientConfig,
    connector: Arc<Connector>,
    handlers: Handlers,
    commands: mpsc::Receiver<Command>,
    events: EventSink,
    status: watch::Sender<Status>,
    lifecycle: Lifecycle,
    backoff: Backoff,
    offline: VecDeque<(Frame, oneshot::Sender<Result<(), Error>>)>,
    restarts: VecDeque<Instant>,
    close_waiters: Vec<oneshot::Sender<()>>,
    ping_seq: u64,
}

impl Actor {
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
                        tracing::error!(target: "websockex_nova", event = "restart_limit", restarts, %cause, "giving up after repeated panics");
                        let fatal =
                            Error::new(ErrorKind::RestartLimit { restarts }).with_source(error);
                        return Box::pin(self.finish(Err(fatal))).await;
                    }
                    tracing::error!(target: "websockex_nova", event = "restarted", restarts, %cause, "connection restarted after a panic");
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
                cmd = self.commands.recv() => {
                    if let ControlFlow::Break(()) = self.offline_command(cmd) {
                        return Err(Ok(()));
                    }
                }
            }
        }
    }

    /// A command while not Ready. `Break` means: close now.
    fn offline_command(&mut self, cmd: Option<Command>) -> ControlFlow<()> {
        match cmd {
            None => ControlFlow::Break(()),
            Some(Command::Close { reply, .. }) => {
                self.close_waiters.push(reply);
                ControlFlow::Break(())
            }
            Some(Command::Ping { reply }) => {
                let _ = reply.send(Err(Error::new(ErrorKind::NotReady)));
                ControlFlow::Continue(())
            }
            Some(Command::Send { frame, reply }) => {
                match self.config.offline {
                    OfflinePolicy::Reject => {
                        let _ = reply.send(Err(Error::new(ErrorKind::NotReady)));
                    }
                    OfflinePolicy::Queue { capacity } if self.offline.len() >= capacity => {
                        let _ = reply.send(Err(Error::new(ErrorKind::QueueFull)
                            .with_context(format!("offline queue holds {capacity} frames"))));
                    }
                    OfflinePolicy::Queue { .. } => self.offline.push_back((frame, reply)),
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// A link is up: greet, flush the offline queue, then serve until it ends.
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
        while let Some((frame, reply)) = self.offline.pop_front() {
            if let Err(e) = link.send(frame, write_timeout).await {
                let _ = reply.send(Err(Error::disconnected(false).with_source(e.clone())));
                return LinkEnd::Lost(e);
            }
            let _ = reply.send(Ok(()));
        }
        self.set_state(State::Ready).await;
        self.backoff.on_up(Instant::now().into_std());
        self.events
            .emit(Event::Connected {
                attempt: self.lifecycle.attempt(),
                subprotocol: link.subprotocol.clone(),
            })
            .await;

        let mut pings: Vec<PendingPing> = Vec::new();
        let end = self.serve_link(&mut link, &mut pings).await;
        for ping in pings {
            if let Some(reply) = ping.reply {
                let _ = reply.send(Err(Error::disconnected(true)));
            }
        }
        end
    }

    async fn serve_link(&mut self, link: &mut Link, pings: &mut Vec<PendingPing>) -> LinkEnd {
        let mut keepalive = Keepalive::new(self.config.keepalive, Instant::now().into_std());
        // Re-armed only when it fires: traffic moves the real deadline later, never earlier,
        // so waking at a stale deadline is harmless and the hot path never touches the timer.
        let far = Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep_until(keepalive_deadline(&keepalive, far));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                cmd = self.commands.recv() => {
                    if let Some(end) = self.on_command(link, pings, cmd).await {
                        return end;
                    }
                }
                () = &mut timer => {
                    match keepalive.poll(Instant::now().into_std()) {
                        KeepaliveAction::Dead => {
                            let timeout = keepalive.timeout().unwrap_or_default();
                            tracing::warn!(target: "websockex_nova", event = "dead_peer", ?timeout, "no traffic within the keepalive timeout");
                            return LinkEnd::Lost(Error::timeout(TimeoutKind::Keepalive, timeout));
                        }
                        KeepaliveAction::SendPing => {
                            if let Err(e) = self.send_ping(link, pings, None).await {
                                return LinkEnd::Lost(e);
                            }
                        }
                        KeepaliveAction::Idle => {}
                    }
                    timer.as_mut().reset(keepalive_deadline(&keepalive, far));
                }
                item = link.recv() => {
                    keepalive.on_traffic(Instant::now().into_std());
                    let mut item = item;
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
                }
            }
        }
    }

    /// One inbound frame on a Ready link, synchronously: the hot path (deliver a message)
    /// completes here; anything that needs I/O comes back as an [`Inbound`] to finish.
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
                tracing::trace!(target: "websockex_nova", event = "message_received", len = frame.len());
                let class = self.handlers.message.classify(&frame);
                match self.handlers.message.handle(frame, class) {
                    MessageDecision::Deliver(frame) => {
                        match self.events.try_deliver(Event::Message(frame)) {
                            Ok(()) => Inbound::Done,
                            Err(event) => Inbound::Blocked(event),
                        }
                    }
                    MessageDecision::Reply(reply) => Inbound::Reply(reply),
                    MessageDecision::Consume => Inbound::Done,
                }
            }
            Frame::Pong(payload) => {
                if let Some(i) = pings.iter().position(|p| p.payload == payload) {
                    let ping = pings.swap_remove(i);
                    let rtt = ping.sent.elapsed();
                    tracing::debug!(target: "websockex_nova", event = "pong", ?rtt);
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
                Inbound::Reply(reply) => {
                    return link
                        .send(reply, self.config.write_timeout)
                        .await
                        .err()
                        .map(LinkEnd::Lost);
                }
                Inbound::Blocked(event) => {
                    return Box::pin(self.deliver_blocking(link, pings, event)).await
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

    /// A command on a Ready link.
    async fn on_command(
        &mut self,
        link: &mut Link,
        pings: &mut Vec<PendingPing>,
        cmd: Option<Command>,
    ) -> Option<LinkEnd> {
        match cmd {
            None => Some(Box::pin(self.close_link(link, Frame::close_normal())).await),
            Some(Command::Close { frame, reply }) => {
                self.close_waiters.push(reply);
                Some(Box::pin(self.close_link(link, frame)).await)
            }
            Some(Command::Send { frame, reply }) => {
                if let Err(e) = link.send(frame, self.config.write_timeout).await {
                    let _ = reply.send(Err(Error::disconnected(false).with_source(e.clone())));
                    return Some(LinkEnd::Lost(e));
                }
                let _ = reply.send(Ok(()));
                None
            }
            Some(Command::Ping { reply }) => self
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
        event: Event,
    ) -> Option<LinkEnd> {
        let tx = self.events.tx.clone();
        loop {
            tokio::select! {
                biased;
                permit = tx.reserve() => {
                    match permit {
                        Ok(permit) => permit.send(event),
                        Err(_) => self.events.gone = true,
                    }
                    return None;
                }
                cmd = self.commands.recv() => {
                    if let Some(end) = self.on_command(link, pings, cmd).await {
                        self.events.emit(event).await;
                        return Some(end);
                    }
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
        tracing::debug!(target: "websockex_nova", event = "close_handshake", clean);
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
        tracing::warn!(target: "websockex_nova", event = "disconnected", attempt, code = code.map(CloseCode::as_u16), %error);
        let context = ErrorContext {
            phase,
            state,
            attempt,
        };
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
        tracing::info!(target: "websockex_nova", event = "reconnecting", attempt = attempt + 1, ?delay);
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
        for (_, reply) in self.offline.drain(..) {
            let _ = reply.send(Err(Error::closed()));
        }
        self.set_state(State::Closed).await;
        match &result {
            Ok(()) => tracing::info!(target: "websockex_nova", event = "closed"),
            Err(e) => tracing::warn!(target: "websockex_nova", event = "closed", error = %e),
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
                Command::Ping { reply } => drop(reply.send(Err(Error::closed()))),
                Command::Close { reply, .. } => drop(reply.send(())),
            }
        }
        result
    }

    async fn set_state(&mut self, to: State) {
        match self.lifecycle.transition(to) {
            Ok(t) => {
                tracing::info!(target: "websockex_nova", event = "state_changed", from = %t.from, to = %t.to, attempt = t.attempt);
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
            Err(e) => tracing::error!(target: "websockex_nova", event = "illegal_transition", %e),
        }
    }
}

fn keepalive_deadline(keepalive: &Keepalive, far: Duration) -> Instant {
    keepalive
        .next_deadline()
        .map(Instant::from_std)
        .unwrap_or_else(|| Instant::now() + far)
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
        let mut actor = Actor {
            events: EventSink {
                tx: events,
                policy: config.overflow,
                lagged: 0,
                gone: false,
                closing_wait: None,
                close_wanted: Arc::new(Notify::new()),
                close_timeout: config.close_timeout,
            },
            offline: VecDeque::new(),
            backoff: Backoff::new(config.reconnect.clone()),
            config,
            connector: Arc::clone(&connector),
            handlers: Handlers::default(),
            commands,
            status,
            lifecycle: Lifecycle::new(),
            restarts: VecDeque::new(),
            close_waiters: Vec::new(),
            ping_seq: 0,
        };
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
