//! Codecs on a live connection (issue 6): for each wire format, a frame that does not decode
//! is counted (error category `Decode`) and reported as `Event::Error`, and the link stays up:
//! the next, valid frame arrives as JSON text, with no reconnect. Values sent with
//! `send_value` go out in the codec's format (the echo server returns them as received).
#![cfg(all(feature = "msgpack", feature = "cbor"))]

mod common;

use common::*;
use serde_json::json;
use websockex_nova::codec::{CborCodec, CodecHandler, JsonCodec, MsgPackCodec};
use websockex_nova::metrics::DefaultMetricsCollector;
use websockex_nova::{Client, ErrorKind, Event, Frame};
use websockex_nova_testkit::{Plan, Script, Step, TestServer};

/// A server that sends `garbage`, then `valid`, then echoes.
async fn run(codec: impl CodecHandler, garbage: Step, valid: Step) {
    let name = codec.name();
    let server = TestServer::start(Script::plan(Plan::Accept(vec![garbage, valid, Step::Echo])))
        .await
        .unwrap();
    let metrics = DefaultMetricsCollector::new();
    let (client, mut events) = Client::builder(server.url())
        .codec(codec)
        .metrics(metrics.clone())
        .connect()
        .await
        .unwrap();
    let error = loop {
        match next_significant(&mut events).await {
            Event::Error(e) => break e,
            Event::Connected { .. } => {}
            other => panic!("{name}: {}", describe(&other)),
        }
    };
    assert_eq!(*error.kind(), ErrorKind::Decode, "{name}: {error}");
    assert!(error.to_string().contains(name), "{name}: {error}");
    let Event::Message(Frame::Text(t)) = next_significant(&mut events).await else {
        panic!("{name}: the valid frame, as JSON text");
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap(),
        json!({"price": 1.5, "side": "buy"}),
        "{name}"
    );

    // Out in the codec's format, back through the echo and the decoder.
    client.send_value(&json!({"n": [1, 2, 3]})).await.unwrap();
    let Event::Message(Frame::Text(t)) = next_significant(&mut events).await else {
        panic!("{name}: the echo");
    };
    assert_eq!(t.as_str(), r#"{"n":[1,2,3]}"#, "{name}");

    assert_eq!(client.status().connects, 1, "{name}: the link stayed up");
    assert_eq!(metrics.snapshot().errors, vec![("Decode", 1)], "{name}");
    client.close().await.unwrap();
}

fn value() -> serde_json::Value {
    json!({"price": 1.5, "side": "buy"})
}

#[tokio::test(start_paused = true)]
async fn json() {
    run(
        JsonCodec::new(),
        Step::SendText("{\"price\": 1.5,".into()),
        Step::SendText(value().to_string()),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn msgpack() {
    run(
        MsgPackCodec::new(),
        Step::SendBinary(vec![0xc1, 0xff, 0x00]),
        Step::SendBinary(rmp_serde::to_vec_named(&value()).unwrap()),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn cbor() {
    let mut valid = Vec::new();
    ciborium::into_writer(&value(), &mut valid).unwrap();
    run(
        CborCodec::new(),
        Step::SendBinary(vec![0xff, 0xff, 0x1f]),
        Step::SendBinary(valid),
    )
    .await;
}
