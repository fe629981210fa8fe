//! What the server does with each connection: [`Script`], [`Plan`] and [`Step`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::rpc::{RpcServer, RpcUntil};

/// One step of an accepted connection's [`Plan::Accept`] list.
///
/// Steps run in order. Steps marked *terminal* end the connection when they end, so steps after
/// them never run. When the list runs out without a terminal step, the connection continues as
/// [`Step::Serve`] (it keeps reading, recording, answering pings and the close handshake).
///
/// Raw steps ([`Step::SendRaw`], [`Step::InvalidUtf8`], [`Step::Oversized`],
/// [`Step::ReservedOpcode`], [`Step::Stream`]) write bytes straight onto the TCP stream, bypassing
/// the WebSocket encoder; they compose freely with the other steps.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Echo every text and binary message back until the client closes or the connection is
    /// dropped (terminal). [`TestServer::broadcast`](crate::TestServer::broadcast) reaches it.
    Echo,
    /// Echo `n` text or binary messages, then continue with the next step.
    EchoN(usize),
    /// Like [`Step::Echo`] without echoing: read, record, answer pings and the close handshake
    /// (terminal). [`TestServer::broadcast`](crate::TestServer::broadcast) reaches it.
    Serve,
    /// Send one text message.
    SendText(String),
    /// Send one binary message.
    SendBinary(Vec<u8>),
    /// Send the same text message `count` times as fast as possible (one flush at the end).
    Push {
        /// How many messages.
        count: usize,
        /// The text of each message.
        text: String,
    },
    /// Do nothing (and read nothing) for this long.
    Sleep(Duration),
    /// Drop the TCP connection abruptly, without a close frame (terminal).
    Drop,
    /// Start the close handshake with this code and reason, wait up to 2 s for the client's reply
    /// (recorded as [`Received::Close`](crate::Received::Close)), then drop the connection
    /// (terminal). Code 1005 sends a close frame without a payload; codes that may not be sent
    /// on the wire (e.g. 999, 1006) or reasons over 123 bytes are written raw, unchecked.
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Stop reading entirely (no pongs, no close reply) but keep the TCP connection open until
    /// the server stops or [`TestServer::drop_connections`](crate::TestServer::drop_connections)
    /// is called (terminal).
    Stall,
    /// Write these bytes onto the TCP stream as they are (for crafted frames; see
    /// [`raw_frame`](crate::raw_frame)).
    SendRaw(Vec<u8>),
    /// Send a text frame whose payload is invalid UTF-8 (`[0xC3, 0x28]`), then continue as
    /// [`Step::Serve`] (terminal).
    InvalidUtf8,
    /// Send a single binary frame of `len` zero bytes (to exceed a client's size limit), then
    /// continue as [`Step::Serve`] (terminal).
    Oversized {
        /// Payload length in bytes.
        len: usize,
    },
    /// Send an empty frame with the reserved opcode `0x3`, then continue as [`Step::Serve`]
    /// (terminal).
    ReservedOpcode,
    /// Send a ping with this payload (payloads over 125 bytes are written raw, unchecked).
    Ping(Vec<u8>),
    /// Benchmark helper: frame `message` once as a text frame, write `count` copies of it in big
    /// batched writes (about 64 KiB each) straight onto the TCP stream, then send Close(1000) and
    /// wait up to 5 s for the client's close reply or EOF (terminal). Incoming data is not read
    /// while streaming.
    Stream {
        /// How many messages.
        count: usize,
        /// The text of each message.
        message: String,
    },
    /// Serve JSON-RPC 2.0 with this [`RpcServer`] until the client closes or the connection is
    /// dropped (terminal). Pings and the close handshake are answered;
    /// [`TestServer::broadcast`](crate::TestServer::broadcast) and [`RpcServer::notify`] reach
    /// it.
    JsonRpc(RpcServer),
    /// Serve JSON-RPC 2.0 like [`Step::JsonRpc`] until the condition is met, then continue
    /// with the next step: e.g. `JsonRpcUntil(rpc, RpcUntil::Method("private/buy".into()))`
    /// then [`Step::Drop`] leaves that request (and any delayed responses) unanswered. The
    /// connection keeps its subscriptions and token for later JSON-RPC steps with the same
    /// server.
    JsonRpcUntil(RpcServer, RpcUntil),
}

