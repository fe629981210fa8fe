//! The Deribit simulator against a plain tokio-websockets client speaking Deribit's wire
//! protocol by hand.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};
use websockex_nova_testkit::deribit::{
    client_signature, ClosedBy, CreditLimits, CreditPool, DeribitSim, SimConfig,
};
use websockex_nova_testkit::RpcError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous, so paused-time tests never hit it by accident.
const T: Duration = Duration::from_secs(60);
const START_MS: u64 = 1_700_000_000_000;

fn config() -> SimConfig {
    let mut c = SimConfig::default();
    c.start_time_ms = Some(START_MS);
    c
}

async fn start(c: SimConfig) -> DeribitSim {
    DeribitSim::start(c).await.unwrap()
}

/// A hand-written Deribit client: requests by id, notifications kept aside.
struct Client {
    ws: Ws,
    next_id: u64,
    backlog: VecDeque<Value>,
}

impl Client {
    async fn connect(sim: &DeribitSim) -> Client {
        // TCP_NODELAY: with paused time, Nagle's algorithm could hold a frame back while the
        // clock jumps.
        let tcp = TcpStream::connect(sim.addr()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (ws, _) = ClientBuilder::new()
            .uri(&sim.url())
            .unwrap()
            .connect_on(MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        Client {
            ws,
            next_id: 0,
            backlog: VecDeque::new(),
        }
    }

    async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    /// Send a request; returns its id.
    async fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(&req.to_string()).await;
        id
    }

    /// The next message from the socket (panics on close or timeout).
    async fn read(&mut self) -> Value {
        let msg = tokio::time::timeout(T, self.ws.next())
            .await
            .expect("timed out")
            .expect("stream ended")
            .expect("error");
        let text = msg.as_text().unwrap_or_else(|| panic!("not text: {msg:?}"));
        serde_json::from_str(text).unwrap()
    }

    /// The response with this id; other messages go to the backlog.
    async fn response(&mut self, id: u64) -> Value {
        if let Some(pos) = self.backlog.iter().position(|m| m["id"] == id) {
            return self.backlog.remove(pos).unwrap();
        }
        loop {
            let m = self.read().await;
            if m["id"] == id {
                return m;
            }
            self.backlog.push_back(m);
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        self.response(id).await
    }

    async fn result(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        assert!(r.get("error").is_none(), "{method}: {r}");
        r["result"].clone()
    }

    async fn error(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        assert!(r.get("result").is_none(), "{method}: {r}");
        r["error"].clone()
    }

    /// The next notification on `channel` (its `data`), looking at the backlog first.
    async fn next_on(&mut self, channel: &str) -> Value {
        let is = |m: &Value| m["method"] == "subscription" && m["params"]["channel"] == channel;
        if let Some(pos) = self.backlog.iter().position(is) {
            return self.backlog.remove(pos).unwrap()["params"]["data"].clone();
        }
        loop {
            let m = self.read().await;
            if is(&m) {
                return m["params"]["data"].clone();
            }
            self.backlog.push_back(m);
        }
    }

    /// Notifications on `channel` received so far (backlog), removed from it.
    fn take_backlog(&mut self, channel: &str) -> Vec<Value> {
        let (mine, rest): (Vec<Value>, Vec<Value>) = self
            .backlog
            .drain(..)
            .partition(|m| m["params"]["channel"] == channel);
        self.backlog = rest.into();
        mine.into_iter()
            .map(|m| m["params"]["data"].clone())
            .collect()
    }

    /// Read until the connection ends: the close frame's code and reason, if any.
    async fn closed(&mut self) -> Option<(u16, String)> {
        let mut close = None;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(T, self.ws.next()).await {
            if let Some((code, reason)) = msg.as_close() {
                close = Some((u16::from(code), reason.to_owned()));
            } else if let Some(text) = msg.as_text() {
                self.backlog.push_back(serde_json::from_str(text).unwrap());
            }
        }
        close
    }

    async fn auth(&mut self) -> Value {
        self.result(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "demo-key",
                   "client_secret": "demo-secret"}),
        )
        .await
    }
}

fn code(err: &Value) -> i64 {
    err["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no code: {err}"))
}

// ---- JSON-RPC envelope ----

#[tokio::test(start_paused = true)]
async fn responses_echo_ids_and_carry_deribit_fields() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    c.send_text(r#"{"jsonrpc":"2.0","id":"abc-1","method":"public/get_time"}"#)
        .await;
    let r = c.read().await;
    assert_eq!(r["id"], "abc-1");
    assert!(r["result"].as_u64().unwrap() >= START_MS);
    let (us_in, us_out) = (r["usIn"].as_u64().unwrap(), r["usOut"].as_u64().unwrap());
    assert!(us_in >= START_MS * 1000);
    assert_eq!(r["usDiff"].as_u64().unwrap(), us_out - us_in);
    assert_eq!(r["testnet"], true);
    // Large integer ids are echoed exactly as written.
    c.send_text(
        r#"{"jsonrpc":"2.0","id":12345678901234567890,"method":"public/test","params":{}}"#,
    )
    .await;
    let m = tokio::time::timeout(T, c.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(m
        .as_text()
        .unwrap()
        .contains(r#""id":12345678901234567890,"#));
    // A request without an id is answered without one.
    c.send_text(r#"{"jsonrpc":"2.0","method":"public/test"}"#)
        .await;
    let r = c.read().await;
    assert!(r.get("id").is_none());
    assert_eq!(r["result"]["version"], "1.2.26");
    let hello = c
        .result(
            "public/hello",
            json!({"client_name": "t", "client_version": "1"}),
        )
        .await;
    assert_eq!(hello, json!({"version": "1.2.26"}));
    let ex = c
        .error("public/test", json!({"expected_result": "exception"}))
        .await;
    assert_eq!(code(&ex), 11094);
    let mut testnet_off = config();
    testnet_off.testnet = false;
    let sim2 = start(testnet_off).await;
    let mut c2 = Client::connect(&sim2).await;
    assert_eq!(c2.call("public/test", json!({})).await["testnet"], false);
}

#[tokio::test(start_paused = true)]
async fn bad_frames_get_deribit_errors_and_the_socket_stays_open() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    c.send_text("this is not json").await;
    let r = c.read().await;
    assert!(r.get("id").is_none());
    assert_eq!(
        r["error"],
        json!({"code": 11050, "message": "bad_request", "data": "invalid json"})
    );
    assert!(r["usIn"].is_u64());
    c.send_text(r#"[{"jsonrpc":"2.0","id":1,"method":"public/test"}]"#)
        .await;
    assert_eq!(code(&c.read().await["error"]), -32600);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"public/test","params":{{"pad":"{}"}}}}"#,
        "x".repeat(33 * 1024)
    );
    c.send_text(&big).await;
    let r = c.read().await;
    assert_eq!(
        r["error"],
        json!({"code": -32600, "message": "request entity too large"})
    );
    let e = c.error("public/nope", json!({})).await;
    assert_eq!(e, json!({"code": -32601, "message": "Method not found"}));
    let e = c.error("public/ticker", json!({})).await;
    assert_eq!(code(&e), -32602);
    assert_eq!(
        e["data"],
        json!({"reason": "value is required", "param": "instrument_name"})
    );
    let e = c
        .error(
            "public/ticker",
            json!({"instrument_name": "NOPE-PERPETUAL"}),
        )
        .await;
    assert_eq!(
        e["data"],
        json!({"reason": "instrument not found", "param": "instrument_name"})
    );
    // Still open and answering.
    assert_eq!(
        c.result("public/test", json!({})).await["version"],
        "1.2.26"
    );
    assert_eq!(sim.invalid_frames(), 3);
    assert_eq!(sim.connections(), vec![0]);
}

// ---- auth ----

#[tokio::test(start_paused = true)]
async fn client_credentials_authenticate_the_connection() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    let e = c
        .error(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "demo-key",
                   "client_secret": "wrong"}),
        )
        .await;
    assert_eq!(e, json!({"code": 13004, "message": "invalid_credentials"}));
    assert!(!sim.is_authenticated(0));
    let e = c
        .error("private/get_account_summary", json!({"currency": "BTC"}))
        .await;
    assert_eq!(
        e,
        json!({"code": 13009, "message": "unauthorized", "data": {"reason": "invalid_token"}})
    );
    let r = c
        .result(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "demo-key",
                   "client_secret": "demo-secret", "scope": "trade:read_write wallet:read_write",
                   "state": "s1"}),
        )
        .await;
    assert_eq!(r["token_type"], "bearer");
    assert_eq!(r["expires_in"], 900);
    assert_eq!(r["state"], "s1");
    assert_eq!(
        r["scope"],
        "connection mainaccount trade:read_write wallet:read"
    );
    assert!(r["access_token"]
        .as_str()
        .unwrap()
        .starts_with(&START_MS.to_string()));
    assert_ne!(r["access_token"], r["refresh_token"]);
    assert!(sim.is_authenticated(0));
    assert_eq!(sim.account(0).as_deref(), Some("demo-key"));
    // Private requests need no access_token on this connection.
    let s = c
        .result("private/get_account_summary", json!({"currency": "BTC"}))
        .await;
    assert_eq!(s["currency"], "BTC");
    assert_eq!(s["balance"], 10.0);
    assert!(s["limits"]["matching_engine"].is_object());
    assert_eq!(sim.auth_requests("client_credentials"), 2);
    assert_eq!(sim.auth_failures(), 1);
    // A read-only trade scope cannot trade.
    let mut ro = Client::connect(&sim).await;
    ro.result(
        "public/auth",
        json!({"grant_type": "client_credentials", "client_id": "demo-key",
               "client_secret": "demo-secret", "scope": "trade:read"}),
    )
    .await;
    let e = ro
        .error(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": 1000}),
        )
        .await;
    assert_eq!(code(&e), 13403);
}

