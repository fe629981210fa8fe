//! The JSON-RPC server mode ([`RpcServer`]) against the tokio-websockets client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};
use websockex_nova_testkit::{
    Plan, PrivateChannelPolicy, RateLimit, Reply, RpcError, RpcServer, RpcUntil, Script, Step,
    TestServer,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous, so paused-time tests (where server timers fire first) never hit it by accident.
const T: Duration = Duration::from_secs(60);

/// Connect with `TCP_NODELAY`: without it, Nagle's algorithm holds a second small frame back
/// until the first is acknowledged, and with paused time the clock may jump to the next server
/// timer meanwhile.
async fn connect(server: &TestServer) -> Ws {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    ClientBuilder::new()
        .uri(&server.url())
        .unwrap()
        .connect_on(MaybeTlsStream::Plain(tcp))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

async fn request(ws: &mut Ws, id: impl Into<Value>, method: &str, params: Value) {
    send(
        ws,
        json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params}),
    )
    .await;
}

/// The next message as text (panics on close or timeout).
async fn next_text(ws: &mut Ws) -> String {
    let msg = tokio::time::timeout(T, ws.next())
        .await
        .expect("timed out")
        .expect("stream ended")
        .expect("error");
    msg.as_text()
        .unwrap_or_else(|| panic!("not text: {msg:?}"))
        .to_owned()
}

async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}

/// Read to the end; the close code if a close frame arrived.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(T, ws.next()).await {
        if let Some((c, _)) = msg.as_close() {
            code = Some(u16::from(c));
        }
    }
    code
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

async fn start(rpc: &RpcServer) -> TestServer {
    TestServer::start(Script::json_rpc(rpc.clone()))
        .await
        .unwrap()
}

#[tokio::test]
async fn answers_by_method_with_results_errors_and_method_not_found() {
    let rpc = RpcServer::builder()
        .result("public/get_time", json!(42))
        .handler("add", |p| {
            let a = p["a"]
                .as_i64()
                .ok_or_else(|| RpcError::invalid_params("a", "int"))?;
            let b = p["b"]
                .as_i64()
                .ok_or_else(|| RpcError::invalid_params("b", "int"))?;
            Ok(json!(a + b))
        })
        .error(
            "broken",
            RpcError::new(11000, "internal").with_data(json!({"why": "test"})),
        )
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;

    request(&mut ws, 1, "public/get_time", json!({})).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"jsonrpc":"2.0","id":1,"result":42}"#
    );
    request(&mut ws, "s-1", "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"jsonrpc":"2.0","id":"s-1","result":5})
    );
    request(&mut ws, 3, "add", json!({"a": "x"})).await;
    let v = next_json(&mut ws).await;
    assert_eq!((v["id"].clone(), error_code(&v)), (json!(3), -32602));
    request(&mut ws, 4, "broken", json!([])).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"jsonrpc":"2.0","id":4,"error":{"code":11000,"message":"internal","data":{"why":"test"}}})
    );
    request(&mut ws, 5, "no/such", json!({})).await;
    let v = next_json(&mut ws).await;
    assert_eq!((v["id"].clone(), error_code(&v)), (json!(5), -32601));

    // Ids are echoed exactly as written, whatever their JSON spelling.
    for id in ["1.50", "18446744073709551616", r#""a\"b""#, "-0"] {
        send_text(
            &mut ws,
            &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"public/get_time"}}"#),
        )
        .await;
        assert_eq!(
            next_text(&mut ws).await,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":42}}"#)
        );
    }

    // A notification gets nothing: the next message is the answer to the request after it.
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","method":"public/get_time","params":{}}),
    )
    .await;
    send(&mut ws, json!({"jsonrpc":"2.0","method":"no/such"})).await;
    request(&mut ws, 6, "public/get_time", json!({})).await;
    assert_eq!(next_json(&mut ws).await["id"], json!(6));

    // Invalid messages: -32700 and -32600, not recorded as requests.
    send_text(&mut ws, "{not json").await;
    let v = next_json(&mut ws).await;
    assert_eq!((v["id"].clone(), error_code(&v)), (Value::Null, -32700));
    send_text(&mut ws, r#"{"id":7,"method":"x"}"#).await;
    let v = next_json(&mut ws).await;
    assert_eq!((v["id"].clone(), error_code(&v)), (json!(7), -32600));
    assert_eq!(rpc.invalid(), 2);

    let reqs = rpc.requests();
    assert_eq!(reqs.len(), 12);
    assert_eq!(reqs[1].id, Some(json!("s-1")));
    assert_eq!(reqs[1].params, json!({"a": 2, "b": 3}));
    assert_eq!(reqs[9].id, None);
    assert_eq!(reqs[10].method, "no/such");
    assert!(reqs.iter().all(|r| r.conn == 0 && !r.rejected));
    assert!(reqs.windows(2).all(|w| w[0].at <= w[1].at));

    // Replies can be changed at run time.
    rpc.set_reply("public/get_time", Reply::Error(RpcError::new(1, "down")));
    request(&mut ws, 8, "public/get_time", json!({})).await;
    assert_eq!(error_code(&next_json(&mut ws).await), 1);
    rpc.clear_reply("public/get_time");
    request(&mut ws, 9, "public/get_time", json!({})).await;
    assert_eq!(error_code(&next_json(&mut ws).await), -32601);
}

