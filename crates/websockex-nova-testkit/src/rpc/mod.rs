//! A scriptable JSON-RPC 2.0 server mode: [`RpcServer`].
//!
//! Build one with [`RpcServer::builder`], run it on connections with [`Step::JsonRpc`] (or
//! [`Step::JsonRpcUntil`] to inject a fault afterwards), and keep a clone to inspect and drive it
//! from the test. All connections that run the same `RpcServer` share its state (records, issued
//! refresh tokens, counters); subscriptions, authentication, the rate-limit window and heartbeats
//! are per connection.
//!
//! [`Step::JsonRpc`]: crate::Step::JsonRpc
//! [`Step::JsonRpcUntil`]: crate::Step::JsonRpcUntil

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::server::lock;

pub(crate) mod session;
mod wire;

pub(crate) use wire::{parse, Request};

/// A method handler: computes the result (or error) from the request's `params` (`Null` when the
/// request had none).
pub type Handler = Arc<dyn Fn(&Value) -> Result<Value, RpcError> + Send + Sync + 'static>;

type Fallback = Arc<dyn Fn(&str, &Value) -> Result<Value, RpcError> + Send + Sync + 'static>;
type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync + 'static>;

/// What the `result` of `public/test` (the heartbeat answer) contains.
const VERSION: &str = "websockex-nova-testkit";

/// A JSON-RPC error object: `{"code":..,"message":..,"data":..}` (`data` left out when `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// The error code.
    pub code: i64,
    /// A short description.
    pub message: String,
    /// Extra information, if any.
    pub data: Option<Value>,
}

impl RpcError {
    /// JSON-RPC: invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON-RPC: not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// JSON-RPC: the method does not exist.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// JSON-RPC: invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// JSON-RPC: internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Bad client id / secret or refresh token (Deribit's `invalid_credentials`).
    pub const INVALID_CREDENTIALS: i64 = 13004;
    /// Not authenticated, or the token expired (Deribit's `unauthorized`).
    pub const UNAUTHORIZED: i64 = 13009;
    /// Over the rate limit (Deribit's `too_many_requests`).
    pub const TOO_MANY_REQUESTS: i64 = 10028;

    /// An error without `data`.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error with `data`.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    /// `-32700 "Parse error"`.
    pub fn parse_error() -> RpcError {
        RpcError::new(Self::PARSE_ERROR, "Parse error")
    }

    /// `-32600 "Invalid Request"` with `detail` as `data`.
    pub fn invalid_request(detail: &str) -> RpcError {
        RpcError::new(Self::INVALID_REQUEST, "Invalid Request").with_data(json!(detail))
    }

    /// `-32601 "Method not found"` with `{"method": method}` as `data`.
    pub fn method_not_found(method: &str) -> RpcError {
        RpcError::new(Self::METHOD_NOT_FOUND, "Method not found")
            .with_data(json!({ "method": method }))
    }

    /// `-32602 "Invalid params"` with `{"param": param, "reason": reason}` as `data`.
    pub fn invalid_params(param: &str, reason: &str) -> RpcError {
        RpcError::new(Self::INVALID_PARAMS, "Invalid params")
            .with_data(json!({ "param": param, "reason": reason }))
    }

    /// `13004 "invalid_credentials"`.
    pub fn invalid_credentials() -> RpcError {
        RpcError::new(Self::INVALID_CREDENTIALS, "invalid_credentials")
    }

    /// `13009 "unauthorized"` with `{"reason":"invalid_token"}` as `data`.
    pub fn unauthorized() -> RpcError {
        RpcError::new(Self::UNAUTHORIZED, "unauthorized")
            .with_data(json!({ "reason": "invalid_token" }))
    }

    /// `10028 "too_many_requests"`.
    pub fn too_many_requests() -> RpcError {
        RpcError::new(Self::TOO_MANY_REQUESTS, "too_many_requests")
    }

    /// The error object as JSON.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            v["data"] = data.clone();
        }
        v
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON-RPC error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

/// How the server answers one method.
#[derive(Clone)]
#[non_exhaustive]
pub enum Reply {
    /// Always this result.
    Result(Value),
    /// Always this error.
    Error(RpcError),
    /// Computed from the params by a closure (called on the connection's task, without any lock
    /// held; if it panics, that connection is dropped).
    Handler(Handler),
}

impl Reply {
    /// A [`Reply::Handler`] from a closure.
    pub fn handler(f: impl Fn(&Value) -> Result<Value, RpcError> + Send + Sync + 'static) -> Reply {
        Reply::Handler(Arc::new(f))
    }

    fn call(&self, params: &Value) -> Result<Value, RpcError> {
        match self {
            Reply::Result(v) => Ok(v.clone()),
            Reply::Error(e) => Err(e.clone()),
            Reply::Handler(f) => f(params),
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Result(v) => f.debug_tuple("Result").field(v).finish(),
            Reply::Error(e) => f.debug_tuple("Error").field(e).finish(),
            Reply::Handler(_) => f.write_str("Handler(<fn>)"),
        }
    }
}

/// What a subscribe request gets for channels that require authentication on a connection that
/// is not authenticated (or whose token expired).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrivateChannelPolicy {
    /// Leave them out of the result (the others are subscribed). The default.
    #[default]
    Omit,
    /// Answer the whole request with [`RpcError::unauthorized`]; nothing is subscribed.
    Error,
}

