//! Every data message the server sends is delivered exactly once, in order, intact — also in
//! long bursts that the connection reads in batches, and when the event stream is small
//! enough to fill up mid-batch (default `OverflowPolicy::Block`).

mod common;

use common::*;
use websockex_nova::{Client, Event, Frame};
use websockex_nova_testkit::{Plan, Script, Step, TestServer};

const BURST: usize = 1000;
const NUMBERED: usize = 200;

/// Numbered messages, a burst, a binary message and a marker, then a close.
fn script() -> Script {
    let mut steps: Vec<Step> = (0..NUMBERED)
        .map(|i| Step::SendText(format!("m{i}")))
        .collect();
    steps.push(Step::Push {
        count: BURST,
        text: "tick".into(),
    });
    steps.push(Step::SendBinary((0..=255u8).collect()));
    steps.push(Step::SendText("end".into()));
    steps.push(Step::Close {
        code: 1000,
        reason: "done".into(),
    });
    Script::sequence(vec![Plan::Accept(steps), Plan::Accept(vec![Step::Serve])])
}

async fn receive_all(event_capacity: usize) {
    let server = TestServer::start(script()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .event_capacity(event_capacity)
        .spawn()
        .unwrap();
    let mut texts = Vec::new();
    let mut binaries = Vec::new();
    loop {
        match next(&mut events).await {
            Event::Message(Frame::Text(t)) => texts.push(t.to_string()),
            Event::Message(Frame::Binary(b)) => binaries.push(b),
            Event::Lagged { dropped } => panic!("{dropped} dropped"),
            Event::Disconnected { error, .. } => {
                assert_eq!(kind(&error), r#"ClosedByServer(1000 "done")"#);
                break;
            }
            _ => {}
        }
    }
    let expected: Vec<String> = (0..NUMBERED)
        .map(|i| format!("m{i}"))
        .chain(std::iter::repeat_n("tick".to_owned(), BURST))
        .chain(["end".to_owned()])
        .collect();
    assert_eq!(texts.len(), expected.len(), "every message exactly once");
    assert_eq!(texts, expected, "in order");
    assert_eq!(binaries.len(), 1);
    assert_eq!(&binaries[0][..], &(0..=255u8).collect::<Vec<_>>()[..]);

    assert_eq!(
        trace_until_connected(&mut events, 1).await.last().unwrap(),
        "connected#2"
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_long_burst_arrives_complete_and_in_order() {
    receive_all(4096).await;
}

#[tokio::test(start_paused = true)]
async fn a_long_burst_through_a_small_event_stream_arrives_complete_and_in_order() {
    receive_all(3).await;
}
