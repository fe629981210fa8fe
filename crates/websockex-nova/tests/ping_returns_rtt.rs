//! `Client::ping` sends a WebSocket ping and resolves with the round-trip time when its pong
//! comes back; it fails instead of hanging when the link is lost first.

mod common;

use std::time::Duration;

use common::*;
use websockex_nova::{Client, ErrorKind, ReconnectPolicy};
use websockex_nova_testkit::{Plan, Received, Script, Step, TestServer};

fn pings(server: &TestServer) -> usize {
    server
        .control()
        .iter()
        .filter(|r| matches!(r, Received::Ping { .. }))
        .count()
}

#[tokio::test(start_paused = true)]
async fn ping_resolves_with_the_round_trip_time() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .ping_interval(None)
        .connect()
        .await
        .unwrap();
    let rtt = tokio::time::timeout(T, client.ping())
        .await
        .unwrap()
        .unwrap();
    assert!(rtt < T, "{rtt:?}");
    // Concurrent pings are told apart by their payloads; each gets its own pong.
    let (a, b) = tokio::join!(client.ping(), client.ping());
    a.unwrap();
    b.unwrap();
    assert_eq!(pings(&server), 3);
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    assert_echo(&client, &mut events, "after pings").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_ping_without_pong_fails_when_the_dead_link_is_replaced() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![Step::Stall]),
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(ReconnectPolicy::exponential(ms(50), Duration::from_secs(1)))
        .ping_interval(None)
        .ping_timeout(Some(ms(500)))
        .connect()
        .await
        .unwrap();
    let err = tokio::time::timeout(T, client.ping())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Disconnected { sent: true });
    assert_eq!(err.was_sent(), Some(true));
    assert_eq!(
        trace_until_connected(&mut events, 2).await,
        [
            "connected#1",
            "disconnected#1 Timeout(Keepalive)",
            "reconnecting#2 50ms",
            "connected#2",
        ]
    );
    // The new link answers.
    tokio::time::timeout(T, client.ping())
        .await
        .unwrap()
        .unwrap();
    client.close().await.unwrap();
}
