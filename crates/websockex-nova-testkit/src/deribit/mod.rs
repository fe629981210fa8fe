//! A local **Deribit API v2 simulator**: JSON-RPC over WebSocket, wire-compatible with Deribit
//! for the methods and channels below, with a seeded market and run-time fault injection.
//!
//! It speaks the wire protocol itself (it depends on no client crate), so any correct Deribit
//! client can use it: start a [`DeribitSim`], point the client at [`DeribitSim::url`], log in
//! with the built-in demo key `demo-key` / `demo-secret` (or keys from [`SimConfig`]).
//!
//! # Wire behaviour
//!
//! * **Envelope.** Requests are JSON-RPC 2.0 objects; `id` may be an integer or a string and is
//!   echoed exactly as written; `params` may be left out (or `null`) when empty; `jsonrpc` is not
//!   checked. Every response carries `usIn`, `usOut`, `usDiff` (µs) and `testnet`.
//!   Notifications have no `id` and no `us*` fields. A request without an `id` is answered
//!   without one (as Deribit was observed to do).
//! * **Bad input.** Non-JSON → `11050 bad_request`, `data: "invalid json"`, no `id`, the socket
//!   stays open. A JSON array (batch) → `-32600 "Invalid Request"`. A message over
//!   [`SimConfig::max_frame_bytes`] (32 KiB) → `-32600 "request entity too large"`. An unknown
//!   method → `-32601 "Method not found"`. A missing or bad param → `-32602 "Invalid params"`
//!   with `data: {"reason", "param"}` (e.g. `instrument not found` / `instrument_name`).
//!   Numbers may be sent as strings and booleans as `"true"`/`"false"`.
//! * **Auth** (`public/auth`): `client_credentials`, `client_signature` (HMAC-SHA256 over
//!   `timestamp + "\n" + nonce + "\n" + data`, see [`client_signature`]; a timestamp more than
//!   [`SimConfig::signature_skew`] (60 s) from the simulator's clock, a bad signature, or a
//!   reused nonce → `13004 invalid_credentials`) and `refresh_token` (a new access *and* refresh
//!   token; the old refresh token, and for connection scope the old access token, become
//!   invalid; an unknown one → `13009`). The result's `scope` is `connection` (or the requested
//!   `session:NAME`), `mainaccount`, then the requested permissions (`wallet:read_write` is
//!   narrowed to `wallet:read` for `client_credentials`) and `expires:N` (which also sets the
//!   lifetime; otherwise [`SimConfig::token_ttl`]). Connection-scoped tokens work only on their
//!   connection and die with it. A successful auth authenticates the connection: private
//!   requests need no `access_token` (one that is sent must be valid and is adopted).
//!   `private/*` without a valid token → `13009 unauthorized`, `data: {"reason":"invalid_token"}`.
//!   Permission scopes are enforced (`trade:read` cannot trade → `13403 scope_exceeded`).
//! * **Heartbeats.** `public/set_heartbeat {interval}` (≥ 10 s, else `-32602` on `interval`) →
//!   `"ok"`; then every interval `{"method":"heartbeat","params":{"type":"test_request"}}`, plus
//!   `{"type":"heartbeat"}` if nothing was sent since the previous tick. If no `public/test`
//!   arrived by the next tick, the connection is closed with **4000 `"heartbeat close"`**
//!   (cancel-on-disconnect applies). `public/disable_heartbeat` → `"ok"`. `public/test` →
//!   `{"version":"1.2.26"}` (`expected_result: "exception"` → `11094`).
//! * **Subscriptions.** `public/subscribe` takes public channels (`user.*` are dropped from the
//!   ack); `private/subscribe` needs auth (`13009`) and takes both. A public `.raw` channel on an
//!   unauthenticated connection rejects the **whole** request with `13778`. Unknown instruments,
//!   bad intervals and unsupported channels are dropped silently. The ack lists what was
//!   subscribed, in a seeded shuffled order ([`SimConfig::reorder_acks`]). Notifications start
//!   once the ack is written; a book channel first gets a `snapshot`. Subscribing again to a
//!   held channel is acked with no new snapshot. `*/unsubscribe` returns only the channels
//!   removed; `*/unsubscribe_all` → `"ok"`.
//! * **Channels.** `ticker.{inst}.{raw|100ms|agg2}` (§4.4 object), `book.{inst}.{interval}`
//!   (`snapshot` without `prev_change_id`, then `change` messages whose `change_id` jumps and
//!   whose `prev_change_id` is the previous message's on that channel; levels
//!   `[action, price, amount]`, bids best first), `book.{inst}.{group}.{depth}.{interval}` (full
//!   windows of `[price, amount]`), `trades.{inst}.{interval}` and
//!   `trades.{kind}.{currency}.{interval}` (arrays), `quote.{inst}`,
//!   `perpetual.{inst}.{interval}`, `deribit_price_index.{btc_usd|eth_usd}` (every
//!   [`SimConfig::index_interval`]), `platform_state`, and private `user.orders.{inst}.raw`
//!   (one order object per message) / `.100ms` / `.agg2` (arrays), `user.orders.{kind}.{currency}.*`,
//!   `user.trades.*` (arrays), `user.portfolio.{currency}` (the account summary, first sent on
//!   subscribe, then after every change). `raw` publishes per market event
//!   ([`SimConfig::market_tick`]), `100ms` every [`SimConfig::fast_interval`], `agg2` every
//!   [`SimConfig::agg2_interval`]; a still book or an empty batch sends nothing.
//! * **Methods.** `public/`: `auth`, `hello`, `get_time`, `test`, `status`, `set_heartbeat`,
//!   `disable_heartbeat`, `subscribe`, `unsubscribe`, `unsubscribe_all`, `get_instruments
//!   {currency, kind?, expired?}`, `get_instrument`, `get_currencies`, `ticker`,
//!   `get_order_book {instrument_name, depth?}` (full book by default, with `change_id`),
//!   `get_index_price`, `get_last_trades_by_instrument`. `private/`: `subscribe`,
//!   `unsubscribe`, `unsubscribe_all`, `logout` (answers `"ok"`, closes with 1000, no
//!   cancel-on-disconnect), `get_account_summary {currency, extended?}`, `get_positions`,
//!   `get_position`, `buy` / `sell` (`limit` or `market`; `amount` or `contracts`; `post_only`,
//!   `reject_post_only`, `reduce_only`, `label`, `time_in_force`), `cancel` (unknown → `10004
//!   order_not_found`, closed → `11044 not_open_order`), `cancel_all` (count), `cancel_all_by_currency`,
//!   `cancel_all_by_instrument`, `cancel_by_label`, `get_open_orders`,
//!   `get_open_orders_by_currency`, `get_open_orders_by_instrument`, `get_order_state`,
//!   `enable_cancel_on_disconnect` / `disable_…` / `get_…` (`scope: connection|account`).
//! * **Matching.** A crossing limit or market order fills against the book, best price first
//!   (other accounts' resting orders before anonymous liquidity at a price); the remainder rests
//!   (limit, GTC/GTD) or is cancelled (market, IOC; FOK fills fully or not at all). `post_only`
//!   that would take is moved one tick inside the spread, or rejected with `11054` when
//!   `reject_post_only`. An order that would trade with the account's own order → `10003
//!   order_overlap`. Resting orders the market moves through are filled at their price. Fees
//!   (taker 0.05%, maker 0, options 0.03%), positions and realized P&L are tracked per account.
//!   Amounts must be multiples of `min_trade_amount` (`-32602`), prices of `tick_size`
//!   (`10043 price_wrong_tick`). No margin check.
//! * **Cancel on disconnect.** When a connection with COD enabled ends (closed, dropped, or a
//!   heartbeat failure; not `private/logout`), the orders it created are cancelled with
//!   `cancel_reason: "cancel_on_disconnect"`.
//! * **Rate limits.** Credit pools per account (per connection before auth), see
//!   [`CreditLimits`]. A request that finds its pool short gets `10028 too_many_requests` and the
//!   connection is then closed with [`SimConfig::rate_limit_close_code`] (1008, UNCERTAIN).
//! * **Connections.** Past [`SimConfig::max_connections`] (32) open connections, the upgrade is
//!   refused with HTTP 429. A connection with more than [`SimConfig::max_queue`] messages queued
//!   is closed with [`SimConfig::too_slow_close_code`] and reason `"connection_too_slow"`. Any
//!   request path is accepted; permessage-deflate is never negotiated.
//!
//! # Faults
//!
//! [`DeribitSim::faults`] gives a [`Faults`] handle: drop connections, close one with a code,
//! skip (gap) or repeat the next book change, maintenance mode (`11051` and `platform_state`),
//! a settlement window (`10041`), delayed responses, paused writes (a slow reader), connection
//! and queue limits, token expiry and revocation, exhausted credits, ignored heartbeat answers
//! (to get the 4000 close from a client that always answers; on every connection or one),
//! any error for a method ([`RpcError`], e.g. `13028 temporarily_unavailable`), a stalled
//! (half-open) connection, and raw bytes on the wire (invalid UTF-8, oversized frames, any
//! crafted frame).
//!
//! # Time
//!
//! Everything runs on `tokio::time`, so `#[tokio::test(start_paused = true)]` works (let the
//! client set `TCP_NODELAY`). Timestamps (`usIn`, `timestamp`, `get_time`) are the system clock
//! at start ([`SimConfig::start_time_ms`] to fix it) plus `tokio::time` elapsed since.
//!
//! # Example
//!
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use serde_json::{json, Value};
//! use tokio_websockets::{ClientBuilder, Message};
//! use websockex_nova_testkit::deribit::{DeribitSim, SimConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
//! let (mut ws, _) = ClientBuilder::new().uri(&sim.url()).unwrap().connect().await.unwrap();
//! let auth = json!({"jsonrpc":"2.0","id":1,"method":"public/auth","params":{
//!     "grant_type":"client_credentials","client_id":"demo-key","client_secret":"demo-secret"}});
//! ws.send(Message::text(auth.to_string())).await.unwrap();
//! let msg = ws.next().await.unwrap().unwrap();
//! let reply: Value = serde_json::from_str(msg.as_text().unwrap()).unwrap();
//! assert_eq!(reply["id"], 1);
//! assert_eq!(reply["result"]["token_type"], "bearer");
//! assert!(reply["usIn"].is_u64() && reply["testnet"] == true);
//! assert!(sim.is_authenticated(0));
//! # }
//! ```

