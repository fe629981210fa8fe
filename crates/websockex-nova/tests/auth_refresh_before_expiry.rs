//! Authentication (issue 3, acceptance 4; DESIGN §4.2, §4.9): the grant is refreshed with
//! its refresh token `refresh_margin` before it expires, on the live link, so private calls
//! keep working and subscriptions stay; private channels subscribe after auth; bad
//! credentials stop the connection with an auth error after one attempt, without hammering
//! the server; a link lost (or an auth unanswered) during auth is transient: back off and
//! authenticate again. Paused time: a minute of token life takes no wall-clock time.
//!
//! Which auth errors are refusals is venue knowledge: `JsonRpcConfig::auth_refusal_codes`
//! (default `13004 invalid_credentials`, `-32602 Invalid params`) stop; any other error from
//! the auth call (`10028 too_many_requests`, an internal error) is `AuthUnavailable`, which
//! backs off and authenticates again.

mod common;

use common::rpc::*;
use common::*;
use serde_json::{json, Value};
use tokio::time::Instant;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{ErrorKind, Event, Events, SubscriptionEvent};
use websockex_nova_testkit::{
    Plan, Reply, RpcError, RpcServer, RpcUntil, Script, Step, TestServer,
};

/// The next `Authenticated` event: (expires_in in seconds, refreshed), and when it came.
async fn next_authenticated(events: &mut Events) -> (Option<u64>, bool) {
    loop {
        match next_significant(events).await {
            Event::Authenticated {
                expires_in,
                refreshed,
            } => return (expires_in.map(|d| d.as_secs()), refreshed),
            Event::Connected { .. } => {}
            e => panic!("unexpected event {}", describe(&e)),
        }
    }
}

fn rpc() -> RpcServer {
    RpcServer::builder()
        .credentials("key", "secret")
        .token_ttl(secs(60))
        .result("private/get_position", json!({"size": 1}))
        .build()
}

fn config(secret: &str) -> JsonRpcConfig {
    let mut c = JsonRpcConfig::default().with_credentials("key", secret.to_owned());
    c.refresh_margin = secs(10);
    c
}

