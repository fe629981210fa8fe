//! `nova-bench`: the loopback harness of DESIGN §6.
//!
//! * `nova-bench server --listen ADDR`: serves `/stream?n=N&size=S`: after the upgrade it
//!   writes `N` pre-framed Deribit-shaped ticker notifications of exactly `S` bytes (4,096
//!   distinct ones, cycled), in writes of up to 64 KiB, then `Close(1000)`. No work per message.
//! * `nova-bench stream --client nova|raw URL [--no-parse]`: receives until the close and
//!   prints one JSON line: messages, seconds, msgs/s, CPU ns per message. `raw` is a bare
//!   tokio-websockets client; `nova` is the framework's `Client` reading its event stream.
//!   With parsing (the default) each message is parsed into `serde_json::Value` and
//!   `params.data.best_bid_price` is summed, exactly as the peer anchors did.
//!
//! `instr.sh` beside this crate counts instructions per message with callgrind.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_websockets::{ClientBuilder, Limits, ServerBuilder};
use websockex_nova::{Client, Event, Frame, KeepaliveConfig, ReconnectPolicy};
use websockex_nova_testkit::{raw_frame, ticker_notification};

#[derive(Parser)]
#[command(name = "nova-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the load server.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
    },
    /// Receive a stream and report.
    Stream {
        /// Which client.
        #[arg(long, value_enum)]
        client: Which,
        /// e.g. ws://127.0.0.1:9100/stream?n=1000000&size=350
        url: String,
        /// Skip the JSON parse.
        #[arg(long)]
        no_parse: bool,
        /// nova only: record metrics (the cost of metrics on the hot path).
        #[arg(long, value_enum)]
        metrics: Option<Metrics>,
        /// nova only: a `DefaultLoggingHandler` at INFO, message logging off, to a sink.
        #[arg(long)]
        logging: bool,
        /// nova only: decode every frame with the `JsonCodec` (validation) first.
        #[arg(long)]
        json_codec: bool,
    },
    /// Request round trips against the server's `/rpc` (JSON-RPC answers, same server work
    /// for both clients); prints p50/p99 in µs.
    Rtt {
        /// Which client.
        #[arg(long, value_enum)]
        client: Which,
        /// e.g. ws://127.0.0.1:9100/rpc
        url: String,
        /// Timed round trips.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Untimed warm-up round trips.
        #[arg(long, default_value_t = 1_000)]
        warmup: usize,
    },
    /// Open idle connections and report the resident memory each one costs.
    Idle {
        /// Which client.
        #[arg(long, value_enum)]
        client: Which,
        /// An echo server, e.g. the one `nova serve` runs.
        url: String,
        /// Connections to measure (after 100 warm-up ones).
        #[arg(long, default_value_t = 1000)]
        conns: usize,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Which {
    /// websockex-nova's Client and event stream.
    Nova,
    /// A bare tokio-websockets client.
    Raw,
    /// The Deribit adapter's typed ticker stream (server path `/deribit`).
    Typed,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Nova => "websockex-nova",
            Which::Raw => "tokio-websockets",
            Which::Typed => "websockex-nova-deribit typed ticker",
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match cli.command {
        Cmd::Server { listen } => rt.block_on(server(listen)),
        Cmd::Idle { client, url, conns } => rt.block_on(idle(client, &url, conns)),
        Cmd::Rtt {
            client,
            url,
            count,
            warmup,
        } => rt.block_on(rtt(client, &url, count, warmup)),
        Cmd::Stream {
            client,
            url,
            no_parse,
            metrics,
            logging,
            json_codec,
        } => {
            let cpu0 = cpu_time();
            let (n, secs, checksum) = rt.block_on(async {
                match client {
                    Which::Nova => nova_stream(&url, !no_parse, metrics, logging, json_codec).await,
                    Which::Raw => raw_stream(&url, !no_parse).await,
                    Which::Typed => typed_stream(&url).await,
                }
            });
            let cpu = cpu_time().saturating_sub(cpu0);
            // A benchmark that loses messages would flatter itself: insist on all of them.
            let expected = url
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("n="))
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(expected) = expected {
                if n != expected {
                    eprintln!("nova-bench: received {n} messages, the server sent {expected}");
                    std::process::exit(1);
                }
            }
            let name = client.name();
            println!(
                "{}",
                serde_json::json!({
                    "client": name,
                    "parse": !no_parse,
                    "messages": n,
                    "seconds": secs,
                    "msgs_per_sec": n as f64 / secs,
                    "cpu_ns_per_msg": cpu.as_nanos() as f64 / n.max(1) as f64,
                    "checksum": checksum,
                })
            );
        }
    }
}

/// The 100-byte-ish request both clients send (the peer anchors' echo workload).
fn rtt_params() -> serde_json::Value {
    serde_json::json!({ "pad": "x".repeat(40) })
}

