//! Giving up: with a retry limit, a server that keeps failing ends the connection with
//! `RetriesExhausted` (keeping the last cause as its source); a permanent refusal (403) ends it
//! at once, without retrying.

mod common;

use std::error::Error as _;
use std::time::Duration;

use common::*;
use websockex_nova::{Client, Error, ErrorKind, Event, ReconnectPolicy, State};
use websockex_nova_testkit::{Plan, Script, TestServer};

fn two_retries() -> ReconnectPolicy {
    ReconnectPolicy::exponential(ms(100), Duration::from_secs(5)).with_max_retries(2)
}

fn source_kind(e: &Error) -> ErrorKind {
    e.source()
        .and_then(|s| s.downcast_ref::<Error>())
        .expect("the last failure is kept as the source")
        .kind()
        .clone()
}

#[tokio::test(start_paused = true)]
async fn connect_returns_retries_exhausted_when_the_server_keeps_refusing() {
    let server = TestServer::start(Script::plan(Plan::Refuse { status: 503 }))
        .await
        .unwrap();
    let err = Client::builder(server.url())
        .reconnect(two_retries())
        .connect()
        .await
        .unwrap_err();
    // `attempts` counts the retries the policy allowed; with the first attempt, the server
    // saw three.
    assert_eq!(err.kind(), &ErrorKind::RetriesExhausted { attempts: 2 });
    assert!(err.is_closed() && !err.is_transient());
    assert_eq!(
        source_kind(&err),
        ErrorKind::UpgradeRejected { status: 503 }
    );
    assert_eq!(server.accepted(), 3);
}

#[tokio::test(start_paused = true)]
async fn connect_to_a_stopped_server_gives_up_too() {
    let mut server = TestServer::start(Script::echo()).await.unwrap();
    server.stop().await;
    let err = Client::builder(server.url())
        .reconnect(two_retries())
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::RetriesExhausted { attempts: 2 });
    assert_eq!(source_kind(&err), ErrorKind::Connect);
}

#[tokio::test(start_paused = true)]
async fn spawned_connection_ends_with_closed_and_the_error() {
    let server = TestServer::start(Script::plan(Plan::Refuse { status: 503 }))
        .await
        .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(two_retries())
        .spawn()
        .unwrap();
    let trace = trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await;
    assert_eq!(
        trace,
        [
            "disconnected#1 UpgradeRejected { status: 503 }",
            "reconnecting#2 100ms",
            "disconnected#2 UpgradeRejected { status: 503 }",
            "reconnecting#3 200ms",
            "disconnected#3 UpgradeRejected { status: 503 }",
            "closed RetriesExhausted { attempts: 2 }",
        ]
    );
    assert!(events.next().await.is_none(), "nothing follows Closed");
    client.closed().await;
    assert_eq!(client.status().state, State::Closed);
    assert!(client.ready().await.unwrap_err().is_closed());
    let err = client.send_text("too late").await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Closed);
}

#[tokio::test(start_paused = true)]
async fn retries_count_again_after_a_successful_connect() {
    // Up, then down for good: the retry budget applies to the new outage.
    let server = TestServer::start(Script::sequence(vec![
        Plan::Refuse { status: 503 },
        Plan::echo(),
        Plan::Refuse { status: 503 },
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(two_retries().with_reset_after(Duration::from_secs(1)))
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "disconnected#1 UpgradeRejected { status: 503 }",
            "reconnecting#2 100ms",
            "connected#2",
        ]
    );
    // Stay up past reset_after, so the counter starts over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.drop_connections();
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await,
        [
            "disconnected#2 Io",
            "reconnecting#3 100ms",
            "disconnected#3 UpgradeRejected { status: 503 }",
            "reconnecting#4 200ms",
            "disconnected#4 UpgradeRejected { status: 503 }",
            "closed RetriesExhausted { attempts: 2 }",
        ]
    );
    assert_eq!(client.status().state, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_403_refusal_stops_at_once() {
    let server = TestServer::start(Script::plan(Plan::Refuse { status: 403 }))
        .await
        .unwrap();
    let err = Client::builder(server.url())
        .reconnect(ReconnectPolicy::exponential(
            ms(100),
            Duration::from_secs(5),
        ))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::UpgradeRejected { status: 403 });
    assert!(!err.is_transient());
    assert_eq!(server.accepted(), 1, "no retry after a permanent refusal");

    let (client, mut events) = Client::builder(server.url()).spawn().unwrap();
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await,
        [
            "disconnected#1 UpgradeRejected { status: 403 }",
            "closed UpgradeRejected { status: 403 }",
        ]
    );
    assert!(events.next().await.is_none());
    assert_eq!(client.status().state, State::Closed);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(start_paused = true)]
async fn reconnect_never_closes_on_the_first_loss() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(ReconnectPolicy::never())
        .connect()
        .await
        .unwrap();
    server.drop_connections();
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await,
        ["connected#1", "disconnected#1 Io", "closed Io"]
    );
    assert_eq!(client.status().state, State::Closed);
    assert_eq!(server.accepted(), 1);
}

/// Documents current behaviour: the retry counter is the backoff's attempt counter, which only
/// resets after the link stayed up for `reset_after`. A link that comes up but drops sooner
/// does not refill the budget, so a flapping server exhausts it across successful connects.
#[tokio::test(start_paused = true)]
async fn a_flapping_link_keeps_using_up_the_retry_budget() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Refuse { status: 503 },
        Plan::echo(),
        Plan::Refuse { status: 503 },
    ]))
    .await
    .unwrap();
    let (_client, mut events) = Client::builder(server.url())
        .reconnect(two_retries())
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "disconnected#1 UpgradeRejected { status: 503 }",
            "reconnecting#2 100ms",
            "connected#2",
        ]
    );
    server.drop_connections();
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await,
        [
            "disconnected#2 Io",
            "reconnecting#3 200ms",
            "disconnected#3 UpgradeRejected { status: 503 }",
            "closed RetriesExhausted { attempts: 2 }",
        ]
    );
}
