//! The running server: [`TestServer`], and what it records.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::conn;
use crate::script::Script;

/// Something a client sent, as recorded by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text {
        /// Index of the connection (0 for the first TCP connection accepted, and so on).
        conn: usize,
        /// The message.
        text: String,
    },
    /// A binary message.
    Binary {
        /// Index of the connection.
        conn: usize,
        /// The message.
        data: Vec<u8>,
    },
    /// A ping (only in [`TestServer::control`]).
    Ping {
        /// Index of the connection.
        conn: usize,
        /// The ping payload.
        data: Vec<u8>,
    },
    /// A pong (only in [`TestServer::control`]).
    Pong {
        /// Index of the connection.
        conn: usize,
        /// The pong payload.
        data: Vec<u8>,
    },
    /// A close frame.
    Close {
        /// Index of the connection.
        conn: usize,
        /// The close code, `None` if the close frame had no payload.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
}

impl Received {
    /// Index of the connection this came from.
    pub fn conn(&self) -> usize {
        match self {
            Received::Text { conn, .. }
            | Received::Binary { conn, .. }
            | Received::Ping { conn, .. }
            | Received::Pong { conn, .. }
            | Received::Close { conn, .. } => *conn,
        }
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Received::Text { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// An HTTP upgrade request as the server read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Index of the connection.
    pub conn: usize,
    /// The request method (normally `GET`).
    pub method: String,
    /// The request target, e.g. `/ws/api/v2?x=1`.
    pub path: String,
    /// The headers in order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl UpgradeRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The subprotocols the client offered, in order (all `Sec-WebSocket-Protocol` headers).
    pub fn subprotocols(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "sec-websocket-protocol")
            .flat_map(|(_, v)| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct ActiveScript {
    pub(crate) script: Script,
    next: AtomicUsize,
}

pub(crate) struct ConnEntry {
    handle: JoinHandle<()>,
    tx: mpsc::UnboundedSender<String>,
    serving: Arc<AtomicBool>,
}

#[derive(Default)]
pub(crate) struct Registry {
    closed: bool,
    conns: HashMap<usize, ConnEntry>,
}

/// State shared between the handle, the accept loop and the connection tasks.
pub(crate) struct Shared {
    script: Mutex<Arc<ActiveScript>>,
    accepted: AtomicUsize,
    upgraded: AtomicUsize,
    requests: Mutex<Vec<UpgradeRequest>>,
    received: Mutex<Vec<Received>>,
    control: Mutex<Vec<Received>>,
    registry: Mutex<Registry>,
    changed: Notify,
}

impl Shared {
    pub(crate) fn notify(&self) {
        self.changed.notify_waiters();
    }

    pub(crate) fn record_request(&self, req: UpgradeRequest) {
        lock(&self.requests).push(req);
        self.changed.notify_waiters();
    }

    pub(crate) fn record_upgraded(&self) {
        self.upgraded.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn record(&self, r: Received) {
        match r {
            Received::Ping { .. } | Received::Pong { .. } => lock(&self.control).push(r),
            _ => lock(&self.received).push(r),
        }
        self.changed.notify_waiters();
    }

    /// Called when a connection task ends (normally or by abort).
    pub(crate) fn connection_ended(&self, conn: usize) {
        let removed = lock(&self.registry).conns.remove(&conn);
        drop(removed);
        self.changed.notify_waiters();
    }
}

/// A running scriptable WebSocket server on the loopback interface.
///
/// It runs on the caller's tokio runtime. Dropping it stops it: the listener and every
/// connection are closed and all its tasks end.
///
/// Connections are numbered from 0 in the order the TCP connections were accepted (refused and
/// dropped ones included); that index appears in [`Received`] and [`UpgradeRequest`].
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("listening", &self.accept_task.is_some())
            .field("accepted", &self.accepted())
            .field("upgraded", &self.upgraded())
            .field("open", &self.open())
            .finish()
    }
}

/// Bind a listener with `SO_REUSEADDR`. A listener that was just dropped by an aborted task may
/// still be alive for a moment, so `AddrInUse` is retried for up to a second.
pub(crate) async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let attempt = (|| {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        })();
        match attempt {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "testkit: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "testkit: set_nodelay failed");
        }
        let conn = shared.accepted.fetch_add(1, Ordering::SeqCst);
        let script = Arc::clone(&lock(&shared.script));
        let index = script.next.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(conn, %peer, "testkit: accepted connection");
        let (tx, rx) = mpsc::unbounded_channel();
        let serving = Arc::new(AtomicBool::new(false));
        {
            // Spawn under the lock so the task cannot end (and deregister) before it is registered.
            let mut reg = lock(&shared.registry);
            if reg.closed {
                return;
            }
            let handle = tokio::spawn(conn::run(conn::ConnCtx {
                shared: Arc::clone(&shared),
                stream,
                conn,
                script,
                index,
                rx,
                serving: Arc::clone(&serving),
            }));
            reg.conns.insert(
                conn,
                ConnEntry {
                    handle,
                    tx,
                    serving,
                },
            );
        }
        shared.changed.notify_waiters();
    }
}

impl TestServer {
    /// Start a server on `127.0.0.1` on a free port.
    pub async fn start(script: Script) -> io::Result<TestServer> {
        TestServer::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), script).await
    }

    /// Start a server on `addr` (with `SO_REUSEADDR`, so a port a previous server just released
    /// can be reused at once). If the port is still held, e.g. by a dropped server whose tasks
    /// have not finished yet, binding is retried for up to one second.
    pub async fn start_on(addr: SocketAddr, script: Script) -> io::Result<TestServer> {
        let listener = bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(Arc::new(ActiveScript {
                script,
                next: AtomicUsize::new(0),
            })),
            accepted: AtomicUsize::new(0),
            upgraded: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
            control: Mutex::new(Vec::new()),
            registry: Mutex::new(Registry::default()),
            changed: Notify::new(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::debug!(%addr, "testkit: server listening");
        Ok(TestServer {
            shared,
            addr,
            accept_task: Some(accept_task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Replace the script; it applies to connections accepted afterwards (its connection index
    /// starts at 0 again).
    pub fn set_script(&self, script: Script) {
        *lock(&self.shared.script) = Arc::new(ActiveScript {
            script,
            next: AtomicUsize::new(0),
        });
    }

    /// Whether the server is listening (not stopped).
    pub fn is_listening(&self) -> bool {
        self.accept_task.is_some()
    }

    /// Stop listening and drop every connection abruptly (no close frame). When this returns,
    /// the port is free and all connection sockets are closed.
    pub async fn stop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
            let _ = task.await;
        }
        let handles: Vec<JoinHandle<()>> = {
            let mut reg = lock(&self.shared.registry);
            reg.closed = true;
            reg.conns.drain().map(|(_, e)| e.handle).collect()
        };
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
        self.shared.changed.notify_waiters();
        tracing::debug!(addr = %self.addr, "testkit: server stopped");
    }

    /// Stop (as [`TestServer::stop`]), then listen again on the same port with the current
    /// script. Counters and recordings are kept.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let listener = bind(self.addr).await?;
        lock(&self.shared.registry).closed = false;
        self.accept_task = Some(tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.shared),
        )));
        tracing::debug!(addr = %self.addr, "testkit: server restarted");
        Ok(())
    }

    /// Drop every open TCP connection now, without a close frame, but keep listening.
    pub fn drop_connections(&self) {
        let handles: Vec<JoinHandle<()>> = lock(&self.shared.registry)
            .conns
            .drain()
            .map(|(_, e)| e.handle)
            .collect();
        for h in handles {
            h.abort();
        }
        self.shared.changed.notify_waiters();
    }

    /// TCP connections accepted so far (refused upgrades included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Successful upgrades (`101` responses) so far.
    pub fn upgraded(&self) -> usize {
        self.shared.upgraded.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn open(&self) -> usize {
        lock(&self.shared.registry).conns.len()
    }

    /// Connections currently in a [`Step::Echo`], [`Step::EchoN`] or [`Step::Serve`] step, i.e.
    /// those [`TestServer::broadcast`] reaches.
    ///
    /// [`Step::Echo`]: crate::Step::Echo
    /// [`Step::EchoN`]: crate::Step::EchoN
    /// [`Step::Serve`]: crate::Step::Serve
    pub fn serving(&self) -> usize {
        lock(&self.shared.registry)
            .conns
            .values()
            .filter(|e| e.serving.load(Ordering::SeqCst))
            .count()
    }

    /// Every upgrade request read so far (refused ones included), in order.
    pub fn requests(&self) -> Vec<UpgradeRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Every text message, binary message and close frame received from clients, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// The texts of all text messages received so far, in order.
    pub fn texts(&self) -> Vec<String> {
        lock(&self.shared.received)
            .iter()
            .filter_map(|r| r.as_text().map(str::to_owned))
            .collect()
    }

    /// Every ping and pong received from clients, in order.
    pub fn control(&self) -> Vec<Received> {
        lock(&self.shared.control).clone()
    }

    /// Wait until `cond` holds or `timeout` passes; returns whether it holds. `cond` is
    /// re-checked whenever the server records something or a connection opens or closes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&TestServer) -> bool,
    ) -> bool {
        wait_until(&self.shared.changed, timeout, || cond(self)).await
    }

    /// Wait until at least `n` entries are in [`TestServer::received`] (or `timeout` passes) and
    /// return them all.
    pub async fn wait_received(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_for(timeout, |s| lock(&s.shared.received).len() >= n)
            .await;
        self.received()
    }

    /// Wait until at least `n` upgrades have succeeded; returns whether they have.
    pub async fn wait_upgraded(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.upgraded() >= n).await
    }

    /// Wait until at most `n` connections are open; returns whether that happened in time.
    pub async fn wait_open_at_most(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.open() <= n).await
    }

    /// Send a text message to every open connection currently in a [`Step::Echo`],
    /// [`Step::EchoN`] or [`Step::Serve`] step (including the implicit serve after the steps run
    /// out). Returns how many connections it was queued for.
    ///
    /// [`Step::Echo`]: crate::Step::Echo
    /// [`Step::EchoN`]: crate::Step::EchoN
    /// [`Step::Serve`]: crate::Step::Serve
    pub fn broadcast(&self, text: &str) -> usize {
        let reg = lock(&self.shared.registry);
        reg.conns
            .values()
            .filter(|e| e.serving.load(Ordering::SeqCst))
            .filter(|e| e.tx.send(text.to_owned()).is_ok())
            .count()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
        let handles: Vec<JoinHandle<()>> = {
            let mut reg = lock(&self.shared.registry);
            reg.closed = true;
            reg.conns.drain().map(|(_, e)| e.handle).collect()
        };
        for h in handles {
            h.abort();
        }
    }
}

/// Waits until `cond` holds or `timeout` passes, re-checking whenever `changed` is
/// notified; returns whether it holds. The notification is armed before each check, so a
/// change between the check and the wait is never missed.
pub(crate) async fn wait_until(
    changed: &tokio::sync::Notify,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if cond() {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return cond();
        }
    }
}