#[tokio::test(start_paused = true)]
async fn the_token_is_refreshed_before_expiry_and_everything_keeps_working() {
    let rpc = rpc();
    let server = serve(&rpc).await;
    let t0 = Instant::now();
    let (client, mut events) = client(&server, config("secret")).connect().await.unwrap();
    assert_eq!(next_authenticated(&mut events).await, (Some(60), false));
    assert_eq!(rpc.auth_requests("client_credentials"), 1);

    // A private channel is accepted once authenticated.
    let mut sub = client.subscribe(["user.orders", "ticker.A"]).await.unwrap();
    assert_eq!(sub.channels(), ["ticker.A", "user.orders"]);
    assert!(sub.refused().is_empty());
    let p: Value = client
        .request_as("private/get_position", &json!({}))
        .await
        .unwrap();
    assert_eq!(p, json!({"size": 1}));

    // Refreshed at 60 - 10 = 50 s, with the refresh token, on the same link.
    assert_eq!(next_authenticated(&mut events).await, (Some(60), true));
    assert_eq!(t0.elapsed(), secs(50));
    assert_eq!(rpc.auth_requests("refresh_token"), 1);
    assert_eq!(rpc.auth_requests("client_credentials"), 1);
    assert_eq!(rpc.auth_failures(), 0);

    // Past the original expiry (60 s) private calls still work, and again past the
    // second grant's (110 s) after the second refresh (100 s).
    tokio::time::sleep_until(t0 + secs(65)).await;
    assert!(rpc.is_authenticated(0));
    let p: Value = client
        .request_as("private/get_position", &json!({}))
        .await
        .unwrap();
    assert_eq!(p, json!({"size": 1}));
    assert_eq!(next_authenticated(&mut events).await, (Some(60), true));
    assert_eq!(t0.elapsed(), secs(100));
    tokio::time::sleep_until(t0 + secs(115)).await;
    let p: Value = client
        .request_as("private/get_position", &json!({}))
        .await
        .unwrap();
    assert_eq!(p, json!({"size": 1}));
    assert_eq!(rpc.auth_requests("refresh_token"), 2);

    // Subscriptions stayed: same link, still subscribed, notifications flow.
    assert_eq!(server.upgraded(), 1);
    assert_eq!(rpc.subscriptions(0), ["ticker.A", "user.orders"]);
    assert_eq!(rpc.notify("user.orders", json!({"id": 1})), 1);
    match tokio::time::timeout(T, sub.next()).await.unwrap().unwrap() {
        SubscriptionEvent::Notification { channel, data } => {
            assert_eq!(channel.as_str(), "user.orders");
            assert_eq!(data.as_str(), r#"{"id":1}"#);
        }
        e => panic!("unexpected {e:?}"),
    }
    // Every auth request was a proper grant; no secret leaked into anything else.
    assert_eq!(
        methods_on(&rpc, 0)
            .iter()
            .filter(|m| *m == "public/auth")
            .count(),
        3
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_auth_a_private_channel_is_refused() {
    let rpc = rpc();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    let err = client.subscribe(["user.orders"]).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::SubscriptionRefused {
            channels: vec!["user.orders".into()]
        }
    );
    let err = client
        .request("private/get_position", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.api_error().map(|e| e.code),
        Some(RpcError::UNAUTHORIZED)
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bad_credentials_stop_with_an_auth_error_after_one_attempt() {
    let rpc = rpc();
    let server = serve(&rpc).await;
    let err = client(&server, config("wrong"))
        .connect()
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(!err.is_transient());
    // The venue's refusal is kept as the source; the secret is nowhere in the error.
    let text = format!("{err} {err:?}");
    assert!(text.contains("invalid_credentials"), "{text}");
    assert!(!text.contains("wrong"), "{text}");

    // No hammering: one attempt, no reconnect, not even after a while.
    tokio::time::sleep(secs(60)).await;
    assert_eq!(rpc.auth_requests("client_credentials"), 1);
    assert_eq!(rpc.auth_failures(), 1);
    assert_eq!(server.upgraded(), 1);
    assert_eq!(rpc.total_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn bad_credentials_end_the_event_stream_with_the_auth_error() {
    let rpc = rpc();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, config("wrong")).spawn().unwrap();
    let trace = drain(&mut events).await;
    assert_eq!(
        trace
            .iter()
            .filter(|e| !e.contains("->"))
            .collect::<Vec<_>>(),
        ["disconnected#1 Auth", "closed Auth"]
    );
    assert!(
        trace.contains(&"upgrading->authenticating".to_owned()),
        "{trace:?}"
    );
    let err = client.ready().await.unwrap_err();
    assert!(err.is_closed());
    assert_eq!(rpc.auth_requests("client_credentials"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_link_lost_during_auth_backs_off_and_authenticates_again() {
    let rpc = rpc();
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![
            Step::JsonRpcUntil(rpc.clone(), RpcUntil::Method("public/auth".into())),
            Step::Drop,
        ]),
        Plan::json_rpc(rpc.clone()),
    ]))
    .await
    .unwrap();
    let (client, mut events) = client(&server, config("secret")).spawn().unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "other authenticated",
            "connected#2"
        ]
    );
    assert_eq!(methods_on(&rpc, 0), ["public/auth"]);
    assert_eq!(methods_on(&rpc, 1), ["public/auth"]);
    assert!(rpc.is_authenticated(1));
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_auth_times_out_and_is_retried_on_a_new_link() {
    let rpc = rpc();
    rpc.set_delay("public/auth", Some(secs(3600)));
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, config("secret"))
        .request_timeout(secs(5))
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await,
        ["disconnected#1 Timeout(Request)", "reconnecting#2 100ms"]
    );
    rpc.set_delay("public/auth", None);
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["other authenticated", "connected#2"]
    );
    assert_eq!(rpc.auth_requests("client_credentials"), 2);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refused_refresh_falls_back_to_the_credentials_on_the_same_link() {
    let rpc = rpc();
    let server = serve(&rpc).await;
    let t0 = Instant::now();
    let (client, mut events) = client(&server, config("secret")).connect().await.unwrap();
    assert_eq!(next_authenticated(&mut events).await, (Some(60), false));
    let _sub = client.subscribe(["ticker.A"]).await.unwrap();

    // From now on the venue refuses refresh tokens (and still grants credentials).
    rpc.set_reply(
        "public/auth",
        Reply::handler(|p| match p["grant_type"].as_str() {
            Some("refresh_token") => Err(RpcError::invalid_credentials()),
            _ => Ok(json!({"access_token": "a", "expires_in": 60, "refresh_token": "r"})),
        }),
    );
    assert_eq!(next_authenticated(&mut events).await, (Some(60), false));
    assert_eq!(t0.elapsed(), secs(50));
    let grants: Vec<String> = requests_for(&rpc, 0, "public/auth")
        .iter()
        .map(|r| r.params["grant_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        grants,
        ["client_credentials", "refresh_token", "client_credentials"]
    );
    // Same link, subscription kept.
    assert_eq!(server.upgraded(), 1);
    assert_eq!(rpc.subscriptions(0), ["ticker.A"]);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_auth_backs_off_and_retries_instead_of_stopping() {
    let rpc = rpc();
    rpc.set_reply("public/auth", Reply::Error(RpcError::too_many_requests()));
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, config("secret")).spawn().unwrap();
    // Three refused attempts, each followed by a backoff, not a stop.
    assert!(
        rpc.wait_for(secs(30), |r| r
            .requests()
            .iter()
            .filter(|q| q.method == "public/auth")
            .count()
            >= 3)
            .await
    );
    assert_ne!(client.status().state, websockex_nova::State::Closed);
    rpc.clear_reply("public/auth");
    client.ready().await.unwrap();
    let trace = drain_until_connected(&mut events).await;
    assert!(
        trace.iter().any(|e| e == "disconnected#1 AuthUnavailable"),
        "{trace:?}"
    );
    assert!(rpc.is_authenticated(server.upgraded() - 1));
    client.close().await.unwrap();
}

/// Event descriptions up to the first `connected`.
async fn drain_until_connected(events: &mut Events) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let e = next_significant(events).await;
        let d = describe(&e);
        let done = matches!(e, Event::Connected { .. });
        out.push(d);
        if done {
            return out;
        }
    }
}