mod channel;
mod config;
mod market;
mod methods;
mod publish;
mod records;
mod rng;
mod session;
mod sign;
mod state;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::{
    expiry_code, CreditLimits, CreditPool, InstrumentKind, InstrumentSpec, SimConfig,
};
pub use records::{BookFault, CloseRecord, ClosedBy, HeartbeatRecord, SimRequest};
pub use sign::client_signature;

use crate::rpc::RpcError;
use channel::Interval;
use state::{notification, Ctl, Shared, State};

use crate::server::{bind, lock};

/// A running Deribit simulator on the loopback interface, and the handle to inspect it.
///
/// It runs on the caller's tokio runtime; dropping it stops it (listener, market and every
/// connection). Connections are numbered from 0 in accept order.
pub struct DeribitSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
    market: JoinHandle<()>,
}

impl std::fmt::Debug for DeribitSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeribitSim")
            .field("addr", &self.addr)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl Drop for DeribitSim {
    fn drop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        self.market.abort();
        abort_all(&self.shared);
    }
}

fn abort_all(shared: &Shared) {
    let handles: Vec<JoinHandle<()>> = lock(&shared.tasks).drain().map(|(_, h)| h).collect();
    for h in handles {
        h.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "deribit sim: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = shared.next_conn();
        shared.state().rec.accepted += 1;
        tracing::debug!(conn, %peer, "deribit sim: accepted");
        // Spawn under the lock, so the task cannot deregister before it is registered.
        let mut tasks = lock(&shared.tasks);
        let handle = tokio::spawn(session::run(Arc::clone(&shared), stream, conn));
        tasks.insert(conn, handle);
    }
}