async fn rtt(which: Which, url: &str, count: usize, warmup: usize) {
    let mut samples = Vec::with_capacity(count);
    match which {
        Which::Raw => {
            let (mut ws, _) = ClientBuilder::new()
                .uri(url)
                .expect("url")
                .connect()
                .await
                .expect("connect");
            let _ = ws.get_ref();
            for i in 0..(warmup + count) {
                let start = Instant::now();
                let req = serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "public/get_time", "params": rtt_params()});
                ws.send(tokio_websockets::Message::text(req.to_string()))
                    .await
                    .expect("send");
                let msg = ws.next().await.expect("open").expect("frame");
                let v: serde_json::Value = serde_json::from_slice(msg.as_payload()).expect("json");
                assert_eq!(v["id"].as_u64(), Some(i as u64));
                if i >= warmup {
                    samples.push(start.elapsed());
                }
            }
        }
        Which::Nova | Which::Typed => {
            let (client, _events) = Client::builder(url)
                .json_rpc(websockex_nova::jsonrpc::JsonRpcConfig::default())
                .keepalive(KeepaliveConfig::disabled())
                .connect()
                .await
                .expect("connect");
            let params = rtt_params();
            for i in 0..(warmup + count) {
                let start = Instant::now();
                let v: serde_json::Value = client
                    .request_as("public/get_time", &params)
                    .await
                    .expect("request");
                assert!(v.is_object());
                if i >= warmup {
                    samples.push(start.elapsed());
                }
            }
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6;
    let name = which.name();
    println!(
        "{}",
        serde_json::json!({"client": name, "round_trips": samples.len(), "p50_us": pct(0.5), "p99_us": pct(0.99), "p999_us": pct(0.999)})
    );
}

/// Resident set size of this process in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Opens 100 connections, measures RSS, opens `conns` more, waits, measures again.
async fn idle(which: Which, url: &str, conns: usize) {
    let mut nova = Vec::new();
    let mut raw = Vec::new();
    open_conns(which, url, 100, &mut nova, &mut raw).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    open_conns(which, url, conns, &mut nova, &mut raw).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let name = which.name();
    println!(
        "{}",
        serde_json::json!({
            "client": name,
            "connections": conns,
            "kib_per_conn": (after.saturating_sub(before)) as f64 / conns as f64,
            "rss_kib": after,
        })
    );
}

async fn open_conns(
    which: Which,
    url: &str,
    n: usize,
    nova: &mut Vec<(Client, websockex_nova::Events)>,
    raw: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    for _ in 0..n {
        match which {
            Which::Nova | Which::Typed => {
                let parts = Client::builder(url).connect().await.expect("connect");
                nova.push(parts);
            }
            Which::Raw => {
                let (mut ws, _) = ClientBuilder::new()
                    .uri(url)
                    .expect("url")
                    .connect()
                    .await
                    .expect("connect");
                // A reader parked in next(), as a real client has.
                raw.push(tokio::spawn(async move {
                    while let Some(Ok(_)) = ws.next().await {}
                }));
            }
        }
    }
}

/// User plus system CPU time of this process, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

fn best_bid(text: &[u8]) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(text).expect("valid JSON");
    v["params"]["data"]["best_bid_price"]
        .as_f64()
        .unwrap_or(0.0)
}

async fn raw_stream(url: &str, parse: bool) -> (u64, f64, f64) {
    let (mut ws, _) = ClientBuilder::new()
        .uri(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    if url.contains("/deribit") {
        // The same subscribe the adapter sends; the ack is not counted.
        let sub = r#"{"jsonrpc":"2.0","id":1,"method":"public/subscribe","params":{"channels":["ticker.BTC-PERPETUAL.raw"]}}"#;
        ws.send(tokio_websockets::Message::text(sub))
            .await
            .expect("send");
        let _ack = ws.next().await.expect("ack").expect("ack");
    }
    let start = Instant::now();
    let (mut n, mut sum) = (0u64, 0.0);
    while let Some(msg) = ws.next().await {
        let msg = msg.expect("stream");
        if msg.is_close() {
            break;
        }
        if msg.is_text() {
            n += 1;
            if parse {
                sum += best_bid(msg.as_payload());
            }
        }
    }
    (n, start.elapsed().as_secs_f64(), sum)
}

/// The typed path of DESIGN §6: frame → classify → route → typed ticker the user reads.
async fn typed_stream(url: &str) -> (u64, f64, f64) {
    use websockex_nova_deribit::channels::Interval;
    use websockex_nova_deribit::{DeribitClient, DeribitConfig, Endpoint, TypedEvent};
    let config = DeribitConfig::new(Endpoint::Custom(url.to_owned()));
    let (client, _events) = config
        .builder()
        .reconnect(ReconnectPolicy::never())
        .keepalive(KeepaliveConfig::disabled())
        .connect()
        .await
        .expect("connect");
    let deribit = DeribitClient::from_client(client);
    let mut ticks = deribit
        .subscribe_ticker("BTC-PERPETUAL", Interval::Raw)
        .await
        .expect("subscribe");
    let start = Instant::now();
    let (mut n, mut sum) = (0u64, 0.0);
    while let Some(event) = ticks.next().await {
        if let TypedEvent::Data(ticker) = event {
            n += 1;
            sum += ticker.best_bid_price.unwrap_or(0.0);
        }
    }
    (n, start.elapsed().as_secs_f64(), sum)
}

/// A metrics collector for `stream --client nova`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Metrics {
    /// `DefaultMetricsCollector` (in-memory atomics).
    Default,
    /// `FacadeMetricsCollector` into the Prometheus exporter's recorder.
    Facade,
}

