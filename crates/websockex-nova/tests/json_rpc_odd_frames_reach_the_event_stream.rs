//! On a JSON-RPC link, what the envelope cannot place is handed over as it came: a binary
//! frame (even one holding a valid notification) and a `subscription` notification without
//! `channel` or `data` arrive as `Event::Message`, never on a subscription stream, and the
//! link stays up (subscriptions and requests go on).

mod common;

use common::rpc::*;
use common::*;
use serde_json::{json, Value};
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{Event, Events, Frame, SubscriptionEvent};
use websockex_nova_testkit::{Plan, RpcServer, RpcUntil, Script, Step, TestServer};

/// The next `n` significant events: `binary [..]` for binary messages, else as `describe`.
async fn next_n(events: &mut Events, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(match next_significant(events).await {
            Event::Message(Frame::Binary(b)) => format!("binary {:?}", &b[..]),
            e => describe(&e),
        });
    }
    out
}

#[tokio::test(start_paused = true)]
async fn binary_frames_and_notifications_without_channel_or_data_are_messages() {
    let rpc = RpcServer::builder()
        .handler("echo", |p| Ok(p.clone()))
        .build();
    let good_push = json!({
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {"channel": "ticker.A", "data": {"p": 1}},
    })
    .to_string();
    // After the subscribe is answered: the same notification as a binary frame, and bytes
    // that are not JSON at all, then JSON-RPC again.
    let server = TestServer::start(Script::plan(Plan::Accept(vec![
        Step::JsonRpcUntil(rpc.clone(), RpcUntil::Answered(1)),
        Step::SendBinary(good_push.clone().into_bytes()),
        Step::SendBinary(vec![0x00, 0x9f, 0x92, 0x96]),
        Step::JsonRpc(rpc.clone()),
    ])))
    .await
    .unwrap();
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    let mut sub = client.subscribe(["ticker.A"]).await.unwrap();
    assert_eq!(rpc.subscriptions(0), ["ticker.A"]);
    assert_eq!(
        next_n(&mut events, 2).await,
        [
            format!("binary {:?}", good_push.as_bytes()),
            "binary [0, 159, 146, 150]".to_owned(),
        ]
    );

    let no_data = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.A"}}"#;
    let no_channel = r#"{"jsonrpc":"2.0","method":"subscription","params":{"data":{"p":2}}}"#;
    let null_params = r#"{"jsonrpc":"2.0","method":"subscription","params":null}"#;
    let no_params = r#"{"jsonrpc":"2.0","method":"subscription"}"#;
    for text in [no_data, no_channel, null_params, no_params] {
        assert!(rpc.push(0, text));
    }
    assert_eq!(rpc.notify("ticker.A", json!({"p": 3})), 1);
    assert_eq!(
        next_n(&mut events, 4).await,
        [
            format!("message {no_data}"),
            format!("message {no_channel}"),
            format!("message {null_params}"),
            format!("message {no_params}"),
        ]
    );

    // The subscription saw only the well-formed notification.
    match tokio::time::timeout(T, sub.next()).await.unwrap() {
        Some(SubscriptionEvent::Notification { channel, data }) => {
            assert_eq!(channel.as_str(), "ticker.A");
            assert_eq!(data.as_str(), r#"{"p":3}"#);
        }
        other => panic!("expected the notification, got {other:?}"),
    }
    // The same link goes on: a request is answered, nothing else happened on the stream.
    let r: Value = client.request_as("echo", &json!([1])).await.unwrap();
    assert_eq!(r, json!([1]));
    assert!(events.try_next().is_none(), "no disconnect, no error");
    assert_eq!((server.accepted(), server.upgraded()), (1, 1));
    client.close().await.unwrap();
}
