//! After a drop the link is restored before it is Ready (issue 3, acceptance 3; DESIGN §4.2):
//! authenticate first, then every desired channel again, in batches of the configured size,
//! acks checked channel by channel; then the requests queued while offline. Channels the venue
//! leaves out of an ack are reported as refused, never silently dropped, and notifications
//! that arrive while the restore is being confirmed are delivered.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::rpc::*;
use common::*;
use serde_json::{json, Value};
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{ErrorKind, Event, Events, State, Subscription, SubscriptionEvent};
use websockex_nova_testkit::RpcServer;

/// The next event on a subscription stream.
async fn next_on(sub: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(T, sub.next())
        .await
        .expect("timed out waiting on the subscription")
        .expect("subscription stream ended")
}

/// A notification's channel and data, or the marker's name.
fn describe_sub(e: &SubscriptionEvent) -> String {
    match e {
        SubscriptionEvent::Notification { channel, data } => {
            format!("{} {}", channel.as_str(), data.as_str())
        }
        SubscriptionEvent::Resubscribed => "resubscribed".to_owned(),
        SubscriptionEvent::Lagged { dropped } => format!("lagged {dropped}"),
        other => format!("{other:?}"),
    }
}

/// Events up to the next `Connected`, with the restore events spelled out.
async fn restore_trace(events: &mut Events) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let e = next_significant(events).await;
        out.push(match &e {
            Event::Authenticated { refreshed, .. } => {
                format!("authenticated refreshed={refreshed}")
            }
            Event::Resubscribed { channels, refused } => {
                format!("resubscribed {channels} refused={refused:?}")
            }
            Event::SubscriptionRefused { channels } => format!("refused {channels:?}"),
            other => describe(other),
        });
        if matches!(e, Event::Connected { .. }) {
            return out;
        }
    }
}

/// Params of a request kept around while it is queued.
const ECHO_PARAMS: [&str; 1] = ["queued"];

/// Events up to the next `Reconnecting`.
async fn restore_trace_until_reconnecting(events: &mut Events) -> Vec<String> {
    trace_until(events, |e| matches!(e, Event::Reconnecting { .. })).await
}

fn with_credentials() -> JsonRpcConfig {
    JsonRpcConfig::default().with_credentials("key", "secret")
}

fn authed_rpc() -> RpcServer {
    RpcServer::builder()
        .credentials("key", "secret")
        .handler("echo", |p| Ok(p.clone()))
        .build()
}