async fn nova_stream(
    url: &str,
    parse: bool,
    metrics: Option<Metrics>,
    logging: bool,
    json_codec: bool,
) -> (u64, f64, f64) {
    let mut builder = Client::builder(url);
    match metrics {
        None => {}
        Some(Metrics::Default) => {
            builder = builder.metrics(websockex_nova::metrics::DefaultMetricsCollector::new());
        }
        Some(Metrics::Facade) => {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            metrics::set_global_recorder(recorder).expect("one recorder");
            builder = builder.metrics(websockex_nova::metrics::FacadeMetricsCollector::new(
                "bench",
            ));
        }
    }
    if json_codec {
        builder = builder.codec(websockex_nova::codec::JsonCodec::new());
    }
    if logging {
        builder = builder
            .logging(websockex_nova::logging::DefaultLoggingHandler::new().writer(std::io::sink()));
    }
    let (client, mut events) = builder
        .reconnect(ReconnectPolicy::never())
        .keepalive(KeepaliveConfig::disabled())
        .connect()
        .await
        .expect("connect");
    let start = Instant::now();
    let (mut n, mut sum) = (0u64, 0.0);
    while let Some(event) = events.next().await {
        match event {
            Event::Message(Frame::Text(text)) => {
                n += 1;
                if parse {
                    sum += best_bid(text.as_bytes());
                }
            }
            Event::Disconnected { .. } | Event::Closed { .. } => break,
            _ => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(client);
    (n, secs, sum)
}

async fn server(listen: SocketAddr) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    eprintln!(
        "nova-bench server on ws://{}",
        listener.local_addr().unwrap()
    );
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok((request, mut ws)) = ServerBuilder::new()
                .limits(Limits::unlimited())
                .accept(tcp)
                .await
            else {
                return;
            };
            if request.uri().path() == "/rpc" {
                // Answer each JSON-RPC request with its params as the result.
                while let Some(Ok(msg)) = ws.next().await {
                    if !msg.is_text() {
                        continue;
                    }
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(msg.as_payload())
                    else {
                        continue;
                    };
                    let answer =
                        serde_json::json!({"jsonrpc": "2.0", "id": v["id"], "result": v["params"]});
                    if ws
                        .send(tokio_websockets::Message::text(answer.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                return;
            }
            let query = request.uri().query().unwrap_or_default().to_owned();
            if request.uri().path() == "/deribit" {
                // Answer requests; after a subscribe, stream the tickers on its channel.
                let n: usize = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("n="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100_000);
                while let Some(Ok(msg)) = ws.next().await {
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(msg.as_payload())
                    else {
                        continue;
                    };
                    let method = v["method"].as_str().unwrap_or_default().to_owned();
                    let result = if method.ends_with("/subscribe") {
                        v["params"]["channels"].clone()
                    } else {
                        serde_json::json!("ok")
                    };
                    let answer =
                        serde_json::json!({"jsonrpc": "2.0", "id": v["id"], "result": result});
                    if ws
                        .send(tokio_websockets::Message::text(answer.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if method.ends_with("/subscribe") {
                        break;
                    }
                }
                stream_tickers(&mut ws, n, 350).await;
                return;
            }
            let param = |key: &str, default: usize| {
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(default)
            };
            let (n, size) = (param("n", 100_000), param("size", 350));
            stream_tickers(&mut ws, n, size).await;
        });
    }
}

/// Writes `n` pre-framed ticker notifications (4,096 distinct ones, cycled) in writes of up
/// to 64 KiB, then `Close(1000)`, then waits up to 5 s for the client's close.
async fn stream_tickers<S>(ws: &mut tokio_websockets::WebSocketStream<S>, n: usize, size: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let pool: Vec<Vec<u8>> = (0..4096u64)
        .map(|i| raw_frame(true, 0x1, ticker_notification(i, size).as_bytes()))
        .collect();
    let mut buf = Vec::with_capacity(64 * 1024 + 512);
    for i in 0..n {
        buf.extend_from_slice(&pool[i % pool.len()]);
        if buf.len() >= 64 * 1024 {
            if ws.get_mut().write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    }
    buf.extend_from_slice(&raw_frame(true, 0x8, &1000u16.to_be_bytes()));
    if ws.get_mut().write_all(&buf).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
