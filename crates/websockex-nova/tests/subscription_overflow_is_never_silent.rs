//! A subscription whose reader falls behind: under `OverflowPolicy::Block` (the default)
//! the connection waits for room (TCP pushes back) and every notification arrives, in
//! order; under `DropNewest` the drops are counted and announced, so delivered + dropped
//! equals sent. Never a silent loss.

mod common;

use common::rpc::*;
use serde_json::json;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{OverflowPolicy, SubscriptionEvent};
use websockex_nova_testkit::RpcServer;

const SENT: u64 = 500;

async fn run(policy: OverflowPolicy) -> (Vec<u64>, u64) {
    let rpc = RpcServer::builder().build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .subscription_capacity(8)
        .overflow_policy(policy)
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe(["chan.a"]).await.unwrap();
    for i in 0..SENT {
        assert_eq!(rpc.notify("chan.a", json!({ "seq": i })), 1);
    }
    if policy == OverflowPolicy::DropNewest {
        // The reader is late: once this answer is back, the connection has routed all the
        // notifications sent before it (same TCP stream, in order).
        let _ = client.request("public/get_time", &json!({})).await;
    } else {
        // Under Block the connection waits for the reader; nothing to wait for here.
        tokio::time::sleep(secs(1)).await;
    }
    let (mut seen, mut dropped) = (Vec::new(), 0);
    while (seen.len() as u64) + dropped < SENT {
        match tokio::time::timeout(secs(5), sub.next()).await {
            Ok(Some(SubscriptionEvent::Notification { data, .. })) => {
                seen.push(data.to_value().unwrap()["seq"].as_u64().unwrap())
            }
            Ok(Some(SubscriptionEvent::Lagged { dropped: n })) => dropped += n,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    client.close().await.unwrap();
    (seen, dropped)
}

#[tokio::test(start_paused = true)]
async fn block_delivers_every_notification_in_order() {
    let (seen, dropped) = run(OverflowPolicy::Block).await;
    assert_eq!(dropped, 0);
    assert_eq!(seen, (0..SENT).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn drop_newest_announces_every_drop() {
    let (seen, dropped) = run(OverflowPolicy::DropNewest).await;
    assert!(dropped > 0, "a capacity of 8 must overflow");
    assert_eq!(seen.len() as u64 + dropped, SENT);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "kept ones stay in order"
    );
}
