//! Venue heartbeats are answered ahead of everything queued (issue 3, acceptance 6; DESIGN
//! §4.3): with the user queue full of requests waiting for rate-limit credits, every
//! `test_request` of the server is answered at once, so the server never closes with 4000
//! ("heartbeat unanswered").
//!
//! The testkit server turns heartbeats on with `public/set_heartbeat` and closes with 4000
//! when one is still unanswered as the next is due. Here the client's budget is one request a
//! second and 20 requests wait in its queue (20 s of work), while heartbeats come every
//! 2.3 s: an answer that had to queue behind them would be ~20 s late.

mod common;

use std::time::Duration;

use common::rpc::*;
use common::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::time::Instant;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::RateLimit;
use websockex_nova_testkit::RpcServer;

#[tokio::test(start_paused = true)]
async fn heartbeats_are_answered_at_once_while_the_rate_limit_queue_is_full() {
    let rpc = RpcServer::builder()
        .handler("echo", |p| Ok(p.clone()))
        .build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .rate_limit(RateLimit::new(1, 1.0).with_max_wait(None))
        .connect()
        .await
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);

    let t0 = Instant::now();
    let ok: String = client
        .request_as("public/set_heartbeat", &json!({"interval": 2.3}))
        .await
        .unwrap();
    assert_eq!(ok, "ok");

    // 20 requests at one credit a second (the only credit went to set_heartbeat).
    let params: Vec<Value> = (0..20).map(|n| json!([n])).collect();
    let results = join_all(
        params
            .iter()
            .map(|p| client.request_as::<Value, _>("echo", p)),
    )
    .await;
    let results: Vec<Value> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, params);
    assert_eq!(t0.elapsed(), secs(20));

    // The queue was metered as configured: one a second, unaffected by the heartbeat
    // answers (which neither wait for credits nor take any).
    let echo_at: Vec<Duration> = requests_for(&rpc, 0, "echo")
        .iter()
        .map(|r| r.at - t0)
        .collect();
    assert_eq!(echo_at, (1..=20).map(secs).collect::<Vec<_>>());

    // Every heartbeat sent meanwhile was answered at once, while requests still waited.
    let heartbeats = rpc.heartbeats();
    assert!(heartbeats.len() >= 8, "{heartbeats:?}");
    for hb in &heartbeats {
        let answered = hb.answered_at.expect("every heartbeat answered");
        assert_eq!(hb.answer_delay(), Some(Duration::ZERO), "{hb:?}");
        let sent = hb.sent_at - t0;
        if sent < secs(20) {
            let waiting_after = echo_at.iter().filter(|at| t0 + **at > answered).count();
            assert!(waiting_after > 0, "the queue was still full at {sent:?}");
        }
    }
    assert_eq!(requests_for(&rpc, 0, "public/test").len(), heartbeats.len());

    // No 4000 close, no reconnect; the answers' own responses were consumed quietly.
    assert_eq!(server.upgraded(), 1);
    client.close().await.unwrap();
    let rest = drain(&mut events).await;
    assert_eq!(
        rest.iter()
            .filter(|e| !e.contains("->"))
            .collect::<Vec<_>>(),
        ["closed"],
        "{rest:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_heartbeat_would_have_been_closed_with_4000() {
    // The control: without the JSON-RPC heartbeat behaviour the client does not answer, and
    // the server closes with 4000 at the second heartbeat. This shows the server does enforce
    // what the test above relies on.
    let rpc = RpcServer::builder().build();
    let server = serve(&rpc).await;
    let mut config = JsonRpcConfig::default();
    config.heartbeat = None;
    let (client, mut events) = client(&server, config).connect().await.unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    let _: String = client
        .request_as("public/set_heartbeat", &json!({"interval": 2}))
        .await
        .unwrap();
    let trace = trace_until(&mut events, |e| {
        matches!(e, websockex_nova::Event::Disconnected { .. })
    })
    .await;
    // The heartbeat itself arrives as a plain message (nobody classified it).
    assert_eq!(
        trace.last().unwrap(),
        r#"disconnected#1 ClosedByServer(4000 "heartbeat close") code=4000"#
    );
    assert!(trace[0].starts_with("message ") && trace[0].contains("test_request"));
    client.close().await.unwrap();
}
