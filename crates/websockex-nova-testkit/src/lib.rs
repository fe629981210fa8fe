//! A real, scriptable WebSocket **server** on `127.0.0.1` for testing WebSocket clients, with
//! fault injection.
//!
//! `websockex-nova` tests itself against it, and you can test your own handlers the same way. It
//! speaks the wire protocol on its own (it does not depend on the client crate), so a
//! misreading of the protocol cannot hide by being shared between client and server.
//!
//! # Guide
//!
//! * Start a [`TestServer`] with a [`Script`]: it binds a free port and runs on the caller's
//!   tokio runtime. Point your client at [`TestServer::url`].
//! * A [`Script`] gives each TCP connection a [`Plan`]: refuse the upgrade with an HTTP status,
//!   drop the connection before upgrading, hang, or accept and run a list of [`Step`]s (echo,
//!   serve, send, push, sleep, ping, close with a code, drop abruptly, stall, and raw-frame
//!   faults such as invalid UTF-8, oversized frames and reserved opcodes). Use the same plan for
//!   every connection ([`Script::plan`]), one per connection in order ([`Script::sequence`]), or
//!   compute it ([`Script::per_connection`]).
//! * Inspect what happened: [`TestServer::accepted`], [`TestServer::upgraded`],
//!   [`TestServer::open`], [`TestServer::requests`] (path and headers of every upgrade request),
//!   [`TestServer::received`] (every message and close frame from clients), and wait for things
//!   with [`TestServer::wait_received`], [`TestServer::wait_upgraded`] or
//!   [`TestServer::wait_for`] instead of sleeping.
//! * Inject outages: [`TestServer::drop_connections`] (drop every connection, keep listening),
//!   [`TestServer::stop`] and [`TestServer::restart`] (same port), or swap the script for later
//!   connections with [`TestServer::set_script`]. Push server messages with
//!   [`TestServer::broadcast`].
//! * Serve JSON-RPC 2.0 with an [`RpcServer`] ([`Step::JsonRpc`], [`Script::json_rpc`]):
//!   answers by method (results, errors, closures, `-32601` by default), delays and reorders
//!   responses, subscriptions with acks that can leave channels out, private channels and
//!   methods behind an auth method with expiring tokens, a per-connection rate limit with
//!   error responses, Deribit-style heartbeats that close with 4000 when unanswered, and a
//!   record of every request. [`Step::JsonRpcUntil`] ends it on a condition ([`RpcUntil`]) so a
//!   fault step such as [`Step::Drop`] can follow.
//! * Dropping the server stops it and ends all of its tasks.
//! * Simulate Deribit API v2 with [`deribit::DeribitSim`]: auth, heartbeats, subscriptions with
//!   a seeded market (tickers, books with change ids, trades), private channels, a matching
//!   engine, credit-based rate limits and run-time faults.
//!
//! The upgrade handshake is done by hand, so the server can refuse with any status, record the
//! request, and choose a subprotocol ([`Script::subprotocols`]). After the `101` response, frames
//! are read and written by `tokio-websockets` (automatic pongs and close replies, no size limit);
//! raw steps write bytes straight onto the TCP stream.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use futures_util::{SinkExt, StreamExt};
//! use tokio_websockets::{ClientBuilder, Message};
//! use websockex_nova_testkit::{Plan, Received, Script, Step, TestServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // First connection: greet, echo one message, then close with 1001.
//! // Later connections: refused with 503.
//! let script = Script::sequence(vec![
//!     Plan::Accept(vec![
//!         Step::SendText("hello".into()),
//!         Step::EchoN(1),
//!         Step::Close { code: 1001, reason: "bye".into() },
//!     ]),
//!     Plan::Refuse { status: 503 },
//! ]);
//! let server = TestServer::start(script).await.unwrap();
//!
//! let (mut ws, _) = ClientBuilder::new()
//!     .uri(&server.url())
//!     .unwrap()
//!     .connect()
//!     .await
//!     .unwrap();
//! let greeting = ws.next().await.unwrap().unwrap();
//! assert_eq!(greeting.as_text(), Some("hello"));
//! ws.send(Message::text("ping?")).await.unwrap();
//! let echo = ws.next().await.unwrap().unwrap();
//! assert_eq!(echo.as_text(), Some("ping?"));
//! let close = ws.next().await.unwrap().unwrap();
//! assert_eq!(close.as_close().map(|(code, _)| u16::from(code)), Some(1001));
//!
//! let got = server.wait_received(1, Duration::from_secs(1)).await;
//! assert_eq!(got[0], Received::Text { conn: 0, text: "ping?".into() });
//!
//! // The second connection is refused.
//! let err = ClientBuilder::new().uri(&server.url()).unwrap().connect().await.unwrap_err();
//! assert!(err.to_string().contains("503"));
//! assert_eq!(server.upgraded(), 1);
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod conn;
pub mod deribit;
mod frame;
mod rpc;
mod script;
mod server;

pub use frame::{raw_frame, ticker_notification};
pub use rpc::{
    Handler, Heartbeat, PrivateChannelPolicy, RateLimit, Reply, RpcBuilder, RpcError, RpcRequest,
    RpcServer, RpcUntil,
};
pub use script::{Plan, Script, Step};
pub use server::{Received, TestServer, UpgradeRequest};
