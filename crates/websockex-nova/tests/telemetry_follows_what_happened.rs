//! Observability (issue 5): the `tracing` events, the `LoggingHandler` records and the
//! `DefaultMetricsCollector` numbers follow scripted scenarios: a reconnect, an auth
//! failure, drops under `DropNewest`, and waits for rate-limit credits. Each is emitted once
//! from one call site, so the `tracing` stream and the handler's records name the same
//! happenings.

mod common;

use common::rpc::*;
use common::telemetry::*;
use common::*;
use serde_json::json;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::logging::LogCategory;
use websockex_nova::metrics::DefaultMetricsCollector;
use websockex_nova::{ErrorKind, Event, OverflowPolicy, RateLimit, SubscriptionEvent};
use websockex_nova_testkit::RpcServer;

#[tokio::test(start_paused = true)]
async fn a_reconnect_is_told_by_events_records_and_metrics() {
    let (capture, _guard) = capture();
    let rpc = RpcServer::builder()
        .result("public/get_time", json!(1))
        .build();
    let server = serve(&rpc).await;
    let metrics = DefaultMetricsCollector::new();
    let records = Records::default();
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .metrics(metrics.clone())
        .logging(records.clone())
        .connect()
        .await
        .unwrap();
    client.request("public/get_time", &json!({})).await.unwrap();
    server.drop_connections();
    loop {
        if let Event::Connected { attempt: 2, .. } = next_significant(&mut events).await {
            break;
        }
    }
    client.close().await.unwrap();

    let disconnected = capture.named("disconnected");
    assert_eq!(disconnected.len(), 1, "{:?}", capture.names());
    assert_eq!(disconnected[0].field("category"), Some("Io"));
    assert_eq!(disconnected[0].field("attempt"), Some("1"));
    assert_eq!(disconnected[0].level, tracing::Level::WARN);
    let reconnecting = capture.named("reconnecting");
    assert_eq!(reconnecting.len(), 1);
    assert_eq!(reconnecting[0].field("attempt"), Some("2"));
    assert_eq!(reconnecting[0].field("delay_ms"), Some("100"));
    let connected: Vec<_> = capture
        .named("connected")
        .iter()
        .map(|c| c.field("attempt").unwrap().to_owned())
        .collect();
    assert_eq!(connected, ["1", "2"]);
    let sent = capture.named("request_sent");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].field("method"), Some("public/get_time"));
    assert_eq!(capture.named("request_answered").len(), 1);
    assert_eq!(capture.named("closed").len(), 1);
    assert!(!capture.named("message_received").is_empty());
    assert_eq!(capture.named("message_sent").len(), 1);

    // The handler saw the same happenings, in the same order.
    assert_eq!(records.names(), capture.names());
    let (category, fields) = &records.named("disconnected")[0];
    assert_eq!(*category, LogCategory::Error);
    assert_eq!(fields["category"], "Io");

    let s = metrics.snapshot();
    assert_eq!((s.connections_opened, s.reconnects), (2, 1));
    assert_eq!(s.errors, vec![("Io", 1)]);
    assert_eq!(s.messages_out, 1);
    assert_eq!(s.requests, 1);
}

#[tokio::test(start_paused = true)]
async fn an_auth_failure_is_one_event_one_error_and_no_retry() {
    let (capture, _guard) = capture();
    let rpc = RpcServer::builder().credentials("key", "right").build();
    let server = serve(&rpc).await;
    let metrics = DefaultMetricsCollector::new();
    let config = JsonRpcConfig::default().with_credentials("key", "wrong".to_owned());
    let (client, mut events) = client(&server, config)
        .metrics(metrics.clone())
        .spawn()
        .unwrap();
    let closed = loop {
        if let Event::Closed { error } = next_significant(&mut events).await {
            break error.unwrap();
        }
    };
    assert!(matches!(closed.kind(), ErrorKind::Auth), "{closed}");
    let failed = capture.named("auth_failed");
    assert_eq!(failed.len(), 1, "{:?}", capture.names());
    assert_eq!(failed[0].field("category"), Some("Auth"));
    assert!(capture.named("authenticated").is_empty());
    assert!(capture.named("reconnecting").is_empty());
    let s = metrics.snapshot();
    assert_eq!(s.errors, vec![("Auth", 1)]);
    assert_eq!(s.connections_opened, 0);
    assert_eq!(s.reconnects, 0);
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn every_drop_is_an_event_and_a_count() {
    let (capture, _guard) = capture();
    let rpc = RpcServer::builder()
        .result("public/get_time", json!(1))
        .build();
    let server = serve(&rpc).await;
    let metrics = DefaultMetricsCollector::new();
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .metrics(metrics.clone())
        .subscription_capacity(3)
        .overflow_policy(OverflowPolicy::DropNewest)
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe(["chan.x"]).await.unwrap();
    for i in 0..20 {
        rpc.notify("chan.x", json!({ "i": i }));
    }
    client.request("public/get_time", &json!({})).await.unwrap();
    let mut delivered = 0;
    let mut announced = 0;
    while delivered + announced < 20 {
        match sub.next().await.unwrap() {
            SubscriptionEvent::Notification { .. } => delivered += 1,
            SubscriptionEvent::Lagged { dropped } => announced += dropped,
            other => panic!("{other:?}"),
        }
    }
    let drops = capture.named("dropped");
    assert_eq!(drops.len() as u64, announced);
    assert!(drops
        .iter()
        .all(|d| d.field("stream") == Some("subscription")));
    assert_eq!(metrics.snapshot().dropped, announced);
    assert_eq!(delivered, 3);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rate_limit_waits_are_told_and_timed() {
    let (capture, _guard) = capture();
    let rpc = RpcServer::builder()
        .handler("echo", |p| Ok(p.clone()))
        .build();
    let server = serve(&rpc).await;
    let metrics = DefaultMetricsCollector::new();
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .metrics(metrics.clone())
        .rate_limit(RateLimit::new(5, 5.0))
        .connect()
        .await
        .unwrap();
    let calls = (0..20).map(|i| {
        let c = client.clone();
        async move { c.request("echo", &json!({ "i": i })).await }
    });
    let started = tokio::time::Instant::now();
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    // 5 at once, then 15 more at 5 per second.
    assert_eq!(started.elapsed(), secs(3));
    let limited = capture.named("rate_limited");
    assert!(!limited.is_empty());
    // Requests reach the writer one command at a time: the first wait begins as the
    // sixth arrives behind the burst of five.
    assert_eq!(limited[0].field("queued"), Some("1"));
    let s = metrics.snapshot();
    assert_eq!(s.rate_limit_waits, limited.len() as u64);
    assert!(
        s.rate_limit_wait_time >= ms(2_800),
        "{:?}",
        s.rate_limit_wait_time
    );
    assert!(s.rate_limit_wait_time <= secs(3));
    assert_eq!((s.outbound_depth, s.in_flight), (0, 0));
    assert_eq!(s.requests, 20);
    client.close().await.unwrap();
}
