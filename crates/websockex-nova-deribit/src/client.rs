//! The typed Deribit client: one convention for every method, typed subscription streams.
//!
//! **The convention** (the client template a second venue copies): every API method is a
//! thin `async fn` that builds its params (a `serde_json::json!` or a `Serialize` struct),
//! calls [`DeribitClient::call`] with the method name, and decodes the result into a type
//! from [`types`](crate::types). Errors are the core's [`Error`]: the venue's error object
//! is [`Error::api_error`], whose code [`errors::action`](crate::errors::action) explains.
//! Subscriptions are [`Typed`] streams decoding `data` into a type, except the book, whose
//! [`BookStream`] keeps an [`OrderBook`] consistent and resyncs by itself.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use websockex_nova::jsonrpc::ServerTiming;
use websockex_nova::{Client, Error, Events, Subscription, SubscriptionEvent};

use crate::book::{Applied, OrderBook};
use crate::channels::{self, Interval};
use crate::types::{
    AccountSummary, BookData, Instrument, Order, OrderBookSnapshot, OrderRequest, OrderResult,
    PlatformState, Ticker, Trade,
};
use crate::DeribitConfig;

/// A Deribit connection with typed methods.
#[derive(Debug, Clone)]
pub struct DeribitClient {
    client: Client,
    timing: Option<ServerTiming>,
}

impl DeribitClient {
    /// Connects (and authenticates, if the configuration has credentials).
    ///
    /// # Errors
    ///
    /// As [`websockex_nova::ClientBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the connection.
    pub async fn connect(config: &DeribitConfig) -> Result<(DeribitClient, Events), Error> {
        let (builder, timing) = config.builder_with_timing();
        let (client, events) = builder.connect().await?;
        Ok((DeribitClient::with_timing(client, timing), events))
    }

    /// Wraps a client built with [`DeribitConfig::builder`].
    pub fn from_client(client: Client) -> Self {
        DeribitClient {
            client,
            timing: None,
        }
    }

    /// Wraps a client built with [`DeribitConfig::builder_with_timing`].
    pub fn with_timing(client: Client, timing: ServerTiming) -> Self {
        DeribitClient {
            client,
            timing: Some(timing),
        }
    }

    /// `usIn`/`usOut` of the latest response (when built with timing).
    pub fn server_timing(&self) -> Option<&ServerTiming> {
        self.timing.as_ref()
    }

    /// The underlying handle (status, close, raw requests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Calls `method` and decodes its result: the one convention every method follows.
    ///
    /// # Errors
    ///
    /// As [`Client::request_as`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::request`].
    pub async fn call<T: DeserializeOwned, P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<T, Error> {
        self.client.request_as(method, params).await
    }
}

macro_rules! method {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $out:ty = $method:literal, $params:expr) => {
        $(#[$doc])*
        ///
        /// # Errors
        ///
        /// As [`DeribitClient::call`].
        ///
        /// # Cancel safety
        ///
        /// As [`Client::request`].
        pub async fn $name(&self, $($arg: $ty),*) -> Result<$out, Error> {
            self.call($method, &$params).await
        }
    };
}

