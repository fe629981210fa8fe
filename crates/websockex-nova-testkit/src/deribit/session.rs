//! One connection: the upgrade handshake, then the read/write loop (requests, queued
//! notifications, delayed responses, heartbeats, control orders).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_websockets::{CloseCode, Limits, Message, ServerBuilder, WebSocketStream};

use super::records::{CloseRecord, ClosedBy};
use super::state::{Ctl, Shared, Tick, HEARTBEAT, TEST_REQUEST};
use crate::conn::{accept_key, read_request, refuse};
use crate::server::lock;

/// How long a close waits for the frame to go out and for the client's reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Queued messages written per flush.
const BATCH: usize = 256;

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How a session ended.
enum End {
    Server(u16, String),
    Client(Option<u16>, String),
    Dropped(String),
}

/// Unregisters the connection when its task ends, however it ends (abort included); this is
/// where cancel-on-disconnect runs.
struct Guard {
    shared: Arc<Shared>,
    conn: usize,
    registered: bool,
    cod: bool,
    end: Option<End>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.registered {
            let now = Instant::now();
            let (by, code, reason) = match self.end.take() {
                Some(End::Server(code, reason)) => (ClosedBy::Server, Some(code), reason),
                Some(End::Client(code, reason)) => (ClosedBy::Client, code, reason),
                Some(End::Dropped(reason)) => (ClosedBy::Dropped, None, reason),
                None => (ClosedBy::Dropped, None, "dropped".to_owned()),
            };
            tracing::debug!(conn = self.conn, ?by, ?code, %reason, "deribit sim: connection closed");
            let record = CloseRecord {
                conn: self.conn,
                at: now,
                by,
                code,
                reason,
            };
            self.shared
                .state()
                .close_conn(self.conn, self.cod, record, now);
        }
        lock(&self.shared.tasks).remove(&self.conn);
        self.shared.notify();
    }
}

pub(crate) async fn run(shared: Arc<Shared>, mut stream: TcpStream, conn: usize) {
    let mut guard = Guard {
        shared: Arc::clone(&shared),
        conn,
        registered: false,
        cod: true,
        end: None,
    };
    let req = match read_request(&mut stream, conn).await {
        Ok(Some(req)) => req,
        _ => return,
    };
    let key = req.header("sec-websocket-key").map(str::to_owned);
    let is_upgrade = req
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = key.filter(|_| is_upgrade) else {
        let _ = refuse(&mut stream, 400).await;
        return;
    };
    let opened = shared.state().open_conn(conn, Instant::now());
    shared.notify();
    let (rx, ctl, queued) = match opened {
        Ok(x) => x,
        Err(status) => {
            tracing::debug!(conn, status, "deribit sim: upgrade refused");
            let _ = refuse(&mut stream, status).await;
            return;
        }
    };
    guard.registered = true;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(&key)
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    shared.state().rec.upgraded += 1;
    shared.notify();
    // The path only: a query string could hold anything.
    let path = req.path.split('?').next().unwrap_or_default();
    tracing::debug!(conn, path, "deribit sim: connection upgraded");
    let (idle_timeout, last_out) = (shared.state().cfg.idle_timeout, Instant::now());
    let mut session = Session {
        shared,
        conn,
        ws: ServerBuilder::new()
            .limits(Limits::unlimited())
            .serve(stream),
        rx,
        ctl,
        queued,
        paused: false,
        deferred: VecDeque::new(),
        last_out,
    };
    let (end, cod) = session.run(idle_timeout).await;
    guard.end = Some(end);
    guard.cod = cod;
}

struct Session {
    shared: Arc<Shared>,
    conn: usize,
    ws: WebSocketStream<TcpStream>,
    rx: mpsc::UnboundedReceiver<String>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    queued: Arc<AtomicUsize>,
    paused: bool,
    /// Orders that arrived while a write was in progress, carried out after it.
    deferred: VecDeque<Ctl>,
    last_out: Instant,
}

