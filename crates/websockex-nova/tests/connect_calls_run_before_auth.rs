//! Calls a connection makes on its own right after the upgrade (a venue heartbeat setup)
//! go out before authentication, on every connect; their answers are not waited for, and
//! an error answer surfaces as `Event::Error` instead of vanishing.

mod common;

use common::rpc::*;
use common::*;
use serde_json::json;
use websockex_nova::behaviour::{Call, ConnectInfo};
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{ConnectionHandler, ErrorKind, Event};
use websockex_nova_testkit::{Reply, RpcError, RpcServer};

struct Hello;

impl ConnectionHandler for Hello {
    fn connect_calls(&mut self, _info: &ConnectInfo<'_>) -> Vec<Call> {
        vec![
            Call {
                method: "public/hello".into(),
                params: json!({"client_name": "test", "client_version": "1"}),
            },
            Call {
                method: "public/set_heartbeat".into(),
                params: json!({"interval": 5}),
            },
        ]
    }
}

#[tokio::test(start_paused = true)]
async fn connect_calls_precede_auth_on_every_connect_and_errors_surface() {
    let rpc = RpcServer::builder()
        .credentials("key", "secret")
        .result("public/hello", json!({"version": "1.2.26"}))
        .build();
    rpc.set_reply(
        "public/set_heartbeat",
        Reply::Error(RpcError::new(-32602, "Invalid params")),
    );
    let server = serve(&rpc).await;
    let (client, mut events) = client(
        &server,
        JsonRpcConfig::default().with_credentials("key", "secret"),
    )
    .connection_handler(Hello)
    .connect()
    .await
    .unwrap();
    assert_eq!(
        methods_on(&rpc, 0),
        ["public/hello", "public/set_heartbeat", "public/auth"]
    );
    let error = loop {
        match next_significant(&mut events).await {
            Event::Error(e) => break e,
            _ => continue,
        }
    };
    assert_eq!(error.api_error().map(|e| e.code), Some(-32602));
    assert!(matches!(error.kind(), ErrorKind::Api(_)));

    server.drop_connections();
    assert!(
        rpc.wait_for(secs(10), |r| r
            .methods()
            .iter()
            .filter(|(c, _)| *c == 1)
            .count()
            >= 3)
            .await
    );
    assert_eq!(
        methods_on(&rpc, 1)[..3],
        ["public/hello", "public/set_heartbeat", "public/auth"]
    );
    client.close().await.unwrap();
}
