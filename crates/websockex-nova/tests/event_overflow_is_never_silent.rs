//! A full event stream follows the overflow policy and loses nothing silently (DESIGN §4.1):
//! `DropNewest` drops messages but announces every one of them in `Event::Lagged`; `Block`
//! delivers everything, and a consumer that sends from inside its event loop while the stream
//! is full does not deadlock against the connection.

mod common;

use std::time::Duration;

use common::*;
use websockex_nova::{Client, Event, Frame, OverflowPolicy, ReconnectPolicy};
use websockex_nova_testkit::{Plan, Received, Script, Step, TestServer};

const PUSHED: usize = 1000;

/// First connection: push `PUSHED` messages, then close with 1000 (so the client has read
/// them all when it answers the close). Later connections: echo.
fn push_then_close() -> Script {
    Script::sequence(vec![
        Plan::Accept(vec![
            Step::Push {
                count: PUSHED,
                text: "tick".into(),
            },
            Step::Close {
                code: 1000,
                reason: "done".into(),
            },
        ]),
        Plan::echo(),
    ])
}

#[tokio::test(start_paused = true)]
async fn drop_newest_counts_every_dropped_message() {
    let server = TestServer::start(push_then_close()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(ReconnectPolicy::exponential(
            ms(100),
            Duration::from_secs(1),
        ))
        .overflow_policy(OverflowPolicy::DropNewest)
        .event_capacity(8)
        .spawn()
        .unwrap();

    // Do not read until the client has taken in every message: its close reply shows that.
    assert!(
        server
            .wait_for(T, |s| s
                .received()
                .iter()
                .any(|r| matches!(r, Received::Close { conn: 0, .. })))
            .await
    );

    let mut delivered = 0usize;
    let mut dropped = 0u64;
    let mut lagged_events = 0usize;
    loop {
        match next(&mut events).await {
            Event::Message(frame) => {
                assert_eq!(frame.as_text(), Some("tick"));
                delivered += 1;
            }
            Event::Lagged { dropped: n } => {
                assert!(n > 0);
                dropped += n;
                lagged_events += 1;
            }
            Event::Disconnected { .. } => break,
            _ => {}
        }
    }
    assert_eq!(
        delivered as u64 + dropped,
        PUSHED as u64,
        "nothing lost silently"
    );
    assert!(dropped > 0 && lagged_events >= 1, "the stream did overflow");
    assert!(delivered > 0);

    // The connection goes on as usual.
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        ["reconnecting#2 100ms", "connected#2"]
    );
    assert_echo(&client, &mut events, "after the flood").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn drop_newest_with_a_reading_consumer_still_adds_up() {
    let server = TestServer::start(push_then_close()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .overflow_policy(OverflowPolicy::DropNewest)
        .event_capacity(4)
        .spawn()
        .unwrap();
    let mut delivered = 0u64;
    let mut dropped = 0u64;
    loop {
        match next(&mut events).await {
            Event::Message(_) => delivered += 1,
            Event::Lagged { dropped: n } => dropped += n,
            Event::Disconnected { .. } => break,
            _ => {}
        }
    }
    assert_eq!(delivered + dropped, PUSHED as u64);
    // Keep reading until the next link is up, so the connection is not left waiting for
    // room in the stream while we close it.
    assert_eq!(
        trace_until_connected(&mut events, 1).await.last().unwrap(),
        "connected#2"
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn block_delivers_every_message_in_order() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![
        Step::SendText("first".into()),
        Step::Push {
            count: PUSHED,
            text: "tick".into(),
        },
        Step::SendText("last".into()),
        Step::Serve,
    ])))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .overflow_policy(OverflowPolicy::Block)
        .event_capacity(8)
        .spawn()
        .unwrap();
    // Let the stream fill up and the connection wait for room.
    tokio::time::sleep(ms(100)).await;

    let mut texts = Vec::new();
    loop {
        match next(&mut events).await {
            Event::Message(Frame::Text(t)) => {
                let last = t.as_str() == "last";
                texts.push(t.to_string());
                if last {
                    break;
                }
            }
            Event::Lagged { dropped } => panic!("Block must not drop ({dropped} dropped)"),
            _ => {}
        }
    }
    assert_eq!(texts.len(), PUSHED + 2);
    assert_eq!(texts[0], "first");
    assert!(texts[1..=PUSHED].iter().all(|t| t == "tick"));
    client.close().await.unwrap();
    let rest = drain(&mut events).await;
    assert_eq!(rest.last().unwrap(), "closed");
    assert!(!rest.iter().any(|e| e.starts_with("lagged")));
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_sends_from_its_event_loop_does_not_deadlock() {
    let server = TestServer::start(Script::plan(Plan::Accept(vec![
        Step::Push {
            count: PUSHED,
            text: "tick".into(),
        },
        Step::Echo,
    ])))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .overflow_policy(OverflowPolicy::Block)
        .event_capacity(8)
        .spawn()
        .unwrap();
    // The stream is full and the connection is waiting for room when the loop starts.
    tokio::time::sleep(ms(100)).await;

    let mut ticks = 0usize;
    let mut replies = Vec::new();
    let mut echoes = Vec::new();
    while ticks < PUSHED || echoes.len() < replies.len() {
        match next(&mut events).await {
            Event::Message(frame) if frame.as_text() == Some("tick") => {
                ticks += 1;
                if ticks % 100 == 1 {
                    // Awaited while the connection is blocked on the full stream.
                    let reply = format!("reply {ticks}");
                    tokio::time::timeout(T, client.send_text(reply.clone()))
                        .await
                        .expect("send deadlocked against the full event stream")
                        .unwrap();
                    replies.push(reply);
                }
            }
            Event::Message(frame) => echoes.push(frame.as_text().unwrap().to_owned()),
            Event::Lagged { .. } => panic!("Block must not drop"),
            _ => {}
        }
    }
    assert_eq!(replies.len(), 10);
    // Every reply reached the server and came back, in order.
    assert_eq!(echoes, replies);
    assert_eq!(server.texts(), replies);
    client.close().await.unwrap();
}
