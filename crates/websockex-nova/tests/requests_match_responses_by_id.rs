//! JSON-RPC requests resolve with the response that carries their id, whatever order the
//! responses come in (issue 3, acceptance 1; DESIGN §4.1). Each request resolves with exactly
//! one of: its result, the API's error object, a timeout; responses nobody waits for and
//! server messages nobody subscribed to reach the event stream; the in-flight cap holds
//! requests back until answers free a slot. All against the testkit's JSON-RPC server.

mod common;

use std::cell::RefCell;
use std::time::Duration;

use common::rpc::*;
use common::*;
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{ApiError, Client, ClientConfig, ErrorKind, Event, Frame, TimeoutKind};
use websockex_nova_testkit::{RpcError, RpcServer, Script, TestServer};

fn echo_server() -> RpcServer {
    RpcServer::builder()
        .handler("echo", |p| Ok(p.clone()))
        .result("slow", json!("slow result"))
        .delay("slow", secs(5))
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_slow_response_is_overtaken_and_each_request_gets_its_own_result() {
    let rpc = echo_server();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    let t0 = Instant::now();
    let done = RefCell::new(Vec::new());
    let slow = async {
        let r = client.request("slow", &json!({})).await.unwrap();
        done.borrow_mut()
            .push((r.as_str().to_owned(), t0.elapsed()));
    };
    let fast = async {
        for n in 0..3 {
            let r: Value = client.request_as("echo", &json!({ "n": n })).await.unwrap();
            assert_eq!(r, json!({ "n": n }), "each request gets its own result");
            done.borrow_mut().push((r.to_string(), t0.elapsed()));
        }
    };
    tokio::join!(slow, fast);

    // The slow request went out first, yet resolved last, with its own result.
    assert_eq!(
        rpc.methods(),
        [
            (0, "slow".to_owned()),
            (0, "echo".to_owned()),
            (0, "echo".to_owned()),
            (0, "echo".to_owned())
        ]
    );
    assert_eq!(
        done.into_inner(),
        [
            (r#"{"n":0}"#.to_owned(), Duration::ZERO),
            (r#"{"n":1}"#.to_owned(), Duration::ZERO),
            (r#"{"n":2}"#.to_owned(), Duration::ZERO),
            (r#""slow result""#.to_owned(), secs(5)),
        ]
    );
    // Ids are unique per request.
    let mut ids: Vec<u64> = rpc
        .requests()
        .into_iter()
        .map(|r| r.id.and_then(|id| id.as_u64()).expect("an integer id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn responses_answered_newest_first_still_reach_their_callers() {
    let rpc = RpcServer::builder()
        .handler("echo", |p| Ok(p.clone()))
        .hold_and_reverse(4)
        .build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    let params: Vec<Value> = (0..8).map(|n| json!([n])).collect();
    let calls = params
        .iter()
        .map(|p| client.request_as::<Value, _>("echo", p));
    let results = join_all(calls).await;
    let results: Vec<Value> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, (0..8).map(|n| json!([n])).collect::<Vec<_>>());
    client.close().await.unwrap();
}

#[derive(Debug, Deserialize, PartialEq)]
struct Position {
    size: i64,
    instrument: String,
}

#[tokio::test(start_paused = true)]
async fn request_as_decodes_the_result_or_says_it_does_not_fit() {
    let rpc = RpcServer::builder()
        .result("position", json!({"size": 3, "instrument": "BTC"}))
        .build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    let p: Position = client.request_as("position", &json!({})).await.unwrap();
    assert_eq!(
        p,
        Position {
            size: 3,
            instrument: "BTC".into()
        }
    );
    let err = client
        .request_as::<Vec<u8>, _>("position", &json!({}))
        .await
        .unwrap_err();
    assert!(err.is_decode(), "{err:?}");
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_times_out_after_its_own_timeout_or_the_configured_default() {
    let rpc = echo_server();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .request_timeout(secs(2))
        .connect()
        .await
        .unwrap();

    let t0 = Instant::now();
    let err = client
        .request_with_timeout("slow", &json!({}), secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Timeout(TimeoutKind::Request));
    assert!(err.is_timeout() && err.is_transient());
    assert_eq!(t0.elapsed(), secs(1));

    let t1 = Instant::now();
    let err = client.request("slow", &json!({})).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Timeout(TimeoutKind::Request));
    assert_eq!(t1.elapsed(), secs(2), "the configured request_timeout");

    // The late answers (at 5 s after each request) are nobody's any more: they are
    // reported, not dropped silently.
    let late_ids: Vec<u64> = rpc
        .requests()
        .iter()
        .map(|r| r.id.as_ref().and_then(Value::as_u64).unwrap())
        .collect();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Event::UnmatchedResponse { id, result } = next_significant(&mut events).await {
            assert_eq!(result.unwrap().as_str(), r#""slow result""#);
            seen.push(id);
        }
    }
    assert_eq!(seen, late_ids);
    assert_eq!(t0.elapsed(), secs(1) + secs(5));

    // A fast request on the same link is unaffected.
    let r: Value = client.request_as("echo", &json!([1])).await.unwrap();
    assert_eq!(r, json!([1]));
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_default_request_timeout_is_30_seconds() {
    assert_eq!(ClientConfig::new("ws://h").request_timeout, secs(30));
    let rpc = RpcServer::builder()
        .result("never", json!(1))
        .delay("never", secs(3600))
        .build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    let t0 = Instant::now();
    let err = client.request("never", &json!({})).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Timeout(TimeoutKind::Request));
    assert_eq!(t0.elapsed(), secs(30));
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_api_error_comes_back_with_code_message_and_data() {
    let rpc = RpcServer::builder()
        .error(
            "public/buy",
            RpcError::new(10009, "not_enough_funds").with_data(json!({"needed": 5})),
        )
        .build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();

    let err = client.request("public/buy", &json!({})).await.unwrap_err();
    let expected = ApiError {
        code: 10009,
        message: "not_enough_funds".into(),
        data: Some(json!({"needed": 5})),
    };
    assert_eq!(err.kind(), &ErrorKind::Api(expected.clone()));
    assert_eq!(err.api_error(), Some(&expected));
    assert!(!err.is_transient() && !err.is_disconnected());

    // An unknown method is the server's -32601, also as an API error (typed too).
    let err = client
        .request_as::<Value, _>("no/such", &json!({}))
        .await
        .unwrap_err();
    let api = err.api_error().expect("an API error");
    assert_eq!(
        (api.code, api.message.as_str()),
        (-32601, "Method not found")
    );
    assert_eq!(api.data, Some(json!({"method": "no/such"})));
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unknown_ids_and_unsubscribed_pushes_reach_the_event_stream() {
    let rpc = echo_server();
    let server = serve(&rpc).await;
    let (client, mut events) = client(&server, JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    // A request first, so ids are in use: the pushed ids match none of them.
    let _: Value = client.request_as("echo", &json!([0])).await.unwrap();

    let unknown_result = r#"{"jsonrpc":"2.0","id":4242,"result":{"x":1}}"#;
    let unknown_error = r#"{"jsonrpc":"2.0","id":4243,"error":{"code":7,"message":"late"}}"#;
    let stray = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"nobody.here","data":{"p":1}}}"#;
    let other = r#"{"hello":"world"}"#;
    for text in [unknown_result, unknown_error, stray, other] {
        assert!(rpc.push(0, text));
    }

    match next_significant(&mut events).await {
        Event::UnmatchedResponse { id, result } => {
            assert_eq!(id, 4242);
            assert_eq!(result.unwrap().as_str(), r#"{"x":1}"#);
        }
        e => panic!("expected an unmatched response, got {e:?}"),
    }
    match next_significant(&mut events).await {
        Event::UnmatchedResponse { id, result } => {
            assert_eq!(id, 4243);
            let api = result.unwrap_err();
            assert_eq!((api.code, api.message.as_str()), (7, "late"));
        }
        e => panic!("expected an unmatched response, got {e:?}"),
    }
    match next_significant(&mut events).await {
        Event::Message(Frame::Text(t)) => assert_eq!(t.as_str(), stray),
        e => panic!("expected the notification as a message, got {e:?}"),
    }
    match next_significant(&mut events).await {
        Event::Message(Frame::Text(t)) => assert_eq!(t.as_str(), other),
        e => panic!("expected the message, got {e:?}"),
    }
    // The link is fine.
    let r: Value = client.request_as("echo", &json!([1])).await.unwrap();
    assert_eq!(r, json!([1]));
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_holds_requests_back_until_answers_free_a_slot() {
    let rpc = RpcServer::builder()
        .handler("slow", |p| Ok(p.clone()))
        .delay("slow", secs(1))
        .build();
    let server = serve(&rpc).await;
    let (client, _events) = client(&server, JsonRpcConfig::default())
        .max_in_flight(2)
        .connect()
        .await
        .unwrap();
    let t0 = Instant::now();
    let params: Vec<Value> = (0..5).map(|n| json!([n])).collect();
    let calls = params
        .iter()
        .map(|p| client.request_as::<Value, _>("slow", p));
    let results: Vec<Value> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results, (0..5).map(|n| json!([n])).collect::<Vec<_>>());
    assert_eq!(t0.elapsed(), secs(3));

    // At the server: two at a time, each pair written as the previous answers arrived.
    let arrivals: Vec<(Value, Duration)> = rpc
        .requests()
        .into_iter()
        .map(|r| (r.params, r.at - t0))
        .collect();
    assert_eq!(
        arrivals,
        [
            (json!([0]), secs(0)),
            (json!([1]), secs(0)),
            (json!([2]), secs(1)),
            (json!([3]), secs(1)),
            (json!([4]), secs(2)),
        ]
    );
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_request_capable_handler_are_unsupported() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    let (client, mut events) = Client::builder(server.url()).connect().await.unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    let err = client.request("public/test", &json!({})).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unsupported);
    assert!(!err.is_transient());
    let err = client.subscribe(["ticker"]).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unsupported);
    // Nothing was written; the link is fine.
    assert_echo(&client, &mut events, "still here").await;
    assert_eq!(server.texts(), ["still here"]);
    client.close().await.unwrap();
}