#[tokio::test(start_paused = true)]
async fn auth_comes_before_every_resubscribe_and_every_channel_is_active_again() {
    let rpc = authed_rpc();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, with_credentials()).spawn().unwrap();
    assert_eq!(
        restore_trace(&mut events).await,
        ["authenticated refreshed=false", "connected#1"]
    );
    let channels = ["ticker.A", "ticker.B", "user.orders.A"];
    let mut sub = client.subscribe(channels).await.unwrap();
    assert_eq!(sub.channels(), channels, "the private one too, after auth");
    assert!(sub.refused().is_empty());
    assert_eq!(rpc.subscriptions(0), channels);

    server.drop_connections();
    assert_eq!(
        restore_trace_until_reconnecting(&mut events).await,
        ["disconnected#1 Io", "reconnecting#2 100ms"]
    );
    // A request made while the link is down goes out after the restore.
    let queued = issue(client.request_as::<Value, _>("echo", &ECHO_PARAMS)).await;
    assert_eq!(
        restore_trace(&mut events).await,
        [
            "authenticated refreshed=false",
            "resubscribed 3 refused=[]",
            "connected#2",
        ]
    );
    assert_eq!(queued.await.unwrap(), json!(["queued"]));
    // Every desired channel is active again on the new connection.
    assert_eq!(rpc.subscriptions(1), channels);
    assert_eq!(rpc.subscriptions(1).len(), 3);
    // Auth came first on the new connection, then the (one, batched) subscribe.
    assert_eq!(
        methods_on(&rpc, 1),
        ["public/auth", "public/subscribe", "echo"]
    );
    let methods = rpc.methods();
    let first_auth = methods
        .iter()
        .position(|m| *m == (1, "public/auth".to_owned()));
    let first_sub = methods
        .iter()
        .position(|m| *m == (1, "public/subscribe".to_owned()));
    assert!(first_auth.unwrap() < first_sub.unwrap());

    // The stream says a gap may have happened, then notifications flow again.
    assert_eq!(describe_sub(&next_on(&mut sub).await), "resubscribed");
    assert_eq!(rpc.notify("ticker.B", json!({"p": 1})), 1);
    assert_eq!(rpc.notify("user.orders.A", json!({"id": 7})), 1);
    assert_eq!(
        describe_sub(&next_on(&mut sub).await),
        r#"ticker.B {"p":1}"#
    );
    assert_eq!(
        describe_sub(&next_on(&mut sub).await),
        r#"user.orders.A {"id":7}"#
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_channel_left_out_of_the_ack_is_reported_as_refused() {
    let rpc = RpcServer::builder().omit_channel("book.X").build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(restore_trace(&mut events).await, ["connected#1"]);

    let sub = client.subscribe(["ticker.A", "book.X"]).await.unwrap();
    assert_eq!(sub.channels(), ["ticker.A"]);
    assert_eq!(sub.refused(), ["book.X"]);
    match next_significant(&mut events).await {
        Event::SubscriptionRefused { channels } => assert_eq!(channels, ["book.X"]),
        e => panic!("expected SubscriptionRefused, got {e:?}"),
    }

    // Every channel refused (silently, or because it is private and we are not
    // authenticated): the call fails and names them.
    let err = client
        .subscribe(["book.X", "user.orders"])
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::SubscriptionRefused {
            channels: vec!["book.X".into(), "user.orders".into()]
        }
    );
    assert!(!err.is_transient());
    match next_significant(&mut events).await {
        Event::SubscriptionRefused { channels } => {
            assert_eq!(channels, ["book.X", "user.orders"])
        }
        e => panic!("expected SubscriptionRefused, got {e:?}"),
    }
    // Refused channels are not desired: subscribing again is allowed (and refused again).
    assert!(client.subscribe(["book.X"]).await.is_err());
    assert_eq!(rpc.subscriptions(0), ["ticker.A"]);
    drop(sub);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_channel_refused_on_restore_is_reported_and_no_longer_restored() {
    let refuse_b = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&refuse_b);
    let rpc = RpcServer::builder()
        .omit_channels(move |c| c == "b" && flag.load(Ordering::SeqCst))
        .build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(restore_trace(&mut events).await, ["connected#1"]);
    let mut sub = client.subscribe(["a", "b"]).await.unwrap();
    assert_eq!(sub.channels(), ["a", "b"]);

    refuse_b.store(true, Ordering::SeqCst);
    server.drop_connections();
    assert_eq!(
        restore_trace(&mut events).await,
        [
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "refused [\"b\"]",
            "resubscribed 1 refused=[\"b\"]",
            "connected#2",
        ]
    );
    assert_eq!(rpc.subscriptions(1), ["a"]);
    assert_eq!(describe_sub(&next_on(&mut sub).await), "resubscribed");

    // The next restore asks for "a" only.
    refuse_b.store(false, Ordering::SeqCst);
    server.drop_connections();
    assert_eq!(
        restore_trace(&mut events).await,
        [
            "disconnected#2 Io",
            "reconnecting#3 200ms",
            "resubscribed 1 refused=[]",
            "connected#3",
        ]
    );
    let restores = requests_for(&rpc, 2, "public/subscribe");
    assert_eq!(restores.len(), 1);
    assert_eq!(channels_of(&restores[0]), ["a"]);
    assert_eq!(rpc.subscriptions(2), ["a"]);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn all_channels_refused_on_restore_still_ends_ready() {
    let refuse = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&refuse);
    let rpc = RpcServer::builder()
        .handler("echo", |p| Ok(p.clone()))
        .omit_channels(move |_| flag.load(Ordering::SeqCst))
        .build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(restore_trace(&mut events).await, ["connected#1"]);
    let _sub = client.subscribe(["a", "b"]).await.unwrap();
    refuse.store(true, Ordering::SeqCst);
    server.drop_connections();
    assert_eq!(
        restore_trace(&mut events).await,
        [
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "refused [\"a\", \"b\"]",
            "resubscribed 0 refused=[\"a\", \"b\"]",
            "connected#2",
        ]
    );
    let r: Value = client.request_as("echo", &json!([1])).await.unwrap();
    assert_eq!(r, json!([1]));
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn many_channels_are_restored_in_batches_of_the_configured_size() {
    let rpc = authed_rpc();
    let server = serve(&rpc).await;
    let mut config = with_credentials();
    config.subscribe_batch = 10;
    let (client, mut events) = client(&server, config).connect().await.unwrap();
    assert_eq!(
        restore_trace(&mut events).await,
        ["authenticated refreshed=false", "connected#1"]
    );
    let channels: Vec<String> = (0..25).map(|i| format!("ticker.{i:02}")).collect();
    let sub = client.subscribe(channels.clone()).await.unwrap();
    assert_eq!(sub.channels().len(), 25);
    let sizes = |conn| {
        requests_for(&rpc, conn, "public/subscribe")
            .iter()
            .map(channel_count)
            .collect::<Vec<_>>()
    };
    assert_eq!(sizes(0), [10, 10, 5], "the user's call is batched too");

    server.drop_connections();
    assert_eq!(
        restore_trace(&mut events).await,
        [
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "authenticated refreshed=false",
            "resubscribed 25 refused=[]",
            "connected#2",
        ]
    );
    assert_eq!(sizes(1), [10, 10, 5]);
    assert_eq!(rpc.subscriptions(1), channels);
    let restored: Vec<String> = requests_for(&rpc, 1, "public/subscribe")
        .iter()
        .flat_map(channels_of)
        .collect();
    assert_eq!(restored, channels, "each channel once");
    assert_eq!(methods_on(&rpc, 1)[0], "public/auth");
    drop(sub);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn notifications_arriving_while_the_restore_is_confirmed_are_delivered() {
    let rpc = RpcServer::builder().build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(restore_trace(&mut events).await, ["connected#1"]);
    let mut sub = client.subscribe(["ticker.A", "ticker.B"]).await.unwrap();

    // From now on the venue subscribes at once but acknowledges 2 s later.
    rpc.set_delay("public/subscribe", Some(secs(2)));
    server.drop_connections();
    assert!(
        rpc.wait_for(T, |r| r.subscriptions(1).len() == 2).await,
        "the restore reached the server"
    );
    assert_eq!(client.status().state, State::Subscribing);
    assert_eq!(rpc.notify("ticker.A", json!({"n": 1})), 1);
    assert_eq!(rpc.notify("ticker.B", json!({"n": 2})), 1);
    assert_eq!(
        restore_trace(&mut events).await,
        [
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "resubscribed 2 refused=[]",
            "connected#2",
        ]
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(describe_sub(&next_on(&mut sub).await));
    }
    assert_eq!(
        got,
        [r#"ticker.A {"n":1}"#, r#"ticker.B {"n":2}"#, "resubscribed"],
        "kept, in arrival order, before the confirmation"
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn auto_published_notifications_during_the_restore_are_not_lost() {
    // The venue pushes every 100 ms from the moment a channel is subscribed (`seq` counts
    // from 0 per connection); the restore's ack comes 1 s late, so about ten pushes arrive
    // while confirming.
    let rpc = RpcServer::builder().auto_publish(ms(100)).build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(restore_trace(&mut events).await, ["connected#1"]);
    let mut sub = client.subscribe(["t"]).await.unwrap();
    let mut first_link = Vec::new();
    for _ in 0..3 {
        first_link.push(describe_sub(&next_on(&mut sub).await));
    }
    assert_eq!(
        first_link,
        [r#"t {"seq":0}"#, r#"t {"seq":1}"#, r#"t {"seq":2}"#]
    );

    rpc.set_delay("public/subscribe", Some(secs(1)));
    server.drop_connections();
    assert_eq!(
        restore_trace(&mut events).await,
        [
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "resubscribed 1 refused=[]",
            "connected#2",
        ]
    );
    // Everything the server published on the new link so far reaches the stream, in
    // sequence, with the gap marker after those that came while confirming.
    let sent = rpc.notifications_sent("t") - 3;
    let mut seqs: Vec<u64> = Vec::new();
    let mut marker_at = None;
    while (seqs.len() as u64) < sent || marker_at.is_none() {
        match next_on(&mut sub).await {
            SubscriptionEvent::Notification { data, .. } => {
                let v: Value = data.decode().unwrap();
                seqs.push(v["seq"].as_u64().unwrap());
            }
            SubscriptionEvent::Resubscribed => marker_at = Some(seqs.len()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "no gap");
    let confirming = marker_at.unwrap();
    assert!(
        (9..=10).contains(&confirming),
        "about ten pushes while confirming, got {confirming}: {seqs:?}"
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unsubscribed_and_dropped_subscriptions_are_not_restored() {
    let rpc = RpcServer::builder().build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(restore_trace(&mut events).await, ["connected#1"]);
    let mut kept = client.subscribe(["a", "b"]).await.unwrap();
    let dropped = client.subscribe(["c"]).await.unwrap();
    client.unsubscribe(["b"]).await.unwrap();
    assert_eq!(rpc.subscriptions(0), ["a", "c"]);

    // A dropped subscription is unsubscribed when its next notification arrives.
    drop(dropped);
    assert_eq!(rpc.notify("c", json!(1)), 1);
    assert!(rpc.wait_for(T, |r| r.subscriptions(0) == ["a"]).await);

    server.drop_connections();
    assert_eq!(
        restore_trace(&mut events).await,
        [
            "disconnected#1 Io",
            "reconnecting#2 100ms",
            "resubscribed 1 refused=[]",
            "connected#2",
        ]
    );
    assert_eq!(rpc.subscriptions(1), ["a"]);
    let restores = requests_for(&rpc, 1, "public/subscribe");
    assert_eq!(restores.len(), 1);
    assert_eq!(channels_of(&restores[0]), ["a"]);
    assert_eq!(describe_sub(&next_on(&mut kept).await), "resubscribed");
    client.close().await.unwrap();
}
