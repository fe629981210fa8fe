//! Bad input from the server (DESIGN §4.10) yields a typed error and the documented reaction:
//! the client closes with the matching RFC 6455 code (1007 invalid UTF-8, 1009 too big, 1002
//! protocol error), reports `Disconnected` with that error and code, and reconnects — unless
//! the error handler says stop.

mod common;

use std::time::Duration;

use common::*;
use websockex_nova::behaviour::{ErrorContext, ErrorDecision};
use websockex_nova::{Client, Error, ErrorKind, Event, ReconnectPolicy};
use websockex_nova_testkit::{Plan, Received, Script, Step, TestServer};

fn policy() -> ReconnectPolicy {
    ReconnectPolicy::exponential(ms(100), Duration::from_secs(5))
}

/// The close codes the server received, per connection.
fn close_codes(server: &TestServer) -> Vec<(usize, Option<u16>)> {
    server
        .received()
        .into_iter()
        .filter_map(|r| match r {
            Received::Close { conn, code, .. } => Some((conn, code)),
            _ => None,
        })
        .collect()
}

/// First connection runs `steps`, later ones echo. Checks the reaction end to end; with
/// `server_sees_close`, also that the close frame with `code` reached the server.
async fn bad_input_then_reconnect(
    steps: Vec<Step>,
    max_message: usize,
    expect: &str,
    code: u16,
    server_sees_close: bool,
) {
    let server = TestServer::start(Script::sequence(vec![Plan::Accept(steps), Plan::echo()]))
        .await
        .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(policy())
        .max_message_size(max_message)
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until_connected(&mut events, 2).await,
        [
            "connected#1".to_owned(),
            format!("disconnected#1 {expect} code={code}"),
            "reconnecting#2 100ms".to_owned(),
            "connected#2".to_owned(),
        ]
    );
    if server_sees_close {
        assert!(
            server.wait_for(T, |s| !close_codes(s).is_empty()).await,
            "no close frame arrived"
        );
        assert_eq!(close_codes(&server), [(0, Some(code))]);
    }
    assert_echo(&client, &mut events, "clean again").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn invalid_utf8_closes_with_1007_and_reconnects() {
    bad_input_then_reconnect(vec![Step::InvalidUtf8], 1 << 20, "InvalidUtf8", 1007, true).await;
}

#[tokio::test(start_paused = true)]
async fn an_oversized_message_closes_with_1009_and_reconnects() {
    bad_input_then_reconnect(
        vec![Step::Oversized { len: 4097 }],
        4096,
        "MessageTooBig { limit: 4096 }",
        1009,
        true,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_message_at_the_size_limit_is_delivered() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![Step::Oversized {
        len: 4096,
    }])))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .max_message_size(4096)
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Message(_))).await,
        ["connected#1", "message <4096 bytes>"]
    );
    client.close().await.unwrap();
    assert_eq!(drain(&mut events).await.last().unwrap(), "closed");
}

#[tokio::test(start_paused = true)]
async fn a_reserved_opcode_closes_with_1002_and_reconnects() {
    bad_input_then_reconnect(vec![Step::ReservedOpcode], 1 << 20, "Protocol", 1002, true).await;
}

#[tokio::test(start_paused = true)]
async fn an_oversized_control_frame_closes_with_1002_and_reconnects() {
    bad_input_then_reconnect(
        vec![Step::Ping(vec![7; 200])],
        1 << 20,
        "Protocol",
        1002,
        true,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_close_code_that_may_not_be_sent_closes_with_1002_and_reconnects() {
    let steps = vec![Step::Close {
        code: 1006,
        reason: String::new(),
    }];
    // The testkit writes such a close frame raw and then reads without interpreting, so it does
    // not record the client's 1002; the client side is what this test checks.
    bad_input_then_reconnect(steps, 1 << 20, "Protocol", 1002, false).await;
}

#[tokio::test(start_paused = true)]
async fn an_error_handler_can_stop_on_protocol_errors() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Accept(vec![Step::ReservedOpcode]),
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    let (client, mut events, connection) = Client::builder(server.url())
        .reconnect(policy())
        .error_handler(move |e: &Error, ctx: &ErrorContext| {
            log.lock().unwrap().push((e.kind().clone(), ctx.attempt));
            if e.is_protocol() {
                ErrorDecision::Stop
            } else {
                ErrorDecision::Reconnect
            }
        })
        .build()
        .unwrap();
    let task = tokio::spawn(connection);
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await,
        [
            "connected#1",
            "disconnected#1 Protocol code=1002",
            "closed Protocol"
        ]
    );
    let result = task.await.unwrap();
    assert_eq!(result.unwrap_err().kind(), &ErrorKind::Protocol);
    assert_eq!(*seen.lock().unwrap(), [(ErrorKind::Protocol, 1)]);
    assert_eq!(server.accepted(), 1, "no reconnect");
    assert!(server.wait_for(T, |s| !close_codes(s).is_empty()).await);
    assert_eq!(close_codes(&server), [(0, Some(1002))]);
    assert!(client.send_text("x").await.unwrap_err().is_closed());
}
