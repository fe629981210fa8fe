//! Secrets (issue 5): the API secret, the access and refresh tokens the server grants and a
//! key in the URL's query never appear in any log format (`tracing` plain and JSON at
//! TRACE, `DefaultLoggingHandler` plain and JSON with full message logging) nor in a metric
//! label (Prometheus exposition of `FacadeMetricsCollector`), across auth and two token
//! refreshes. The payloads *are* logged in full: their secret values are redacted.
#![cfg(feature = "metrics")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::rpc::*;
use common::*;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::logging::{
    DefaultLoggingHandler, LogCategory, LogFormat, LogRecord, LoggingHandler, MessageLogging,
};
use websockex_nova::metrics::FacadeMetricsCollector;
use websockex_nova::{Client, Event, ReconnectPolicy};
use websockex_nova_testkit::RpcServer;

const API_SECRET: &str = "hunter2-api-secret";
const URL_KEY: &str = "url-key-0x5ec12e7";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// Two logging handlers at once.
struct Tee(Vec<DefaultLoggingHandler>);

impl LoggingHandler for Tee {
    fn enabled(&self, category: LogCategory, level: tracing::Level) -> bool {
        self.0.iter().any(|h| h.enabled(category, level))
    }
    fn log(&mut self, record: &LogRecord<'_>) {
        for h in &mut self.0 {
            if h.enabled(record.category, record.level) {
                h.log(record);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn no_secret_in_any_log_format_or_metric_label() {
    let tracing_plain = Buffer::default();
    let tracing_json = Buffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(tracing_plain.clone())
                .with_ansi(false),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(tracing_json.clone()),
        );
    let _guard = tracing::subscriber::set_default(subscriber);

    let handler_plain = Buffer::default();
    let handler_json = Buffer::default();
    let full = MessageLogging::Full { max_len: 4096 };
    let logging = Tee(vec![
        DefaultLoggingHandler::new()
            .all_levels(tracing::level_filters::LevelFilter::TRACE)
            .messages(full)
            .writer(handler_plain.clone()),
        DefaultLoggingHandler::new()
            .all_levels(tracing::level_filters::LevelFilter::TRACE)
            .format(LogFormat::Json)
            .messages(full)
            .writer(handler_json.clone()),
    ]);

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let exposition = recorder.handle();
    let collector =
        metrics::with_local_recorder(&recorder, || FacadeMetricsCollector::new("venue-a"));

    let rpc = RpcServer::builder()
        .credentials("key", API_SECRET)
        .token_ttl(secs(20))
        .result("private/get_position", json!({"size": 1}))
        .build();
    let server = serve(&rpc).await;
    let mut config = JsonRpcConfig::default().with_credentials("key", API_SECRET.to_owned());
    config.refresh_margin = secs(5);
    let builder = Client::builder(format!("{}?apikey={URL_KEY}", server.url()))
        .json_rpc(config)
        .reconnect(ReconnectPolicy::exponential(ms(100), secs(5)))
        .metrics(collector)
        .logging(logging);
    let builder_debug = format!("{builder:?}");
    let (client, mut events) = builder.connect().await.unwrap();
    let mut event_debug = String::new();
    let mut refreshes = 0;
    while refreshes < 2 {
        let e = next(&mut events).await;
        event_debug += &format!("{e:?}\n");
        if let Event::Authenticated {
            refreshed: true, ..
        } = e
        {
            refreshes += 1;
        }
    }
    client
        .request("private/get_position", &json!({}))
        .await
        .unwrap();
    client.close().await.unwrap();

    // The secrets were on the wire: the server saw the secret and the refresh tokens.
    assert_eq!(rpc.auth_requests("client_credentials"), 1);
    assert_eq!(rpc.auth_requests("refresh_token"), 2);
    let secrets = [
        API_SECRET,
        URL_KEY,
        "testkit-access-1",
        "testkit-access-2",
        "testkit-access-3",
        "testkit-refresh-1",
        "testkit-refresh-2",
        "testkit-refresh-3",
    ];
    let outputs = [
        ("tracing plain", tracing_plain.text()),
        ("tracing json", tracing_json.text()),
        ("handler plain", handler_plain.text()),
        ("handler json", handler_json.text()),
        ("prometheus", exposition.render()),
        ("builder Debug", builder_debug),
        ("events Debug", event_debug),
    ];
    for (name, text) in &outputs {
        assert!(!text.is_empty(), "{name} is empty");
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {name}:\n{text}");
        }
    }
    // The handler logged the auth payloads in full, with the values redacted.
    for (name, text) in &outputs[2..4] {
        assert!(text.contains("public/auth"), "{name}");
        assert!(text.contains("client_id"), "{name}");
        assert!(text.contains("[redacted]"), "{name}");
    }
    // The metrics are there, labelled with the name we chose.
    assert!(outputs[4]
        .1
        .contains(r#"websockex_nova_connections_opened_total{connection="venue-a"} 1"#));
}
