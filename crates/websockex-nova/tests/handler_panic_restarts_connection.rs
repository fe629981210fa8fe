//! Supervision (DESIGN §4.8): a handler that panics never takes the connection down silently.
//! The panic becomes `Event::Restarted`, the connection comes back and keeps working; a
//! handler that keeps panicking beyond the `RestartLimit` closes the connection with
//! `HandlerPanicked`.

mod common;

use std::time::Duration;

use common::*;
use websockex_nova::behaviour::{Classified, FrameDecision};
use websockex_nova::{
    Client, ConnectionHandler, ErrorKind, Event, Frame, MessageHandler, ReconnectPolicy,
    RestartLimit, State,
};
use websockex_nova_testkit::{Plan, Script, Step, TestServer};

/// Panics on the text "boom", delivers everything else.
struct PanicsOnBoom;

impl MessageHandler for PanicsOnBoom {
    fn classify(&mut self, frame: &Frame) -> Classified {
        if frame.as_text() == Some("boom") {
            panic!("handler bug triggered by boom");
        }
        Classified::Other
    }
}

/// Panics on every inbound frame.
struct AlwaysPanics;

impl ConnectionHandler for AlwaysPanics {
    fn on_frame(&mut self, _frame: &Frame) -> FrameDecision {
        panic!("on_frame always fails");
    }
}

fn policy() -> ReconnectPolicy {
    ReconnectPolicy::exponential(ms(100), Duration::from_secs(5))
}

fn two_restarts_a_minute() -> RestartLimit {
    let mut limit = RestartLimit::default();
    limit.max_restarts = 2;
    limit.window = Duration::from_secs(60);
    limit
}

#[tokio::test(start_paused = true)]
async fn a_panic_on_one_message_restarts_and_the_connection_keeps_working() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events, connection) = Client::builder(server.url())
        .reconnect(policy())
        .message_handler(PanicsOnBoom)
        .build()
        .unwrap();
    let task = tokio::spawn(connection);
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    assert_echo(&client, &mut events, "fine").await;

    client.send_text("boom").await.unwrap();
    let Event::Restarted { restarts, cause } = next_significant(&mut events).await else {
        panic!("expected Restarted");
    };
    assert_eq!(restarts, 1);
    assert!(cause.contains("boom"), "{cause}");
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "disconnected#1 HandlerPanicked",
            "reconnecting#2 100ms",
            "connected#2",
        ]
    );
    assert_echo(&client, &mut events, "still working").await;
    assert_eq!(client.status().state, State::Ready);
    assert_eq!(server.upgraded(), 2);

    client.close().await.unwrap();
    assert!(matches!(task.await, Ok(Ok(()))));
    assert_eq!(drain(&mut events).await.last().unwrap(), "closed");
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_always_panics_ends_in_closed_with_restart_limit() {
    // Every connection greets the client, which makes the handler panic.
    let server = TestServer::start(Script::plan(Plan::Accept(vec![
        Step::SendText("hello".into()),
        Step::Echo,
    ])))
    .await
    .unwrap();
    let (client, mut events, connection) = Client::builder(server.url())
        .reconnect(policy())
        .connection_handler(AlwaysPanics)
        .restart_limit(two_restarts_a_minute())
        .build()
        .unwrap();
    let task = tokio::spawn(connection);
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await,
        [
            "connected#1",
            "restarted 1",
            "disconnected#1 HandlerPanicked",
            "reconnecting#2 100ms",
            "connected#2",
            "restarted 2",
            "disconnected#2 HandlerPanicked",
            "reconnecting#3 200ms",
            "connected#3",
            "closed RestartLimit { restarts: 3 }",
        ]
    );
    assert!(events.next().await.is_none());
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::RestartLimit { restarts: 3 });
    assert!(err.is_closed());
    // The panic that broke the limit is the source.
    let source = std::error::Error::source(&err).expect("the last panic");
    assert!(
        source.to_string().contains("a handler panicked"),
        "{source}"
    );
    assert_eq!(client.status().state, State::Closed);
    assert!(client.send_text("x").await.unwrap_err().is_closed());
    assert_eq!(server.upgraded(), 3);
}

#[tokio::test(start_paused = true)]
async fn restarts_outside_the_window_do_not_count() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let mut limit = RestartLimit::default();
    limit.max_restarts = 1;
    limit.window = Duration::from_secs(10);
    let (client, mut events) = Client::builder(server.url())
        .reconnect(policy())
        .message_handler(PanicsOnBoom)
        .restart_limit(limit)
        .spawn()
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    for round in 1..=3 {
        client.send_text("boom").await.unwrap();
        let trace = trace_until_connected(&mut events, 1).await;
        assert_eq!(trace[0], "restarted 1", "round {round}: {trace:?}");
        assert_eq!(trace.last().unwrap(), &format!("connected#{}", round + 1));
        // Let the previous restart leave the window.
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    assert_echo(&client, &mut events, "survived").await;
    client.close().await.unwrap();
}