#[tokio::test]
async fn fallback_replaces_method_not_found() {
    let rpc = RpcServer::builder()
        .fallback(|method, params| Ok(json!({"echo": method, "params": params})))
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    request(&mut ws, 1, "anything", json!([1])).await;
    assert_eq!(
        next_json(&mut ws).await["result"],
        json!({"echo": "anything", "params": [1]})
    );
}

#[tokio::test(start_paused = true)]
async fn a_delayed_method_is_overtaken_by_later_requests() {
    let rpc = RpcServer::builder()
        .result("slow", json!("slow"))
        .result("fast", json!("fast"))
        .delay("slow", Duration::from_secs(5))
        .delay("fast", Duration::from_secs(1))
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    let t0 = Instant::now();
    request(&mut ws, 1, "slow", json!({})).await;
    request(&mut ws, 2, "fast", json!({})).await;
    request(&mut ws, 3, "other", json!({})).await;
    // Undelayed error first, then by due time.
    assert_eq!(next_json(&mut ws).await["id"], json!(3));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(next_json(&mut ws).await["id"], json!(2));
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(next_json(&mut ws).await["id"], json!(1));
    assert_eq!(t0.elapsed(), Duration::from_secs(5));

    rpc.set_delay("slow", None);
    request(&mut ws, 4, "slow", json!({})).await;
    assert_eq!(next_json(&mut ws).await["result"], json!("slow"));
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn hold_and_reverse_answers_newest_first() {
    let rpc = RpcServer::builder()
        .result("m", json!(true))
        .hold_and_reverse(3)
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    for id in 1..=6 {
        request(&mut ws, id, "m", json!({})).await;
    }
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(next_json(&mut ws).await["id"].as_i64().unwrap());
    }
    assert_eq!(ids, [3, 2, 1, 6, 5, 4]);
}

