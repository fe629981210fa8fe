//! What the client does with a server's answer to the upgrade request beyond the plain `101`
//! or `503`: a subprotocol it did not offer (RFC 6455 §4.1: the client must fail the
//! connection) is refused for good, like a 403; `408 Request Timeout` and
//! `429 Too Many Requests` are transient and retried with backoff.

mod common;

use std::error::Error as _;
use std::time::Duration;

use common::*;
use websockex_nova::{Client, Error, ErrorKind, Event, ReconnectPolicy, State};
use websockex_nova_testkit::{Plan, Script, TestServer};

fn exponential() -> ReconnectPolicy {
    ReconnectPolicy::exponential(ms(100), Duration::from_secs(5))
}

/// The error of the first `Disconnected` event.
async fn first_disconnect(events: &mut websockex_nova::Events) -> Error {
    loop {
        if let Event::Disconnected { error, .. } = next_significant(events).await {
            return error;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_subprotocol_that_was_not_offered_is_refused_and_not_retried() {
    // (offered, what the server's 101 carries, what the error says)
    let cases: [(&[&str], Script, &str); 6] = [
        (
            &["v1.nova"],
            Script::echo().response_header("Sec-WebSocket-Protocol", "v9.other"),
            r#"the server chose subprotocol "v9.other", which was not offered (v1.nova)"#,
        ),
        (
            &[],
            Script::echo().response_header("Sec-WebSocket-Protocol", "v1.nova"),
            r#"the server chose subprotocol "v1.nova", but none was offered"#,
        ),
        (
            // One value only: a list is not a choice.
            &["v1.nova", "v2.nova"],
            Script::echo().response_header("Sec-WebSocket-Protocol", "v1.nova, v2.nova"),
            r#"the server chose subprotocol "v1.nova, v2.nova", which was not offered (v1.nova, v2.nova)"#,
        ),
        (
            // The comparison is exact.
            &["v1.nova"],
            Script::echo().response_header("Sec-WebSocket-Protocol", "V1.NOVA"),
            r#"the server chose subprotocol "V1.NOVA", which was not offered (v1.nova)"#,
        ),
        (
            &["v1.nova"],
            Script::echo().response_header("Sec-WebSocket-Protocol", "v1.növa"),
            "the server's Sec-WebSocket-Protocol is not visible ASCII",
        ),
        (
            // The server accepts the offer, then adds a second choice: the last header
            // counts (tokio-websockets keeps only the last of repeated headers).
            &["v1.nova"],
            Script::echo()
                .subprotocols(["v1.nova"])
                .response_header("Sec-WebSocket-Protocol", "v9.other"),
            r#"the server chose subprotocol "v9.other", which was not offered (v1.nova)"#,
        ),
    ];
    for (offered, script, why) in cases {
        let server = TestServer::start(script).await.unwrap();
        let mut builder = Client::builder(server.url()).reconnect(exponential());
        for p in offered {
            builder = builder.subprotocol(*p);
        }
        let err = builder.connect().await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::SubprotocolNotOffered, "{why}");
        assert!(!err.is_transient(), "{why}");
        assert_eq!(
            err.to_string(),
            format!(
                "server chose a subprotocol that was not offered: {}: {why}",
                server.url()
            )
        );
        assert_eq!(server.upgraded(), 1, "{why}");
        assert_eq!(server.accepted(), 1, "no retry: {why}");
        // The link was never used: nothing reached the server.
        assert!(server.wait_open_at_most(0, T).await);
        assert!(server.received().is_empty(), "{why}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_spawned_client_stops_at_once_on_a_subprotocol_it_did_not_offer() {
    let server = TestServer::start(Script::echo().response_header("Sec-WebSocket-Protocol", "x"))
        .await
        .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .spawn()
        .unwrap();
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await,
        [
            "disconnected#1 SubprotocolNotOffered",
            "closed SubprotocolNotOffered",
        ]
    );
    assert!(events.next().await.is_none());
    assert_eq!(client.status().state, State::Closed);
    assert_eq!(server.accepted(), 1);
    // An offered choice still goes through on the same kind of server.
    let server = TestServer::start(Script::echo().subprotocols(["v1.nova"]))
        .await
        .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .subprotocol("v1.nova")
        .connect()
        .await
        .unwrap();
    match next_significant(&mut events).await {
        Event::Connected { subprotocol, .. } => assert_eq!(subprotocol.as_deref(), Some("v1.nova")),
        e => panic!("expected Connected, got {}", describe(&e)),
    }
    assert_echo(&client, &mut events, "chosen").await;
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_408_and_a_429_are_retried_with_backoff() {
    let server = TestServer::start(Script::sequence(vec![
        Plan::Refuse { status: 408 },
        Plan::Refuse { status: 429 },
        Plan::Refuse { status: 429 },
        Plan::echo(),
    ]))
    .await
    .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential())
        .spawn()
        .unwrap();
    let timeout = first_disconnect(&mut events).await;
    assert_eq!(timeout.kind(), &ErrorKind::UpgradeRejected { status: 408 });
    assert!(timeout.is_transient() && !timeout.is_rate_limited());
    assert_eq!(
        timeout.to_string(),
        format!(
            "server refused the WebSocket upgrade with HTTP 408: {}: expected HTTP 101 \
             Switching Protocols, got status code 408",
            server.url()
        )
    );
    assert_eq!(
        trace_until_connected(&mut events, 1).await,
        [
            "reconnecting#2 100ms",
            "disconnected#2 UpgradeRejected { status: 429 }",
            "reconnecting#3 200ms",
            "disconnected#3 UpgradeRejected { status: 429 }",
            "reconnecting#4 400ms",
            "connected#4",
        ]
    );
    assert_echo(&client, &mut events, "let in").await;
    assert_eq!((server.accepted(), server.upgraded()), (4, 1));
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_429_is_rate_limited_and_ends_in_retries_exhausted() {
    let server = TestServer::start(Script::plan(Plan::Refuse { status: 429 }))
        .await
        .unwrap();
    let (client, mut events) = Client::builder(server.url())
        .reconnect(exponential().with_max_retries(1))
        .spawn()
        .unwrap();
    let first = first_disconnect(&mut events).await;
    assert_eq!(first.kind(), &ErrorKind::UpgradeRejected { status: 429 });
    assert!(first.is_transient() && first.is_rate_limited());
    assert_eq!(
        trace_until(&mut events, |e| matches!(e, Event::Closed { .. })).await,
        [
            "reconnecting#2 100ms",
            "disconnected#2 UpgradeRejected { status: 429 }",
            "closed RetriesExhausted { attempts: 1 }",
        ]
    );
    let err = client.ready().await.unwrap_err();
    assert!(err.is_closed());
    assert_eq!(server.accepted(), 2);

    // `connect` returns the same, keeping the 429 as the source.
    let err = Client::builder(server.url())
        .reconnect(exponential().with_max_retries(1))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::RetriesExhausted { attempts: 1 });
    let source = err
        .source()
        .and_then(|s| s.downcast_ref::<Error>())
        .expect("the 429 is the source");
    assert_eq!(source.kind(), &ErrorKind::UpgradeRejected { status: 429 });
    assert!(source.is_rate_limited());
}