/// A server-side rate limit per connection: a sliding window.
///
/// A request is admitted if fewer than `max` requests were admitted on its connection in the
/// `window` before it (arrival times `t` with `now - t < window`); otherwise it is rejected with
/// `error` (notifications get no answer), and the connection is closed with `close` if set.
/// Rejected requests do not count against the window. Requests whose method is in `exempt` are
/// neither counted nor limited.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Requests admitted per window.
    pub max: usize,
    /// The window length.
    pub window: Duration,
    /// The error for rejected requests. Default: [`RpcError::too_many_requests`].
    pub error: RpcError,
    /// Close the connection with this code (reason `"too_many_requests"`) after answering a
    /// rejected request. Default: `None` (keep it open).
    pub close: Option<u16>,
    /// Methods that are not rate limited. Default: none.
    pub exempt: Vec<String>,
}

impl RateLimit {
    /// At most `max` requests per `window` on each connection.
    pub fn new(max: usize, window: Duration) -> RateLimit {
        RateLimit {
            max,
            window,
            error: RpcError::too_many_requests(),
            close: None,
            exempt: Vec::new(),
        }
    }

    /// Close the connection with `code` after answering a rejected request (Deribit terminates
    /// the session on `10028`).
    #[must_use]
    pub fn close_with(mut self, code: u16) -> RateLimit {
        self.close = Some(code);
        self
    }

    /// Answer rejected requests with this error instead.
    #[must_use]
    pub fn error(mut self, error: RpcError) -> RateLimit {
        self.error = error;
        self
    }

    /// Do not limit (nor count) `method`.
    #[must_use]
    pub fn exempt(mut self, method: impl Into<String>) -> RateLimit {
        self.exempt.push(method.into());
        self
    }
}

/// When a [`Step::JsonRpcUntil`](crate::Step::JsonRpcUntil) step ends, so the next step (for
/// example [`Step::Drop`](crate::Step::Drop) or [`Step::Close`](crate::Step::Close)) runs.
///
/// Requests are counted per step, notifications and rate-limited ones included. When the step
/// ends, responses still delayed or held are discarded: those requests stay unanswered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcUntil {
    /// When the n-th request arrives. It is recorded (in [`RpcServer::requests`]) but has no
    /// effect and gets no answer.
    Requests(usize),
    /// When a request for this method arrives. It is recorded but has no effect and gets no
    /// answer.
    Method(String),
    /// Right after the n-th response has been written.
    Answered(usize),
    /// After this long.
    After(Duration),
}

/// A request (or notification) the server received.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcRequest {
    /// Index of the connection (as in [`Received`](crate::Received)).
    pub conn: usize,
    /// The id, `None` for a notification. Numbers beyond `f64` are echoed exactly in the
    /// response but may be rounded here.
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// The params, `Null` when absent.
    pub params: Value,
    /// When it arrived.
    pub at: Instant,
    /// Whether it was rejected by the rate limit.
    pub rejected: bool,
}

/// One heartbeat `test_request` the server sent, and when the client answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Index of the connection.
    pub conn: usize,
    /// When the server sent it.
    pub sent_at: Instant,
    /// When the first answer (a request for the answer method) arrived after it, if any.
    pub answered_at: Option<Instant>,
}

impl Heartbeat {
    /// How long the answer took, if it came.
    pub fn answer_delay(&self) -> Option<Duration> {
        self.answered_at.map(|a| a.duration_since(self.sent_at))
    }
}

struct Config {
    subscribe_method: String,
    unsubscribe_method: String,
    notification_method: String,
    omit: HashSet<String>,
    omit_where: Option<Predicate>,
    private_channels: Predicate,
    private_methods: Predicate,
    private_policy: PrivateChannelPolicy,
    auth_method: String,
    credentials: Vec<(String, String)>,
    token_ttl: Duration,
    scope: String,
    rate_limit: Option<RateLimit>,
    set_heartbeat_method: String,
    disable_heartbeat_method: String,
    heartbeat_answer_method: String,
    heartbeat_close: Option<u16>,
    auto_publish: Option<Duration>,
    hold: Option<usize>,
    fallback: Option<Fallback>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            subscribe_method: "public/subscribe".into(),
            unsubscribe_method: "public/unsubscribe".into(),
            notification_method: "subscription".into(),
            omit: HashSet::new(),
            omit_where: None,
            private_channels: Arc::new(|c: &str| {
                c.starts_with("private/") || c.starts_with("user.")
            }),
            private_methods: Arc::new(|m: &str| m.starts_with("private/")),
            private_policy: PrivateChannelPolicy::Omit,
            auth_method: "public/auth".into(),
            credentials: Vec::new(),
            token_ttl: Duration::from_secs(900),
            scope: "connection".into(),
            rate_limit: None,
            set_heartbeat_method: "public/set_heartbeat".into(),
            disable_heartbeat_method: "public/disable_heartbeat".into(),
            heartbeat_answer_method: "public/test".into(),
            heartbeat_close: Some(4000),
            auto_publish: None,
            hold: None,
            fallback: None,
        }
    }
}

/// Builds an [`RpcServer`]. Every setting has a default (stated on its setter), so
/// `RpcServer::builder().build()` is a working server that knows the built-in methods
/// (subscribe, unsubscribe, auth, set/disable heartbeat, test) and answers every other method
/// with `-32601`.
#[must_use]
pub struct RpcBuilder {
    config: Config,
    replies: HashMap<String, Reply>,
    delays: HashMap<String, Duration>,
}

impl fmt::Debug for RpcBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcBuilder")
            .field("replies", &self.replies)
            .field("delays", &self.delays)
            .finish_non_exhaustive()
    }
}

