//! Custom headers, the URL's path and query, and the offered subprotocols arrive at the server
//! on every upgrade request (reconnects included); `Event::Connected` carries the subprotocol
//! the server chose.

mod common;

use std::time::Duration;

use common::*;
use websockex_nova::{Client, Event, Events, ReconnectPolicy};
use websockex_nova_testkit::{Script, TestServer};

async fn connected_subprotocol(events: &mut Events) -> Option<String> {
    match next_significant(events).await {
        Event::Connected { subprotocol, .. } => subprotocol,
        other => panic!("expected Connected, got {}", describe(&other)),
    }
}

#[tokio::test(start_paused = true)]
async fn headers_path_and_subprotocols_are_sent_on_every_upgrade() {
    let server = TestServer::start(Script::echo().subprotocols(["v1.nova", "json"]))
        .await
        .unwrap();
    let url = format!("ws://{}/ws/api/v2?format=json", server.addr());
    let (client, mut events) = Client::builder(url)
        .header("X-Api-Key", "k-123")
        .header("User-Agent", "nova-tests/1.0")
        .subprotocol("v2.nova")
        .subprotocol("v1.nova")
        .reconnect(ReconnectPolicy::exponential(ms(50), Duration::from_secs(1)))
        .spawn()
        .unwrap();
    // The server picks the first offered protocol it accepts.
    assert_eq!(
        connected_subprotocol(&mut events).await.as_deref(),
        Some("v1.nova")
    );

    server.drop_connections();
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await,
        ["disconnected#1 Io", "reconnecting#2 50ms"]
    );
    assert_eq!(
        connected_subprotocol(&mut events).await.as_deref(),
        Some("v1.nova")
    );
    assert_echo(&client, &mut events, "negotiated").await;

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for req in &requests {
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws/api/v2?format=json");
        assert_eq!(req.header("x-api-key"), Some("k-123"));
        assert_eq!(req.header("user-agent"), Some("nova-tests/1.0"));
        assert_eq!(req.subprotocols(), ["v2.nova", "v1.nova"]);
    }
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_subprotocol_when_the_server_accepts_none() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url())
        .subprotocol("v2.nova")
        .spawn()
        .unwrap();
    assert_eq!(connected_subprotocol(&mut events).await, None);
    assert_eq!(server.requests()[0].subprotocols(), ["v2.nova"]);
    assert_echo(&client, &mut events, "plain").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_an_offer_no_protocol_header_is_sent() {
    let server = TestServer::start(Script::echo().subprotocols(["v1.nova"]))
        .await
        .unwrap();
    let (client, mut events) = Client::builder(server.url()).spawn().unwrap();
    assert_eq!(connected_subprotocol(&mut events).await, None);
    let req = &server.requests()[0];
    assert_eq!(req.header("sec-websocket-protocol"), None);
    assert_eq!(req.path, "/");
    client.close().await.unwrap();
}

#[test]
fn a_handshake_header_is_refused_as_configuration() {
    let err = Client::builder("ws://127.0.0.1:9/")
        .header("Sec-WebSocket-Key", "mine")
        .build()
        .unwrap_err();
    assert!(err.is_config());
    let err = Client::builder("ws://127.0.0.1:9/")
        .subprotocol("has space")
        .build()
        .unwrap_err();
    assert!(err.is_config());
}
