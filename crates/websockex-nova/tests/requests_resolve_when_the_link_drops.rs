//! Every request resolves when the link goes away (issue 3, acceptance 2; DESIGN §4.1, §4.7):
//! requests written and unanswered fail with `Disconnected { sent: true }`; requests not yet
//! written stay queued and go out on the next link; while offline, requests wait in the
//! bounded queue (default) or fail at once with `NotReady` (`OfflinePolicy::Reject`); after
//! `close()` whatever waits, queued or in flight, fails with `Closed`.
//!
//! "Not written" therefore never surfaces as `Disconnected { sent: false }` on a drop: such a
//! request is safe to send again and simply waits for the next link (in order, once). `sent:
//! false` is reserved for a request whose own socket write failed, which the testkit cannot
//! provoke deterministically.

mod common;

use std::future::Future;

use common::rpc::*;
use common::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{Client, ErrorKind, Event, Events, OfflinePolicy, RawJson};
use websockex_nova_testkit::{Plan, RpcServer, RpcUntil, Script, Step, TestServer};

/// Resolves `fut` without letting (virtual) time pass, i.e. "at once".
async fn at_once<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(ms(1), fut)
        .await
        .expect("should resolve at once")
}

/// `[]`, borrowed for as long as needed.
const NO_PARAMS: [u8; 0] = [];

fn rpc() -> RpcServer {
    RpcServer::builder()
        .handler("echo", |p| Ok(p.clone()))
        .result("slow", json!("slow"))
        .delay("slow", secs(60))
        .build()
}

/// A client connected to `server`; returns after its first `Connected`.
async fn connected(server: &TestServer, offline: OfflinePolicy) -> (Client, Events) {
    let (client, mut events) = client(server, JsonRpcConfig::default())
        .offline_policy(offline)
        .max_in_flight(3)
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    (client, events)
}

/// Stops the server and waits until the client has noticed.
async fn outage(server: &mut TestServer, events: &mut Events) {
    server.stop().await;
    assert_eq!(
        trace_until(events, |e| matches!(e, Event::Reconnecting { .. })).await,
        ["disconnected#1 Io", "reconnecting#2 100ms"]
    );
}

#[tokio::test(start_paused = true)]
async fn written_requests_fail_as_sent_and_unwritten_ones_go_out_on_the_next_link() {
    let rpc = rpc();
    // The first link takes three requests without answering them, then drops.
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![
            Step::JsonRpcUntil(rpc.clone(), RpcUntil::Requests(3)),
            Step::Drop,
        ]),
        Plan::json_rpc(rpc.clone()),
    ]))
    .await
    .unwrap();
    let (client, mut events) = connected(&server, OfflinePolicy::default()).await;

    // Three slow ones fill the in-flight cap (3); the two after them wait unwritten.
    let slow: Vec<_> = (0..3).map(|_| client.request("slow", &NO_PARAMS)).collect();
    let params: Vec<Value> = (0..2).map(|n| json!([n])).collect();
    let waiting: Vec<_> = params
        .iter()
        .map(|p| client.request_as::<Value, _>("echo", p))
        .collect();
    let (slow, waiting) = tokio::join!(join_all(slow), join_all(waiting));

    for result in slow {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Disconnected { sent: true });
        assert_eq!(err.was_sent(), Some(true));
        assert!(err.is_disconnected() && err.is_transient());
    }
    let waiting: Vec<Value> = waiting.into_iter().map(Result::unwrap).collect();
    assert_eq!(waiting, [json!([0]), json!([1])]);
    assert_eq!(
        rpc.methods(),
        [
            (0, "slow".to_owned()),
            (0, "slow".to_owned()),
            (0, "slow".to_owned()),
            (1, "echo".to_owned()),
            (1, "echo".to_owned()),
        ],
        "the unwritten requests went out once, on the new link"
    );
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["disconnected#1 Io", "reconnecting#2 100ms", "connected#2"]
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn requests_while_offline_are_queued_and_answered_after_reconnect() {
    let rpc = rpc();
    let mut server = serve(&rpc).await;
    let (client, mut events) = connected(&server, OfflinePolicy::default()).await;
    let _: Value = client.request_as("echo", &json!(["online"])).await.unwrap();
    outage(&mut server, &mut events).await;

    let p: Vec<Value> = (0..5).map(|n| json!([n])).collect();
    let mut queued = Vec::new();
    for p in &p {
        queued.push(issue(client.request_as::<Value, _>("echo", p)).await);
    }
    server.restart().await.unwrap();
    let results: Vec<Value> = tokio::time::timeout(T, join_all(queued))
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results, p);
    // In order, on the new link, each once.
    let on_new_link: Vec<Value> = rpc
        .requests()
        .into_iter()
        .filter(|r| r.conn == 1)
        .map(|r| r.params)
        .collect();
    assert_eq!(on_new_link, p);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_reject_policy_fails_offline_requests_at_once() {
    let rpc = rpc();
    let mut server = serve(&rpc).await;
    let (client, mut events) = connected(&server, OfflinePolicy::Reject).await;
    outage(&mut server, &mut events).await;

    let err = at_once(client.request("echo", &json!([1])))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotReady);
    assert!(err.is_transient());

    server.restart().await.unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#2"]);
    let r: Value = client.request_as("echo", &json!([2])).await.unwrap();
    assert_eq!(r, json!([2]));
    assert_eq!(
        rpc.requests().iter().map(|r| &r.params).collect::<Vec<_>>(),
        [&json!([2])],
        "the rejected request was never sent"
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_fails_queued_requests_with_closed() {
    let rpc = rpc();
    let mut server = serve(&rpc).await;
    let (client, mut events) = connected(&server, OfflinePolicy::default()).await;
    outage(&mut server, &mut events).await;

    let p: Vec<Value> = (0..3).map(|n| json!([n])).collect();
    let mut queued = Vec::new();
    for p in &p {
        queued.push(issue(client.request("echo", p)).await);
    }
    client.close().await.unwrap();
    for result in join_all(queued).await {
        let err: websockex_nova::Error = result.map(|_: RawJson| ()).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Closed);
        assert!(err.is_closed());
    }
    assert_eq!(drain(&mut events).await.last().unwrap(), "closed");
    let err = at_once(client.request("echo", &json!([9])))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Closed);
    assert_eq!(rpc.total_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn close_resolves_requests_in_flight() {
    let rpc = rpc();
    let server = serve(&rpc).await;
    let (client, mut events) = connected(&server, OfflinePolicy::default()).await;
    let in_flight = issue(client.request("slow", &NO_PARAMS)).await;
    assert_eq!(rpc.wait_requests(1, T).await.len(), 1);
    client.close().await.unwrap();
    let err = at_once(in_flight).await.unwrap_err();
    // DESIGN §4.7: "close() … fails pending requests with Closed".
    assert_eq!(err.kind(), &ErrorKind::Closed);
    assert_eq!(drain(&mut events).await.last().unwrap(), "closed");
}