impl RpcBuilder {
    /// Answer `method` with `reply`. This takes precedence over the built-in methods (so the
    /// auth method can be made to fail, for example), but not over the private-method check.
    pub fn reply(mut self, method: impl Into<String>, reply: Reply) -> RpcBuilder {
        self.replies.insert(method.into(), reply);
        self
    }

    /// Answer `method` with this result.
    pub fn result(self, method: impl Into<String>, result: Value) -> RpcBuilder {
        self.reply(method, Reply::Result(result))
    }

    /// Answer `method` with this error.
    pub fn error(self, method: impl Into<String>, error: RpcError) -> RpcBuilder {
        self.reply(method, Reply::Error(error))
    }

    /// Answer `method` with `f(params)`.
    pub fn handler(
        self,
        method: impl Into<String>,
        f: impl Fn(&Value) -> Result<Value, RpcError> + Send + Sync + 'static,
    ) -> RpcBuilder {
        self.reply(method, Reply::handler(f))
    }

    /// Answer methods that are neither configured nor built in with `f(method, params)`.
    /// Default: [`RpcError::method_not_found`].
    pub fn fallback(
        mut self,
        f: impl Fn(&str, &Value) -> Result<Value, RpcError> + Send + Sync + 'static,
    ) -> RpcBuilder {
        self.config.fallback = Some(Arc::new(f));
        self
    }

    /// Send responses to `method` (results and errors alike) this long after the request
    /// arrived (`tokio::time`, so paused-time tests work). Its effects (a subscription, a new
    /// token) happen at arrival. Responses that become ready at the same instant are sent in
    /// arrival order. Default: no delay.
    pub fn delay(mut self, method: impl Into<String>, delay: Duration) -> RpcBuilder {
        self.delays.insert(method.into(), delay);
        self
    }

    /// Hold responses on each connection until `n` of them are ready, then send those `n` in
    /// reverse order (newest first), and so on. Default: off. `n <= 1` turns it off.
    pub fn hold_and_reverse(mut self, n: usize) -> RpcBuilder {
        self.config.hold = (n > 1).then_some(n);
        self
    }

    /// The subscribe method, params `{"channels": [...]}`, result: the channels now subscribed,
    /// in request order. Default: `"public/subscribe"`.
    pub fn subscribe_method(mut self, method: impl Into<String>) -> RpcBuilder {
        self.config.subscribe_method = method.into();
        self
    }

    /// The unsubscribe method, params `{"channels": [...]}`, result: the channels that were
    /// subscribed and no longer are. Default: `"public/unsubscribe"`.
    pub fn unsubscribe_method(mut self, method: impl Into<String>) -> RpcBuilder {
        self.config.unsubscribe_method = method.into();
        self
    }

    /// The `method` of notifications ([`RpcServer::notify`] and auto-publishing).
    /// Default: `"subscription"`.
    pub fn notification_method(mut self, method: impl Into<String>) -> RpcBuilder {
        self.config.notification_method = method.into();
        self
    }

    /// Silently refuse `channel`: it is left out of the subscribe result and not subscribed.
    /// Default: no channel is refused.
    pub fn omit_channel(mut self, channel: impl Into<String>) -> RpcBuilder {
        self.config.omit.insert(channel.into());
        self
    }

