//! Sends made while the connection is not Ready follow the offline policy (DESIGN §4.1):
//! by default they wait in a bounded queue and are written in order right after the next
//! connect; beyond the queue's capacity, or with `OfflinePolicy::Reject`, they fail at once.
//! After `close()` every send fails with `Closed`.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use websockex_nova::{Client, Error, ErrorKind, Event, Events, OfflinePolicy, ReconnectPolicy};
use websockex_nova_testkit::{Script, TestServer};

type SendFut<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;

/// Hands each send to the connection in this order (polling each future once, which enqueues
/// its command), without waiting for any of them to complete.
async fn enqueue_in_order<'a>(client: &'a Client, texts: &[&str]) -> Vec<SendFut<'a>> {
    let mut futs: Vec<SendFut<'a>> = Vec::new();
    for text in texts {
        let mut fut: SendFut<'a> = Box::pin(client.send_text(text.to_string()));
        let pending =
            std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
        assert!(pending, "an offline send must wait for the reconnect");
        futs.push(fut);
    }
    futs
}

/// Resolves `fut` without letting (virtual) time pass, i.e. "at once".
async fn at_once<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(ms(1), fut)
        .await
        .expect("should resolve at once, without waiting for a reconnect")
}

/// Starts an echo server and a connected client whose backoff is long enough that the tests
/// act while it is offline. Returns after the first `Connected`.
async fn connected(policy: OfflinePolicy) -> (TestServer, Client, Events) {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(ReconnectPolicy::exponential(
            ms(500),
            Duration::from_secs(5),
        ))
        .offline_policy(policy)
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    (server, client, events)
}

/// Stops the server and waits until the client has noticed.
async fn outage(server: &mut TestServer, events: &mut Events) {
    server.stop().await;
    assert_eq!(
        trace_until(events, |e| matches!(e, Event::Reconnecting { .. })).await,
        ["disconnected#1 Io", "reconnecting#2 500ms"]
    );
}

#[tokio::test(start_paused = true)]
async fn queued_sends_are_delivered_in_order_after_reconnect() {
    let (mut server, client, mut events) = connected(OfflinePolicy::default()).await;
    assert_echo(&client, &mut events, "online").await;
    outage(&mut server, &mut events).await;

    let texts = ["q1", "q2", "q3", "q4", "q5"];
    let sends = enqueue_in_order(&client, &texts).await;
    // Let a few failed attempts go by while the frames wait.
    assert_eq!(
        trace_until(&mut events, |e| matches!(
            e,
            Event::Reconnecting { attempt: 3, .. }
        ))
        .await,
        ["disconnected#2 Connect", "reconnecting#3 1s"]
    );
    server.restart().await.unwrap();

    let results = tokio::time::timeout(T, join_all(sends)).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut trace = trace_until_connected(&mut events, 1).await;
    for _ in texts {
        trace.push(describe(&next_significant(&mut events).await));
    }
    assert_eq!(
        trace,
        [
            "connected#3",
            "message q1",
            "message q2",
            "message q3",
            "message q4",
            "message q5"
        ]
    );
    assert_eq!(server.texts(), ["online", "q1", "q2", "q3", "q4", "q5"]);
    // The queued frames went out before any later send.
    assert_echo(&client, &mut events, "live").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_offline_queue_rejects_at_once() {
    let (mut server, client, mut events) = connected(OfflinePolicy::Queue { capacity: 2 }).await;
    outage(&mut server, &mut events).await;

    let sends = enqueue_in_order(&client, &["kept1", "kept2"]).await;
    let err = at_once(client.send_text("overflow")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::QueueFull);
    assert!(err.is_transient() && !err.is_closed());

    server.restart().await.unwrap();
    let results = tokio::time::timeout(T, join_all(sends)).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut trace = trace_until_connected(&mut events, 1).await;
    trace.push(describe(&next_significant(&mut events).await));
    trace.push(describe(&next_significant(&mut events).await));
    assert_eq!(trace, ["connected#2", "message kept1", "message kept2"]);
    assert_eq!(
        server.texts(),
        ["kept1", "kept2"],
        "the rejected frame was never sent"
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_reject_policy_fails_sends_and_pings_at_once() {
    let (mut server, client, mut events) = connected(OfflinePolicy::Reject).await;
    outage(&mut server, &mut events).await;

    let err = at_once(client.send_text("nope")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotReady);
    let err = at_once(client.ping()).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotReady);

    server.restart().await.unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#2"]);
    assert_echo(&client, &mut events, "back").await;
    assert_eq!(server.texts(), ["back"]);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sends_before_the_first_connect_are_queued_too() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url()).spawn().unwrap();
    let sends = enqueue_in_order(&client, &["early1", "early2"]).await;
    let results = tokio::time::timeout(T, join_all(sends)).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut trace = trace_until_connected(&mut events, 1).await;
    trace.push(describe(&next_significant(&mut events).await));
    trace.push(describe(&next_significant(&mut events).await));
    assert_eq!(trace, ["connected#1", "message early1", "message early2"]);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_fails_queued_sends_and_every_later_send_with_closed() {
    let (mut server, client, mut events) = connected(OfflinePolicy::default()).await;
    outage(&mut server, &mut events).await;
    let sends = enqueue_in_order(&client, &["lost1", "lost2"]).await;

    client.close().await.unwrap();
    for result in join_all(sends).await {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Closed);
        assert!(err.is_closed());
    }
    assert_eq!(drain(&mut events).await.last().unwrap(), "closed");

    let err = at_once(client.send_text("after close")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Closed);
    assert!(err.is_closed());
    assert!(at_once(client.ping()).await.unwrap_err().is_closed());
    assert!(at_once(client.send_binary(vec![1u8, 2]))
        .await
        .unwrap_err()
        .is_closed());
    assert!(at_once(client.ready()).await.unwrap_err().is_closed());
    // Closing again is fine.
    at_once(client.close()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sends_after_a_clean_close_fail_with_closed() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url()).connect().await.unwrap();
    let other = client.clone();
    client.close().await.unwrap();
    assert_eq!(drain(&mut events).await.last().unwrap(), "closed");
    let err = at_once(other.send_text("late")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Closed);
    assert!(err.is_closed());
}
