//! The simulator's shared state: connections, accounts, tokens, the market, faults and records,
//! and the JSON-RPC envelope around every request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::channel::{Channel, Interval};
use super::config::{CreditPool, SimConfig};
use super::market::Market;
use super::records::{BookFault, CloseRecord, HeartbeatRecord, SimRequest};
use super::rng::Rng;
use crate::rpc::RpcError;
use crate::server::lock;

/// What the heartbeat notifications look like.
pub(crate) const TEST_REQUEST: &str =
    r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#;
pub(crate) const HEARTBEAT: &str =
    r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}"#;

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) changed: Notify,
    /// Connection tasks, to abort them.
    pub(crate) tasks: Mutex<HashMap<usize, JoinHandle<()>>>,
    pub(crate) next_conn: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(cfg: SimConfig) -> Shared {
        Shared {
            state: Mutex::new(State::new(cfg)),
            changed: Notify::new(),
            tasks: Mutex::new(HashMap::new()),
            next_conn: AtomicUsize::new(0),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(crate) fn notify(&self) {
        self.changed.notify_waiters();
    }

    pub(crate) fn next_conn(&self) -> usize {
        self.next_conn.fetch_add(1, Ordering::SeqCst)
    }
}

/// The simulator's clock: µs since the epoch, advancing with `tokio::time` (so paused-time
/// tests get consistent timestamps).
pub(crate) struct Clock {
    start: Instant,
    start_us: u64,
}

impl Clock {
    pub(crate) fn us(&self, at: Instant) -> u64 {
        self.start_us + at.saturating_duration_since(self.start).as_micros() as u64
    }

    pub(crate) fn ms(&self, at: Instant) -> u64 {
        self.us(at) / 1_000
    }
}

/// Orders from the state to a connection task, ahead of its queue.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Send a close frame with this code and reason, then end.
    Close(u16, String),
    /// Stop (`true`) or resume writing queued messages (a simulated slow reader).
    PauseWrites(bool),
    /// Read and write nothing for this long, the TCP connection kept open (a half-open peer).
    Stall(Duration),
    /// Write these bytes onto the TCP stream as they are (crafted or invalid frames).
    Raw(Vec<u8>),
}

/// The credit pools of an account or an unauthenticated connection.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Buckets {
    pools: [Option<(f64, Instant)>; 4],
}

pub(crate) const POOL_NON_ME: usize = 0;
pub(crate) const POOL_ME: usize = 1;
pub(crate) const POOL_SUBSCRIBE: usize = 2;
pub(crate) const POOL_INSTRUMENTS: usize = 3;

impl Buckets {
    fn take(&mut self, which: usize, pool: &CreditPool, now: Instant) -> bool {
        let (credits, last) = self.pools[which].get_or_insert((pool.max as f64, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *credits = (*credits + pool.refill_per_sec as f64 * elapsed).min(pool.max as f64);
        *last = now;
        if *credits + 1e-6 >= pool.cost as f64 {
            *credits -= pool.cost as f64;
            true
        } else {
            false
        }
    }

    pub(crate) fn exhaust(&mut self, now: Instant) {
        for p in &mut self.pools {
            *p = Some((0.0, now));
        }
    }

    fn credits(&self, which: usize, pool: &CreditPool, now: Instant) -> u64 {
        match self.pools[which] {
            None => pool.max,
            Some((c, last)) => {
                let elapsed = now.saturating_duration_since(last).as_secs_f64();
                (c + pool.refill_per_sec as f64 * elapsed).min(pool.max as f64) as u64
            }
        }
    }
}

pub(crate) struct ConnAuth {
    pub(crate) account: String,
    pub(crate) access: String,
}

pub(crate) struct Sub {
    pub(crate) ch: Channel,
    /// Notifications flow only once the ack was written.
    pub(crate) active: bool,
}

pub(crate) struct ConnState {
    tx: mpsc::UnboundedSender<String>,
    pub(crate) ctl: mpsc::UnboundedSender<Ctl>,
    pub(crate) queued: Arc<AtomicUsize>,
    too_slow: bool,
    pub(crate) auth: Option<ConnAuth>,
    pub(crate) subs: BTreeMap<String, Sub>,
    /// Private notifications waiting for their interval: channel -> (interval, items).
    pub(crate) pending: BTreeMap<String, (Interval, Vec<Value>)>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) pending_test: Option<usize>,
    /// `public/test` from this connection does not count as a heartbeat answer.
    pub(crate) ignore_test: bool,
    pub(crate) cod: Option<bool>,
    pub(crate) buckets: Buckets,
    pub(crate) last_in: Instant,
}

/// Where queued messages go, and the overflow rule.
#[derive(Clone, Copy)]
pub(crate) struct QueueLimit {
    pub(crate) max: Option<usize>,
    pub(crate) close_code: u16,
}

impl ConnState {
    /// Queue a message; past the limit, tell the connection to close as too slow (once).
    pub(crate) fn enqueue(&mut self, text: String, limit: QueueLimit) {
        if self.too_slow {
            return;
        }
        // Count first: the connection task may take the message (and count it out) on
        // another thread before `send` returns.
        let n = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if self.tx.send(text).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if limit.max.is_some_and(|max| n > max) {
            self.too_slow = true;
            let _ = self.ctl.send(Ctl::Close(
                limit.close_code,
                "connection_too_slow".to_owned(),
            ));
        }
    }