#[tokio::test]
async fn subscribe_acks_leave_out_refused_and_private_channels() {
    let rpc = RpcServer::builder()
        .omit_channel("book.ETH")
        .omit_channels(|c| c.starts_with("trades."))
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    request(
        &mut ws,
        1,
        "public/subscribe",
        json!({"channels": ["ticker.BTC", "book.ETH", "trades.BTC", "user.orders", "ticker.BTC", "private/x"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["result"], json!(["ticker.BTC"]));
    assert_eq!(rpc.subscriptions(0), ["ticker.BTC"]);

    // After auth the private channel is accepted; refused ones still are not.
    request(
        &mut ws,
        2,
        "public/auth",
        json!({"grant_type": "client_credentials", "client_id": "id", "client_secret": "s"}),
    )
    .await;
    assert!(next_json(&mut ws).await["result"]["access_token"].is_string());
    request(
        &mut ws,
        3,
        "public/subscribe",
        json!({"channels": ["user.orders", "book.ETH", "ticker.ETH"]}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await["result"],
        json!(["user.orders", "ticker.ETH"])
    );
    assert_eq!(
        rpc.subscriptions(0),
        ["ticker.BTC", "ticker.ETH", "user.orders"]
    );

    // Notifications reach subscribers only.
    assert_eq!(rpc.notify("ticker.ETH", json!({"p": 1})), 1);
    assert_eq!(rpc.notify("book.ETH", json!({"p": 2})), 0);
    assert_eq!(
        next_json(&mut ws).await,
        json!({"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.ETH","data":{"p":1}}})
    );
    assert_eq!(rpc.notifications_sent("ticker.ETH"), 1);

    // Unsubscribe answers with what was removed.
    request(
        &mut ws,
        4,
        "public/unsubscribe",
        json!({"channels": ["ticker.BTC", "book.ETH"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["result"], json!(["ticker.BTC"]));
    assert_eq!(rpc.subscribers("ticker.BTC"), 0);

    request(&mut ws, 5, "public/subscribe", json!({"channels": "x"})).await;
    assert_eq!(error_code(&next_json(&mut ws).await), -32602);
}

#[tokio::test]
async fn private_channels_can_be_an_error_with_custom_names() {
    let rpc = RpcServer::builder()
        .subscribe_method("sub")
        .unsubscribe_method("unsub")
        .private_channels(|c| c.starts_with("acct:"))
        .private_channel_policy(PrivateChannelPolicy::Error)
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    request(&mut ws, 1, "sub", json!({"channels": ["pub:a", "acct:b"]})).await;
    let v = next_json(&mut ws).await;
    assert_eq!(error_code(&v), RpcError::UNAUTHORIZED);
    assert_eq!(v["error"]["message"], "unauthorized");
    assert!(rpc.subscriptions(0).is_empty());
    request(&mut ws, 2, "sub", json!({"channels": ["pub:a", "user.x"]})).await;
    assert_eq!(
        next_json(&mut ws).await["result"],
        json!(["pub:a", "user.x"])
    );
    request(&mut ws, 3, "public/subscribe", json!({"channels": ["a"]})).await;
    assert_eq!(error_code(&next_json(&mut ws).await), -32601);
}

#[tokio::test(start_paused = true)]
async fn auth_grants_tokens_that_expire_and_refresh() {
    let rpc = RpcServer::builder()
        .credentials("key", "secret")
        .token_ttl(Duration::from_secs(60))
        .scope("connection read")
        .result("private/get_position", json!({"size": 1}))
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;

    request(&mut ws, 1, "private/get_position", json!({})).await;
    assert_eq!(error_code(&next_json(&mut ws).await), 13009);

    request(
        &mut ws,
        2,
        "public/auth",
        json!({"grant_type": "client_credentials", "client_id": "key", "client_secret": "wrong"}),
    )
    .await;
    let v = next_json(&mut ws).await;
    assert_eq!(
        v["error"],
        json!({"code": 13004, "message": "invalid_credentials"})
    );
    assert!(!rpc.is_authenticated(0));

    request(
        &mut ws,
        3,
        "public/auth",
        json!({"grant_type": "client_credentials", "client_id": "key", "client_secret": "secret"}),
    )
    .await;
    let result = next_json(&mut ws).await["result"].clone();
    assert_eq!(result["expires_in"], 60);
    assert_eq!(result["token_type"], "bearer");
    assert_eq!(result["scope"], "connection read");
    assert!(result["access_token"].is_string());
    let refresh = result["refresh_token"].as_str().unwrap().to_owned();
    assert!(rpc.is_authenticated(0));

    request(&mut ws, 4, "private/get_position", json!({})).await;
    assert_eq!(next_json(&mut ws).await["result"], json!({"size": 1}));

    // Just before expiry the token still works; at expiry it does not.
    tokio::time::sleep(Duration::from_millis(59_999)).await;
    assert!(rpc.is_authenticated(0));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!rpc.is_authenticated(0));
    request(&mut ws, 5, "private/get_position", json!({})).await;
    assert_eq!(error_code(&next_json(&mut ws).await), 13009);
    request(
        &mut ws,
        6,
        "public/subscribe",
        json!({"channels": ["user.trades", "ticker"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["result"], json!(["ticker"]));

    // The refresh token works once.
    let refresh_params = json!({"grant_type": "refresh_token", "refresh_token": refresh});
    request(&mut ws, 7, "public/auth", refresh_params.clone()).await;
    let result = next_json(&mut ws).await["result"].clone();
    assert_ne!(result["refresh_token"].as_str(), Some(refresh.as_str()));
    assert!(rpc.is_authenticated(0));
    request(&mut ws, 8, "private/get_position", json!({})).await;
    assert!(next_json(&mut ws).await["result"].is_object());
    request(&mut ws, 9, "public/auth", refresh_params).await;
    assert_eq!(error_code(&next_json(&mut ws).await), 13004);

    request(
        &mut ws,
        10,
        "public/auth",
        json!({"grant_type": "password"}),
    )
    .await;
    assert_eq!(error_code(&next_json(&mut ws).await), -32602);

    assert_eq!(rpc.auth_requests("client_credentials"), 2);
    assert_eq!(rpc.auth_requests("refresh_token"), 2);
    assert_eq!(rpc.auth_requests("password"), 1);
    assert_eq!(rpc.auth_failures(), 3);

    rpc.expire_tokens();
    assert!(!rpc.is_authenticated(0));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_rejects_over_limit_requests_and_max_in_window_measures() {
    let rpc = RpcServer::builder()
        .result("m", json!(1))
        .rate_limit(RateLimit::new(5, Duration::from_secs(1)).exempt("public/test"))
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;

    // A burst of 8: 5 answered, 3 rejected with 10028.
    for id in 0..8 {
        request(&mut ws, id, "m", json!({})).await;
    }
    let mut codes = Vec::new();
    for _ in 0..8 {
        let v = next_json(&mut ws).await;
        codes.push(v["error"]["code"].as_i64().unwrap_or(0));
    }
    assert_eq!(codes, [0, 0, 0, 0, 0, 10028, 10028, 10028]);
    assert_eq!(rpc.rejected(), 3);
    // Exempt methods are never rejected.
    request(&mut ws, 100, "public/test", json!({})).await;
    assert!(next_json(&mut ws).await["result"]["version"].is_string());

    // A window later, the burst is allowed again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in 8..13 {
        request(&mut ws, id, "m", json!({})).await;
        assert_eq!(next_json(&mut ws).await["result"], 1);
    }
    assert_eq!(rpc.total_requests(), 14);
    assert_eq!(rpc.max_in_window(Duration::from_secs(1)), 9);
    assert_eq!(rpc.max_in_window_on(0, Duration::from_secs(2)), 14);
    assert_eq!(rpc.requests().iter().filter(|r| r.rejected).count(), 3);

    // A client pacing itself at one request per 100 ms is never rejected, and the server sees
    // exactly 5 per 500 ms window.
    let paced = RpcServer::builder()
        .result("m", json!(1))
        .rate_limit(RateLimit::new(5, Duration::from_millis(500)))
        .build();
    let server = start(&paced).await;
    let mut ws = connect(&server).await;
    for id in 0..30 {
        request(&mut ws, id, "m", json!({})).await;
        assert_eq!(next_json(&mut ws).await["result"], 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(paced.rejected(), 0);
    assert_eq!(paced.max_in_window(Duration::from_millis(500)), 5);
    assert_eq!(paced.max_in_window(Duration::from_secs(1)), 10);
}

#[tokio::test]
async fn rate_limit_can_close_the_connection() {
    let rpc = RpcServer::builder()
        .result("m", json!(1))
        .rate_limit(RateLimit::new(1, Duration::from_secs(60)).close_with(4029))
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    request(&mut ws, 1, "m", json!({})).await;
    request(&mut ws, 2, "m", json!({})).await;
    assert_eq!(next_json(&mut ws).await["result"], 1);
    let v = next_json(&mut ws).await;
    assert_eq!((v["id"].clone(), error_code(&v)), (json!(2), 10028));
    assert_eq!(close_code(&mut ws).await, Some(4029));
}

#[tokio::test(start_paused = true)]
async fn heartbeat_test_requests_are_recorded_and_unanswered_ones_close_with_4000() {
    let rpc = RpcServer::builder().build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    let t0 = Instant::now();
    request(&mut ws, 1, "public/set_heartbeat", json!({"interval": 10})).await;
    assert_eq!(next_json(&mut ws).await["result"], "ok");

    // Two heartbeats answered (after 0 s and 3 s), then none.
    for (round, answer_after) in [(1u64, 0u64), (2, 3)] {
        assert_eq!(
            next_text(&mut ws).await,
            r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(10 * round));
        tokio::time::sleep(Duration::from_secs(answer_after)).await;
        request(&mut ws, 10 + round, "public/test", json!({})).await;
        assert_eq!(
            next_json(&mut ws).await["result"]["version"],
            "websockex-nova-testkit"
        );
    }
    assert!(next_text(&mut ws).await.contains("test_request"));
    assert_eq!(t0.elapsed(), Duration::from_secs(30));
    let msg = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (code, reason) = msg.as_close().expect("close frame");
    assert_eq!((u16::from(code), reason), (4000, "heartbeat close"));
    assert_eq!(t0.elapsed(), Duration::from_secs(40));

    let hbs = rpc.heartbeats();
    let delays: Vec<_> = hbs.iter().map(|h| h.answer_delay()).collect();
    assert_eq!(
        delays,
        [Some(Duration::ZERO), Some(Duration::from_secs(3)), None]
    );
    assert!(hbs.iter().all(|h| h.conn == 0));
}

#[tokio::test(start_paused = true)]
async fn heartbeat_close_can_be_off_and_heartbeats_disabled() {
    let rpc = RpcServer::builder().heartbeat_close(None).build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    request(&mut ws, 1, "public/set_heartbeat", json!({"interval": 0})).await;
    assert_eq!(error_code(&next_json(&mut ws).await), -32602);
    request(&mut ws, 2, "public/set_heartbeat", json!({"interval": 1.5})).await;
    assert_eq!(next_json(&mut ws).await["result"], "ok");
    for _ in 0..3 {
        assert!(next_text(&mut ws).await.contains("test_request"));
    }
    request(&mut ws, 3, "public/disable_heartbeat", json!({})).await;
    assert_eq!(next_json(&mut ws).await["result"], "ok");
    tokio::time::sleep(Duration::from_secs(10)).await;
    request(&mut ws, 4, "x", json!({})).await;
    assert_eq!(next_json(&mut ws).await["id"], 4);
    assert_eq!(rpc.heartbeats().len(), 3);
}

#[tokio::test]
async fn drop_on_a_method_leaves_requests_in_flight_and_records_the_global_order() {
    let rpc = RpcServer::builder()
        .result("slow", json!(1))
        .delay("slow", Duration::from_secs(30))
        .build();
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![
            Step::JsonRpcUntil(rpc.clone(), RpcUntil::Method("private/buy".into())),
            Step::Drop,
        ]),
        Plan::json_rpc(rpc.clone()),
    ]))
    .await
    .unwrap();

    let auth = json!({"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"});
    let subscribe = json!({"channels": ["ticker", "user.orders"]});
    let mut ws = connect(&server).await;
    request(&mut ws, 1, "public/auth", auth.clone()).await;
    assert!(next_json(&mut ws).await["result"].is_object());
    request(&mut ws, 2, "public/subscribe", subscribe.clone()).await;
    assert_eq!(
        next_json(&mut ws).await["result"].as_array().unwrap().len(),
        2
    );
    request(&mut ws, 3, "slow", json!({})).await;
    request(&mut ws, 4, "private/buy", json!({"amount": 10})).await;
    // Neither is answered: the connection drops without a close frame.
    assert_eq!(close_code(&mut ws).await, None);
    assert!(rpc.wait_for(T, |r| r.connections().is_empty()).await);

    let mut ws = connect(&server).await;
    request(&mut ws, 5, "public/auth", auth).await;
    assert!(next_json(&mut ws).await["result"].is_object());
    request(&mut ws, 6, "public/subscribe", subscribe).await;
    assert_eq!(
        next_json(&mut ws).await["result"].as_array().unwrap().len(),
        2
    );

    let order: Vec<(usize, String)> = rpc.methods();
    let expected: Vec<(usize, String)> = [
        (0, "public/auth"),
        (0, "public/subscribe"),
        (0, "slow"),
        (0, "private/buy"),
        (1, "public/auth"),
        (1, "public/subscribe"),
    ]
    .iter()
    .map(|(c, m)| (*c, (*m).to_owned()))
    .collect();
    assert_eq!(order, expected);
    assert_eq!(rpc.connections(), [1]);
    assert_eq!(rpc.subscribers("user.orders"), 1);
    assert!(rpc.is_authenticated(1) && !rpc.is_authenticated(0));
}

#[tokio::test]
async fn until_requests_and_answered_compose_with_other_steps() {
    let rpc = RpcServer::builder().result("m", json!("ok")).build();
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![
            Step::JsonRpcUntil(rpc.clone(), RpcUntil::Answered(1)),
            Step::SendText("between".into()),
            // Same server: the subscription made in the first step is still there.
            Step::JsonRpcUntil(rpc.clone(), RpcUntil::Requests(2)),
            Step::Close {
                code: 4001,
                reason: "fault".into(),
            },
        ]),
        Plan::Accept(vec![
            Step::JsonRpcUntil(rpc.clone(), RpcUntil::After(Duration::from_millis(50))),
            Step::Close {
                code: 4002,
                reason: "later".into(),
            },
        ]),
    ]))
    .await
    .unwrap();
    let mut ws = connect(&server).await;
    request(&mut ws, 1, "public/subscribe", json!({"channels": ["a"]})).await;
    assert_eq!(next_json(&mut ws).await["result"], json!(["a"]));
    assert_eq!(next_text(&mut ws).await, "between");
    assert_eq!(rpc.notify("a", json!(1)), 1);
    assert_eq!(next_json(&mut ws).await["params"]["data"], 1);
    request(&mut ws, 2, "m", json!({})).await;
    assert_eq!(next_json(&mut ws).await["result"], "ok");
    request(&mut ws, 3, "m", json!({})).await;
    assert_eq!(close_code(&mut ws).await, Some(4001));

    let mut ws = connect(&server).await;
    assert_eq!(close_code(&mut ws).await, Some(4002));
    assert_eq!(rpc.total_requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn auto_publish_keeps_sending_while_the_ack_is_delayed() {
    let rpc = RpcServer::builder()
        .auto_publish(Duration::from_millis(100))
        .delay("public/subscribe", Duration::from_millis(250))
        .build();
    let server = start(&rpc).await;
    let mut ws = connect(&server).await;
    request(
        &mut ws,
        1,
        "public/subscribe",
        json!({"channels": ["a", "b"]}),
    )
    .await;
    let mut seen = Vec::new();
    loop {
        let v = next_json(&mut ws).await;
        if v["id"] == 1 {
            assert_eq!(v["result"], json!(["a", "b"]));
            break;
        }
        seen.push((
            v["params"]["channel"].clone(),
            v["params"]["data"]["seq"].clone(),
        ));
    }
    // Two rounds (at 100 and 200 ms) arrived before the ack (at 250 ms), in channel order.
    assert_eq!(
        seen,
        [
            (json!("a"), json!(0)),
            (json!("b"), json!(0)),
            (json!("a"), json!(1)),
            (json!("b"), json!(1))
        ]
    );
    let v = next_json(&mut ws).await;
    assert_eq!(v["params"], json!({"channel": "a", "data": {"seq": 2}}));
    assert_eq!(rpc.notifications_sent("a"), 3);
}

#[tokio::test]
async fn notify_push_and_broadcast_reach_every_connection() {
    let rpc = RpcServer::builder().notification_method("update").build();
    let server = start(&rpc).await;
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;
    for ws in [&mut a, &mut b] {
        request(ws, 1, "public/subscribe", json!({"channels": ["t"]})).await;
        assert_eq!(next_json(ws).await["result"], json!(["t"]));
    }
    assert_eq!(rpc.subscribers("t"), 2);
    assert_eq!(rpc.notify("t", json!({"x": 1})), 2);
    for ws in [&mut a, &mut b] {
        let v = next_json(ws).await;
        assert_eq!(v["method"], "update");
        assert_eq!(v["params"]["data"], json!({"x": 1}));
    }
    // A response to an id the client never used.
    assert!(rpc.push(1, r#"{"jsonrpc":"2.0","id":999,"result":0}"#));
    assert!(!rpc.push(7, "nobody"));
    assert_eq!(next_json(&mut b).await["id"], 999);
    assert!(server.wait_for(T, |s| s.serving() == 2).await);
    assert_eq!(server.broadcast("raw"), 2);
    assert_eq!(next_text(&mut a).await, "raw");
    assert_eq!(next_text(&mut b).await, "raw");
    // Messages are also in the server's general record.
    assert_eq!(server.texts().len(), 2);

    a.close().await.unwrap();
    assert!(rpc.wait_for(T, |r| r.connections() == [1]).await);
    assert_eq!(rpc.notify("t", json!(2)), 1);
}