#[tokio::test(start_paused = true)]
async fn client_signature_checks_signature_timestamp_and_nonce() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    let sign = |ts: u64, nonce: &str, data: &str| {
        json!({"grant_type": "client_signature", "client_id": "demo-key", "timestamp": ts,
               "nonce": nonce, "data": data,
               "signature": client_signature("demo-secret", ts, nonce, data)})
    };
    let now = sim.now_ms();
    let r = c.result("public/auth", sign(now, "n-1", "")).await;
    assert_eq!(r["scope"], "connection mainaccount");
    assert!(sim.is_authenticated(0));
    // With data, and the timestamp as sent by CCXT (nonce = timestamp).
    c.result("public/auth", sign(now, &now.to_string(), "hello"))
        .await;
    // A reused nonce.
    assert_eq!(
        code(&c.error("public/auth", sign(now, "n-1", "")).await),
        13004
    );
    // A timestamp more than 60 s away, either way.
    assert_eq!(
        code(&c.error("public/auth", sign(now - 61_000, "n-2", "")).await),
        13004
    );
    assert_eq!(
        code(&c.error("public/auth", sign(now + 61_000, "n-3", "")).await),
        13004
    );
    c.result("public/auth", sign(now - 59_000, "n-4", "")).await;
    // A wrong signature.
    let mut bad = sign(now, "n-5", "");
    bad["signature"] = json!(client_signature("other-secret", now, "n-5", ""));
    assert_eq!(code(&c.error("public/auth", bad).await), 13004);
    // Missing fields.
    let e = c
        .error(
            "public/auth",
            json!({"grant_type": "client_signature", "client_id": "demo-key"}),
        )
        .await;
    assert_eq!(e["data"]["param"], "timestamp");
    assert_eq!(sim.auth_requests("client_signature"), 8);
}

#[tokio::test(start_paused = true)]
async fn refresh_token_issues_new_tokens_and_invalidates_the_old_ones() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    let first = c.auth().await;
    let refresh =
        |t: &Value| json!({"grant_type": "refresh_token", "refresh_token": t["refresh_token"]});
    let second = c.result("public/auth", refresh(&first)).await;
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["scope"], first["scope"]);
    assert!(sim.is_authenticated(0));
    // The old refresh token is spent, and the old access token revoked.
    let e = c.error("public/auth", refresh(&first)).await;
    assert_eq!(code(&e), 13009);
    let e = c
        .error(
            "private/get_position",
            json!({"instrument_name": "BTC-PERPETUAL", "access_token": first["access_token"]}),
        )
        .await;
    assert_eq!(code(&e), 13009);
    let ok = c
        .result(
            "private/get_position",
            json!({"instrument_name": "BTC-PERPETUAL", "access_token": second["access_token"]}),
        )
        .await;
    assert_eq!(ok["size"], 0.0);
}

#[tokio::test(start_paused = true)]
async fn tokens_expire_and_can_be_expired_or_revoked() {
    let sim = start(config().with_token_ttl(Duration::from_secs(5))).await;
    let faults = sim.faults();
    let mut c = Client::connect(&sim).await;
    let t = c.auth().await;
    assert_eq!(t["expires_in"], 5);
    c.result("private/get_open_orders", json!({})).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!sim.is_authenticated(0));
    let e = c.error("private/get_open_orders", json!({})).await;
    assert_eq!(e["data"]["reason"], "invalid_token");
    // The refresh token still works.
    let t2 = c
        .result(
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}),
        )
        .await;
    c.result("private/get_open_orders", json!({})).await;
    // The fault: every access token expires now; refresh still works.
    faults.expire_tokens();
    assert_eq!(
        code(&c.error("private/get_open_orders", json!({})).await),
        13009
    );
    let t3 = c
        .result(
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": t2["refresh_token"]}),
        )
        .await;
    c.result("private/get_open_orders", json!({})).await;
    // Revoked: nothing works, not even the refresh token.
    faults.revoke_tokens();
    assert_eq!(
        code(&c.error("private/get_open_orders", json!({})).await),
        13009
    );
    let e = c
        .error(
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": t3["refresh_token"]}),
        )
        .await;
    assert_eq!(code(&e), 13009);
    // `expires:N` in the scope sets the lifetime.
    let t4 = c
        .result(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "demo-key",
                   "client_secret": "demo-secret", "scope": "expires:42"}),
        )
        .await;
    assert_eq!(t4["expires_in"], 42);
    assert_eq!(t4["scope"], "connection mainaccount expires:42");
}

