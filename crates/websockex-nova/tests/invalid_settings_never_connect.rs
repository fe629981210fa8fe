//! Settings that cannot work are refused by `connect`, `spawn` and `build` with a
//! `Config` error that names the setting, before anything is opened: the server never sees
//! a TCP connection.

mod common;

use common::*;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{Client, ClientBuilder, ErrorKind, RootCertificates};
use websockex_nova_testkit::{Script, TestServer};

/// `connect`, `spawn` and `build` each refuse `builder()` with a `Config` error reading
/// `message`, and the server is never contacted.
async fn refused(server: &TestServer, builder: impl Fn() -> ClientBuilder, message: &str) {
    let expected = format!("invalid configuration: {message}");
    let err = builder().connect().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Config, "{message}");
    assert!(err.is_config() && !err.is_transient());
    assert_eq!(err.to_string(), expected);
    let err = builder().spawn().unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = builder().build().unwrap_err();
    assert_eq!(err.to_string(), expected);
    // Nothing was opened, not even a TCP connection that a later step could have used.
    tokio::task::yield_now().await;
    assert_eq!(server.accepted(), 0, "{message}");
}

#[cfg(not(feature = "native-roots"))]
#[tokio::test(start_paused = true)]
async fn native_roots_without_the_feature_are_refused() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    // Refused whatever the scheme: the setting cannot take effect in this build.
    for url in [server.url(), format!("wss://{}/", server.addr())] {
        refused(
            &server,
            || Client::builder(url.clone()).root_certificates(RootCertificates::Native),
            "native root certificates need the `native-roots` feature",
        )
        .await;
    }
    // The default roots are fine.
    let (client, mut events) = Client::builder(server.url())
        .root_certificates(RootCertificates::WebPki)
        .connect()
        .await
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    client.close().await.unwrap();
}

#[cfg(feature = "native-roots")]
#[tokio::test(start_paused = true)]
async fn native_roots_with_the_feature_are_accepted() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    // Over `ws://` no roots are loaded; the setting itself validates.
    let (client, mut events) = Client::builder(server.url())
        .root_certificates(RootCertificates::Native)
        .connect()
        .await
        .unwrap();
    assert_eq!(trace_until_connected(&mut events, 1).await, ["connected#1"]);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_json_rpc_config_with_an_empty_method_or_a_zero_batch_is_refused() {
    let server = TestServer::start(Script::echo()).await.unwrap();
    type Edit = fn(&mut JsonRpcConfig);
    let cases: [(Edit, &str); 5] = [
        (
            |c| c.notification_method.clear(),
            "json-rpc notification_method is empty",
        ),
        (
            |c| c.subscribe_method.clear(),
            "json-rpc subscribe_method is empty",
        ),
        (
            |c| c.unsubscribe_method.clear(),
            "json-rpc unsubscribe_method is empty",
        ),
        (|c| c.auth_method.clear(), "json-rpc auth_method is empty"),
        (
            |c| c.subscribe_batch = 0,
            "json-rpc subscribe_batch must be > 0",
        ),
    ];
    for (edit, message) in cases {
        let mut config = JsonRpcConfig::default();
        edit(&mut config);
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            format!("invalid configuration: {message}")
        );
        refused(
            &server,
            || Client::builder(server.url()).json_rpc(config.clone()),
            message,
        )
        .await;
    }
    // The defaults connect.
    let (client, _events) = Client::builder(server.url())
        .json_rpc(JsonRpcConfig::default())
        .connect()
        .await
        .unwrap();
    assert_eq!(server.accepted(), 1);
    client.close().await.unwrap();
}