    pub(crate) fn is_subscribed(&self, channel: &str) -> bool {
        self.subs.get(channel).is_some_and(|s| s.active)
    }
}

/// A position in one instrument (lots of `min_trade_amount`, signed).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Position {
    pub(crate) lots: i64,
    pub(crate) avg: f64,
    pub(crate) rpl: f64,
}

pub(crate) struct Account {
    pub(crate) secret: String,
    pub(crate) user_id: u64,
    /// Cash per currency (starting balance, minus fees, plus realized P&L).
    pub(crate) balances: BTreeMap<String, f64>,
    pub(crate) fees: BTreeMap<String, f64>,
    pub(crate) positions: BTreeMap<usize, Position>,
    pub(crate) buckets: Buckets,
    /// Cancel-on-disconnect at account scope.
    pub(crate) cod: bool,
    /// Signature nonces seen, with their timestamps (ms).
    pub(crate) nonces: HashMap<String, u64>,
}

pub(crate) struct Token {
    pub(crate) account: String,
    /// Connection-scoped tokens belong to one connection.
    pub(crate) conn: Option<usize>,
    pub(crate) session: Option<String>,
    pub(crate) scope: String,
    /// Access tokens expire; refresh tokens (`None`) do not.
    pub(crate) expires_at: Option<Instant>,
    pub(crate) ttl: Duration,
    /// The access token issued with this refresh token.
    pub(crate) access: Option<String>,
}

#[derive(Default)]
pub(crate) struct FaultState {
    pub(crate) maintenance: bool,
    pub(crate) settlement_until: Option<Instant>,
    pub(crate) delay_all: Option<Duration>,
    pub(crate) delays: HashMap<String, Duration>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_queue: Option<usize>,
    /// `public/test` does not count as a heartbeat answer.
    pub(crate) ignore_test_answers: bool,
    /// Methods answered with an error: (error, how many more times; `None` = until cleared).
    pub(crate) fail: HashMap<String, (RpcError, Option<usize>)>,
}

#[derive(Default)]
pub(crate) struct Records {
    pub(crate) requests: Vec<SimRequest>,
    pub(crate) heartbeats: Vec<HeartbeatRecord>,
    pub(crate) closes: Vec<CloseRecord>,
    pub(crate) gaps: Vec<BookFault>,
    pub(crate) duplicates: Vec<BookFault>,
    pub(crate) invalid: usize,
    pub(crate) credits_rejected: usize,
    pub(crate) accepted: usize,
    pub(crate) upgraded: usize,
    pub(crate) refused: usize,
    pub(crate) auth_counts: HashMap<String, usize>,
    pub(crate) auth_failures: usize,
    pub(crate) published: HashMap<String, u64>,
    pub(crate) cod_cancelled: usize,
}