#[tokio::test(start_paused = true)]
async fn connection_tokens_stay_on_their_connection_and_session_tokens_travel() {
    let sim = start(config()).await;
    let mut a = Client::connect(&sim).await;
    let mut b = Client::connect(&sim).await;
    let t = a.auth().await;
    let e = b
        .error(
            "private/get_open_orders",
            json!({"access_token": t["access_token"]}),
        )
        .await;
    assert_eq!(code(&e), 13009);
    let e = b
        .error(
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}),
        )
        .await;
    assert_eq!(code(&e), 13009);
    // A session-scoped token works on another connection, and is adopted by it.
    let s = a
        .result(
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "demo-key",
                   "client_secret": "demo-secret", "scope": "session:bot"}),
        )
        .await;
    assert_eq!(s["scope"], "session:bot mainaccount");
    b.result(
        "private/get_open_orders",
        json!({"access_token": s["access_token"]}),
    )
    .await;
    assert!(sim.is_authenticated(1));
    b.result("private/get_open_orders", json!({})).await;
    // Connection-scoped tokens die with their connection.
    drop(a);
    assert!(sim.wait_for(T, |s| s.connections() == vec![1]).await);
    let mut c = Client::connect(&sim).await;
    let e = c
        .error(
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}),
        )
        .await;
    assert_eq!(code(&e), 13009);
}

// ---- heartbeats ----

#[tokio::test(start_paused = true)]
async fn heartbeats_are_sent_and_answered() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    let e = c
        .error("public/set_heartbeat", json!({"interval": 5}))
        .await;
    assert_eq!(code(&e), -32602);
    assert_eq!(e["data"]["param"], "interval");
    assert_eq!(
        code(&c.error("public/set_heartbeat", json!({})).await),
        -32602
    );
    let t0 = Instant::now();
    assert_eq!(
        c.result("public/set_heartbeat", json!({"interval": 10}))
            .await,
        "ok"
    );
    for round in 0..3 {
        let m = c.read().await;
        assert_eq!(
            m,
            json!({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}})
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(10 * (round + 1)));
        // Nothing else was sent this interval: an idle socket also gets a heartbeat.
        let m = c.read().await;
        assert_eq!(m["params"]["type"], "heartbeat");
        assert!(m.get("id").is_none());
        c.result("public/test", json!({})).await;
    }
    assert_eq!(sim.heartbeats_answered(), 3);
    c.result("public/disable_heartbeat", json!({})).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(sim.heartbeats().len(), 3);
    assert_eq!(sim.connections(), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_test_request_closes_with_4000_and_cancels_orders() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    c.auth().await;
    c.result("private/enable_cancel_on_disconnect", json!({}))
        .await;
    let bid = sim.ticker("BTC-PERPETUAL").unwrap()["best_bid_price"]
        .as_f64()
        .unwrap();
    c.result(
        "private/buy",
        json!({"instrument_name": "BTC-PERPETUAL", "amount": 100, "price": bid - 500.0}),
    )
    .await;
    assert_eq!(sim.open_orders("demo-key").len(), 1);
    let t0 = Instant::now();
    c.result("public/set_heartbeat", json!({"interval": 10}))
        .await;
    // Never answer.
    assert_eq!(c.closed().await, Some((4000, "heartbeat close".to_owned())));
    // Sent at 10 s, unanswered at 20 s.
    let hb = sim.heartbeats();
    assert_eq!(hb.len(), 1);
    assert_eq!(hb[0].sent_at - t0, Duration::from_secs(10));
    assert!(hb[0].answered_at.is_none());
    assert!(t0.elapsed() >= Duration::from_secs(20) && t0.elapsed() < Duration::from_secs(23));
    let close = sim.wait_closed(0, T).await.unwrap();
    assert_eq!((close.by, close.code), (ClosedBy::Server, Some(4000)));
    let orders = sim.orders("demo-key");
    assert_eq!(orders[0]["order_state"], "cancelled");
    assert_eq!(orders[0]["cancel_reason"], "cancel_on_disconnect");
    assert_eq!(sim.cod_cancelled(), 1);
}

// ---- subscriptions ----

#[tokio::test(start_paused = true)]
async fn subscription_acks_follow_deribit_rules() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    // user.* is dropped from a public subscribe; invalid channels are dropped silently.
    let ack = c
        .result(
            "public/subscribe",
            json!({"channels": ["ticker.BTC-PERPETUAL.100ms", "book.ETH-PERPETUAL.100ms",
                                "user.orders.BTC-PERPETUAL.raw", "ticker.NOPE.100ms",
                                "ticker.BTC-PERPETUAL.5ms", "deribit_price_index.btc_usd",
                                "no.such.channel"]}),
        )
        .await;
    let mut got: Vec<&str> = ack
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "book.ETH-PERPETUAL.100ms",
            "deribit_price_index.btc_usd",
            "ticker.BTC-PERPETUAL.100ms"
        ]
    );
    // Raw public channels need auth: the whole request is refused.
    let e = c
        .error(
            "public/subscribe",
            json!({"channels": ["ticker.ETH-PERPETUAL.100ms", "book.BTC-PERPETUAL.raw"]}),
        )
        .await;
    assert_eq!(
        e,
        json!({"code": 13778, "message": "raw_subscriptions_not_available_for_unauthorized"})
    );
    assert!(!sim
        .subscriptions(0)
        .contains(&"ticker.ETH-PERPETUAL.100ms".to_owned()));
    // private/subscribe needs auth.
    let e = c
        .error(
            "private/subscribe",
            json!({"channels": ["user.portfolio.btc"]}),
        )
        .await;
    assert_eq!(code(&e), 13009);
    assert_eq!(code(&c.error("public/subscribe", json!({})).await), -32602);
    // The book snapshot comes once; re-subscribing is acked without a new one.
    let snap = c.next_on("book.ETH-PERPETUAL.100ms").await;
    assert_eq!(snap["type"], "snapshot");
    let again = c
        .result(
            "public/subscribe",
            json!({"channels": ["book.ETH-PERPETUAL.100ms"]}),
        )
        .await;
    assert_eq!(again, json!(["book.ETH-PERPETUAL.100ms"]));
    for _ in 0..5 {
        let d = c.next_on("book.ETH-PERPETUAL.100ms").await;
        assert_eq!(d["type"], "change");
    }
    // Unsubscribe returns only what was removed.
    let gone = c
        .result(
            "public/unsubscribe",
            json!({"channels": ["book.ETH-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.100ms"]}),
        )
        .await;
    assert_eq!(gone, json!(["book.ETH-PERPETUAL.100ms"]));
    // After auth: raw and private channels.
    c.auth().await;
    let ack = c
        .result(
            "private/subscribe",
            json!({"channels": ["book.BTC-PERPETUAL.raw", "user.orders.any.any.raw",
                                "user.portfolio.btc"]}),
        )
        .await;
    assert_eq!(ack.as_array().unwrap().len(), 3);
    assert_eq!(sim.subscriptions(0).len(), 5);
    assert_eq!(c.result("public/unsubscribe_all", json!({})).await, "ok");
    assert!(sim.subscriptions(0).is_empty());
    assert_eq!(c.result("private/unsubscribe_all", json!({})).await, "ok");
}

#[tokio::test(start_paused = true)]
async fn acks_come_in_a_seeded_order() {
    let channels: Vec<String> = ["BTC-PERPETUAL", "ETH-PERPETUAL"]
        .iter()
        .flat_map(|i| ["100ms", "agg2"].map(|iv| format!("ticker.{i}.{iv}")))
        .chain([
            "deribit_price_index.btc_usd".to_owned(),
            "platform_state".to_owned(),
        ])
        .collect();
    let mut acks = Vec::new();
    for seed in [1, 1, 2] {
        let sim = start(config().with_seed(seed)).await;
        let mut c = Client::connect(&sim).await;
        acks.push(
            c.result("public/subscribe", json!({ "channels": channels }))
                .await,
        );
    }
    assert_eq!(acks[0], acks[1]);
    let mut sorted: Vec<Value> = acks[2].as_array().unwrap().clone();
    sorted.sort_by_key(|v| v.as_str().unwrap().to_owned());
    let mut want: Vec<Value> = channels.iter().map(|c| json!(c)).collect();
    want.sort_by_key(|v| v.as_str().unwrap().to_owned());
    assert_eq!(sorted, want);
    let mut plain = config();
    plain.reorder_acks = false;
    let sim = start(plain).await;
    let mut c = Client::connect(&sim).await;
    let ack = c
        .result("public/subscribe", json!({ "channels": channels }))
        .await;
    assert_eq!(ack, json!(channels));
}