    /// Silently refuse every channel for which `pred` is true (in addition to
    /// [`RpcBuilder::omit_channel`]).
    pub fn omit_channels(
        mut self,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> RpcBuilder {
        self.config.omit_where = Some(Arc::new(pred));
        self
    }

    /// Which channels require an authenticated connection. Default: names starting with
    /// `"private/"` or `"user."`.
    pub fn private_channels(
        mut self,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> RpcBuilder {
        self.config.private_channels = Arc::new(pred);
        self
    }

    /// What a subscribe request gets for private channels when the connection is not
    /// authenticated. Default: [`PrivateChannelPolicy::Omit`].
    pub fn private_channel_policy(mut self, policy: PrivateChannelPolicy) -> RpcBuilder {
        self.config.private_policy = policy;
        self
    }

    /// Which methods require an authenticated connection; on a connection that is not (or no
    /// longer) authenticated they are answered with [`RpcError::unauthorized`]. Default: names
    /// starting with `"private/"`.
    pub fn private_methods(
        mut self,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> RpcBuilder {
        self.config.private_methods = Arc::new(pred);
        self
    }

    /// The auth method. Default: `"public/auth"`.
    ///
    /// Params: `{"grant_type":"client_credentials","client_id":..,"client_secret":..}` or
    /// `{"grant_type":"refresh_token","refresh_token":..}`. Result:
    /// `{"access_token","expires_in" (whole seconds),"refresh_token","token_type":"bearer","scope"}`.
    /// Bad credentials or an unknown refresh token: [`RpcError::invalid_credentials`]; a
    /// missing param or another grant type: `-32602`. A refresh token can be used once (on any
    /// connection); each success issues a new one. Authentication belongs to the connection.
    pub fn auth_method(mut self, method: impl Into<String>) -> RpcBuilder {
        self.config.auth_method = method.into();
        self
    }

    /// Accept this client id and secret (may be called several times). Default: when no pair is
    /// configured, any non-empty id and secret are accepted.
    pub fn credentials(
        mut self,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> RpcBuilder {
        self.config
            .credentials
            .push((client_id.into(), secret.into()));
        self
    }

    /// How long an access token is valid (`tokio::time`). Default: 900 s.
    pub fn token_ttl(mut self, ttl: Duration) -> RpcBuilder {
        self.config.token_ttl = ttl;
        self
    }

    /// The `scope` in auth results. Default: `"connection"`.
    pub fn scope(mut self, scope: impl Into<String>) -> RpcBuilder {
        self.config.scope = scope.into();
        self
    }

    /// Limit requests per connection. Default: no limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> RpcBuilder {
        self.config.rate_limit = Some(limit);
        self
    }

    /// The method that turns server heartbeats on, params `{"interval": seconds}` (any positive
    /// number; otherwise `-32602`), result `"ok"`. From then on, every interval, the server
    /// sends `{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}`.
    /// Default: `"public/set_heartbeat"`.
    pub fn set_heartbeat_method(mut self, method: impl Into<String>) -> RpcBuilder {
        self.config.set_heartbeat_method = method.into();
        self
    }

    /// The method that turns server heartbeats off (result `"ok"`).
    /// Default: `"public/disable_heartbeat"`.
    pub fn disable_heartbeat_method(mut self, method: impl Into<String>) -> RpcBuilder {
        self.config.disable_heartbeat_method = method.into();
        self
    }

    /// The request that answers a `test_request` (result `{"version":..}`); its arrival is
    /// recorded in [`RpcServer::heartbeats`] even if the rate limit rejects it.
    /// Default: `"public/test"`.
    pub fn heartbeat_answer_method(mut self, method: impl Into<String>) -> RpcBuilder {
        self.config.heartbeat_answer_method = method.into();
        self
    }

    /// Close code (reason `"heartbeat close"`) used when a `test_request` is still unanswered
    /// when the next one is due; `None` keeps the connection open. Default: `Some(4000)`.
    pub fn heartbeat_close(mut self, code: Option<u16>) -> RpcBuilder {
        self.config.heartbeat_close = code;
        self
    }

    /// Every `interval` (from the start of the step), send each subscribed channel of the
    /// connection one notification whose data is `{"seq": n}`, `n` counting from 0 per
    /// connection and channel. Default: off.
    pub fn auto_publish(mut self, interval: Duration) -> RpcBuilder {
        self.config.auto_publish = (!interval.is_zero()).then_some(interval);
        self
    }

    /// Build the server handle.
    pub fn build(self) -> RpcServer {
        RpcServer {
            inner: Arc::new(Inner {
                config: self.config,
                state: Mutex::new(State {
                    replies: self.replies,
                    delays: self.delays,
                    ..State::default()
                }),
                changed: Notify::new(),
            }),
        }
    }
}

#[derive(Default)]
struct State {
    replies: HashMap<String, Reply>,
    delays: HashMap<String, Duration>,
    requests: Vec<RpcRequest>,
    conns: BTreeMap<usize, ConnState>,
    auth_counts: HashMap<String, usize>,
    auth_failures: usize,
    refresh_tokens: HashSet<String>,
    next_token: u64,
    rejected: usize,
    invalid: usize,
    heartbeats: Vec<Heartbeat>,
    published: HashMap<String, u64>,
}

struct ConnState {
    tx: mpsc::UnboundedSender<String>,
    subscribed: BTreeSet<String>,
    token_expiry: Option<Instant>,
    window: VecDeque<Instant>,
    heartbeat_interval: Option<Duration>,
    pending_heartbeat: Option<usize>,
    seq: HashMap<String, u64>,
}

impl State {
    fn authenticated(&self, conn: usize, now: Instant) -> bool {
        self.conns
            .get(&conn)
            .and_then(|c| c.token_expiry)
            .is_some_and(|e| e > now)
    }
}

struct Inner {
    config: Config,
    state: Mutex<State>,
    changed: Notify,
}

/// A scriptable JSON-RPC 2.0 server, and the handle to inspect and drive it.
///
/// Cheap to clone; clones share everything. Put it in [`Step::JsonRpc`](crate::Step::JsonRpc)
/// (or [`Step::JsonRpcUntil`](crate::Step::JsonRpcUntil), [`Plan::json_rpc`](crate::Plan::json_rpc),
/// [`Script::json_rpc`](crate::Script::json_rpc)) and keep a clone in the test. Two
/// `RpcServer`s are equal when they are clones of each other.
///
/// # What it answers
///
/// Each text message is parsed as one JSON-RPC 2.0 request object (batches are not supported).
/// Invalid JSON gets `-32700`, anything else that is not a request (including a missing
/// `"jsonrpc":"2.0"`) gets `-32600`; neither is recorded as a request. Binary messages are
/// ignored. A request with an `id` gets exactly one response with the `id` echoed as written;
/// a notification (no `id`) gets none. Then, in order:
///
/// 1. the request is recorded ([`RpcServer::requests`]) and checked against the rate limit
///    ([`RpcBuilder::rate_limit`]);
/// 2. a private method ([`RpcBuilder::private_methods`]) on a connection without a valid token
///    gets [`RpcError::unauthorized`];
/// 3. a configured [`Reply`] for the method ([`RpcBuilder::reply`], [`RpcServer::set_reply`]);
/// 4. the built-in methods: auth, subscribe, unsubscribe, set/disable heartbeat, heartbeat
///    answer (see their setters on [`RpcBuilder`] for params and results);
/// 5. the fallback ([`RpcBuilder::fallback`]), by default `-32601 "Method not found"`.
///
/// The response is then delayed ([`RpcBuilder::delay`]) and held ([`RpcBuilder::hold_and_reverse`])
/// as configured, and written.
///
/// Notifications from the server are
/// `{"jsonrpc":"2.0","method":"subscription","params":{"channel":..,"data":..}}`.
///
/// # Paused time
///
/// Delays, token lifetimes, rate-limit windows, heartbeats and auto-publishing all use
/// `tokio::time`, so `#[tokio::test(start_paused = true)]` tests run them instantly and
/// [`RpcRequest::at`] is exact. Let the client set `TCP_NODELAY`: otherwise Nagle's algorithm can
/// hold a small frame back (in real time) until the previous one is acknowledged, and the paused
/// clock meanwhile jumps to the next pending timer (a delayed response, a heartbeat), so the
/// server sees the frame late.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use futures_util::{SinkExt, StreamExt};
/// use serde_json::{json, Value};
/// use tokio_websockets::{ClientBuilder, Message};
/// use websockex_nova_testkit::{RpcError, RpcServer, Script, TestServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let rpc = RpcServer::builder()
///     .result("public/get_time", json!(1700000000000u64))
///     .error("private/buy", RpcError::new(10009, "not_enough_funds"))
///     .delay("public/get_time", Duration::from_millis(100))
///     .omit_channel("book.ETH-PERPETUAL.raw")
///     .build();
/// let server = TestServer::start(Script::json_rpc(rpc.clone())).await.unwrap();
/// // TCP_NODELAY, so the second request is not held back by Nagle's algorithm.
/// let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
/// tcp.set_nodelay(true).unwrap();
/// let (mut ws, _) = ClientBuilder::new()
///     .uri(&server.url())
///     .unwrap()
///     .connect_on(tcp)
///     .await
///     .unwrap();
///
/// async fn next(ws: &mut (impl StreamExt<Item = Result<Message, tokio_websockets::Error>> + Unpin)) -> Value {
///     let msg = ws.next().await.unwrap().unwrap();
///     serde_json::from_str(msg.as_text().unwrap()).unwrap()
/// }
///
/// // The delayed request is overtaken by the subscribe request sent after it.
/// ws.send(Message::text(r#"{"jsonrpc":"2.0","id":"t","method":"public/get_time"}"#)).await.unwrap();
/// ws.send(Message::text(
///     r#"{"jsonrpc":"2.0","id":2,"method":"public/subscribe","params":{"channels":["ticker.BTC","book.ETH-PERPETUAL.raw"]}}"#,
/// )).await.unwrap();
/// let ack = next(&mut ws).await;
/// assert_eq!(ack, json!({"jsonrpc":"2.0","id":2,"result":["ticker.BTC"]}));
/// let time = next(&mut ws).await;
/// assert_eq!(time, json!({"jsonrpc":"2.0","id":"t","result":1700000000000u64}));
///
/// // Push a notification to every connection subscribed to the channel.
/// assert_eq!(rpc.notify("ticker.BTC", json!({"price": 1})), 1);
/// let note = next(&mut ws).await;
/// assert_eq!(note["params"], json!({"channel":"ticker.BTC","data":{"price":1}}));
///
/// // The server recorded both requests, in arrival order, with the connection index.
/// let methods: Vec<_> = rpc.requests().into_iter().map(|r| (r.conn, r.method)).collect();
/// assert_eq!(methods, [(0, "public/get_time".to_owned()), (0, "public/subscribe".to_owned())]);
/// # }
/// ```
#[derive(Clone)]
pub struct RpcServer {
    inner: Arc<Inner>,
}

impl PartialEq for RpcServer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for RpcServer {}

impl Default for RpcServer {
    fn default() -> Self {
        RpcServer::builder().build()
    }
}

impl fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("RpcServer")
            .field("connections", &st.conns.keys().collect::<Vec<_>>())
            .field("requests", &st.requests.len())
            .field("rejected", &st.rejected)
            .finish_non_exhaustive()
    }
}

/// What the connection task does after a request.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The response to write, if the request had an id.
    pub(crate) reply: Option<String>,
    /// How long to wait before writing it.
    pub(crate) delay: Duration,
    /// End the step without answering.
    pub(crate) end_step: bool,
    /// Write the reply at once, then close with this code.
    pub(crate) close: Option<u16>,
    /// Heartbeats were turned on (`Some(Some(interval))`) or off (`Some(None)`).
    pub(crate) heartbeat: Option<Option<Duration>>,
}

