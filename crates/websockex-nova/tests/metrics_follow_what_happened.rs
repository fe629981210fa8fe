//! `DefaultMetricsCollector` snapshots match a scripted scenario: connects, a drop and a
//! reconnect, messages in and out, request latencies, errors by category, drops.

mod common;

use common::rpc::*;
use common::*;
use serde_json::json;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::metrics::DefaultMetricsCollector;
use websockex_nova::{Event, OverflowPolicy, SubscriptionEvent};
use websockex_nova_testkit::RpcServer;

#[tokio::test(start_paused = true)]
async fn snapshots_count_the_scenario() {
    let rpc = RpcServer::builder()
        .result("public/get_time", json!(1))
        .delay("public/get_time", ms(5))
        .build();
    let server = serve(&rpc).await;
    let metrics = DefaultMetricsCollector::new();
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .metrics(metrics.clone())
        .subscription_capacity(2)
        .overflow_policy(OverflowPolicy::DropNewest)
        .connect()
        .await
        .unwrap();
    for _ in 0..3 {
        client.request("public/get_time", &json!({})).await.unwrap();
    }
    let mut sub = client.subscribe(["chan.x"]).await.unwrap();
    for i in 0..10 {
        rpc.notify("chan.x", json!({ "i": i }));
    }
    // Once this answer is back, all ten notifications were routed (same stream, in order).
    client.request("public/get_time", &json!({})).await.unwrap();

    let s = metrics.snapshot();
    assert_eq!(s.connections_opened, 1);
    assert_eq!(s.connections_open, 1);
    assert_eq!(s.requests, 4);
    assert!(s.latency_p50.unwrap() >= ms(5), "{:?}", s.latency_p50);
    assert!(s.latency_max.unwrap() >= ms(5));
    assert_eq!(s.dropped, 8, "capacity 2 of 10");
    // Requests, a subscribe call and the answers: frames out and text in.
    assert_eq!(s.messages_out, 5);
    assert!(s.text_in >= 15, "{}", s.text_in);
    let mut seen = 0;
    while seen < 2 + 8 {
        match sub.next().await.unwrap() {
            SubscriptionEvent::Notification { .. } => seen += 1,
            SubscriptionEvent::Lagged { dropped } => seen += dropped as usize,
            other => panic!("{other:?}"),
        }
    }

    server.drop_connections();
    loop {
        if let Event::Connected { attempt: 2, .. } = next_significant(&mut events).await {
            break;
        }
    }
    let s = metrics.snapshot();
    assert_eq!(
        (
            s.connections_opened,
            s.connections_closed,
            s.connections_open
        ),
        (2, 1, 1)
    );
    assert_eq!(s.reconnects, 1);
    assert_eq!(s.errors, vec![("Io", 1)]);
    client.close().await.unwrap();
    assert_eq!(metrics.snapshot().connections_open, 0);
}