// ---- market data ----

/// Apply a book message to a local book; panics if an action does not fit.
fn apply(book: &mut BTreeMap<String, f64>, side: &str, levels: &Value) {
    for l in levels.as_array().unwrap() {
        let key = format!("{side}{}", l[1]);
        let amount = l[2].as_f64().unwrap();
        match l[0].as_str().unwrap() {
            "new" => assert!(
                book.insert(key, amount).is_none(),
                "new on an existing level"
            ),
            "change" => assert!(
                book.insert(key, amount).is_some(),
                "change of a missing level"
            ),
            "delete" => {
                assert_eq!(amount, 0.0);
                assert!(book.remove(&key).is_some(), "delete of a missing level");
            }
            a => panic!("action {a}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn books_send_a_snapshot_then_chained_changes() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    c.auth().await;
    for iv in ["raw", "100ms"] {
        let ch = format!("book.BTC-PERPETUAL.{iv}");
        c.result("public/subscribe", json!({ "channels": [ch] }))
            .await;
        let snap = c.next_on(&ch).await;
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["instrument_name"], "BTC-PERPETUAL");
        assert!(snap.get("prev_change_id").is_none());
        let bids: Vec<f64> = snap["bids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l[1].as_f64().unwrap())
            .collect();
        assert!(bids.windows(2).all(|w| w[0] > w[1]), "bids best first");
        let asks: Vec<f64> = snap["asks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l[1].as_f64().unwrap())
            .collect();
        assert!(asks.windows(2).all(|w| w[0] < w[1]), "asks best first");
        assert!(bids[0] < asks[0]);
        let mut book = BTreeMap::new();
        apply(&mut book, "b", &snap["bids"]);
        apply(&mut book, "a", &snap["asks"]);
        let mut last = snap["change_id"].as_u64().unwrap();
        let mut jumped = false;
        for _ in 0..30 {
            let d = c.next_on(&ch).await;
            assert_eq!(d["type"], "change");
            assert_eq!(d["prev_change_id"].as_u64(), Some(last));
            let id = d["change_id"].as_u64().unwrap();
            assert!(id > last);
            jumped |= id > last + 1;
            last = id;
            apply(&mut book, "b", &d["bids"]);
            apply(&mut book, "a", &d["asks"]);
        }
        assert!(jumped, "change ids jump");
        c.result("public/unsubscribe", json!({ "channels": [ch] }))
            .await;
    }
    // get_order_book: [price, amount] levels and a change_id.
    let ob = c
        .result(
            "public/get_order_book",
            json!({"instrument_name": "BTC-PERPETUAL", "depth": 5}),
        )
        .await;
    assert_eq!(ob["bids"].as_array().unwrap().len(), 5);
    assert_eq!(ob["asks"][0].as_array().unwrap().len(), 2);
    assert!(ob["change_id"].as_u64().unwrap() > 0);
    assert!(ob["best_bid_price"].as_f64().unwrap() < ob["best_ask_price"].as_f64().unwrap());
    // Grouped book: full windows.
    let ch = "book.BTC-PERPETUAL.10.10.100ms";
    c.result("public/subscribe", json!({ "channels": [ch] }))
        .await;
    let w = c.next_on(ch).await;
    assert!(w.get("type").is_none());
    let bids = w["bids"].as_array().unwrap();
    assert!(bids.len() <= 10 && !bids.is_empty());
    assert_eq!(bids[0].as_array().unwrap().len(), 2);
    assert_eq!(bids[0][0].as_f64().unwrap() % 10.0, 0.0);
}

#[tokio::test(start_paused = true)]
async fn tickers_trades_index_and_intervals() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    c.result(
        "public/subscribe",
        json!({"channels": ["ticker.BTC-PERPETUAL.100ms", "ticker.ETH-PERPETUAL.agg2",
                            "trades.BTC-PERPETUAL.100ms", "trades.future.any.100ms",
                            "deribit_price_index.btc_usd", "quote.BTC-PERPETUAL"]}),
    )
    .await;
    let t = c.next_on("ticker.BTC-PERPETUAL.100ms").await;
    for field in [
        "timestamp",
        "instrument_name",
        "state",
        "stats",
        "open_interest",
        "best_bid_price",
        "best_bid_amount",
        "best_ask_price",
        "best_ask_amount",
        "index_price",
        "min_price",
        "max_price",
        "mark_price",
        "last_price",
        "estimated_delivery_price",
        "funding_8h",
        "current_funding",
    ] {
        assert!(t.get(field).is_some(), "ticker lacks {field}: {t}");
    }
    assert_eq!(t["state"], "open");
    assert!(t["stats"]["volume"].is_number());
    let t2 = c.next_on("ticker.BTC-PERPETUAL.100ms").await;
    assert_eq!(
        t2["timestamp"].as_u64().unwrap() - t["timestamp"].as_u64().unwrap(),
        100
    );
    let a = c.next_on("ticker.ETH-PERPETUAL.agg2").await;
    let b = c.next_on("ticker.ETH-PERPETUAL.agg2").await;
    assert_eq!(
        b["timestamp"].as_u64().unwrap() - a["timestamp"].as_u64().unwrap(),
        2000
    );
    let trades = c.next_on("trades.BTC-PERPETUAL.100ms").await;
    let first = &trades.as_array().unwrap()[0];
    for field in [
        "trade_seq",
        "trade_id",
        "timestamp",
        "tick_direction",
        "price",
        "mark_price",
        "index_price",
        "instrument_name",
        "direction",
        "amount",
    ] {
        assert!(first.get(field).is_some(), "trade lacks {field}");
    }
    let any = c.next_on("trades.future.any.100ms").await;
    assert!(any.as_array().unwrap().iter().all(|t| t["instrument_name"]
        .as_str()
        .unwrap()
        .starts_with("BTC-")
        || t["instrument_name"].as_str().unwrap().starts_with("ETH-")));
    let idx = c.next_on("deribit_price_index.btc_usd").await;
    assert_eq!(idx["index_name"], "btc_usd");
    assert!(idx["price"].as_f64().unwrap() > 50_000.0);
    let q = c.next_on("quote.BTC-PERPETUAL").await;
    assert!(q["best_bid_price"].as_f64().unwrap() < q["best_ask_price"].as_f64().unwrap());
    assert!(sim.notifications_sent("ticker.BTC-PERPETUAL.100ms") >= 2);
    // Notifications carry no id and no us* fields.
    let raw = c.read().await;
    assert_eq!(raw["method"], "subscription");
    assert!(raw.get("id").is_none() && raw.get("usIn").is_none());
}

#[tokio::test(start_paused = true)]
async fn market_data_methods() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    let t = c
        .result("public/get_time", json!({}))
        .await
        .as_u64()
        .unwrap();
    assert!((START_MS..START_MS + 1000).contains(&t));
    assert_eq!(
        c.result("public/status", json!({})).await,
        json!({"locked": "false", "locked_indices": []})
    );
    let all = c
        .result("public/get_instruments", json!({"currency": "BTC"}))
        .await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instrument_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3);
    assert_eq!(names[0], "BTC-PERPETUAL");
    assert!(names[2].ends_with("-70000-C"));
    let perp = &all[0];
    assert_eq!(perp["kind"], "future");
    assert_eq!(perp["settlement_period"], "perpetual");
    assert_eq!(perp["instrument_type"], "reversed");
    assert_eq!(perp["tick_size"], 0.5);
    assert_eq!(perp["min_trade_amount"], 10.0);
    assert_eq!(perp["expiration_timestamp"], 32_503_708_800_000u64);
    let options = c
        .result(
            "public/get_instruments",
            json!({"currency": "BTC", "kind": "option"}),
        )
        .await;
    assert_eq!(options[0]["option_type"], "call");
    assert_eq!(options[0]["strike"], 70_000.0);
    let any = c
        .result("public/get_instruments", json!({"currency": "any"}))
        .await;
    assert_eq!(any.as_array().unwrap().len(), 4);
    let e = c
        .error("public/get_instruments", json!({"currency": "DOGE"}))
        .await;
    assert_eq!(
        e["data"],
        json!({"reason": "invalid currency", "param": "currency"})
    );
    let tk = c
        .result("public/ticker", json!({"instrument_name": names[2]}))
        .await;
    assert!(tk["greeks"]["delta"].is_number() && tk["underlying_price"].is_number());
    let ip = c
        .result("public/get_index_price", json!({"index_name": "eth_usd"}))
        .await;
    assert!(ip["index_price"].as_f64().unwrap() > 1_000.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lt = c
        .result(
            "public/get_last_trades_by_instrument",
            json!({"instrument_name": "BTC-PERPETUAL", "count": 3}),
        )
        .await;
    assert_eq!(lt["trades"].as_array().unwrap().len(), 3);
    // Params may be left out, and numbers may come as strings.
    let ob = c
        .result(
            "public/get_order_book",
            json!({"instrument_name": "ETH-PERPETUAL", "depth": "1"}),
        )
        .await;
    assert_eq!(ob["bids"].as_array().unwrap().len(), 1);
    c.send_text(r#"{"jsonrpc":"2.0","id":77,"method":"public/get_time"}"#)
        .await;
    assert!(c.response(77).await["result"].is_u64());
    // Same seed, same market.
    let a = start(config().with_seed(9)).await;
    let b = start(config().with_seed(9)).await;
    let (ba, bb) = (
        a.order_book("BTC-PERPETUAL").unwrap(),
        b.order_book("BTC-PERPETUAL").unwrap(),
    );
    assert_eq!(
        (&ba["bids"], &ba["asks"], &ba["change_id"]),
        (&bb["bids"], &bb["asks"], &bb["change_id"])
    );
    assert_eq!(a.instruments(), sim.instruments());
}

// ---- trading ----

#[tokio::test(start_paused = true)]
async fn orders_match_and_private_channels_notify() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    c.auth().await;
    let ack = c
        .result(
            "private/subscribe",
            json!({"channels": ["user.orders.BTC-PERPETUAL.raw", "user.orders.any.any.100ms",
                                "user.trades.BTC-PERPETUAL.raw", "user.portfolio.btc"]}),
        )
        .await;
    assert_eq!(ack.as_array().unwrap().len(), 4);
    let p0 = c.next_on("user.portfolio.btc").await;
    assert_eq!(p0["balance"], 10.0);
    let tk = sim.ticker("BTC-PERPETUAL").unwrap();
    let bid = tk["best_bid_price"].as_f64().unwrap();
    let ask = tk["best_ask_price"].as_f64().unwrap();

    // A passive limit order rests.
    let r = c
        .result(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 100, "type": "limit",
                   "price": bid - 1000.0, "label": "cl-1"}),
        )
        .await;
    let order = &r["order"];
    assert_eq!(order["order_state"], "open");
    assert_eq!(order["direction"], "buy");
    assert_eq!(order["label"], "cl-1");
    assert_eq!(order["amount"], 100.0);
    assert_eq!(r["trades"], json!([]));
    let id = order["order_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("BTC-"));
    // user.orders.*.raw: one object; .100ms: an array.
    let note = c.next_on("user.orders.BTC-PERPETUAL.raw").await;
    assert_eq!(note["order_id"], id.as_str());
    let batch = c.next_on("user.orders.any.any.100ms").await;
    assert_eq!(batch[0]["order_id"], id.as_str());
    let open = c
        .result(
            "private/get_open_orders_by_currency",
            json!({"currency": "BTC"}),
        )
        .await;
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(
        c.result(
            "private/get_open_orders_by_currency",
            json!({"currency": "ETH"})
        )
        .await,
        json!([])
    );
    // The resting order shows in the book.
    let ob = sim.order_book("BTC-PERPETUAL").unwrap();
    assert!(ob["bids"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l[0].as_f64() == Some(bid - 1000.0)));

    // A market order fills against the best levels.
    let r = c
        .result(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 50, "type": "market"}),
        )
        .await;
    assert_eq!(r["order"]["order_state"], "filled");
    assert_eq!(r["order"]["price"], "market_price");
    let trades = r["trades"].as_array().unwrap();
    assert!(!trades.is_empty());
    assert_eq!(trades[0]["liquidity"], "T");
    assert!((trades[0]["price"].as_f64().unwrap() - ask).abs() < 500.0);
    assert!(trades[0]["fee"].as_f64().unwrap() > 0.0);
    let ut = c.next_on("user.trades.BTC-PERPETUAL.raw").await;
    assert!(ut.is_array());
    let pos = c
        .result(
            "private/get_position",
            json!({"instrument_name": "BTC-PERPETUAL"}),
        )
        .await;
    assert_eq!(pos["size"], 50.0);
    assert_eq!(pos["direction"], "buy");
    // The taker fee came off the balance.
    let pf = c.take_backlog("user.portfolio.btc");
    assert!(
        pf.last().unwrap()["balance"].as_f64().unwrap() < 10.0,
        "{pf:?}"
    );

    // A crossing limit sell (contracts instead of amount) fills; post_only moves or rejects.
    let r = c
        .result(
            "private/sell",
            json!({"instrument_name": "BTC-PERPETUAL", "contracts": 5, "price": bid - 100.0,
                   "time_in_force": "immediate_or_cancel", "reduce_only": true}),
        )
        .await;
    assert_eq!(r["order"]["amount"], 50.0);
    assert_eq!(r["order"]["order_state"], "filled");
    let e = c
        .error(
            "private/sell",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": bid + 5000.0,
                   "reduce_only": true}),
        )
        .await;
    assert_eq!(code(&e), 10001);
    let now_ask = sim.ticker("BTC-PERPETUAL").unwrap()["best_ask_price"]
        .as_f64()
        .unwrap();
    let e = c
        .error(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": now_ask + 100.0,
                   "post_only": true, "reject_post_only": true}),
        )
        .await;
    assert_eq!(code(&e), 11054);
    let e = c
        .error(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 15, "price": 100}),
        )
        .await;
    assert_eq!(e["data"]["param"], "amount");
    let e = c
        .error(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": 100.3}),
        )
        .await;
    assert_eq!(code(&e), 10043);
    let e = c
        .error(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 10}),
        )
        .await;
    assert_eq!(
        e["data"],
        json!({"reason": "value is required", "param": "price"})
    );

    // Cancel: by id, unknown, already closed; cancel_all counts.
    let r = c.result("private/cancel", json!({"order_id": id})).await;
    assert_eq!(r["order_state"], "cancelled");
    assert_eq!(r["cancel_reason"], "user_request");
    assert_eq!(
        c.error("private/cancel", json!({"order_id": "BTC-1"}))
            .await,
        json!({"code": 10004, "message": "order_not_found"})
    );
    assert_eq!(
        code(&c.error("private/cancel", json!({"order_id": id})).await),
        11044
    );
    for k in 1..=3 {
        c.result(
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": bid - 2000.0 - k as f64,
                   "label": "grid"}),
        )
        .await;
    }
    c.result(
        "private/sell",
        json!({"instrument_name": "ETH-PERPETUAL", "amount": 1, "price": 9000.0}),
    )
    .await;
    assert_eq!(
        c.result("private/cancel_by_label", json!({"label": "grid"}))
            .await,
        3
    );
    c.result(
        "private/buy",
        json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": bid - 3000.0}),
    )
    .await;
    assert_eq!(c.result("private/cancel_all", json!({})).await, 2);
    assert!(sim.open_orders("demo-key").is_empty());
    let s = c
        .result(
            "private/get_account_summary",
            json!({"currency": "BTC", "extended": true}),
        )
        .await;
    assert_eq!(s["type"], "main");
    assert!(s["equity"].is_number());
}

