//! # websockex-nova-deribit
//!
//! The Deribit API v2 adapter for websockex-nova, and a typed client on top.
//!
//! ```no_run
//! use websockex_nova_deribit::{channels::Interval, Credentials, DeribitClient, DeribitConfig, Endpoint};
//!
//! # async fn run() -> Result<(), websockex_nova::Error> {
//! let config = DeribitConfig::new(Endpoint::Testnet)
//!     .with_credentials(Credentials::client_signature("key", "secret"));
//! let (deribit, _events) = DeribitClient::connect(&config).await?;
//! println!("server time {}", deribit.get_time().await?);
//! let mut book = deribit.subscribe_book("BTC-PERPETUAL", Interval::Ms100).await?;
//! while let Some(event) = book.next().await {
//!     println!("{event:?}: best bid {:?}", book.book().best_bid());
//! }
//! # Ok(()) }
//! ```
//!
//! ## The adapter template (what a second venue copies)
//!
//! An adapter is **data plus pure functions**; it does no I/O, so a simulator stands in for
//! the venue by changing only the URL ([`Endpoint::Custom`]).
//!
//! * [`DeribitConfig`] holds the venue knowledge as configuration (endpoint, credentials,
//!   heartbeat interval, cancel-on-disconnect, the credit model) and turns it into a core
//!   [`ClientBuilder`] with [`DeribitConfig::builder`]: that one function is the adapter.
//! * Each concern is one core behaviour: the envelope is the core's JSON-RPC handler
//!   (heartbeats answered with `public/test` ahead of everything), [`DeribitSubscriptions`]
//!   picks `public/` or `private/subscribe`, [`auth::DeribitAuth`] signs, [`credits`] prices
//!   each request, [`DeribitConnection`] sets heartbeats up after every connect, [`errors`]
//!   is the error table as data.
//! * The typed client ([`DeribitClient`]) follows one convention for every method (see
//!   [`client`]); a `method!` macro removes the only real boilerplate (doc + params + call).
//!
//! To add a venue: copy this crate's layout, replace the tables and the behaviours that
//! differ (often only auth and subscriptions), keep the convention.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod book;
pub mod channels;
pub mod client;
pub mod credits;
pub mod errors;
mod subscriptions;
pub mod types;

use std::time::Duration;

use serde_json::json;
use websockex_nova::behaviour::{Call, ConnectInfo};
use websockex_nova::jsonrpc::{JsonRpcConfig, JsonRpcHandler, ServerTiming};
use websockex_nova::{Client, ClientBuilder, ConnectionHandler};

pub use auth::Credentials;
pub use client::{BookEvent, BookStream, DeribitClient, Typed, TypedEvent};
pub use credits::{CreditCosts, CreditModel};
pub use subscriptions::DeribitSubscriptions;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `wss://www.deribit.com/ws/api/v2`.
    Production,
    /// `wss://test.deribit.com/ws/api/v2` (separate accounts, keys and limits).
    Testnet,
    /// Any URL (a simulator, a proxy).
    Custom(String),
}

impl Endpoint {
    /// The WebSocket URL.
    pub fn url(&self) -> &str {
        match self {
            Endpoint::Production => "wss://www.deribit.com/ws/api/v2",
            Endpoint::Testnet => "wss://test.deribit.com/ws/api/v2",
            Endpoint::Custom(url) => url,
        }
    }
}

/// Everything the adapter needs to know. Defaults follow the reference's advice.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeribitConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Credentials (`None`: public data only).
    pub credentials: Option<Credentials>,
    /// `public/set_heartbeat` interval in seconds after every connect (≥ 10; `None`: off).
    /// Default 15.
    pub heartbeat_interval: Option<u32>,
    /// Enable cancel-on-disconnect (connection scope) after every authentication.
    /// Default off.
    pub cancel_on_disconnect: bool,
    /// The credit model metering every request (`None`: unmetered; not advised: Deribit
    /// terminates the session of a client that runs dry). Default: the documented defaults.
    pub credits: Option<CreditModel>,
    /// Channels per subscribe call (Deribit allows 500). Default 500.
    pub subscribe_batch: usize,
    /// Refresh the token this long before it expires. Default 60 s.
    pub refresh_margin: Duration,
    /// `public/hello` after every connect with this client name and version.
    pub hello: Option<(String, String)>,
}

impl DeribitConfig {
    /// Defaults for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        DeribitConfig {
            endpoint,
            credentials: None,
            heartbeat_interval: Some(15),
            cancel_on_disconnect: false,
            credits: Some(CreditModel::default()),
            subscribe_batch: 500,
            refresh_margin: Duration::from_secs(60),
            hello: Some(("websockex-nova".into(), env!("CARGO_PKG_VERSION").into())),
        }
    }

    /// Sets the credentials.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// A core builder configured for Deribit: the adapter. Add your own settings (reconnect
    /// policy, capacities) before `connect()`.
    pub fn builder(&self) -> ClientBuilder {
        self.builder_with_timing().0
    }

    /// [`builder`](Self::builder), plus a handle on the `usIn`/`usOut` timestamps of
    /// responses (server time and delivery delay), for [`DeribitClient::with_timing`].
    pub fn builder_with_timing(&self) -> (ClientBuilder, ServerTiming) {
        let rpc = JsonRpcConfig::default();
        let envelope = JsonRpcHandler::new(&rpc);
        let timing = envelope.server_timing();
        let mut b = Client::builder(self.endpoint.url())
            .message_handler(envelope)
            .subscription_handler(DeribitSubscriptions {
                batch: self.subscribe_batch.clamp(1, 500),
            })
            .connection_handler(DeribitConnection {
                heartbeat_interval: self.heartbeat_interval,
                hello: self.hello.clone(),
            });
        if let Some(credentials) = &self.credentials {
            b = b.auth_handler(auth::DeribitAuth {
                credentials: credentials.clone(),
                refresh_margin: self.refresh_margin,
                cancel_on_disconnect: self.cancel_on_disconnect,
            });
        }
        if let Some(credits) = self.credits {
            b = b
                .rate_limit(credits.rate_limit())
                .rate_limit_handler(credits.costs);
        }
        (b, timing)
    }
}

/// Sets Deribit's session up after every connect, before authentication:
/// `public/hello` and `public/set_heartbeat`.
#[derive(Debug, Clone)]
pub struct DeribitConnection {
    heartbeat_interval: Option<u32>,
    hello: Option<(String, String)>,
}

impl ConnectionHandler for DeribitConnection {
    fn connect_calls(&mut self, _info: &ConnectInfo<'_>) -> Vec<Call> {
        let mut calls = Vec::new();
        if let Some((name, version)) = &self.hello {
            calls.push(Call {
                method: "public/hello".into(),
                params: json!({"client_name": name, "client_version": version}),
            });
        }
        if let Some(interval) = self.heartbeat_interval {
            calls.push(Call {
                method: "public/set_heartbeat".into(),
                params: json!({"interval": interval.max(10)}),
            });
        }
        calls
    }
}