/// What the connection task does when a heartbeat is due.
pub(crate) enum HeartbeatTick {
    /// Send this and tick again at this instant.
    Send(&'static str, Instant),
    /// The previous one is unanswered: close with this code.
    Close(u16),
    /// Heartbeats are off.
    Off,
}

/// A connection's registration with an [`RpcServer`]; dropping it unregisters the connection.
pub(crate) struct RpcLink {
    pub(crate) rpc: RpcServer,
    pub(crate) conn: usize,
    pub(crate) rx: mpsc::UnboundedReceiver<String>,
    pub(crate) heartbeat_next: Option<Instant>,
}

impl Drop for RpcLink {
    fn drop(&mut self) {
        self.rpc.state().conns.remove(&self.conn);
        self.rpc.changed();
    }
}

fn channels_param(params: &Value) -> Result<Vec<String>, RpcError> {
    let bad = || RpcError::invalid_params("channels", "must be an array of strings");
    let list = params
        .get("channels")
        .and_then(Value::as_array)
        .ok_or_else(bad)?;
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for c in list {
        let c = c.as_str().ok_or_else(bad)?;
        if !out.iter().any(|o| o == c) {
            out.push(c.to_owned());
        }
    }
    Ok(out)
}

fn str_param<'a>(params: &'a Value, name: &str) -> Result<&'a str, RpcError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params(name, "missing or not a string"))
}

