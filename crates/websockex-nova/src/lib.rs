//! # websockex-nova
//!
//! Resilient, long-lived WebSocket client connections for real-time APIs (crypto
//! exchanges, JSON-RPC and pub/sub feeds).
//!
//! You give a URL and get back a cheap, cloneable [`Client`] handle and a bounded stream
//! of [`Event`]s. One task per connection keeps the link alive: it reconnects with
//! jittered backoff after every kind of fault, detects dead peers with pings and a
//! traffic timeout, queues sends made while offline (bounded, in order), closes cleanly
//! and reports every transition as an [`Event`] and a `tracing` event.
//!
//! ```no_run
//! use std::time::Duration;
//! use websockex_nova::{Client, Event, ReconnectPolicy};
//!
//! # async fn demo() -> Result<(), websockex_nova::Error> {
//! let (client, mut events) = Client::builder("ws://127.0.0.1:8080/")
//!     .reconnect(ReconnectPolicy::exponential(Duration::from_millis(100), Duration::from_secs(10)))
//!     .ping_interval(Some(Duration::from_secs(15)))
//!     .connect()
//!     .await?;
//! client.send_text("hello").await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message(frame) => println!("{frame:?}"),
//!         Event::Closed { error } => { eprintln!("closed: {error:?}"); break }
//!         other => eprintln!("{}", other.name()),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Layers
//!
//! * [`Client`] / [`ClientBuilder`] / [`Connection`]: what you touch. [`ClientBuilder::build`]
//!   gives the low-level parts (handle, events, and a connection future you drive).
//! * [`behaviour`]: the hooks ([`ConnectionHandler`], [`MessageHandler`], [`ErrorHandler`]),
//!   each with a `Default…` type.
//! * Sans-IO cores, unit-tested without sockets: [`lifecycle`], [`reconnect`], [`keepalive`].
//! * The transport seam (tokio-websockets today) is private.
//!
//! ## Features
//!
//! * `native-roots`: trust the operating system's root certificates
//!   ([`RootCertificates::Native`]). Default: none (webpki roots compiled in).
//! * `config-file`: `config_file`: TOML configuration files, saved and hot-reloaded
//!   into live connections ([`Client::reconfigure`] works without it).
//! * `metrics`: `FacadeMetricsCollector`, which records into the `metrics` facade so any
//!   exporter (Prometheus, StatsD, …) works.
//! * `msgpack`: `codec::MsgPackCodec`, MessagePack frames (with `rmp-serde`).
//! * `cbor`: `codec::CborCodec`, CBOR frames (with `ciborium`).
//! * `protobuf`: `codec::ProtobufCodec`, Protocol Buffers frames of one `prost` message type.
//!
//! ## Observability
//!
//! Every happening is a `tracing` event with a stable name (table in [`logging`]); numbers
//! go to a [`metrics::MetricsCollector`] ([`metrics::DefaultMetricsCollector`] keeps them
//! in memory for snapshots); a [`logging::LoggingHandler`] gets the same happenings as
//! records, with per-category levels, plain or JSON lines and redacted message logging.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod actor;
pub mod behaviour;
mod client;
pub mod codec;
mod config;
#[cfg(feature = "config-file")]
pub mod config_file;
mod error;
pub mod event;
mod frame;
mod inbox;
pub mod json;
pub mod jsonrpc;
pub mod keepalive;
mod lag;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
mod outbox;
pub mod ratelimit;
pub mod reconfigure;
pub mod reconnect;
mod rpc;
pub mod subscription;
mod transport;

pub use behaviour::{
    AuthHandler, ConnectionHandler, DefaultConnectionHandler, DefaultErrorHandler,
    DefaultMessageHandler, ErrorHandler, MessageHandler, SubscriptionHandler,
};
pub use client::{Client, ClientBuilder, Connection, Status};
pub use config::{
    ClientConfig, OfflinePolicy, OverflowPolicy, RestartLimit, RootCertificates, TlsConfig,
    Watermarks,
};
pub use error::{Error, ErrorKind, TimeoutKind};
pub use event::{Event, Events};
pub use frame::{CloseCode, CloseFrame, Frame, Text, MAX_CONTROL_PAYLOAD};
pub use json::{ApiError, RawJson, Secret};
pub use keepalive::KeepaliveConfig;
pub use lifecycle::State;
pub use ratelimit::{OnLimit, RateLimit, RateLimitHandler};
pub use reconfigure::Reconfigured;
pub use reconnect::{Jitter, ReconnectPolicy};
pub use subscription::{Subscription, SubscriptionEvent};
