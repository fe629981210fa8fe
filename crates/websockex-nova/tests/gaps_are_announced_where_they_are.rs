//! A drop is announced where the gap is, not merely some time later: between two messages a
//! reader receives, the `Lagged` counts add up to exactly the messages missing between them
//! (and before the first / after the last, to exactly those). So a reader of a sequenced
//! feed (a book, trades) knows at the gap itself that something is missing and how much.
//!
//! A flooding server and a reader that keeps falling behind and catching up, under
//! `DropNewest` and `DropOldest`, on the event stream and on a subscription stream. Paused
//! time.

mod common;

use common::rpc::*;
use common::*;
use serde_json::json;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{Client, Event, OverflowPolicy, SubscriptionEvent};
use websockex_nova_testkit::{RpcServer, Script, TestServer};

const BURSTS: u64 = 40;
const BURST: u64 = 25;
const SENT: u64 = BURSTS * BURST;
const CAPACITY: usize = 8;

/// What a reader saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Message(u64),
    Lagged(u64),
}

/// Every gap is covered by the announcements right before what follows it, exactly.
fn assert_announced_in_place(seen: &[Seen]) {
    let mut next = 0; // the number the next message should carry if nothing were missing
    let mut announced = 0;
    let mut gaps = 0;
    for s in seen {
        match s {
            Seen::Lagged(n) => announced += n,
            Seen::Message(m) => {
                assert!(*m >= next, "{m} repeated or out of order (expected {next})");
                assert_eq!(
                    announced,
                    m - next,
                    "before {m}: {} missing, {announced} announced",
                    m - next
                );
                gaps += u64::from(m > &next);
                next = m + 1;
                announced = 0;
            }
        }
    }
    assert_eq!(
        announced,
        SENT - next,
        "after the last: {announced} announced"
    );
    assert!(
        gaps > 1,
        "the reader must have fallen behind more than once"
    );
}

/// Reads with a pause every few items, so the stream fills and drains again and again.
async fn lagging_read<T>(
    mut next: impl AsyncFnMut() -> Option<T>,
    mut see: impl FnMut(T) -> Option<Seen>,
    out: &mut Vec<Seen>,
) {
    let mut total = 0;
    let mut read = 0u64;
    while total < SENT {
        let item = tokio::time::timeout(secs(5), next())
            .await
            .expect("the stream goes on")
            .expect("not closed");
        if let Some(s) = see(item) {
            total += match &s {
                Seen::Message(_) => 1,
                Seen::Lagged(n) => *n,
            };
            out.push(s);
        }
        read += 1;
        if read.is_multiple_of(5) {
            tokio::time::sleep(ms(13)).await;
        }
    }
}

async fn events(policy: OverflowPolicy) -> Vec<Seen> {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .overflow_policy(policy)
        .event_capacity(CAPACITY)
        .connect()
        .await
        .unwrap();
    let flood = tokio::spawn(async move {
        for b in 0..BURSTS {
            for i in 0..BURST {
                server.broadcast(&(b * BURST + i).to_string());
            }
            tokio::time::sleep(ms(20)).await;
        }
        server
    });
    let mut seen = Vec::new();
    lagging_read(
        async || events.next().await,
        |e| match e {
            Event::Message(f) => Some(Seen::Message(f.as_text().unwrap().parse().unwrap())),
            Event::Lagged { dropped } => Some(Seen::Lagged(dropped)),
            _ => None,
        },
        &mut seen,
    )
    .await;
    let _server = flood.await.unwrap();
    client.close().await.unwrap();
    seen
}

async fn subscription(policy: OverflowPolicy) -> Vec<Seen> {
    let rpc = RpcServer::builder().build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .overflow_policy(policy)
        .subscription_capacity(CAPACITY)
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe(["chan.x"]).await.unwrap();
    let notify = rpc.clone();
    let flood = tokio::spawn(async move {
        for b in 0..BURSTS {
            for i in 0..BURST {
                assert_eq!(notify.notify("chan.x", json!(b * BURST + i)), 1);
            }
            tokio::time::sleep(ms(20)).await;
        }
    });
    let mut seen = Vec::new();
    lagging_read(
        async || sub.next().await,
        |e| match e {
            SubscriptionEvent::Notification { data, .. } => {
                Some(Seen::Message(data.decode::<u64>().unwrap()))
            }
            SubscriptionEvent::Lagged { dropped } => Some(Seen::Lagged(dropped)),
            other => panic!("{other:?}"),
        },
        &mut seen,
    )
    .await;
    flood.await.unwrap();
    client.close().await.unwrap();
    drop(server);
    seen
}

#[tokio::test(start_paused = true)]
async fn drop_newest_on_the_event_stream() {
    assert_announced_in_place(&events(OverflowPolicy::DropNewest).await);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_on_the_event_stream() {
    assert_announced_in_place(&events(OverflowPolicy::DropOldest).await);
}

#[tokio::test(start_paused = true)]
async fn drop_newest_on_a_subscription_stream() {
    assert_announced_in_place(&subscription(OverflowPolicy::DropNewest).await);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_on_a_subscription_stream() {
    assert_announced_in_place(&subscription(OverflowPolicy::DropOldest).await);
}
