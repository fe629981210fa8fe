//! Helpers for the tests against the testkit's JSON-RPC server mode.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use serde_json::Value;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::{Client, ClientBuilder, ReconnectPolicy};
use websockex_nova_testkit::{RpcRequest, RpcServer, Script, TestServer};

use super::ms;

/// Seconds.
pub fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

/// A server that runs `rpc` on every connection.
pub async fn serve(rpc: &RpcServer) -> TestServer {
    TestServer::start(Script::json_rpc(rpc.clone()))
        .await
        .unwrap()
}

/// A JSON-RPC client for `server` that reconnects after a fixed-looking, unjittered 100 ms
/// first delay (exponential, capped at 5 s).
pub fn client(server: &TestServer, config: JsonRpcConfig) -> ClientBuilder {
    Client::builder(server.url())
        .json_rpc(config)
        .reconnect(ReconnectPolicy::exponential(ms(100), secs(5)))
}

/// The requests `rpc` received on connection `conn` for `method`, in order.
pub fn requests_for(rpc: &RpcServer, conn: usize, method: &str) -> Vec<RpcRequest> {
    rpc.requests()
        .into_iter()
        .filter(|r| r.conn == conn && r.method == method)
        .collect()
}

/// The methods `rpc` received on connection `conn`, in order.
pub fn methods_on(rpc: &RpcServer, conn: usize) -> Vec<String> {
    rpc.methods()
        .into_iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, m)| m)
        .collect()
}

/// The size of the `channels` param of a subscribe request.
pub fn channel_count(r: &RpcRequest) -> usize {
    r.params["channels"].as_array().map_or(0, Vec::len)
}

/// The `channels` param of a subscribe request.
pub fn channels_of(r: &RpcRequest) -> Vec<String> {
    r.params["channels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A boxed future borrowing the client.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Polls `fut` once (which hands its command to the connection, in call order) and returns it
/// still pending, so several calls can be issued in a known order without awaiting any.
pub async fn issue<'a, T>(fut: impl Future<Output = T> + 'a) -> BoxFut<'a, T> {
    let mut fut: BoxFut<'a, T> = Box::pin(fut);
    let pending = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
    assert!(pending, "the call resolved at once");
    fut
}