#[tokio::test(start_paused = true)]
async fn cancel_on_disconnect_cancels_only_that_connections_orders() {
    let sim = start(config()).await;
    let mut a = Client::connect(&sim).await;
    let mut b = Client::connect(&sim).await;
    a.auth().await;
    b.auth().await;
    let bid = sim.ticker("BTC-PERPETUAL").unwrap()["best_bid_price"]
        .as_f64()
        .unwrap();
    let place = json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": bid - 700.0});
    assert_eq!(
        a.result("private/get_cancel_on_disconnect", json!({}))
            .await,
        json!({"scope": "connection", "enabled": false})
    );
    assert_eq!(
        a.result(
            "private/enable_cancel_on_disconnect",
            json!({"scope": "connection"})
        )
        .await,
        "ok"
    );
    assert_eq!(
        a.result("private/get_cancel_on_disconnect", json!({}))
            .await,
        json!({"scope": "connection", "enabled": true})
    );
    a.result("private/buy", place.clone()).await;
    b.result("private/buy", place.clone()).await;
    b.result(
        "private/subscribe",
        json!({"channels": ["user.orders.any.any.raw"]}),
    )
    .await;
    // Dropped without a close frame: COD fires, the other connection hears of it.
    sim.faults().drop_connection(0);
    let note = b.next_on("user.orders.any.any.raw").await;
    assert_eq!(note["order_state"], "cancelled");
    assert_eq!(note["cancel_reason"], "cancel_on_disconnect");
    assert_eq!(sim.open_orders("demo-key").len(), 1);
    assert_eq!(a.closed().await, None);
    // Logout does not trigger COD.
    b.result("private/enable_cancel_on_disconnect", json!({}))
        .await;
    assert_eq!(b.result("private/logout", json!({})).await, "ok");
    assert_eq!(b.closed().await.map(|c| c.0), Some(1000));
    assert_eq!(sim.open_orders("demo-key").len(), 1);
    // Account scope: a new connection starts with COD on.
    let mut c = Client::connect(&sim).await;
    c.auth().await;
    c.result(
        "private/enable_cancel_on_disconnect",
        json!({"scope": "account"}),
    )
    .await;
    let mut d = Client::connect(&sim).await;
    d.auth().await;
    assert_eq!(
        d.result("private/get_cancel_on_disconnect", json!({}))
            .await["enabled"],
        true
    );
    d.result("private/buy", place).await;
    drop(d);
    assert!(
        sim.wait_for(T, |s| s.open_orders("demo-key").len() == 1)
            .await
    );
    assert_eq!(sim.cod_cancelled(), 2);
}

