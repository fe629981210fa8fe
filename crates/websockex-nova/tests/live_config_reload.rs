//! Live configuration (issue 6): a TOML file watched by `ConfigWatcher` changes the rate
//! limit and the reconnect policy of a live connection without dropping it; a file that
//! does not parse or validate is refused with a clear error and the old configuration stays;
//! the configuration in force saves to a file that loads back to the same. Real time: the
//! file watcher is the operating system's (waits are bounded, nothing is timed).
#![cfg(feature = "config-file")]

mod common;

use std::time::Duration;

use common::rpc::*;
use common::*;
use serde_json::json;
use websockex_nova::config_file::{ConfigFile, ConfigWatcher};
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{ClientConfig, ErrorKind, Event, Events, Reconfigured};
use websockex_nova_testkit::RpcServer;

const WAIT: Duration = Duration::from_secs(20);

async fn outcome(w: &mut ConfigWatcher) -> Result<Reconfigured, websockex_nova::Error> {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("a reload within the wait")
        .expect("watcher alive")
}

/// Events so far, without waiting.
fn drain(events: &mut Events) -> Vec<Event> {
    std::iter::from_fn(|| events.try_next()).collect()
}

#[tokio::test]
async fn a_reload_changes_rate_limit_and_reconnect_policy_without_dropping_the_link() {
    let dir = std::env::temp_dir().join(format!("nova-live-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("client.toml");
    std::fs::write(&path, "# nothing yet\n").unwrap();

    let rpc = RpcServer::builder()
        .handler("echo", |p| Ok(p.clone()))
        .build();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    let mut watcher = ConfigWatcher::spawn(&path, client.clone()).unwrap();
    for i in 0..5 {
        client.request("echo", &json!({ "i": i })).await.unwrap();
    }

    std::fs::write(
        &path,
        r#"
        [rate_limit]
        burst = 2
        per_second = 0.001
        on_limit = "reject"

        [reconnect]
        strategy = "linear"
        initial = "70ms"
        step = "10ms"
        max_delay = "1s"
        "#,
    )
    .unwrap();
    let applied = outcome(&mut watcher).await.unwrap();
    assert_eq!(applied.now, ["reconnect", "rate_limit"]);
    assert!(applied.on_connect.is_empty());

    // The new limit holds at once: two credits, then refusals.
    client.request("echo", &json!([1])).await.unwrap();
    client.request("echo", &json!([2])).await.unwrap();
    let refused = client.request("echo", &json!([3])).await.unwrap_err();
    assert_eq!(*refused.kind(), ErrorKind::RateLimited, "{refused}");
    // ... on the same link.
    assert_eq!(client.status().connects, 1);
    assert!(!drain(&mut events)
        .iter()
        .any(|e| matches!(e, Event::Disconnected { .. })));

    // The new reconnect policy decides the next delay: linear, 70 ms first.
    server.drop_connections();
    let delay = loop {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Reconnecting { delay, .. } => break delay,
            _ => continue,
        }
    };
    assert_eq!(delay, ms(70));

    // A file that does not validate is refused, with the reason; the old config stays.
    std::fs::write(&path, "[rate_limit]\nburst = 0\nper_second = 5.0\n").unwrap();
    let e = outcome(&mut watcher).await.unwrap_err();
    assert_eq!(*e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("burst"), "{e}");
    // One that does not parse, likewise (with the line).
    std::fs::write(&path, "[rate_limit\nburst = 9\n").unwrap();
    let e = outcome(&mut watcher).await.unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    let in_force = client.config().await.unwrap();
    assert_eq!(in_force.rate_limit.unwrap().burst, 2);

    // Save what is in force; it loads back to the same configuration.
    let saved = dir.join("saved.toml");
    ConfigFile::from_config(&in_force).save(&saved).unwrap();
    let mut back = ClientConfig::new("ws://placeholder/");
    ConfigFile::load(&saved).unwrap().apply(&mut back);
    assert_eq!(back.rate_limit, in_force.rate_limit);
    assert_eq!(back.reconnect, in_force.reconnect);
    assert_eq!(back.url, in_force.url);

    client.close().await.unwrap();
    drop(watcher);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn reconfigure_refuses_what_cannot_change_live_and_keeps_the_rest() {
    let rpc = RpcServer::builder()
        .result("public/get_time", json!(1))
        .build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    let before = client.config().await.unwrap();
    let e = client
        .reconfigure(|c| {
            c.request_timeout = secs(1);
            c.event_capacity = 7;
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("event_capacity"), "{e}");
    // All or nothing: the valid part of a refused change was not applied either.
    assert_eq!(client.config().await.unwrap(), before);

    let r = client
        .reconfigure(|c| {
            c.url = "ws://127.0.0.1:1/elsewhere".into();
            c.max_in_flight = 3;
        })
        .await
        .unwrap();
    assert_eq!(r.now, ["max_in_flight"]);
    assert_eq!(r.on_connect, ["url"]);
    // The live link keeps working on the old URL.
    client.request("public/get_time", &json!({})).await.unwrap();
    assert_eq!(client.status().connects, 1);
    client.close().await.unwrap();
}
