//! Dead peers are detected (DESIGN §4.3): the client pings every interval; no inbound traffic
//! within the timeout means the link is dead, and it is replaced. A live peer that answers the
//! pings is never declared dead, however quiet it is otherwise.

mod common;

use std::time::Duration;

use common::*;
use websockex_nova::{Client, ErrorKind, Event, ReconnectPolicy, TimeoutKind};
use websockex_nova_testkit::{Plan, Received, Script, Step, TestServer};

#[tokio::test(start_paused = true)]
async fn a_stalled_peer_times_out_and_the_link_is_replaced() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![Step::EchoN(1), Step::Stall]),
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(ReconnectPolicy::exponential(ms(50), Duration::from_secs(1)))
        .ping_interval(Some(ms(100)))
        .ping_timeout(Some(ms(350)))
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    assert_echo(&client, &mut events, "before the stall").await;

    let Event::Disconnected { error, code, .. } = next_significant(&mut events).await else {
        panic!("expected Disconnected");
    };
    assert_eq!(error.kind(), &ErrorKind::Timeout(TimeoutKind::Keepalive));
    assert!(error.is_timeout() && error.is_transient() && !error.is_closed());
    assert_eq!(code, None);
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["reconnecting#2 50ms", "connected#2"]
    );
    assert_echo(&client, &mut events, "after the stall").await;
    assert_eq!(server.upgraded(), 2);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_quiet_peer_that_answers_pings_stays_connected() {
    // The server never sends data; only its pongs show that it is alive.
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::Serve])))
        .await
        .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .ping_interval(Some(ms(100)))
        .ping_timeout(Some(ms(350)))
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);

    // Thirty timeouts' worth of (virtual) time.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(events.try_next().is_none(), "nothing happened to the link");
    let pings = server
        .control()
        .into_iter()
        .filter(|r| matches!(r, Received::Ping { conn: 0, .. }))
        .count();
    assert!(pings >= 90, "the client kept pinging: {pings} pings");
    assert_eq!((server.accepted(), server.open()), (1, 1));

    client.close().await.unwrap();
    assert_eq!(drain(&mut events).await.last().unwrap(), "closed");
}

#[tokio::test(start_paused = true)]
async fn without_pings_a_silent_peer_is_declared_dead_after_the_timeout() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![Step::Serve]),
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(ReconnectPolicy::exponential(ms(50), Duration::from_secs(1)))
        .ping_interval(None)
        .ping_timeout(Some(ms(500)))
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 2).await,
        [
            "connected#1",
            "disconnected#1 Timeout(Keepalive)",
            "reconnecting#2 50ms",
            "connected#2",
        ]
    );
    assert!(server.control().is_empty(), "no pings were sent");
    client.close().await.unwrap();
}
