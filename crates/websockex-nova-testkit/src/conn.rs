//! One connection: the hand-made upgrade handshake, then the plan's steps.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_websockets::{CloseCode, Limits, Message, ServerBuilder, WebSocketStream};

use crate::frame::{frame_header, raw_frame};
use crate::rpc::RpcLink;
use crate::script::{Plan, Step};
use crate::server::{ActiveScript, Received, Shared, UpgradeRequest};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long to wait for a complete request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Step::Close`] waits for the client's reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long [`Step::Stream`] waits for the client's close reply.
const STREAM_CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Size of the batched writes of [`Step::Stream`] and [`Step::Oversized`].
const CHUNK: usize = 64 * 1024;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stream: TcpStream,
    pub(crate) conn: usize,
    pub(crate) script: Arc<ActiveScript>,
    pub(crate) index: usize,
    pub(crate) rx: mpsc::UnboundedReceiver<String>,
    pub(crate) serving: Arc<AtomicBool>,
}

/// Deregisters the connection when its task ends, including by abort or panic.
struct Guard {
    shared: Arc<Shared>,
    conn: usize,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.connection_ended(self.conn);
    }
}

pub(crate) async fn run(ctx: ConnCtx) {
    let _guard = Guard {
        shared: Arc::clone(&ctx.shared),
        conn: ctx.conn,
    };
    let conn = ctx.conn;
    match run_inner(ctx).await {
        Ok(()) => tracing::debug!(conn, "testkit: connection finished"),
        Err(e) => tracing::debug!(conn, error = %e, "testkit: connection ended with an error"),
    }
}

async fn run_inner(ctx: ConnCtx) -> io::Result<()> {
    let ConnCtx {
        shared,
        mut stream,
        conn,
        script,
        index,
        rx,
        serving,
    } = ctx;
    let plan = script.script.plan_for(index);
    tracing::debug!(conn, index, ?plan, "testkit: plan chosen");
    let steps = match plan {
        Plan::DropBeforeUpgrade => return Ok(()),
        Plan::Hang => return std::future::pending().await,
        Plan::Refuse { status } => {
            if let Some(req) = read_request(&mut stream, conn).await? {
                shared.record_request(req);
                refuse(&mut stream, status).await?;
            }
            return Ok(());
        }
        Plan::Accept(steps) => steps,
    };
    let Some(req) = read_request(&mut stream, conn).await? else {
        return Ok(());
    };
    let key = req.header("sec-websocket-key").map(str::to_owned);
    let offered = req.subprotocols();
    let is_upgrade = req
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    shared.record_request(req);
    let Some(key) = key.filter(|_| is_upgrade) else {
        tracing::warn!(
            conn,
            "testkit: not a WebSocket upgrade request; answering 400"
        );
        return refuse(&mut stream, 400).await;
    };

    let mut response = String::from(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    response.push_str("Sec-WebSocket-Accept: ");
    response.push_str(&accept_key(&key));
    response.push_str("\r\n");
    let accepted = script.script.accepted_subprotocols();
    if let Some(p) = offered.iter().find(|p| accepted.contains(p)) {
        response.push_str("Sec-WebSocket-Protocol: ");
        response.push_str(p);
        response.push_str("\r\n");
    }
    for (name, value) in script.script.response_headers() {
        response.push_str(name);
        response.push_str(": ");
        response.push_str(value);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    drop(script);
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    shared.record_upgraded();

    let ws = ServerBuilder::new()
        .limits(Limits::unlimited())
        .serve(stream);
    let mut session = Session {
        shared,
        conn,
        ws,
        rx,
        serving,
        rpc_links: Vec::new(),
    };
    session.run_steps(steps).await;
    Ok(())
}

/// Read the request head (up to `\r\n\r\n`) and parse it. `None` if the client went away or sent
/// garbage (already answered with 400 where possible).
pub(crate) async fn read_request(
    stream: &mut TcpStream,
    conn: usize,
) -> io::Result<Option<UpgradeRequest>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            tracing::warn!(conn, "testkit: request head too large");
            refuse(stream, 431).await?;
            return Ok(None);
        }
        let n = match tokio::time::timeout(HEAD_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => {
                tracing::warn!(conn, "testkit: timed out reading the request head");
                return Ok(None);
            }
        };
        if n == 0 {
            tracing::debug!(conn, "testkit: client closed before sending a request");
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if buf.len() > head_end + 4 {
        tracing::debug!(
            conn,
            extra = buf.len() - head_end - 4,
            "testkit: ignoring bytes sent after the request head"
        );
    }
    match parse_head(&buf[..head_end], conn) {
        Some(req) => Ok(Some(req)),
        None => {
            tracing::warn!(conn, "testkit: malformed request head");
            refuse(stream, 400).await?;
            Ok(None)
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8], conn: usize) -> Option<UpgradeRequest> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ').filter(|s| !s.is_empty());
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    if !request_line.next()?.starts_with("HTTP/") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some(UpgradeRequest {
        conn,
        method,
        path,
        headers,
    })
}

/// `base64(sha1(key + GUID))`.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Refused",
    }
}

pub(crate) async fn refuse(stream: &mut TcpStream, status: u16) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        reason_phrase(status)
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// Whether the connection goes on after a step.
pub(crate) enum Flow {
    Continue,
    End,
}

pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: usize,
    pub(crate) ws: WebSocketStream<TcpStream>,
    pub(crate) rx: mpsc::UnboundedReceiver<String>,
    pub(crate) serving: Arc<AtomicBool>,
    /// The connection's registrations with JSON-RPC servers; they live as long as the
    /// connection, so its subscriptions and token survive from one JSON-RPC step to the next.
    pub(crate) rpc_links: Vec<RpcLink>,
}

impl Session {
    async fn run_steps(&mut self, steps: Vec<Step>) {
        for step in steps {
            tracing::trace!(conn = self.conn, ?step, "testkit: step");
            if let Flow::End = self.step(step).await {
                return;
            }
        }
        self.serve(false, None).await;
    }

    async fn step(&mut self, step: Step) -> Flow {
        match step {
            Step::Echo => {
                self.serve(true, None).await;
                Flow::End
            }
            Step::EchoN(n) => self.serve(true, Some(n)).await,
            Step::Serve => {
                self.serve(false, None).await;
                Flow::End
            }
            Step::SendText(text) => self.send(Message::text(text)).await,
            Step::SendBinary(data) => self.send(Message::binary(data)).await,
            Step::Push { count, text } => {
                let payload = Bytes::from(text.into_bytes());
                for _ in 0..count {
                    if let Err(e) = self.ws.feed(Message::text(payload.clone())).await {
                        return self.ended(&e);
                    }
                }
                self.flush().await
            }
            Step::Sleep(d) => {
                tokio::time::sleep(d).await;
                Flow::Continue
            }
            Step::Drop => {
                tracing::debug!(conn = self.conn, "testkit: dropping connection");
                Flow::End
            }
            Step::Close { code, reason } => self.close(code, &reason).await,
            Step::Stall => {
                tracing::debug!(conn = self.conn, "testkit: stalling");
                std::future::pending().await
            }
            Step::SendRaw(bytes) => self.write_raw(&bytes).await,
            Step::InvalidUtf8 => {
                self.write_raw(&raw_frame(true, 0x1, &[0xC3, 0x28])).await;
                self.serve(false, None).await;
                Flow::End
            }
            Step::Oversized { len } => {
                if let Flow::Continue = self.write_zeros_frame(len).await {
                    self.serve(false, None).await;
                }
                Flow::End
            }
            Step::ReservedOpcode => {
                self.write_raw(&raw_frame(true, 0x3, &[])).await;
                self.serve(false, None).await;
                Flow::End
            }
            Step::Ping(data) => {
                if data.len() <= 125 {
                    self.send(Message::ping(data)).await
                } else {
                    self.write_raw(&raw_frame(true, 0x9, &data)).await
                }
            }
            Step::Stream { count, message } => {
                self.stream(count, &message).await;
                Flow::End
            }
            Step::JsonRpc(rpc) => {
                self.json_rpc(rpc, None).await;
                Flow::End
            }
            Step::JsonRpcUntil(rpc, until) => self.json_rpc(rpc, Some(until)).await,
        }
    }

    pub(crate) fn ended(&self, e: &tokio_websockets::Error) -> Flow {
        tracing::debug!(conn = self.conn, error = %e, "testkit: connection error");
        Flow::End
    }

    pub(crate) async fn send(&mut self, msg: Message) -> Flow {
        match self.ws.send(msg).await {
            Ok(()) => Flow::Continue,
            Err(e) => self.ended(&e),
        }
    }

    pub(crate) async fn flush(&mut self) -> Flow {
        match self.ws.flush().await {
            Ok(()) => Flow::Continue,
            Err(e) => self.ended(&e),
        }
    }

    /// Write bytes straight onto the TCP stream, after anything the WebSocket layer queued.
    async fn write_raw(&mut self, bytes: &[u8]) -> Flow {
        if let Flow::End = self.flush().await {
            return Flow::End;
        }
        let tcp = self.ws.get_mut();
        match tcp.write_all(bytes).await {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::debug!(conn = self.conn, error = %e, "testkit: raw write failed");
                Flow::End
            }
        }
    }

    async fn write_zeros_frame(&mut self, len: usize) -> Flow {
        if let Flow::End = self.write_raw(&frame_header(true, 0x2, len)).await {
            return Flow::End;
        }
        let zeros = vec![0u8; CHUNK.min(len)];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len());
            if let Flow::End = self.write_raw(&zeros[..n]).await {
                return Flow::End;
            }
            left -= n;
        }
        Flow::Continue
    }

    pub(crate) fn record(&self, msg: &Message) {
        let conn = self.conn;
        let r = if let Some(text) = msg.as_text() {
            Received::Text {
                conn,
                text: text.to_owned(),
            }
        } else if msg.is_binary() {
            Received::Binary {
                conn,
                data: msg.as_payload().to_vec(),
            }
        } else if msg.is_ping() {
            Received::Ping {
                conn,
                data: msg.as_payload().to_vec(),
            }
        } else if msg.is_pong() {
            Received::Pong {
                conn,
                data: msg.as_payload().to_vec(),
            }
        } else if msg.is_close() {
            let payload: &[u8] = msg.as_payload();
            let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
            Received::Close { conn, code, reason }
        } else {
            return;
        };
        self.shared.record(r);
    }

    /// Read, record and answer until the client closes (`End`), or until `limit` data messages
    /// have been handled (`Continue`). Echoes data messages when `echo`. Broadcasts are sent.
    async fn serve(&mut self, echo: bool, limit: Option<usize>) -> Flow {
        if limit == Some(0) {
            return Flow::Continue;
        }
        self.serving.store(true, Ordering::SeqCst);
        self.shared.notify();
        let flow = self.serve_loop(echo, limit).await;
        self.serving.store(false, Ordering::SeqCst);
        self.shared.notify();
        // Broadcasts queued for a step that has ended are discarded.
        while self.rx.try_recv().is_ok() {}
        flow
    }

    async fn serve_loop(&mut self, echo: bool, limit: Option<usize>) -> Flow {
        let mut handled = 0usize;
        loop {
            tokio::select! {
                msg = self.ws.next() => {
                    let msg = match msg {
                        None => return Flow::End,
                        Some(Err(e)) => {
                            tracing::debug!(conn = self.conn, error = %e, "testkit: read error");
                            // Send the close frame the WebSocket layer queued for a protocol
                            // error, if the connection still allows it.
                            let _ = self.ws.flush().await;
                            return Flow::End;
                        }
                        Some(Ok(msg)) => msg,
                    };
                    self.record(&msg);
                    if msg.is_text() || msg.is_binary() {
                        if echo {
                            if let Flow::End = self.send(msg).await {
                                return Flow::End;
                            }
                        }
                        handled += 1;
                        if limit.is_some_and(|l| handled >= l) {
                            return Flow::Continue;
                        }
                    } else if msg.is_ping() || msg.is_close() {
                        // Send the automatic pong or close reply now.
                        if let Flow::End = self.flush().await {
                            return Flow::End;
                        }
                    }
                }
                Some(text) = self.rx.recv() => {
                    if let Flow::End = self.send(Message::text(text)).await {
                        return Flow::End;
                    }
                }
            }
        }
    }

    /// Read (and record) until the client's close reply, EOF, an error or the timeout.
    async fn drain(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(msg))) => {
                    self.record(&msg);
                    if msg.is_close() {
                        return;
                    }
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(conn = self.conn, error = %e, "testkit: error while closing");
                    return;
                }
                Ok(None) => return,
                Err(_) => {
                    tracing::debug!(conn = self.conn, "testkit: no close reply in time");
                    return;
                }
            }
        }
    }

    pub(crate) async fn close(&mut self, code: u16, reason: &str) -> Flow {
        let msg = if code == 1005 && reason.is_empty() {
            Some(Message::close(None, ""))
        } else {
            match CloseCode::try_from(code) {
                Ok(c) if !c.is_reserved() && reason.len() <= 123 => {
                    Some(Message::close(Some(c), reason))
                }
                _ => None,
            }
        };
        match msg {
            Some(msg) => {
                if let Flow::Continue = self.send(msg).await {
                    self.drain(CLOSE_WAIT).await;
                }
            }
            None => {
                // Not sendable through the WebSocket layer: write it raw, then wait for EOF or
                // any reply without interpreting it.
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(reason.as_bytes());
                if let Flow::Continue = self.write_raw(&raw_frame(true, 0x8, &payload)).await {
                    let tcp = self.ws.get_mut();
                    let mut buf = [0u8; 1024];
                    let _ = tokio::time::timeout(CLOSE_WAIT, async {
                        while let Ok(n) = tcp.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                }
            }
        }
        Flow::End
    }

    async fn stream(&mut self, count: usize, message: &str) {
        let frame = raw_frame(true, 0x1, message.as_bytes());
        let per_chunk = (CHUNK / frame.len().max(1)).max(1);
        let chunk = frame.repeat(per_chunk.min(count.max(1)));
        let mut left = count;
        while left >= per_chunk {
            if let Flow::End = self.write_raw(&chunk).await {
                return;
            }
            left -= per_chunk;
        }
        if left > 0 && matches!(self.write_raw(&frame.repeat(left)).await, Flow::End) {
            return;
        }
        tracing::debug!(conn = self.conn, count, "testkit: stream written");
        if let Flow::Continue = self
            .send(Message::close(Some(CloseCode::NORMAL_CLOSURE), ""))
            .await
        {
            self.drain(STREAM_CLOSE_WAIT).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_a_request_head() {
        let head = b"GET /ws/api/v2?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Custom:  abc \r\nSec-WebSocket-Protocol: a, b\r\nsec-websocket-protocol: c";
        let req = parse_head(head, 3).unwrap();
        assert_eq!(req.conn, 3);
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws/api/v2?x=1");
        assert_eq!(req.header("x-custom"), Some("abc"));
        assert_eq!(req.header("X-CUSTOM"), Some("abc"));
        assert_eq!(req.subprotocols(), vec!["a", "b", "c"]);
        assert!(parse_head(b"GARBAGE", 0).is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nno colon", 0).is_none());
    }
}