// ---- rate limits ----

fn tight(mut c: SimConfig) -> SimConfig {
    let mut credits = CreditLimits::default();
    credits.non_matching_engine = CreditPool::new(500, 5_000, 0);
    credits.matching_engine = CreditPool::new(1_000, 3_000, 0);
    c.credits = credits;
    c
}

#[tokio::test(start_paused = true)]
async fn running_out_of_credits_gets_10028_then_a_close() {
    let sim = start(tight(config())).await;
    let mut c = Client::connect(&sim).await;
    for _ in 0..10 {
        c.result("public/get_time", json!({})).await;
    }
    let e = c.error("public/get_time", json!({})).await;
    assert_eq!(e, json!({"code": 10028, "message": "too_many_requests"}));
    assert_eq!(
        c.closed().await,
        Some((1008, "too_many_requests".to_owned()))
    );
    assert_eq!(sim.credits_rejected(), 1);
    let close = sim.wait_closed(0, T).await.unwrap();
    assert_eq!(close.code, Some(1008));

    // Authenticated: the account's pools, shared by its connections; the matching engine has
    // its own pool.
    let mut a = Client::connect(&sim).await;
    a.auth().await;
    for _ in 0..3 {
        assert_eq!(
            code(&a.error("private/cancel", json!({"order_id": "x"})).await),
            10004
        );
    }
    assert_eq!(sim.credits(1), Some((5_000, 0)));
    let mut b = Client::connect(&sim).await;
    b.auth().await;
    assert_eq!(
        code(&b.error("private/cancel", json!({"order_id": "x"})).await),
        10028
    );
    assert_eq!(b.closed().await.map(|c| c.0), Some(1008));
    a.result("public/get_time", json!({})).await;
}

#[tokio::test(start_paused = true)]
async fn credits_refill_and_defaults_allow_a_burst_of_100() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    // Deribit's defaults: 50,000 credits at 500 each, refilled at 10,000/s.
    for _ in 0..100 {
        c.send("public/test", json!({})).await;
    }
    for id in 1..=100 {
        assert!(c.response(id).await.get("result").is_some());
    }
    let left = sim.credits(0).unwrap().0;
    assert!(left < 1_000, "{left}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.credits(0).unwrap().0, left + 1_000);
    // Spend the rest: a 10028 comes within a few requests, then the close.
    let mut ok = 0;
    loop {
        let r = c.call("public/test", json!({})).await;
        if r.get("error").is_some() {
            assert_eq!(code(&r["error"]), 10028);
            break;
        }
        ok += 1;
        assert!(ok <= 5, "no 10028");
    }
    assert_eq!(c.closed().await.map(|c| c.0), Some(1008));
    // The fault empties pools on demand.
    let mut d = Client::connect(&sim).await;
    d.auth().await;
    sim.faults().exhaust_credits(Some("demo-key"));
    assert_eq!(
        code(&d.error("private/get_open_orders", json!({})).await),
        10028
    );
}

// ---- faults ----

#[tokio::test(start_paused = true)]
async fn drop_all_drops_without_a_close_frame() {
    let sim = start(config()).await;
    let mut a = Client::connect(&sim).await;
    let mut b = Client::connect(&sim).await;
    a.result("public/test", json!({})).await;
    b.result("public/test", json!({})).await;
    sim.faults().drop_all();
    assert_eq!(a.closed().await, None);
    assert_eq!(b.closed().await, None);
    assert!(sim.wait_for(T, |s| s.connections().is_empty()).await);
    assert!(sim.closes().iter().all(|c| c.by == ClosedBy::Dropped));
    // Still listening.
    let mut c = Client::connect(&sim).await;
    c.result("public/test", json!({})).await;
    assert_eq!(sim.accepted(), 3);
    // Closing one connection with a chosen code.
    assert!(sim.faults().close_connection(2, 1001, "going away"));
    assert_eq!(c.closed().await, Some((1001, "going away".to_owned())));
}

