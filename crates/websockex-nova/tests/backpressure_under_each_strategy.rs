//! Backpressure (issue 6): a flooding server and a consumer that reads nothing for a while,
//! under each overflow strategy. Whatever the strategy, delivered + dropped = sent (or, under
//! `Disconnect`, what the old link had not yet read goes with it, announced by the
//! disconnect), every drop is announced (`Lagged`), the stream never holds more than its
//! capacity, and the pressure is signalled when it starts and when it ends. A blocked
//! consumer with `max_block` costs a reconnect, not a heartbeat close; without it the venue
//! closes with 4000 (the control). Paused time.

mod common;

use common::rpc::*;
use common::*;
use serde_json::json;
use websockex_nova::behaviour::{Call, ConnectInfo, ConnectionHandler};
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::metrics::DefaultMetricsCollector;
use websockex_nova::{
    Client, ErrorKind, Event, OverflowPolicy, ReconnectPolicy, SubscriptionEvent,
};
use websockex_nova_testkit::{RpcServer, Script, TestServer};

const SENT: u32 = 2_000;
const CAPACITY: usize = 32;

/// What the consumer saw of a flood of `SENT` numbered messages.
#[derive(Debug, Default)]
struct Seen {
    delivered: Vec<u32>,
    dropped: u64,
    pressure: Vec<(bool, usize)>,
    slow_consumer: bool,
}

async fn flood(policy: OverflowPolicy) -> (Seen, DefaultMetricsCollector) {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let metrics = DefaultMetricsCollector::new();
    let (client, mut events) = Client::builder(server.url())
        .overflow_policy(policy)
        .event_capacity(CAPACITY)
        .metrics(metrics.clone())
        .reconnect(ReconnectPolicy::exponential(ms(100), secs(5)))
        .connect()
        .await
        .unwrap();
    for i in 0..SENT {
        server.broadcast(&i.to_string());
    }
    // The consumer is busy elsewhere for a while.
    tokio::time::sleep(secs(2)).await;
    let mut seen = Seen::default();
    loop {
        let event = tokio::time::timeout(secs(30), events.next()).await;
        match event.expect("the stream goes on").expect("not closed") {
            Event::Message(f) => seen.delivered.push(f.as_text().unwrap().parse().unwrap()),
            Event::Lagged { dropped } => seen.dropped += dropped,
            Event::Backpressure { active, depth } => seen.pressure.push((active, depth)),
            Event::Disconnected { error, .. } => {
                assert_eq!(*error.kind(), ErrorKind::SlowConsumer, "{error}");
                seen.slow_consumer = true;
            }
            Event::Connected { attempt: 2, .. } => break,
            _ => {}
        }
        let all_accounted = seen.delivered.len() as u64 + seen.dropped == u64::from(SENT);
        let relieved = seen.pressure.last().is_some_and(|p| !p.0);
        if policy != OverflowPolicy::Disconnect && all_accounted && relieved {
            break;
        }
    }
    client.close().await.unwrap();
    (seen, metrics)
}