pub(crate) struct State {
    pub(crate) cfg: SimConfig,
    pub(crate) clock: Clock,
    pub(crate) market: Market,
    pub(crate) accounts: BTreeMap<String, Account>,
    pub(crate) tokens: HashMap<String, Token>,
    pub(crate) rng: Rng,
    pub(crate) conns: BTreeMap<usize, ConnState>,
    pub(crate) faults: FaultState,
    pub(crate) rec: Records,
}

/// What the connection task does after a request.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The response.
    pub(crate) reply: Option<String>,
    /// Channels to activate (and snapshot) once the reply is written.
    pub(crate) activate: Vec<String>,
    /// Write the reply this much later.
    pub(crate) delay: Duration,
    /// Write the reply at once, then close with this code and reason.
    pub(crate) close: Option<(u16, String)>,
    /// The close must not trigger cancel-on-disconnect (`private/logout`).
    pub(crate) no_cod: bool,
    /// Heartbeats turned on (`Some(Some(interval))`) or off (`Some(None)`).
    pub(crate) heartbeat: Option<Option<Duration>>,
}

/// What a heartbeat tick does.
pub(crate) enum Tick {
    Send(bool, Instant),
    Close,
    Off,
}

/// A request as parsed.
struct Req {
    id_raw: Option<String>,
    id: Option<Value>,
    method: String,
    params: Value,
}

fn bad_request(data: &str) -> RpcError {
    RpcError::new(11050, "bad_request").with_data(json!(data))
}

/// Parse one message; `Err` carries the id (if one could be read) and the error to answer.
fn parse(text: &str) -> Result<Req, (Option<String>, RpcError)> {
    let members: HashMap<String, Box<RawValue>> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(_) => {
            let err = match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(_)) => RpcError::new(-32600, "Invalid Request")
                    .with_data(json!("batch requests are not supported")),
                Ok(_) => bad_request("not a request object"),
                Err(_) => bad_request("invalid json"),
            };
            return Err((None, err));
        }
    };
    let id_raw = members.get("id").map(|r| r.get().to_owned());
    let id = id_raw
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok());
    let field = |name: &str| {
        members
            .get(name)
            .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
    };
    let Some(Value::String(method)) = field("method") else {
        let err = RpcError::new(-32600, "Invalid Request").with_data(json!("method is required"));
        return Err((id_raw, err));
    };
    let params = match field("params") {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            return Err((
                id_raw,
                RpcError::invalid_params("params", "must be an object"),
            ))
        }
    };
    Ok(Req {
        id_raw,
        id,
        method,
        params,
    })
}