impl Session {
    /// Serve until the connection ends; returns how, and whether cancel-on-disconnect applies.
    async fn run(&mut self, idle_timeout: Option<Duration>) -> (End, bool) {
        let mut delayed: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
        let mut pending: HashMap<u64, (String, Vec<String>)> = HashMap::new();
        let mut seq = 0u64;
        let mut hb_next: Option<Instant> = None;
        let mut hb_prev = Instant::now();
        let mut last_in = Instant::now();
        let mut client_close: Option<(Option<u16>, String)> = None;
        loop {
            while let Some(c) = self.deferred.pop_front() {
                if let Err(end) = self.on_ctl(c).await {
                    return (end, true);
                }
            }
            let due = delayed.peek().map(|Reverse((t, _))| *t);
            let idle_at = idle_timeout.map(|d| last_in + d);
            tokio::select! {
                biased;
                Some(c) = self.ctl.recv() => {
                    if let Err(end) = self.on_ctl(c).await {
                        return (end, true);
                    }
                }
                msg = self.ws.next() => {
                    let now = Instant::now();
                    let msg = match msg {
                        None => {
                            let end = match client_close.take() {
                                Some((code, reason)) => End::Client(code, reason),
                                None => End::Dropped("eof".to_owned()),
                            };
                            return (end, true);
                        }
                        Some(Err(e)) => return (End::Dropped(format!("read error: {e}")), true),
                        Some(Ok(msg)) => msg,
                    };
                    last_in = now;
                    if let Some((code, reason)) = msg.as_close() {
                        let code = (u16::from(code) != 1005).then(|| u16::from(code));
                        client_close = Some((code, reason.to_owned()));
                        let _ = self.ws.flush().await;
                        continue;
                    }
                    if msg.is_ping() || msg.is_pong() {
                        let _ = self.ws.flush().await;
                        continue;
                    }
                    let text = match msg.as_text() {
                        Some(t) => std::borrow::Cow::Borrowed(t),
                        None => String::from_utf8_lossy(msg.as_payload()),
                    };
                    let out = self.shared.state().handle_text(self.conn, &text, now);
                    self.shared.notify();
                    if let Some(hb) = out.heartbeat {
                        hb_next = hb.map(|d| now + d);
                        hb_prev = now;
                    }
                    if let Some((code, reason)) = out.close {
                        if let Some(reply) = out.reply {
                            if let Err(end) = self.write(reply).await {
                                return (end, !out.no_cod);
                            }
                        }
                        return (self.close(code, &reason).await, !out.no_cod);
                    }
                    match out.reply {
                        Some(reply) if !out.delay.is_zero() => {
                            seq += 1;
                            delayed.push(Reverse((now + out.delay, seq)));
                            pending.insert(seq, (reply, out.activate));
                        }
                        Some(reply) => {
                            if let Err(end) = self.write(reply).await {
                                return (end, true);
                            }
                            self.activate(&out.activate);
                        }
                        None => self.activate(&out.activate),
                    }
                }
                () = sleep_until(due) => {
                    let now = Instant::now();
                    while let Some(Reverse((t, s))) = delayed.peek().copied() {
                        if t > now {
                            break;
                        }
                        delayed.pop();
                        if let Some((reply, activate)) = pending.remove(&s) {
                            if let Err(end) = self.write(reply).await {
                                return (end, true);
                            }
                            self.activate(&activate);
                        }
                    }
                }
                () = sleep_until(hb_next) => {
                    let now = Instant::now();
                    let idle = self.last_out <= hb_prev;
                    let tick = self.shared.state().heartbeat_tick(self.conn, now, idle);
                    self.shared.notify();
                    match tick {
                        Tick::Send(idle, next) => {
                            hb_prev = now;
                            hb_next = Some(next);
                            if let Err(end) = self.write(TEST_REQUEST.to_owned()).await {
                                return (end, true);
                            }
                            if idle {
                                if let Err(end) = self.write(HEARTBEAT.to_owned()).await {
                                    return (end, true);
                                }
                            }
                        }
                        Tick::Close => {
                            tracing::debug!(conn = self.conn, "deribit sim: test_request unanswered");
                            return (self.close(4000, "heartbeat close").await, true);
                        }
                        Tick::Off => hb_next = None,
                    }
                }
                () = sleep_until(idle_at) => {
                    if self.shared.state().idle_droppable(self.conn) {
                        return (End::Dropped("idle".to_owned()), true);
                    }
                    last_in = Instant::now();
                }
                Some(text) = self.rx.recv(), if !self.paused => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    if let Err(end) = self.write_batch(text).await {
                        return (end, true);
                    }
                }
            }
        }
    }

    /// Carry out a control order; `Err` when it ends the connection.
    async fn on_ctl(&mut self, c: Ctl) -> Result<(), End> {
        match c {
            Ctl::Close(code, reason) => Err(self.close(code, &reason).await),
            Ctl::PauseWrites(p) => {
                self.paused = p;
                Ok(())
            }
            Ctl::Stall(d) => {
                tracing::debug!(conn = self.conn, ?d, "deribit sim: stalling");
                tokio::time::sleep(d).await;
                Ok(())
            }
            Ctl::Raw(bytes) => {
                let ws = &mut self.ws;
                let send = async move {
                    // After what the encoder holds, so frames never interleave.
                    ws.flush().await.map_err(|e| e.to_string())?;
                    let tcp = ws.get_mut();
                    tcp.write_all(&bytes).await.map_err(|e| e.to_string())?;
                    tcp.flush().await.map_err(|e| e.to_string())
                };
                drive_write(send, &mut self.ctl, &mut self.paused, &mut self.deferred).await?;
                self.last_out = Instant::now();
                Ok(())
            }
        }
    }

    fn activate(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        self.shared
            .state()
            .activate(self.conn, names, Instant::now());
        self.shared.notify();
    }

    /// Write one message. A close order arriving while the socket does not take it (a
    /// client that stopped reading) drops the connection.
    async fn write(&mut self, text: String) -> Result<(), End> {
        let send = self.ws.send(Message::text(text));
        drive_write(send, &mut self.ctl, &mut self.paused, &mut self.deferred).await?;
        self.last_out = Instant::now();
        Ok(())
    }

    /// Write `first` and what else is queued (up to [`BATCH`]), one flush.
    async fn write_batch(&mut self, first: String) -> Result<(), End> {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match self.rx.try_recv() {
                Ok(t) => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    batch.push(t);
                }
                Err(_) => break,
            }
        }
        let ws = &mut self.ws;
        let send = async move {
            for t in batch {
                ws.feed(Message::text(t)).await?;
            }
            ws.flush().await
        };
        drive_write(send, &mut self.ctl, &mut self.paused, &mut self.deferred).await?;
        self.last_out = Instant::now();
        Ok(())
    }

    /// Discard what is queued, send a close frame, wait (bounded) for the client's reply.
    async fn close(&mut self, code: u16, reason: &str) -> End {
        while self.rx.try_recv().is_ok() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        let frame = CloseCode::try_from(code)
            .ok()
            .filter(|c| !c.is_reserved())
            .map(|c| Message::close(Some(c), reason));
        let Some(frame) = frame else {
            return End::Dropped(format!("unsendable close code {code}"));
        };
        let sent = tokio::time::timeout(CLOSE_WAIT, self.ws.send(frame)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return End::Dropped(reason.to_owned());
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(msg)) = self.ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        })
        .await;
        End::Server(code, reason.to_owned())
    }
}

/// Drives a write to completion while obeying control orders: a pause toggles `paused`, a
/// close order ends the connection even while the socket does not take the write; a stall
/// or raw bytes wait in `deferred` until the write is done.
async fn drive_write<E: std::fmt::Display>(
    send: impl std::future::Future<Output = Result<(), E>>,
    ctl: &mut mpsc::UnboundedReceiver<Ctl>,
    paused: &mut bool,
    deferred: &mut VecDeque<Ctl>,
) -> Result<(), End> {
    tokio::pin!(send);
    loop {
        tokio::select! {
            biased;
            r = &mut send => {
                return r.map_err(|e| End::Dropped(format!("write error: {e}")));
            }
            Some(c) = ctl.recv() => match c {
                Ctl::PauseWrites(p) => *paused = p,
                Ctl::Close(_, reason) => return Err(End::Dropped(reason)),
                later @ (Ctl::Stall(_) | Ctl::Raw(_)) => deferred.push_back(later),
            },
        }
    }
}