async fn market_loop(shared: Arc<Shared>) {
    let periods = {
        let st = shared.state();
        let c = &st.cfg;
        let at_least = |d: Duration| d.max(Duration::from_millis(1));
        [
            at_least(c.market_tick),
            at_least(c.fast_interval),
            at_least(c.agg2_interval),
            at_least(c.index_interval),
        ]
    };
    let start = Instant::now();
    let mut next = periods.map(|p| start + p);
    loop {
        let due = next.iter().copied().min().unwrap_or(start);
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        {
            let mut st = shared.state();
            let all: Vec<usize> = (0..st.market.insts.len()).collect();
            if now >= next[0] {
                st.market_tick(now);
            }
            if now >= next[1] {
                st.flush(Interval::Ms100, &all, now);
            }
            if now >= next[2] {
                st.flush(Interval::Agg2, &all, now);
            }
            if now >= next[3] {
                st.publish_index(now);
            }
        }
        for (t, p) in next.iter_mut().zip(periods) {
            if now >= *t {
                *t += p;
                if *t <= now {
                    *t = now + p;
                }
            }
        }
        shared.notify();
    }
}

impl DeribitSim {
    /// Start on `127.0.0.1` on a free port.
    pub async fn start(config: SimConfig) -> io::Result<DeribitSim> {
        DeribitSim::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Start on `addr` (port 0 for a free one).
    pub async fn start_on(addr: SocketAddr, config: SimConfig) -> io::Result<DeribitSim> {
        let listener = bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let market = tokio::spawn(market_loop(Arc::clone(&shared)));
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::debug!(%addr, "deribit sim: listening");
        Ok(DeribitSim {
            shared,
            addr,
            accept: Some(accept),
            market,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws/api/v2`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws/api/v2", self.addr)
    }

    /// A handle to inject faults at run time (cheap to clone, usable after the simulator moved).
    pub fn faults(&self) -> Faults {
        Faults {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stop listening and drop every connection (no close frame); the market and all records
    /// stay. [`DeribitSim::restart`] listens again on the same port.
    pub async fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
            let _ = a.await;
        }
        let handles: Vec<JoinHandle<()>> =
            lock(&self.shared.tasks).drain().map(|(_, h)| h).collect();
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
    }

    /// Stop (if running), then listen again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let listener = bind(self.addr).await?;
        self.accept = Some(tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.shared),
        )));
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state()
    }

    // ---- inspection ----

    /// The configuration it runs with.
    pub fn config(&self) -> SimConfig {
        self.state().cfg.clone()
    }

    /// The simulator's clock, ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.state().clock.ms(Instant::now())
    }

    /// The instrument names.
    pub fn instruments(&self) -> Vec<String> {
        self.state()
            .market
            .insts
            .iter()
            .map(|i| i.spec.name.clone())
            .collect()
    }

    /// Every request received, in processing order.
    pub fn requests(&self) -> Vec<SimRequest> {
        self.state().rec.requests.clone()
    }

    /// `(conn, method)` of every request, in order.
    pub fn methods(&self) -> Vec<(usize, String)> {
        self.state()
            .rec
            .requests
            .iter()
            .map(|r| (r.conn, r.method.clone()))
            .collect()
    }

    /// Messages that were not requests (bad JSON, batches, too large, no method).
    pub fn invalid_frames(&self) -> usize {
        self.state().rec.invalid
    }

    /// TCP connections accepted.
    pub fn accepted(&self) -> usize {
        self.state().rec.accepted
    }

    /// Upgrades completed.
    pub fn upgraded(&self) -> usize {
        self.state().rec.upgraded
    }

    /// Upgrades refused with HTTP 429 (too many connections).
    pub fn refused(&self) -> usize {
        self.state().rec.refused
    }

    /// Open connections, ascending.
    pub fn connections(&self) -> Vec<usize> {
        self.state().conns.keys().copied().collect()
    }

    /// How connections ended, in order.
    pub fn closes(&self) -> Vec<CloseRecord> {
        self.state().rec.closes.clone()
    }

    /// Whether `conn` is open and holds a valid (unexpired, unrevoked) access token.
    pub fn is_authenticated(&self, conn: usize) -> bool {
        self.state().authenticated(conn, Instant::now())
    }

    /// The account (`client_id`) `conn` authenticated as, even if its token expired since.
    pub fn account(&self, conn: usize) -> Option<String> {
        self.state().account_of(conn).map(str::to_owned)
    }

    /// The channels `conn` is subscribed to, sorted.
    pub fn subscriptions(&self, conn: usize) -> Vec<String> {
        self.state()
            .conns
            .get(&conn)
            .map(|c| c.subs.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// How many open connections hold `channel` (acked).
    pub fn subscribers(&self, channel: &str) -> usize {
        self.state()
            .conns
            .values()
            .filter(|c| c.is_subscribed(channel))
            .count()
    }

    /// Notifications queued on `channel` so far (all connections; a message sent to two
    /// connections counts twice).
    pub fn notifications_sent(&self, channel: &str) -> u64 {
        self.state()
            .rec
            .published
            .get(channel)
            .copied()
            .unwrap_or(0)
    }

    /// Messages queued for `conn` and not yet written.
    pub fn queued(&self, conn: usize) -> Option<usize> {
        self.state()
            .conns
            .get(&conn)
            .map(|c| c.queued.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Every heartbeat `test_request` sent, in order.
    pub fn heartbeats(&self) -> Vec<HeartbeatRecord> {
        self.state().rec.heartbeats.clone()
    }

    /// How many `test_request`s were answered in time.
    pub fn heartbeats_answered(&self) -> usize {
        self.state()
            .rec
            .heartbeats
            .iter()
            .filter(|h| h.answered_at.is_some())
            .count()
    }

    /// Book change messages skipped by [`Faults::book_gap`].
    pub fn gaps(&self) -> Vec<BookFault> {
        self.state().rec.gaps.clone()
    }

    /// Book change messages repeated by [`Faults::book_duplicate`].
    pub fn duplicates(&self) -> Vec<BookFault> {
        self.state().rec.duplicates.clone()
    }

    /// Requests rejected with `10028`.
    pub fn credits_rejected(&self) -> usize {
        self.state().rec.credits_rejected
    }

    /// Credits `conn` has left now (its account's once authenticated):
    /// `(non_matching_engine, matching_engine)`.
    pub fn credits(&self, conn: usize) -> Option<(u64, u64)> {
        self.state().credits_left(conn, Instant::now())
    }

    /// Auth requests with this `grant_type`, successful or not.
    pub fn auth_requests(&self, grant_type: &str) -> usize {
        self.state()
            .rec
            .auth_counts
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// Failed auth requests.
    pub fn auth_failures(&self) -> usize {
        self.state().rec.auth_failures
    }

    /// Orders cancelled by cancel-on-disconnect.
    pub fn cod_cancelled(&self) -> usize {
        self.state().rec.cod_cancelled
    }

    /// Every order of `account` (order objects as on the wire), oldest first.
    pub fn orders(&self, account: &str) -> Vec<Value> {
        let st = self.state();
        st.market
            .orders
            .iter()
            .filter(|(_, o)| o.account == account)
            .map(|(id, _)| st.market.order_json(*id))
            .collect()
    }

    /// The open orders of `account`.
    pub fn open_orders(&self, account: &str) -> Vec<Value> {
        let st = self.state();
        st.market
            .orders
            .iter()
            .filter(|(_, o)| o.account == account && o.is_open())
            .map(|(id, _)| st.market.order_json(*id))
            .collect()
    }

    /// `account`'s position in `instrument` (as `private/get_position` returns it).
    pub fn position(&self, account: &str, instrument: &str) -> Option<Value> {
        let st = self.state();
        let i = st.market.inst_index(instrument)?;
        Some(st.position_json(account, i))
    }

    /// The ticker of `instrument` now (as `public/ticker` returns it).
    pub fn ticker(&self, instrument: &str) -> Option<Value> {
        let st = self.state();
        let i = st.market.inst_index(instrument)?;
        Some(st.market.ticker(i, st.clock.ms(Instant::now())))
    }

    /// The whole book of `instrument` now, with its `change_id` (as `public/get_order_book`).
    pub fn order_book(&self, instrument: &str) -> Option<Value> {
        let st = self.state();
        let i = st.market.inst_index(instrument)?;
        Some(
            st.market
                .order_book(i, usize::MAX, st.clock.ms(Instant::now())),
        )
    }

    /// Wait until `cond` holds or `timeout` passes; returns whether it holds. `cond` is checked
    /// after every request, connection change, heartbeat and market tick.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&DeribitSim) -> bool,
    ) -> bool {
        crate::server::wait_until(&self.shared.changed, timeout, || cond(self)).await
    }

    /// Wait until at least `n` requests arrived (or `timeout` passes); returns them all.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<SimRequest> {
        self.wait_for(timeout, |s| s.state().rec.requests.len() >= n)
            .await;
        self.requests()
    }

    /// Wait until `conn` is closed (or `timeout` passes); returns how it ended.
    pub async fn wait_closed(&self, conn: usize, timeout: Duration) -> Option<CloseRecord> {
        let find = |s: &DeribitSim| {
            s.state()
                .rec
                .closes
                .iter()
                .find(|c| c.conn == conn)
                .cloned()
        };
        self.wait_for(timeout, |s| find(s).is_some()).await;
        find(self)
    }
}

/// Run-time fault injection for a [`DeribitSim`]. Cheap to clone.
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state()
    }

    fn done(&self) {
        self.shared.notify();
    }

    /// Drop every open connection now, without a close frame (the client sees 1006). COD
    /// applies. The simulator keeps listening.
    pub fn drop_all(&self) {
        abort_all(&self.shared);
    }

    /// Drop one connection without a close frame; whether it was open.
    pub fn drop_connection(&self, conn: usize) -> bool {
        let h = lock(&self.shared.tasks).remove(&conn);
        h.map(|h| h.abort()).is_some()
    }

    /// Close one connection with this code and reason (queued messages are discarded); whether
    /// it was open.
    pub fn close_connection(&self, conn: usize, code: u16, reason: &str) -> bool {
        self.state()
            .conns
            .get(&conn)
            .is_some_and(|c| c.ctl.send(Ctl::Close(code, reason.to_owned())).is_ok())
    }

    fn arm_book(&self, instrument: Option<&str>, gap: bool) -> usize {
        let mut st = self.state();
        let State { market, conns, .. } = &mut *st;
        let mut armed = 0;
        for inst in market.insts.iter_mut() {
            if instrument.is_some_and(|n| n != inst.spec.name) {
                continue;
            }
            for iv in Interval::ALL {
                let ch = format!("book.{}.{}", inst.spec.name, iv.as_str());
                if conns.values().any(|c| c.is_subscribed(&ch)) {
                    if gap {
                        inst.gap[iv.idx()] = true;
                    } else {
                        inst.dup[iv.idx()] = true;
                    }
                    armed += 1;
                }
            }
        }
        armed
    }

    /// Skip the next `change` message of every `book.{instrument}.{interval}` channel that has
    /// subscribers now (all instruments with `None`): the message after it chains onto the
    /// skipped one, so clients see a gap. Returns how many channels were armed; see
    /// [`DeribitSim::gaps`].
    pub fn book_gap(&self, instrument: Option<&str>) -> usize {
        self.arm_book(instrument, true)
    }

    /// Send the next `change` message of those channels twice.
    pub fn book_duplicate(&self, instrument: Option<&str>) -> usize {
        self.arm_book(instrument, false)
    }

    /// Maintenance on: every request except `public/test`, `hello`, `get_time`, `status` and
    /// the heartbeat setters gets `11051 system_maintenance`, `public/status` reports every
    /// index locked, and `platform_state` subscribers get `{"maintenance":true}` and
    /// `{"price_index":..,"locked":true}` per index. Off: `{"price_index":..,"locked":false}`.
    pub fn set_maintenance(&self, on: bool) {
        let mut st = self.state();
        if st.faults.maintenance == on {
            return;
        }
        st.faults.maintenance = on;
        if on {
            st.platform_state(&json!({ "maintenance": true }));
        }
        let names: Vec<String> = st.market.indexes.iter().map(|i| i.name.clone()).collect();
        for name in names {
            st.platform_state(&json!({ "price_index": name, "locked": on }));
        }
        drop(st);
        self.done();
    }

    /// A settlement for `duration` from now: matching-engine requests (`buy`, `sell`,
    /// `cancel*`) get `10041 settlement_in_progress`.
    pub fn settlement(&self, duration: Duration) {
        self.state().faults.settlement_until = Some(Instant::now() + duration);
    }

    /// Delay every response by `delay` (`None`: no delay). Effects happen on arrival.
    pub fn delay_responses(&self, delay: Option<Duration>) {
        self.state().faults.delay_all = delay;
    }

    /// Delay responses to `method` (overrides [`Faults::delay_responses`]).
    pub fn delay_method(&self, method: &str, delay: Option<Duration>) {
        let mut st = self.state();
        match delay {
            Some(d) => st.faults.delays.insert(method.to_owned(), d),
            None => st.faults.delays.remove(method),
        };
    }

    /// Stop (or resume) writing notifications to `conn`, as if its client stopped reading:
    /// its queue grows until it passes the queue limit and the connection is closed as
    /// `connection_too_slow`. Whether the connection is open.
    pub fn pause_writes(&self, conn: usize, paused: bool) -> bool {
        self.state()
            .conns
            .get(&conn)
            .is_some_and(|c| c.ctl.send(Ctl::PauseWrites(paused)).is_ok())
    }

    /// Stop reading and writing on `conn` for `duration` while keeping its TCP connection
    /// open, as a half-open or frozen peer would: no answers, no notifications, no heartbeats,
    /// no pongs. Then it carries on (reading first, so it sees a client that gave up). A
    /// close order waits for the stall; [`Faults::drop_connection`] does not. Whether the
    /// connection is open.
    pub fn stall(&self, conn: usize, duration: Duration) -> bool {
        self.ctl(conn, Ctl::Stall(duration))
    }

    /// Write `bytes` onto `conn`'s TCP stream as they are (after what was already written;
    /// see [`raw_frame`](crate::raw_frame) to build frames, valid or not). Whether the
    /// connection is open.
    pub fn send_raw(&self, conn: usize, bytes: Vec<u8>) -> bool {
        self.ctl(conn, Ctl::Raw(bytes))
    }

    /// Send `conn` a text frame whose payload is not UTF-8 (`[0xC3, 0x28]`); a client must
    /// close with 1007. Whether the connection is open.
    pub fn send_invalid_utf8(&self, conn: usize) -> bool {
        self.send_raw(conn, crate::raw_frame(true, 0x1, &[0xC3, 0x28]))
    }

    /// Send `conn` one text frame of `len` bytes (JSON whitespace), to exceed a client's
    /// message size limit (it must close with 1009). Whether the connection is open.
    pub fn send_oversized(&self, conn: usize, len: usize) -> bool {
        self.send_raw(conn, crate::raw_frame(true, 0x1, &vec![b' '; len]))
    }

    fn ctl(&self, conn: usize, order: Ctl) -> bool {
        self.state()
            .conns
            .get(&conn)
            .is_some_and(|c| c.ctl.send(order).is_ok())
    }

    /// Messages a connection may have queued before it is closed as too slow (`None`: no limit).
    pub fn set_max_queue(&self, max: Option<usize>) {
        self.state().faults.max_queue = max;
    }

    /// Open connections allowed before upgrades are refused with 429 (`None`: no limit).
    pub fn set_max_connections(&self, max: Option<usize>) {
        self.state().faults.max_connections = max;
    }

    /// Every access token expires now (refresh tokens stay valid).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in self.state().tokens.values_mut() {
            if t.expires_at.is_some() {
                t.expires_at = Some(now);
            }
        }
        self.done();
    }

    /// Revoke every access and refresh token.
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
        self.done();
    }

    /// Empty the credit pools of `account` (`None`: every account and every unauthenticated
    /// connection); the next request there gets `10028`.
    pub fn exhaust_credits(&self, account: Option<&str>) {
        let now = Instant::now();
        let mut st = self.state();
        for (name, acc) in st.accounts.iter_mut() {
            if account.is_none_or(|a| a == name) {
                acc.buckets.exhaust(now);
            }
        }
        if account.is_none() {
            for c in st.conns.values_mut() {
                c.buckets.exhaust(now);
            }
        }
    }

    /// Heartbeat answers (`public/test`) are answered but not counted while `on`, so the next
    /// heartbeat tick closes the connection with 4000 (for clients that always answer).
    pub fn ignore_heartbeat_answers(&self, on: bool) {
        self.state().faults.ignore_test_answers = on;
    }

    /// [`Faults::ignore_heartbeat_answers`] for one connection only: its next unanswered
    /// heartbeat tick closes it with 4000, the others carry on. Whether it is open.
    pub fn ignore_heartbeat_answers_from(&self, conn: usize, on: bool) -> bool {
        self.state()
            .conns
            .get_mut(&conn)
            .map(|c| c.ignore_test = on)
            .is_some()
    }

    /// Answer every request for `method` with `error` (checked after the rate limit, before
    /// anything else) until [`Faults::clear_failures`]; any method name works, known or not.
    pub fn fail_method(&self, method: &str, error: RpcError) {
        self.state()
            .faults
            .fail
            .insert(method.to_owned(), (error, None));
    }

    /// Answer the next `times` requests for `method` with `error`, then normally again.
    pub fn fail_next(&self, method: &str, error: RpcError, times: usize) {
        if times > 0 {
            self.state()
                .faults
                .fail
                .insert(method.to_owned(), (error, Some(times)));
        }
    }

    /// Stop failing methods ([`Faults::fail_method`], [`Faults::fail_next`]).
    pub fn clear_failures(&self) {
        self.state().faults.fail.clear();
    }

    /// Queue any text for `conn`; whether it is open.
    pub fn push(&self, conn: usize, text: &str) -> bool {
        self.state().send_to(conn, None, text.to_owned())
    }

    /// Send a `subscription` notification with `data` on `channel` to its subscribers; how many.
    pub fn notify(&self, channel: &str, data: &Value) -> usize {
        self.state()
            .send_channel(channel, &notification(channel, data))
    }
}