impl DeribitClient {
    method!(
        /// `public/hello`: introduces the client; returns the API version.
        hello(client_name: &str, client_version: &str) -> Value = "public/hello",
        json!({"client_name": client_name, "client_version": client_version})
    );
    method!(
        /// `public/get_time`: server time in ms since the epoch.
        get_time() -> u64 = "public/get_time", json!({})
    );
    method!(
        /// `public/test`: a round trip; returns the API version.
        test() -> Value = "public/test", json!({})
    );
    method!(
        /// `public/get_instruments` for a currency (and optionally a kind). Expensive: cache it.
        get_instruments(currency: &str, kind: Option<&str>) -> Vec<Instrument> = "public/get_instruments",
        match kind {
            Some(kind) => json!({"currency": currency, "kind": kind}),
            None => json!({"currency": currency}),
        }
    );
    method!(
        /// `public/ticker`.
        ticker(instrument_name: &str) -> Ticker = "public/ticker",
        json!({"instrument_name": instrument_name})
    );
    method!(
        /// `public/get_order_book` with an optional depth.
        get_order_book(instrument_name: &str, depth: Option<u32>) -> OrderBookSnapshot = "public/get_order_book",
        match depth {
            Some(depth) => json!({"instrument_name": instrument_name, "depth": depth}),
            None => json!({"instrument_name": instrument_name}),
        }
    );
    method!(
        /// `private/get_account_summary`.
        get_account_summary(currency: &str) -> AccountSummary = "private/get_account_summary",
        json!({"currency": currency})
    );
    method!(
        /// `private/buy`.
        buy(order: &OrderRequest) -> OrderResult = "private/buy", order
    );
    method!(
        /// `private/sell`.
        sell(order: &OrderRequest) -> OrderResult = "private/sell", order
    );
    method!(
        /// `private/cancel`: the cancelled order.
        cancel(order_id: &str) -> Order = "private/cancel", json!({"order_id": order_id})
    );
    method!(
        /// `private/get_open_orders_by_currency`.
        get_open_orders_by_currency(currency: &str) -> Vec<Order> = "private/get_open_orders_by_currency",
        json!({"currency": currency})
    );
    method!(
        /// `private/enable_cancel_on_disconnect` for this connection (`"ok"`). To have it
        /// after every reconnect, set [`DeribitConfig::cancel_on_disconnect`] instead.
        enable_cancel_on_disconnect() -> String = "private/enable_cancel_on_disconnect",
        json!({"scope": "connection"})
    );

    /// Ticker notifications for one instrument.
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::subscribe`].
    pub async fn subscribe_ticker(
        &self,
        instrument: &str,
        interval: Interval,
    ) -> Result<Typed<Ticker>, Error> {
        self.typed(channels::ticker(instrument, interval)).await
    }

    /// Public trades of one instrument (each notification carries several).
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::subscribe`].
    pub async fn subscribe_trades(
        &self,
        instrument: &str,
        interval: Interval,
    ) -> Result<Typed<Vec<Trade>>, Error> {
        self.typed(channels::trades(instrument, interval)).await
    }

    /// The user's order updates on one instrument (needs authentication).
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::subscribe`].
    pub async fn subscribe_user_orders(&self, instrument: &str) -> Result<Typed<Order>, Error> {
        self.typed(channels::user_orders(instrument)).await
    }

    /// The user's portfolio for a currency (needs authentication).
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::subscribe`].
    pub async fn subscribe_user_portfolio(
        &self,
        currency: &str,
    ) -> Result<Typed<AccountSummary>, Error> {
        self.typed(channels::user_portfolio(currency)).await
    }

    /// `platform_state`: maintenance breaks and index locks.
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::subscribe`].
    pub async fn subscribe_platform_state(&self) -> Result<Typed<PlatformState>, Error> {
        self.typed("platform_state".to_owned()).await
    }

    /// A consistent order book for one instrument, resyncing itself on gaps.
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Client::subscribe`].
    pub async fn subscribe_book(
        &self,
        instrument: &str,
        interval: Interval,
    ) -> Result<BookStream, Error> {
        let channel = channels::book(instrument, interval);
        let sub = self.client.subscribe([channel.clone()]).await?;
        Ok(BookStream {
            client: self.client.clone(),
            channel,
            sub: Some(sub),
            book: OrderBook::new(instrument),
            gaps: 0,
        })
    }

    async fn typed<T: DeserializeOwned>(&self, channel: String) -> Result<Typed<T>, Error> {
        let sub = self.client.subscribe([channel]).await?;
        Ok(Typed {
            sub,
            _type: PhantomData,
        })
    }
}

/// What a typed subscription yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum TypedEvent<T> {
    /// A decoded notification.
    Data(T),
    /// A notification that did not decode (kept visible, never dropped silently).
    Malformed(Error),
    /// Notifications dropped because the stream was full.
    Lagged(u64),
    /// Resubscribed after a reconnect: notifications may be missing.
    Resubscribed,
}