/// What the server does with one TCP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Plan {
    /// Read the upgrade request, record it, and answer with this HTTP status (no upgrade).
    Refuse {
        /// The HTTP status code, e.g. 401, 429 or 503.
        status: u16,
    },
    /// Accept the TCP connection, then drop it at once without reading anything.
    DropBeforeUpgrade,
    /// Accept the TCP connection and never answer (nor read) anything: for handshake timeouts.
    /// The connection stays open until the server stops or
    /// [`TestServer::drop_connections`](crate::TestServer::drop_connections) is called.
    Hang,
    /// Complete the upgrade, then run these steps.
    Accept(Vec<Step>),
}

impl Plan {
    /// `Plan::Accept(vec![Step::Echo])`.
    pub fn echo() -> Plan {
        Plan::Accept(vec![Step::Echo])
    }

    /// `Plan::Accept(vec![Step::JsonRpc(rpc)])`.
    pub fn json_rpc(rpc: RpcServer) -> Plan {
        Plan::Accept(vec![Step::JsonRpc(rpc)])
    }
}

#[derive(Clone)]
enum Plans {
    Same(Plan),
    Sequence(Vec<Plan>),
    PerConnection(Arc<dyn Fn(usize) -> Plan + Send + Sync + 'static>),
}

/// What the server does with each connection: one [`Plan`] per connection, plus handshake
/// options (accepted subprotocols, extra response headers).
///
/// The index given to [`Script::per_connection`] and used by [`Script::sequence`] counts the
/// connections this script has handled since it was installed (by
/// [`TestServer::start`](crate::TestServer::start) or
/// [`TestServer::set_script`](crate::TestServer::set_script)), starting at 0; it keeps counting
/// across [`TestServer::restart`](crate::TestServer::restart). For the script a server started
/// with, it equals the global connection index found in
/// [`Received`](crate::Received) and [`UpgradeRequest`](crate::UpgradeRequest).
#[derive(Clone)]
pub struct Script {
    plans: Plans,
    subprotocols: Vec<String>,
    headers: Vec<(String, String)>,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Script");
        match &self.plans {
            Plans::Same(p) => d.field("plan", p),
            Plans::Sequence(ps) => d.field("sequence", ps),
            Plans::PerConnection(_) => d.field("per_connection", &"<fn>"),
        };
        d.field("subprotocols", &self.subprotocols)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Default for Script {
    fn default() -> Self {
        Script::echo()
    }
}

impl Script {
    fn new(plans: Plans) -> Script {
        Script {
            plans,
            subprotocols: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Every connection: upgrade, then echo text and binary messages until the client closes.
    pub fn echo() -> Script {
        Script::plan(Plan::echo())
    }

    /// Every connection: upgrade, then serve JSON-RPC with `rpc` (shared by all connections).
    pub fn json_rpc(rpc: RpcServer) -> Script {
        Script::plan(Plan::json_rpc(rpc))
    }

    /// The same plan for every connection.
    pub fn plan(plan: Plan) -> Script {
        Script::new(Plans::Same(plan))
    }

    /// The plan for connection `i` is `f(i)` (see the type's docs for how `i` counts).
    ///
    /// If `f` panics, only that connection is affected: it is dropped.
    pub fn per_connection(f: impl Fn(usize) -> Plan + Send + Sync + 'static) -> Script {
        Script::new(Plans::PerConnection(Arc::new(f)))
    }

    /// Plan `i` for connection `i`; the last plan repeats. An empty list means
    /// [`Script::echo`].
    pub fn sequence(plans: Vec<Plan>) -> Script {
        Script::new(Plans::Sequence(plans))
    }

    /// Subprotocols the server accepts: the first one the client offers (in the client's order)
    /// that is in this list is echoed back in `Sec-WebSocket-Protocol`. By default none is.
    pub fn subprotocols<I, S>(mut self, protocols: I) -> Script
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Add a header to every `101 Switching Protocols` response.
    pub fn response_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Script {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub(crate) fn plan_for(&self, index: usize) -> Plan {
        match &self.plans {
            Plans::Same(p) => p.clone(),
            Plans::Sequence(ps) => match ps.get(index).or_else(|| ps.last()) {
                Some(p) => p.clone(),
                None => Plan::echo(),
            },
            Plans::PerConnection(f) => f(index),
        }
    }

    pub(crate) fn accepted_subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    pub(crate) fn response_headers(&self) -> &[(String, String)] {
        &self.headers
    }
}