fn increasing(v: &[u32]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// The invariants every strategy keeps.
fn bounded_and_announced(seen: &Seen, metrics: &DefaultMetricsCollector) {
    assert!(increasing(&seen.delivered), "delivered out of order");
    assert!(
        seen.pressure.iter().all(|(_, depth)| *depth <= CAPACITY),
        "{:?}",
        seen.pressure
    );
    assert_eq!(seen.pressure.first().map(|p| p.0), Some(true));
    assert!(metrics.snapshot().inbound_depth <= CAPACITY as u64);
    assert_eq!(metrics.snapshot().dropped, seen.dropped);
}

#[tokio::test(start_paused = true)]
async fn block_loses_nothing() {
    let (seen, metrics) = flood(OverflowPolicy::Block).await;
    assert_eq!(seen.delivered, (0..SENT).collect::<Vec<_>>());
    assert_eq!(seen.dropped, 0);
    bounded_and_announced(&seen, &metrics);
    assert_eq!(
        seen.pressure.last(),
        Some(&(false, seen.pressure.last().unwrap().1))
    );
}

#[tokio::test(start_paused = true)]
async fn drop_newest_keeps_the_first_and_counts_the_rest() {
    let (seen, metrics) = flood(OverflowPolicy::DropNewest).await;
    assert_eq!(seen.delivered.len() as u64 + seen.dropped, u64::from(SENT));
    assert!(seen.dropped > 0);
    assert_eq!(seen.delivered[0], 0, "the oldest stayed");
    bounded_and_announced(&seen, &metrics);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_keeps_the_latest_and_counts_the_rest() {
    let (seen, metrics) = flood(OverflowPolicy::DropOldest).await;
    assert_eq!(seen.delivered.len() as u64 + seen.dropped, u64::from(SENT));
    assert!(seen.dropped > 0);
    assert_eq!(
        seen.delivered.last(),
        Some(&(SENT - 1)),
        "the newest stayed"
    );
    assert!(seen.delivered[0] > 0, "the oldest went");
    bounded_and_announced(&seen, &metrics);
}

#[tokio::test(start_paused = true)]
async fn disconnect_replaces_the_link_and_announces_what_it_dropped() {
    let (seen, metrics) = flood(OverflowPolicy::Disconnect).await;
    assert!(seen.slow_consumer, "the link was replaced");
    assert!(seen.dropped >= 1);
    // What the old link had not read yet went with it: never more than was sent.
    assert!(seen.delivered.len() as u64 + seen.dropped <= u64::from(SENT));
    assert_eq!(
        seen.delivered,
        (0..seen.delivered.len() as u32).collect::<Vec<_>>(),
        "what was queued is delivered, from the start"
    );
    bounded_and_announced(&seen, &metrics);
    assert_eq!(metrics.snapshot().errors, vec![("SlowConsumer", 1)]);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_on_a_subscription_stream_keeps_the_latest() {
    let rpc = RpcServer::builder()
        .result("public/get_time", json!(1))
        .build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .overflow_policy(OverflowPolicy::DropOldest)
        .subscription_capacity(8)
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe(["chan.x"]).await.unwrap();
    for i in 0..500 {
        rpc.notify("chan.x", json!(i));
    }
    client.request("public/get_time", &json!({})).await.unwrap();
    // The answer can overtake the notifications at the server: let the flood finish.
    tokio::time::sleep(secs(1)).await;
    let (mut delivered, mut dropped) = (Vec::new(), 0);
    while delivered.len() as u64 + dropped < 500 {
        match sub.next().await.unwrap() {
            SubscriptionEvent::Notification { data, .. } => {
                delivered.push(data.decode::<u32>().unwrap())
            }
            SubscriptionEvent::Lagged { dropped: n } => dropped += n,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered, (492..500).collect::<Vec<_>>());
    assert_eq!(dropped, 492);
    client.close().await.unwrap();
}

/// Sets the venue heartbeat up on every connection, as a venue adapter does.
struct Heartbeat2s;

impl ConnectionHandler for Heartbeat2s {
    fn connect_calls(&mut self, _: &ConnectInfo<'_>) -> Vec<Call> {
        vec![Call {
            method: "public/set_heartbeat".into(),
            params: json!({"interval": 2}),
        }]
    }
}

/// A heartbeat server (every 2 s; 4000 when one is still unanswered at the next) and a
/// subscription nobody reads for a minute (the events are read).
async fn blocked_consumer(
    max_block: Option<std::time::Duration>,
) -> (Vec<Event>, RpcServer, TestServer) {
    let rpc = RpcServer::builder().build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connection_handler(Heartbeat2s)
        .subscription_capacity(8)
        .max_block(max_block)
        .connect()
        .await
        .unwrap();
    let _sub = client.subscribe(["chan.x"]).await.unwrap();
    for i in 0..200 {
        rpc.notify("chan.x", json!(i));
    }
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + secs(60);
    while let Ok(Some(e)) = tokio::time::timeout_at(until, events.next()).await {
        seen.push(e);
    }
    (seen, rpc, server)
}

fn disconnect_kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Disconnected { error, .. } => Some(kind(error)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn max_block_costs_a_reconnect_not_a_heartbeat_close() {
    let (events, rpc, server) = blocked_consumer(Some(secs(1))).await;
    // Blocked for 1 s, the client replaces the link itself, before any heartbeat is due;
    // the new link answers every heartbeat for the rest of the minute: no 4000, no more
    // reconnects.
    assert_eq!(disconnect_kinds(&events), ["SlowConsumer"]);
    assert_eq!(server.upgraded(), 2);
    let on_new_link: Vec<_> = rpc
        .heartbeats()
        .into_iter()
        .filter(|h| h.conn == 1)
        .collect();
    assert!(on_new_link.len() >= 25, "{}", on_new_link.len());
    let unanswered = on_new_link
        .iter()
        .filter(|h| h.answered_at.is_none())
        .count();
    assert!(unanswered <= 1, "only the one in flight at the end");
}

#[tokio::test(start_paused = true)]
async fn without_max_block_heartbeats_starve_and_the_venue_gives_up() {
    // The documented trade-off of `Block` without `max_block`: while blocked the client
    // reads nothing, so the venue's heartbeat goes unanswered and it closes the link (the
    // client, still blocked, has not even read the close).
    let (events, rpc, server) = blocked_consumer(None).await;
    let first = rpc.heartbeats().into_iter().find(|h| h.conn == 0);
    assert!(first.is_some_and(|h| h.answered_at.is_none()));
    assert!(disconnect_kinds(&events).is_empty());
    assert_eq!(server.upgraded(), 1);
}

#[tokio::test(start_paused = true)]
async fn try_send_fails_fast_where_send_waits() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .configure(|c| c.command_capacity = 1)
        .connect()
        .await
        .unwrap();
    // The connection's task has not run since: the one-slot command channel fills.
    let first = client.try_send("a").unwrap();
    let e = client.try_send("b").err().expect("no room, no wait");
    assert_eq!(*e.kind(), ErrorKind::QueueFull);
    // `send` waits for the room instead, and both arrive in order.
    client.send_text("c").await.unwrap();
    first.await.unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 2 {
        if let Event::Message(f) = next(&mut events).await {
            echoed.push(f.as_text().unwrap().to_owned());
        }
    }
    assert_eq!(echoed, ["a", "c"]);
    client.close().await.unwrap();
}

/// Found by `nova chaos`: a `Resubscribed` marker that met a full stream was dropped, so the
/// reader saw the notifications from before and after a reconnect with nothing between them
/// (a silent gap). The marker now waits for room and goes in before the next notification.
#[tokio::test(start_paused = true)]
async fn a_resubscribed_marker_is_never_lost_to_a_full_stream() {
    let rpc = RpcServer::builder().build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .subscription_capacity(4)
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe(["chan.x"]).await.unwrap();
    for i in 0..4 {
        rpc.notify("chan.x", json!(i));
    }
    tokio::time::sleep(ms(50)).await; // the stream is exactly full now
    server.drop_connections();
    loop {
        if let Event::Resubscribed { .. } = next_significant(&mut events).await {
            break;
        }
    }
    for i in 4..6 {
        rpc.notify("chan.x", json!(i));
    }
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let event = tokio::time::timeout(secs(30), sub.next()).await;
        seen.push(match event.expect("within the wait").unwrap() {
            SubscriptionEvent::Notification { data, .. } => data.as_str().to_owned(),
            SubscriptionEvent::Resubscribed => "resubscribed".to_owned(),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(seen, ["0", "1", "2", "3", "resubscribed", "4", "5"]);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_owed_marker_does_not_wait_for_the_next_notification() {
    let rpc = RpcServer::builder().build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .subscription_capacity(4)
        .overflow_policy(OverflowPolicy::DropNewest)
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe(["chan.x"]).await.unwrap();
    for i in 0..6 {
        rpc.notify("chan.x", json!(i));
    }
    tokio::time::sleep(ms(50)).await; // full, and two dropped
    server.drop_connections();
    loop {
        if let Event::Resubscribed { .. } = next_significant(&mut events).await {
            break;
        }
    }
    // Nothing more is published: the reader drains the stream and still learns of both.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let event = tokio::time::timeout(secs(30), sub.next()).await;
        seen.push(match event.expect("within the wait").unwrap() {
            SubscriptionEvent::Notification { data, .. } => data.as_str().to_owned(),
            SubscriptionEvent::Lagged { dropped } => format!("lagged {dropped}"),
            SubscriptionEvent::Resubscribed => "resubscribed".to_owned(),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(seen, ["0", "1", "2", "3", "lagged 2", "resubscribed"]);
    client.close().await.unwrap();
}