/// The largest number of `times` within any half-open window `[t, t + window)`.
fn max_in_window(mut times: Vec<Instant>, window: Duration) -> usize {
    if window.is_zero() {
        return 0;
    }
    times.sort_unstable();
    let mut start = 0;
    let mut best = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

impl RpcServer {
    /// A builder with every default.
    pub fn builder() -> RpcBuilder {
        RpcBuilder {
            config: Config::default(),
            replies: HashMap::new(),
            delays: HashMap::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn changed(&self) {
        self.inner.changed.notify_waiters();
    }

    // ---- driving it at run time ----

    /// Answer `method` with `reply` from now on (as [`RpcBuilder::reply`]).
    pub fn set_reply(&self, method: impl Into<String>, reply: Reply) {
        self.state().replies.insert(method.into(), reply);
    }

    /// Remove the configured reply for `method` (built-in methods answer again).
    pub fn clear_reply(&self, method: &str) {
        self.state().replies.remove(method);
    }

    /// Set (or with `None` remove) the delay of `method` for requests arriving from now on.
    pub fn set_delay(&self, method: impl Into<String>, delay: Option<Duration>) {
        let mut st = self.state();
        match delay {
            Some(d) => st.delays.insert(method.into(), d),
            None => st.delays.remove(&method.into()),
        };
    }

    /// Send a notification with `data` to every connection subscribed to `channel`; returns
    /// how many connections it was queued for. Messages queued for a connection that is
    /// between JSON-RPC steps are sent when its next JSON-RPC step starts.
    pub fn notify(&self, channel: &str, data: Value) -> usize {
        let text = wire::notification(&self.inner.config.notification_method, channel, &data);
        let mut st = self.state();
        let n = st
            .conns
            .values()
            .filter(|c| c.subscribed.contains(channel))
            .filter(|c| c.tx.send(text.clone()).is_ok())
            .count();
        *st.published.entry(channel.to_owned()).or_default() += n as u64;
        n
    }

    /// Send any text message to connection `conn` (for example a response to an id the client
    /// never used); `false` if that connection is not running this server.
    pub fn push(&self, conn: usize, text: impl Into<String>) -> bool {
        self.state()
            .conns
            .get(&conn)
            .is_some_and(|c| c.tx.send(text.into()).is_ok())
    }

    /// Make every access token expire now (refresh tokens stay valid).
    pub fn expire_tokens(&self) {
        for c in self.state().conns.values_mut() {
            c.token_expiry = None;
        }
        self.changed();
    }

    // ---- inspecting it ----

    /// Every request and notification received, in the order they were processed, across all
    /// connections.
    pub fn requests(&self) -> Vec<RpcRequest> {
        self.state().requests.clone()
    }

    /// `(conn, method)` of every request, in order: for asserting the global order (e.g. auth
    /// before subscribe after a reconnect).
    pub fn methods(&self) -> Vec<(usize, String)> {
        self.state()
            .requests
            .iter()
            .map(|r| (r.conn, r.method.clone()))
            .collect()
    }

    /// How many requests (notifications and rejected ones included) were received.
    pub fn total_requests(&self) -> usize {
        self.state().requests.len()
    }

    /// How many requests the rate limit rejected.
    pub fn rejected(&self) -> usize {
        self.state().rejected
    }

    /// How many messages were not valid JSON-RPC requests (answered with `-32700`/`-32600`).
    pub fn invalid(&self) -> usize {
        self.state().invalid
    }

    /// The largest number of requests (rejected ones included, all connections) that arrived
    /// within any window of length `window` (half-open: arrival times `a <= b` are in one window
    /// if `b - a < window`).
    pub fn max_in_window(&self, window: Duration) -> usize {
        let times = self.state().requests.iter().map(|r| r.at).collect();
        max_in_window(times, window)
    }

    /// [`RpcServer::max_in_window`] for the requests of one connection.
    pub fn max_in_window_on(&self, conn: usize, window: Duration) -> usize {
        let times = self
            .state()
            .requests
            .iter()
            .filter(|r| r.conn == conn)
            .map(|r| r.at)
            .collect();
        max_in_window(times, window)
    }

    /// How many auth requests had this `grant_type` (successful or not); `""` counts those
    /// without a string `grant_type`.
    pub fn auth_requests(&self, grant_type: &str) -> usize {
        self.state()
            .auth_counts
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// How many auth requests failed (bad credentials, unknown refresh token, bad params).
    pub fn auth_failures(&self) -> usize {
        self.state().auth_failures
    }

    /// Whether connection `conn` is open here and holds an access token that has not expired.
    pub fn is_authenticated(&self, conn: usize) -> bool {
        self.state().authenticated(conn, Instant::now())
    }

    /// The connections currently running this server (in a JSON-RPC step or between two).
    pub fn connections(&self) -> Vec<usize> {
        self.state().conns.keys().copied().collect()
    }

    /// The channels connection `conn` is subscribed to, sorted.
    pub fn subscriptions(&self, conn: usize) -> Vec<String> {
        self.state()
            .conns
            .get(&conn)
            .map(|c| c.subscribed.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many open connections are subscribed to `channel`.
    pub fn subscribers(&self, channel: &str) -> usize {
        self.state()
            .conns
            .values()
            .filter(|c| c.subscribed.contains(channel))
            .count()
    }

    /// How many notifications on `channel` were queued for connections, by
    /// [`RpcServer::notify`] and auto-publishing together.
    pub fn notifications_sent(&self, channel: &str) -> u64 {
        self.state().published.get(channel).copied().unwrap_or(0)
    }

    /// Every heartbeat `test_request` sent, in order, with its answer time.
    pub fn heartbeats(&self) -> Vec<Heartbeat> {
        self.state().heartbeats.clone()
    }

    /// Wait until `cond` holds or `timeout` passes; returns whether it holds. `cond` is
    /// re-checked whenever a request is processed, a connection joins or leaves, or a
    /// heartbeat is sent.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&RpcServer) -> bool,
    ) -> bool {
        crate::server::wait_until(&self.inner.changed, timeout, || cond(self)).await
    }

    /// Wait until at least `n` requests were received (or `timeout` passes) and return them all.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<RpcRequest> {
        self.wait_for(timeout, |s| s.state().requests.len() >= n)
            .await;
        self.requests()
    }

    // ---- used by the connection task ----

    pub(crate) fn link(&self, conn: usize) -> RpcLink {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().conns.insert(
            conn,
            ConnState {
                tx,
                subscribed: BTreeSet::new(),
                token_expiry: None,
                window: VecDeque::new(),
                heartbeat_interval: None,
                pending_heartbeat: None,
                seq: HashMap::new(),
            },
        );
        self.changed();
        RpcLink {
            rpc: self.clone(),
            conn,
            rx,
            heartbeat_next: None,
        }
    }

    pub(crate) fn hold(&self) -> Option<usize> {
        self.inner.config.hold
    }

    pub(crate) fn auto_publish(&self) -> Option<Duration> {
        self.inner.config.auto_publish
    }

    pub(crate) fn heartbeat_interval(&self, conn: usize) -> Option<Duration> {
        self.state()
            .conns
            .get(&conn)
            .and_then(|c| c.heartbeat_interval)
    }

    pub(crate) fn count_invalid(&self) {
        self.state().invalid += 1;
        self.changed();
    }

    /// Process one parsed request that arrived at `now`. With `ends_step`, it is only recorded.
    pub(crate) fn handle(
        &self,
        conn: usize,
        req: Request,
        now: Instant,
        ends_step: bool,
    ) -> Outcome {
        let cfg = &self.inner.config;
        let (rejected, delay) = {
            let mut st = self.state();
            let limit = cfg
                .rate_limit
                .as_ref()
                .filter(|rl| !ends_step && !rl.exempt.contains(&req.method));
            let rejected = match (limit, st.conns.get_mut(&conn)) {
                (Some(rl), Some(c)) => !admit(&mut c.window, rl, now),
                _ => false,
            };
            st.requests.push(RpcRequest {
                conn,
                id: req.id.clone(),
                method: req.method.clone(),
                params: req.params.clone(),
                at: now,
                rejected,
            });
            if rejected {
                st.rejected += 1;
            }
            if req.method == cfg.heartbeat_answer_method {
                let State {
                    conns, heartbeats, ..
                } = &mut *st;
                if let Some(hb) = conns
                    .get(&conn)
                    .and_then(|c| c.pending_heartbeat)
                    .and_then(|i| heartbeats.get_mut(i))
                {
                    hb.answered_at.get_or_insert(now);
                }
            }
            (
                rejected,
                st.delays.get(&req.method).copied().unwrap_or_default(),
            )
        };
        self.changed();
        if ends_step {
            return Outcome {
                end_step: true,
                ..Outcome::default()
            };
        }
        let mut out = Outcome {
            delay,
            ..Outcome::default()
        };
        let result = match cfg.rate_limit.as_ref().filter(|_| rejected) {
            Some(rl) => {
                out.close = rl.close;
                Err(rl.error.clone())
            }
            None => self.dispatch(conn, &req.method, &req.params, now, &mut out),
        };
        self.changed();
        out.reply = req.id_raw.map(|id| wire::response(&id, &result));
        out
    }

    fn dispatch(
        &self,
        conn: usize,
        method: &str,
        params: &Value,
        now: Instant,
        out: &mut Outcome,
    ) -> Result<Value, RpcError> {
        let cfg = &self.inner.config;
        if (cfg.private_methods)(method) && !self.state().authenticated(conn, now) {
            return Err(RpcError::unauthorized());
        }
        let reply = self.state().replies.get(method).cloned();
        if let Some(reply) = reply {
            return reply.call(params);
        }
        if method == cfg.auth_method {
            self.auth(conn, params, now)
        } else if method == cfg.subscribe_method {
            self.subscribe(conn, params, now)
        } else if method == cfg.unsubscribe_method {
            let channels = channels_param(params)?;
            let mut st = self.state();
            let Some(c) = st.conns.get_mut(&conn) else {
                return Ok(json!([]));
            };
            let gone: Vec<String> = channels
                .into_iter()
                .filter(|ch| c.subscribed.remove(ch))
                .collect();
            Ok(json!(gone))
        } else if method == cfg.set_heartbeat_method {
            let interval = params
                .get("interval")
                .and_then(Value::as_f64)
                .filter(|s| *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| RpcError::invalid_params("interval", "must be a positive number"))?;
            if let Some(c) = self.state().conns.get_mut(&conn) {
                c.heartbeat_interval = Some(interval);
                c.pending_heartbeat = None;
            }
            out.heartbeat = Some(Some(interval));
            Ok(json!("ok"))
        } else if method == cfg.disable_heartbeat_method {
            if let Some(c) = self.state().conns.get_mut(&conn) {
                c.heartbeat_interval = None;
                c.pending_heartbeat = None;
            }
            out.heartbeat = Some(None);
            Ok(json!("ok"))
        } else if method == cfg.heartbeat_answer_method {
            Ok(json!({ "version": VERSION }))
        } else if let Some(f) = &cfg.fallback {
            f(method, params)
        } else {
            Err(RpcError::method_not_found(method))
        }
    }

    fn auth(&self, conn: usize, params: &Value, now: Instant) -> Result<Value, RpcError> {
        let cfg = &self.inner.config;
        let grant = params
            .get("grant_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut st = self.state();
        *st.auth_counts.entry(grant.to_owned()).or_default() += 1;
        let checked = match grant {
            "client_credentials" => str_param(params, "client_id").and_then(|id| {
                let secret = str_param(params, "client_secret")?;
                let ok = if cfg.credentials.is_empty() {
                    !id.is_empty() && !secret.is_empty()
                } else {
                    cfg.credentials.iter().any(|(i, s)| i == id && s == secret)
                };
                ok.then_some(()).ok_or_else(RpcError::invalid_credentials)
            }),
            "refresh_token" => str_param(params, "refresh_token").and_then(|token| {
                st.refresh_tokens
                    .remove(token)
                    .then_some(())
                    .ok_or_else(RpcError::invalid_credentials)
            }),
            _ => Err(RpcError::invalid_params(
                "grant_type",
                "must be client_credentials or refresh_token",
            )),
        };
        if let Err(e) = checked {
            st.auth_failures += 1;
            return Err(e);
        }
        st.next_token += 1;
        let n = st.next_token;
        let access = format!("testkit-access-{n}");
        let refresh = format!("testkit-refresh-{n}");
        st.refresh_tokens.insert(refresh.clone());
        if let Some(c) = st.conns.get_mut(&conn) {
            c.token_expiry = Some(now + cfg.token_ttl);
        }
        Ok(json!({
            "access_token": access,
            "expires_in": cfg.token_ttl.as_secs(),
            "refresh_token": refresh,
            "token_type": "bearer",
            "scope": cfg.scope,
        }))
    }

    fn subscribe(&self, conn: usize, params: &Value, now: Instant) -> Result<Value, RpcError> {
        let cfg = &self.inner.config;
        let channels = channels_param(params)?;
        let mut st = self.state();
        let authed = st.authenticated(conn, now);
        let private = |ch: &str| (cfg.private_channels)(ch);
        if !authed
            && cfg.private_policy == PrivateChannelPolicy::Error
            && channels.iter().any(|ch| private(ch))
        {
            return Err(RpcError::unauthorized());
        }
        let Some(c) = st.conns.get_mut(&conn) else {
            return Ok(json!([]));
        };
        let mut acked = Vec::with_capacity(channels.len());
        for ch in channels {
            let omitted = cfg.omit.contains(&ch) || cfg.omit_where.as_ref().is_some_and(|p| p(&ch));
            if omitted || (!authed && private(&ch)) {
                continue;
            }
            c.subscribed.insert(ch.clone());
            acked.push(ch);
        }
        Ok(json!(acked))
    }

    pub(crate) fn heartbeat_tick(&self, conn: usize, now: Instant) -> HeartbeatTick {
        let close = self.inner.config.heartbeat_close;
        let mut st = self.state();
        let State {
            conns, heartbeats, ..
        } = &mut *st;
        let Some(c) = conns.get_mut(&conn) else {
            return HeartbeatTick::Off;
        };
        let Some(interval) = c.heartbeat_interval else {
            return HeartbeatTick::Off;
        };
        let unanswered = c
            .pending_heartbeat
            .and_then(|i| heartbeats.get(i))
            .is_some_and(|hb| hb.answered_at.is_none());
        if let (true, Some(code)) = (unanswered, close) {
            return HeartbeatTick::Close(code);
        }
        heartbeats.push(Heartbeat {
            conn,
            sent_at: now,
            answered_at: None,
        });
        c.pending_heartbeat = Some(heartbeats.len() - 1);
        drop(st);
        self.changed();
        HeartbeatTick::Send(wire::TEST_REQUEST, now + interval)
    }

    /// One auto-publish round for `conn`: a notification per subscribed channel.
    pub(crate) fn publish_tick(&self, conn: usize) -> Vec<String> {
        let method = &self.inner.config.notification_method;
        let mut st = self.state();
        let State {
            conns, published, ..
        } = &mut *st;
        let Some(c) = conns.get_mut(&conn) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(c.subscribed.len());
        for ch in &c.subscribed {
            let seq = c.seq.entry(ch.clone()).or_default();
            out.push(wire::notification(method, ch, &json!({ "seq": *seq })));
            *seq += 1;
            *published.entry(ch.clone()).or_default() += 1;
        }
        out
    }
}

/// Sliding-window admission: admit (and count) if fewer than `max` were admitted in the window.
fn admit(window: &mut VecDeque<Instant>, limit: &RateLimit, now: Instant) -> bool {
    while window
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= limit.window)
    {
        window.pop_front();
    }
    if window.len() >= limit.max {
        return false;
    }
    window.push_back(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_window_is_half_open() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let times = vec![ms(0), ms(500), ms(999), ms(1000), ms(1000), ms(3000)];
        assert_eq!(max_in_window(times.clone(), Duration::from_secs(1)), 4);
        assert_eq!(max_in_window(times.clone(), Duration::from_millis(1)), 2);
        assert_eq!(max_in_window(times.clone(), Duration::from_secs(10)), 6);
        assert_eq!(max_in_window(times, Duration::ZERO), 0);
        assert_eq!(max_in_window(Vec::new(), Duration::from_secs(1)), 0);
    }

    #[test]
    fn sliding_window_admission() {
        let limit = RateLimit::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = VecDeque::new();
        assert!(admit(&mut w, &limit, ms(0)));
        assert!(admit(&mut w, &limit, ms(10)));
        assert!(!admit(&mut w, &limit, ms(999)));
        assert!(admit(&mut w, &limit, ms(1000)));
        assert!(!admit(&mut w, &limit, ms(1009)));
        assert!(admit(&mut w, &limit, ms(1010)));
    }
}