/// A subscription whose notifications decode into `T`.
#[derive(Debug)]
pub struct Typed<T> {
    sub: Subscription,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Typed<T> {
    /// The next event; `None` once the connection is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next(&mut self) -> Option<TypedEvent<T>> {
        Some(match self.sub.next().await? {
            SubscriptionEvent::Notification { data, .. } => match data.decode_owned() {
                Ok(v) => TypedEvent::Data(v),
                Err(e) => TypedEvent::Malformed(e),
            },
            SubscriptionEvent::Lagged { dropped } => TypedEvent::Lagged(dropped),
            SubscriptionEvent::Resubscribed => TypedEvent::Resubscribed,
            _ => return None,
        })
    }

    /// The underlying subscription (channels, unsubscribe).
    pub fn into_inner(self) -> Subscription {
        self.sub
    }
}

/// What happened to the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BookEvent {
    /// A fresh snapshot: the book is consistent again.
    Snapshot,
    /// A change applied in sequence.
    Updated,
    /// A gap: the book is resyncing (a fresh snapshot was asked for).
    Gap {
        /// The last applied change id.
        expected: u64,
        /// The `prev_change_id` that arrived instead.
        got: u64,
    },
    /// The link came back; the book waits for the new snapshot.
    Reconnected,
    /// A book message did not decode: the book cannot be trusted and is resyncing (a fresh
    /// snapshot was asked for), as after a gap.
    Malformed,
}

/// A self-healing order book subscription.
#[derive(Debug)]
pub struct BookStream {
    client: Client,
    channel: String,
    sub: Option<Subscription>,
    book: OrderBook,
    gaps: u64,
}

impl BookStream {
    /// The book (empty views while resyncing).
    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    /// Gaps seen so far.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// The next change to the book; `None` once the connection is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, except while resubscribing after a gap (then the resubscribe may be
    /// left half done; the next call completes it).
    pub async fn next(&mut self) -> Option<BookEvent> {
        loop {
            if self.sub.is_none() {
                // Resubscribe for a fresh snapshot (Deribit sends one per new subscription).
                let _ = self.client.unsubscribe([self.channel.clone()]).await;
                match self.client.subscribe([self.channel.clone()]).await {
                    Ok(sub) => self.sub = Some(sub),
                    Err(e) if e.is_closed() => return None,
                    Err(e) => {
                        tracing::warn!(target: "websockex_nova_deribit", channel = %self.channel, error = %e, "book resubscribe failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let event = self.sub.as_mut()?.next().await?;
            match event {
                SubscriptionEvent::Notification { data, .. } => {
                    let msg = match data.decode::<BookData>() {
                        Ok(msg) => msg,
                        Err(e) => {
                            // Skipping it would leave a hole in the book nobody sees.
                            tracing::warn!(target: "websockex_nova_deribit", channel = %self.channel, error = %e, "undecodable book message; resyncing");
                            self.book.invalidate();
                            self.gaps += 1;
                            self.sub = None;
                            return Some(BookEvent::Malformed);
                        }
                    };
                    match self.book.apply(&msg) {
                        Applied::Snapshot => return Some(BookEvent::Snapshot),
                        Applied::Change => return Some(BookEvent::Updated),
                        Applied::Ignored => continue,
                        Applied::Gap { expected, got } => {
                            self.gaps += 1;
                            tracing::warn!(target: "websockex_nova_deribit", channel = %self.channel, expected, got, "book gap; resyncing");
                            self.sub = None;
                            return Some(BookEvent::Gap { expected, got });
                        }
                    }
                }
                SubscriptionEvent::Lagged { .. } => {
                    // Changes were dropped: the book cannot be trusted; get a snapshot.
                    self.book.invalidate();
                    self.gaps += 1;
                    self.sub = None;
                    return Some(BookEvent::Gap {
                        expected: self.book.change_id().unwrap_or(0),
                        got: 0,
                    });
                }
                SubscriptionEvent::Resubscribed => {
                    self.book.invalidate();
                    return Some(BookEvent::Reconnected);
                }
                _ => continue,
            }
        }
    }
}