#[tokio::test(start_paused = true)]
async fn book_gap_and_duplicate_faults() {
    let sim = start(config()).await;
    let faults = sim.faults();
    let mut c = Client::connect(&sim).await;
    let ch = "book.BTC-PERPETUAL.100ms";
    c.result("public/subscribe", json!({ "channels": [ch] }))
        .await;
    let snap = c.next_on(ch).await;
    let mut last = snap["change_id"].as_u64().unwrap();
    let d = c.next_on(ch).await;
    assert_eq!(d["prev_change_id"].as_u64(), Some(last));
    last = d["change_id"].as_u64().unwrap();
    assert_eq!(faults.book_gap(Some("BTC-PERPETUAL")), 1);
    assert_eq!(faults.book_gap(Some("NOPE")), 0);
    // Messages already on their way chain on; then one does not.
    loop {
        let d = c.next_on(ch).await;
        if d["prev_change_id"].as_u64() == Some(last) {
            last = d["change_id"].as_u64().unwrap();
            continue;
        }
        let skipped = sim.gaps();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].channel, ch);
        assert_eq!(skipped[0].instrument, "BTC-PERPETUAL");
        assert_eq!(d["prev_change_id"].as_u64(), Some(skipped[0].change_id));
        assert!(skipped[0].change_id > last);
        break;
    }
    // Resync: unsubscribe and subscribe again gives a fresh snapshot that chains on.
    c.result("public/unsubscribe", json!({ "channels": [ch] }))
        .await;
    c.take_backlog(ch);
    c.result("public/subscribe", json!({ "channels": [ch] }))
        .await;
    let snap = loop {
        let d = c.next_on(ch).await;
        if d["type"] == "snapshot" {
            break d;
        }
    };
    let next = c.next_on(ch).await;
    assert_eq!(next["prev_change_id"], snap["change_id"]);
    // Duplicate.
    assert_eq!(faults.book_duplicate(None), 1);
    let one = c.next_on(ch).await;
    let two = c.next_on(ch).await;
    assert_eq!(one, two);
    assert_eq!(sim.duplicates().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn maintenance_and_settlement() {
    let sim = start(config()).await;
    let faults = sim.faults();
    let mut c = Client::connect(&sim).await;
    c.auth().await;
    c.result("public/subscribe", json!({"channels": ["platform_state"]}))
        .await;
    faults.set_maintenance(true);
    assert_eq!(
        c.next_on("platform_state").await,
        json!({"maintenance": true})
    );
    let locked = c.next_on("platform_state").await;
    assert_eq!(locked["locked"], true);
    assert_eq!(
        c.error("public/get_instruments", json!({"currency": "BTC"}))
            .await,
        json!({"code": 11051, "message": "system_maintenance"})
    );
    assert_eq!(
        code(&c.error("private/get_open_orders", json!({})).await),
        11051
    );
    assert_eq!(
        c.result("public/test", json!({})).await["version"],
        "1.2.26"
    );
    assert_eq!(c.result("public/status", json!({})).await["locked"], "true");
    faults.set_maintenance(false);
    c.result("public/get_instruments", json!({"currency": "BTC"}))
        .await;

    faults.settlement(Duration::from_secs(3));
    let buy = json!({"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": 1000});
    assert_eq!(
        c.error("private/buy", buy.clone()).await,
        json!({"code": 10041, "message": "settlement_in_progress"})
    );
    c.result("private/get_open_orders", json!({})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.result("private/buy", buy).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_closed_as_too_slow() {
    let sim = start(config()).await;
    let faults = sim.faults();
    faults.set_max_queue(Some(20));
    let mut c = Client::connect(&sim).await;
    c.result(
        "public/subscribe",
        json!({"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
    )
    .await;
    c.next_on("ticker.BTC-PERPETUAL.100ms").await;
    assert!(faults.pause_writes(0, true));
    let close = sim.wait_closed(0, T).await.unwrap();
    assert_eq!(close.reason, "connection_too_slow");
    assert_eq!(
        c.closed().await,
        Some((1008, "connection_too_slow".to_owned()))
    );
}

#[tokio::test(start_paused = true)]
async fn upgrades_beyond_the_connection_limit_get_429() {
    let mut cfg = config();
    cfg.max_connections = Some(2);
    let sim = start(cfg).await;
    let _a = Client::connect(&sim).await;
    let b = Client::connect(&sim).await;
    let err = ClientBuilder::new()
        .uri(&sim.url())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    assert_eq!(sim.refused(), 1);
    drop(b);
    assert!(sim.wait_for(T, |s| s.connections().len() == 1).await);
    let _c = Client::connect(&sim).await;
    sim.faults().set_max_connections(None);
    let _d = Client::connect(&sim).await;
    assert_eq!(sim.connections().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn delayed_responses_and_ordering() {
    let sim = start(config()).await;
    let faults = sim.faults();
    let mut c = Client::connect(&sim).await;
    faults.delay_method("public/get_time", Some(Duration::from_millis(500)));
    let t0 = Instant::now();
    let slow = c.send("public/get_time", json!({})).await;
    let fast = c.send("public/test", json!({})).await;
    // The second response overtakes the first: clients must correlate by id.
    let first = loop {
        let m = c.read().await;
        if m.get("id").is_some() {
            break m;
        }
    };
    assert_eq!(first["id"], fast);
    let r = c.response(slow).await;
    assert!(t0.elapsed() >= Duration::from_millis(500));
    assert_eq!(r["usDiff"], 500_000);
    faults.delay_method("public/get_time", None);
    faults.delay_responses(Some(Duration::from_millis(200)));
    // A delayed subscribe ack still comes before the channel's first message.
    let id = c
        .send(
            "public/subscribe",
            json!({"channels": ["book.ETH-PERPETUAL.100ms"]}),
        )
        .await;
    loop {
        let m = c.read().await;
        assert_ne!(
            m["method"], "subscription",
            "notification before the ack: {m}"
        );
        if m["id"] == id {
            break;
        }
    }
    assert_eq!(
        c.next_on("book.ETH-PERPETUAL.100ms").await["type"],
        "snapshot"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_connections_can_be_dropped() {
    let mut cfg = config();
    cfg.idle_timeout = Some(Duration::from_secs(60));
    let sim = start(cfg).await;
    let mut idle = Client::connect(&sim).await;
    let mut busy = Client::connect(&sim).await;
    busy.result(
        "public/subscribe",
        json!({"channels": ["deribit_price_index.btc_usd"]}),
    )
    .await;
    assert_eq!(idle.closed().await, None);
    let close = sim.wait_closed(0, T).await.unwrap();
    assert_eq!(
        (close.by, close.reason.as_str()),
        (ClosedBy::Dropped, "idle")
    );
    assert_eq!(sim.connections(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn ignored_heartbeat_answers_lead_to_a_4000_close() {
    let sim = start(config()).await;
    sim.faults().ignore_heartbeat_answers(true);
    let mut c = Client::connect(&sim).await;
    c.result("public/set_heartbeat", json!({"interval": 10}))
        .await;
    let m = c.read().await;
    assert_eq!(m["params"]["type"], "test_request");
    // Answered, but the simulator acts as if it never arrived.
    c.result("public/test", json!({})).await;
    assert_eq!(c.closed().await, Some((4000, "heartbeat close".to_owned())));
    assert_eq!(sim.heartbeats_answered(), 0);
}

#[tokio::test(start_paused = true)]
async fn heartbeat_answers_can_be_ignored_on_one_connection() {
    let sim = start(config()).await;
    let mut a = Client::connect(&sim).await;
    let mut b = Client::connect(&sim).await;
    for c in [&mut a, &mut b] {
        c.result("public/set_heartbeat", json!({"interval": 10}))
            .await;
    }
    assert!(sim.faults().ignore_heartbeat_answers_from(0, true));
    assert!(!sim.faults().ignore_heartbeat_answers_from(7, true));
    for c in [&mut a, &mut b] {
        assert_eq!(c.read().await["params"]["type"], "test_request");
        c.result("public/test", json!({})).await;
    }
    assert_eq!(a.closed().await, Some((4000, "heartbeat close".to_owned())));
    // The other connection's answer counted: it gets the next test_request and stays.
    let next = loop {
        let m = b.read().await;
        if m["params"]["type"] == "test_request" {
            break m;
        }
    };
    assert_eq!(next["method"], "heartbeat");
    assert!(sim.wait_for(T, |s| s.connections() == vec![1]).await);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_connection_goes_silent_then_carries_on() {
    let sim = start(config()).await;
    let mut c = Client::connect(&sim).await;
    let ch = "ticker.BTC-PERPETUAL.100ms";
    c.result("public/subscribe", json!({ "channels": [ch] }))
        .await;
    c.next_on(ch).await;
    assert!(sim.faults().stall(0, Duration::from_secs(5)));
    assert!(!sim.faults().stall(9, Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    c.take_backlog(ch);
    // No answer, no pong, no notification while stalled; the TCP connection stays open.
    let id = c.send("public/test", json!({})).await;
    c.ws.send(Message::ping(String::from("are you there")))
        .await
        .unwrap();
    let silent = tokio::time::timeout(Duration::from_secs(4), c.ws.next()).await;
    assert!(silent.is_err(), "{silent:?}");
    assert_eq!(sim.connections(), vec![0]);
    // Afterwards everything that waited arrives: the answer, then the pong.
    assert_eq!(c.response(id).await["result"]["version"], "1.2.26");
    loop {
        let msg = c.ws.next().await.unwrap().unwrap();
        if msg.is_pong() {
            break;
        }
        c.backlog
            .push_back(serde_json::from_str(msg.as_text().unwrap()).unwrap());
    }
    assert_eq!(c.next_on(ch).await["instrument_name"], "BTC-PERPETUAL");
}

#[tokio::test(start_paused = true)]
async fn raw_bytes_reach_the_client_as_written() {
    let sim = start(config()).await;
    let faults = sim.faults();
    let mut c = Client::connect(&sim).await;
    c.result("public/test", json!({})).await;
    assert!(faults.send_raw(
        0,
        websockex_nova_testkit::raw_frame(true, 0x1, b"{\"x\":1}")
    ));
    assert_eq!(c.read().await, json!({"x": 1}));
    assert!(faults.send_oversized(0, 100_000));
    let msg = c.ws.next().await.unwrap().unwrap();
    let text = msg.as_text().unwrap();
    assert_eq!(text.len(), 100_000);
    assert!(text.bytes().all(|b| b == b' '));
    // The socket still serves requests after raw writes.
    c.result("public/test", json!({})).await;
    assert!(faults.send_invalid_utf8(0));
    let err = c.ws.next().await.unwrap();
    assert!(err.is_err(), "{err:?}");
    assert!(!faults.send_invalid_utf8(5));
}

#[tokio::test(start_paused = true)]
async fn requests_can_be_left_unrecorded() {
    let mut cfg = config();
    cfg.record_requests = false;
    let sim = start(cfg).await;
    let mut c = Client::connect(&sim).await;
    c.result("public/test", json!({})).await;
    c.error("public/nope", json!({})).await;
    assert!(sim.requests().is_empty());
    // Heartbeats are still tracked without the request record.
    c.result("public/set_heartbeat", json!({"interval": 10}))
        .await;
    assert_eq!(c.read().await["params"]["type"], "test_request");
    c.result("public/test", json!({})).await;
    assert_eq!(sim.heartbeats_answered(), 1);
}

#[tokio::test(start_paused = true)]
async fn methods_can_be_made_to_fail() {
    let sim = start(config()).await;
    let faults = sim.faults();
    let mut c = Client::connect(&sim).await;
    faults.fail_next(
        "public/get_time",
        RpcError::new(13028, "temporarily_unavailable"),
        2,
    );
    for _ in 0..2 {
        let e = c.error("public/get_time", json!({})).await;
        assert_eq!(
            e,
            json!({"code": 13028, "message": "temporarily_unavailable"})
        );
    }
    c.result("public/get_time", json!({})).await;
    faults.fail_method("public/test", RpcError::new(10040, "retry"));
    assert_eq!(code(&c.error("public/test", json!({})).await), 10040);
    assert_eq!(code(&c.error("public/test", json!({})).await), 10040);
    faults.clear_failures();
    c.result("public/test", json!({})).await;
    assert_eq!(
        sim.requests().iter().filter(|r| r.error.is_some()).count(),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn stop_and_restart_on_the_same_port() {
    let mut sim = start(config()).await;
    let url = sim.url();
    assert!(url.starts_with("ws://127.0.0.1:") && url.ends_with("/ws/api/v2"));
    let mut c = Client::connect(&sim).await;
    c.auth().await;
    sim.stop().await;
    assert_eq!(c.closed().await, None);
    assert!(sim.connections().is_empty());
    assert!(TcpStream::connect(sim.addr()).await.is_err());
    sim.restart().await.unwrap();
    assert_eq!(sim.url(), url);
    let mut c = Client::connect(&sim).await;
    c.auth().await;
    assert_eq!(sim.connections(), vec![1]);
    assert!(sim.is_authenticated(1));
}

/// Real time, system clock: what a client outside any test harness sees.
#[tokio::test]
async fn real_time_feed_and_system_clock_signature() {
    let sim = start(SimConfig::default()).await;
    let mut c = Client::connect(&sim).await;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let r = c
        .call(
            "public/auth",
            json!({"grant_type": "client_signature", "client_id": "demo-key", "timestamp": ts,
                   "nonce": "rt-1", "data": "",
                   "signature": client_signature("demo-secret", ts, "rt-1", "")}),
        )
        .await;
    assert!(r.get("result").is_some(), "{r}");
    let us_in = r["usIn"].as_u64().unwrap();
    assert!(us_in.abs_diff(ts * 1000) < 5_000_000);
    let channels = [
        "book.BTC-PERPETUAL.raw",
        "ticker.ETH-PERPETUAL.raw",
        "trades.any.any.raw",
    ];
    c.result("public/subscribe", json!({ "channels": channels }))
        .await;
    let deadline = Instant::now() + Duration::from_millis(600);
    let mut last = c.next_on(channels[0]).await["change_id"].as_u64().unwrap();
    let mut changes = 0;
    while Instant::now() < deadline {
        let d = c.next_on(channels[0]).await;
        assert_eq!(d["prev_change_id"].as_u64(), Some(last));
        last = d["change_id"].as_u64().unwrap();
        changes += 1;
    }
    assert!(changes >= 5, "{changes} raw book changes in 600 ms");
    assert!(!c.take_backlog(channels[1]).is_empty());
}