/// A response with Deribit's `usIn`, `usOut`, `usDiff` and `testnet`.
pub(crate) fn response(
    id_raw: Option<&str>,
    result: &Result<Value, RpcError>,
    us_in: u64,
    us_out: u64,
    testnet: bool,
) -> String {
    let body = match result {
        Ok(v) => format!(r#""result":{v}"#),
        Err(e) => format!(r#""error":{}"#, e.to_json()),
    };
    let diff = us_out.saturating_sub(us_in);
    let id = id_raw
        .map(|id| format!(r#""id":{id},"#))
        .unwrap_or_default();
    format!(
        r#"{{"jsonrpc":"2.0",{id}{body},"usIn":{us_in},"usOut":{us_out},"usDiff":{diff},"testnet":{testnet}}}"#
    )
}

/// `{"jsonrpc":"2.0","method":"subscription","params":{"channel":..,"data":..}}`.
pub(crate) fn notification(channel: &str, data: &Value) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":{},"data":{data}}}}}"#,
        Value::from(channel)
    )
}

/// Methods that need no matching engine, are not rate-limited by another pool, ... : all the
/// methods the simulator knows.
pub(crate) const METHODS: &[&str] = &[
    "public/auth",
    "public/hello",
    "public/get_time",
    "public/test",
    "public/status",
    "public/set_heartbeat",
    "public/disable_heartbeat",
    "public/subscribe",
    "public/unsubscribe",
    "public/unsubscribe_all",
    "public/get_instruments",
    "public/get_instrument",
    "public/get_currencies",
    "public/ticker",
    "public/get_order_book",
    "public/get_index_price",
    "public/get_last_trades_by_instrument",
    "private/subscribe",
    "private/unsubscribe",
    "private/unsubscribe_all",
    "private/logout",
    "private/get_account_summary",
    "private/get_positions",
    "private/get_position",
    "private/buy",
    "private/sell",
    "private/cancel",
    "private/cancel_all",
    "private/cancel_all_by_currency",
    "private/cancel_all_by_instrument",
    "private/cancel_by_label",
    "private/get_open_orders",
    "private/get_open_orders_by_currency",
    "private/get_open_orders_by_instrument",
    "private/get_order_state",
    "private/enable_cancel_on_disconnect",
    "private/disable_cancel_on_disconnect",
    "private/get_cancel_on_disconnect",
];

/// Matching-engine requests: their own credit pool, and `10041` during a settlement.
pub(crate) fn is_matching_engine(method: &str) -> bool {
    matches!(
        method,
        "private/buy"
            | "private/sell"
            | "private/cancel"
            | "private/cancel_all"
            | "private/cancel_all_by_currency"
            | "private/cancel_all_by_instrument"
            | "private/cancel_by_label"
    )
}

/// Methods still answered during maintenance.
fn maintenance_exempt(method: &str) -> bool {
    matches!(
        method,
        "public/test"
            | "public/hello"
            | "public/get_time"
            | "public/status"
            | "public/set_heartbeat"
            | "public/disable_heartbeat"
    )
}

impl State {
    fn new(cfg: SimConfig) -> State {
        let start = Instant::now();
        let start_ms = cfg.start_time_ms.unwrap_or_else(super::config::system_ms);
        let market = Market::new(&cfg.instruments, cfg.seed, cfg.book_depth, start_ms);
        let mut accounts = BTreeMap::new();
        for (n, (id, secret)) in cfg.credentials.iter().enumerate() {
            accounts.entry(id.clone()).or_insert_with(|| Account {
                secret: secret.clone(),
                user_id: 10_000 + n as u64,
                balances: cfg.balances.iter().cloned().collect(),
                fees: BTreeMap::new(),
                positions: BTreeMap::new(),
                buckets: Buckets::default(),
                cod: false,
                nonces: HashMap::new(),
            });
        }
        let faults = FaultState {
            max_connections: cfg.max_connections,
            max_queue: cfg.max_queue,
            ..FaultState::default()
        };
        State {
            rng: Rng::new(cfg.seed ^ 0x005E_ED0F_70C3),
            clock: Clock {
                start,
                start_us: start_ms * 1_000,
            },
            market,
            accounts,
            tokens: HashMap::new(),
            conns: BTreeMap::new(),
            faults,
            rec: Records::default(),
            cfg,
        }
    }

    pub(crate) fn queue_limit(&self) -> QueueLimit {
        QueueLimit {
            max: self.faults.max_queue,
            close_code: self.cfg.too_slow_close_code,
        }
    }

    /// Register a connection about to be upgraded; `Err(status)` if it must be refused.
    #[allow(clippy::type_complexity)]
    pub(crate) fn open_conn(
        &mut self,
        conn: usize,
        now: Instant,
    ) -> Result<
        (
            mpsc::UnboundedReceiver<String>,
            mpsc::UnboundedReceiver<Ctl>,
            Arc<AtomicUsize>,
        ),
        u16,
    > {
        if self
            .faults
            .max_connections
            .is_some_and(|max| self.conns.len() >= max)
        {
            self.rec.refused += 1;
            return Err(429);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.conns.insert(
            conn,
            ConnState {
                tx,
                ctl,
                queued: Arc::clone(&queued),
                too_slow: false,
                auth: None,
                subs: BTreeMap::new(),
                pending: BTreeMap::new(),
                heartbeat: None,
                pending_test: None,
                ignore_test: false,
                cod: None,
                buckets: Buckets::default(),
                last_in: now,
            },
        );
        Ok((rx, ctl_rx, queued))
    }

    /// A connection ended: forget it, its connection-scoped tokens, and (with `cod`, if
    /// enabled) cancel the orders it created.
    pub(crate) fn close_conn(&mut self, conn: usize, cod: bool, record: CloseRecord, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.rec.closes.push(record);
        self.tokens.retain(|_, t| t.conn != Some(conn));
        let Some(auth) = c.auth else {
            return;
        };
        let account_cod = self.accounts.get(&auth.account).is_some_and(|a| a.cod);
        if cod && c.cod.unwrap_or(account_cod) {
            let ids: Vec<u64> = self
                .market
                .orders
                .iter()
                .filter(|(_, o)| o.is_open() && o.conn == conn && o.account == auth.account)
                .map(|(id, _)| *id)
                .collect();
            self.rec.cod_cancelled += ids.len();
            self.cancel_orders(&ids, "cancel_on_disconnect", now);
        }
    }

    /// Whether `conn` holds an access token that has not expired or been revoked.
    pub(crate) fn authenticated(&self, conn: usize, now: Instant) -> bool {
        self.conns
            .get(&conn)
            .and_then(|c| c.auth.as_ref())
            .and_then(|a| self.tokens.get(&a.access))
            .and_then(|t| t.expires_at)
            .is_some_and(|e| e > now)
    }

    pub(crate) fn account_of(&self, conn: usize) -> Option<&str> {
        self.conns
            .get(&conn)
            .and_then(|c| c.auth.as_ref())
            .map(|a| a.account.as_str())
    }

    /// Credits left in `pool` for this connection (its account's if authenticated).
    pub(crate) fn credits(&self, conn: usize, pool: usize, now: Instant) -> Option<u64> {
        let cfg = self.pool_cfg(pool);
        let c = self.conns.get(&conn)?;
        let buckets = match &c.auth {
            Some(a) => &self.accounts.get(&a.account)?.buckets,
            None => &c.buckets,
        };
        Some(buckets.credits(pool, &cfg, now))
    }

    fn pool_cfg(&self, pool: usize) -> CreditPool {
        let c = &self.cfg.credits;
        match pool {
            POOL_ME => c.matching_engine,
            POOL_SUBSCRIBE => c.subscribe,
            POOL_INSTRUMENTS => c.get_instruments,
            _ => c.non_matching_engine,
        }
    }

    fn take_credits(&mut self, conn: usize, method: &str, now: Instant) -> bool {
        if !self.cfg.credits.enabled {
            return true;
        }
        let pool = if is_matching_engine(method) {
            POOL_ME
        } else if method.ends_with("/subscribe") {
            POOL_SUBSCRIBE
        } else if method == "public/get_instruments" {
            POOL_INSTRUMENTS
        } else {
            POOL_NON_ME
        };
        let cfg = self.pool_cfg(pool);
        let Some(c) = self.conns.get_mut(&conn) else {
            return true;
        };
        match &c.auth {
            Some(a) => match self.accounts.get_mut(&a.account) {
                Some(acc) => acc.buckets.take(pool, &cfg, now),
                None => true,
            },
            None => c.buckets.take(pool, &cfg, now),
        }
    }

    /// Process one text message from `conn` that arrived at `now`.
    pub(crate) fn handle_text(&mut self, conn: usize, text: &str, now: Instant) -> Outcome {
        let us_in = self.clock.us(now);
        let testnet = self.cfg.testnet;
        let mut out = Outcome::default();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_in = now;
        }
        if text.len() > self.cfg.max_frame_bytes {
            self.rec.invalid += 1;
            let err = RpcError::new(-32600, "request entity too large");
            out.reply = Some(response(None, &Err(err), us_in, us_in, testnet));
            return out;
        }
        let req = match parse(text) {
            Ok(r) => r,
            Err((id, err)) => {
                self.rec.invalid += 1;
                out.reply = Some(response(id.as_deref(), &Err(err), us_in, us_in, testnet));
                return out;
            }
        };
        tracing::trace!(conn, method = %req.method, "deribit sim: request");
        let n = self.rec.requests.len();
        if self.cfg.record_requests {
            self.rec.requests.push(SimRequest {
                conn,
                id: req.id.clone(),
                method: req.method.clone(),
                params: req.params.clone(),
                at: now,
                error: None,
            });
        }
        if req.method == "public/test" && !self.faults.ignore_test_answers {
            let pending = self
                .conns
                .get(&conn)
                .filter(|c| !c.ignore_test)
                .and_then(|c| c.pending_test);
            if let Some(hb) = pending.and_then(|i| self.rec.heartbeats.get_mut(i)) {
                hb.answered_at.get_or_insert(now);
            }
        }
        let result = self.process(conn, &req.method, &req.params, now, &mut out);
        if let (Err(e), Some(r)) = (&result, self.rec.requests.get_mut(n)) {
            r.error = Some(e.code);
        }
        out.delay = self
            .faults
            .delays
            .get(&req.method)
            .copied()
            .or(self.faults.delay_all)
            .unwrap_or_default();
        if out.close.is_some() {
            out.delay = Duration::ZERO;
        }
        let us_out = us_in + out.delay.as_micros() as u64;
        out.reply = Some(response(
            req.id_raw.as_deref(),
            &result,
            us_in,
            us_out,
            testnet,
        ));
        out
    }

    fn process(
        &mut self,
        conn: usize,
        method: &str,
        params: &Value,
        now: Instant,
        out: &mut Outcome,
    ) -> Result<Value, RpcError> {
        if !self.take_credits(conn, method, now) {
            self.rec.credits_rejected += 1;
            out.close = Some((self.cfg.rate_limit_close_code, "too_many_requests".into()));
            return Err(RpcError::too_many_requests());
        }
        if let Some((err, left)) = self.faults.fail.get_mut(method) {
            let err = err.clone();
            match left {
                Some(1) => {
                    self.faults.fail.remove(method);
                }
                Some(n) => *n -= 1,
                None => {}
            }
            return Err(err);
        }
        if !METHODS.contains(&method) {
            return Err(RpcError::new(-32601, "Method not found"));
        }
        if self.faults.maintenance && !maintenance_exempt(method) {
            return Err(RpcError::new(11051, "system_maintenance"));
        }
        if method.starts_with("private/") {
            self.check_token(conn, params, now)?;
        }
        if is_matching_engine(method) && self.faults.settlement_until.is_some_and(|t| now < t) {
            return Err(RpcError::new(10041, "settlement_in_progress"));
        }
        self.dispatch(conn, method, params, now, out)
    }

    /// Private requests: the `access_token` param if given (adopted by the connection), else
    /// the connection's own token, must be valid.
    fn check_token(&mut self, conn: usize, params: &Value, now: Instant) -> Result<(), RpcError> {
        if let Some(tok) = params.get("access_token").and_then(Value::as_str) {
            let valid = self.tokens.get(tok).filter(|t| {
                t.expires_at.is_some_and(|e| e > now) && t.conn.is_none_or(|c| c == conn)
            });
            let Some(t) = valid else {
                return Err(RpcError::unauthorized());
            };
            let account = t.account.clone();
            if let Some(c) = self.conns.get_mut(&conn) {
                c.auth = Some(ConnAuth {
                    account,
                    access: tok.to_owned(),
                });
            }
            return Ok(());
        }
        if self.authenticated(conn, now) {
            Ok(())
        } else {
            Err(RpcError::unauthorized())
        }
    }

    /// A heartbeat is due on `conn`; `idle` if nothing was sent to it since the last one.
    pub(crate) fn heartbeat_tick(&mut self, conn: usize, now: Instant, idle: bool) -> Tick {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Tick::Off;
        };
        let Some(interval) = c.heartbeat else {
            return Tick::Off;
        };
        let unanswered = c
            .pending_test
            .and_then(|i| self.rec.heartbeats.get(i))
            .is_some_and(|hb| hb.answered_at.is_none());
        if unanswered {
            return Tick::Close;
        }
        self.rec.heartbeats.push(HeartbeatRecord {
            conn,
            sent_at: now,
            answered_at: None,
        });
        c.pending_test = Some(self.rec.heartbeats.len() - 1);
        Tick::Send(idle, now + interval)
    }

    /// Whether an idle connection (no subscription, no heartbeat) may be dropped.
    pub(crate) fn idle_droppable(&self, conn: usize) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.subs.is_empty() && c.heartbeat.is_none())
    }

    /// Send `text` to every connection subscribed (actively) to `channel`; returns how many.
    pub(crate) fn send_channel(&mut self, channel: &str, text: &str) -> usize {
        let limit = self.queue_limit();
        let mut n = 0;
        for c in self.conns.values_mut() {
            if c.is_subscribed(channel) {
                c.enqueue(text.to_owned(), limit);
                n += 1;
            }
        }
        if n > 0 {
            *self.rec.published.entry(channel.to_owned()).or_default() += n as u64;
        }
        n
    }

    /// Send to one connection.
    pub(crate) fn send_to(&mut self, conn: usize, channel: Option<&str>, text: String) -> bool {
        let limit = self.queue_limit();
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.enqueue(text, limit);
        if let Some(ch) = channel {
            *self.rec.published.entry(ch.to_owned()).or_default() += 1;
        }
        true
    }

    pub(crate) fn record_book_fault(
        &mut self,
        gap: bool,
        inst: usize,
        channel: &str,
        change_id: u64,
        now: Instant,
    ) {
        let f = BookFault {
            instrument: self.market.insts[inst].spec.name.clone(),
            channel: channel.to_owned(),
            change_id,
            at: now,
        };
        if gap {
            self.rec.gaps.push(f);
        } else {
            self.rec.duplicates.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_respond() {
        let r = parse(r#"{"jsonrpc":"2.0","id":"x-1","method":"public/test"}"#).unwrap();
        assert_eq!(r.id_raw.as_deref(), Some(r#""x-1""#));
        assert_eq!(r.params, json!({}));
        let (id, e) = parse("nope").err().unwrap();
        assert!(id.is_none());
        assert_eq!((e.code, e.data), (11050, Some(json!("invalid json"))));
        assert_eq!(parse("[1]").err().unwrap().1.code, -32600);
        let (id, e) = parse(r#"{"id":5,"method":"m","params":[1]}"#)
            .err()
            .unwrap();
        assert_eq!((id.as_deref(), e.code), (Some("5"), -32602));
        let v = |s: String| serde_json::from_str::<Value>(&s).unwrap();
        assert_eq!(
            v(response(Some(r#""a""#), &Ok(json!(1)), 10, 15, true)),
            json!({"jsonrpc":"2.0","id":"a","result":1,"usIn":10,"usOut":15,"usDiff":5,"testnet":true})
        );
        assert_eq!(
            v(response(
                None,
                &Err(bad_request("invalid json")),
                1,
                1,
                false
            )),
            json!({"jsonrpc":"2.0","error":{"code":11050,"message":"bad_request","data":"invalid json"},
                "usIn":1,"usOut":1,"usDiff":0,"testnet":false})
        );
        assert_eq!(
            notification("a.b", &json!([1])),
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"a.b","data":[1]}}"#
        );
    }

    #[test]
    fn buckets_refill() {
        let pool = CreditPool::new(500, 1_000, 10_000);
        let mut b = Buckets::default();
        let t0 = Instant::now();
        assert!(b.take(0, &pool, t0));
        assert!(b.take(0, &pool, t0));
        assert!(!b.take(0, &pool, t0));
        assert!(!b.take(0, &pool, t0 + Duration::from_millis(49)));
        assert!(b.take(0, &pool, t0 + Duration::from_millis(50)));
        assert_eq!(b.credits(0, &pool, t0 + Duration::from_secs(5)), 1_000);
    }
}
