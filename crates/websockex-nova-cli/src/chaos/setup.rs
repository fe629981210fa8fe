//! The venue, the three clients, the streams they read, and the tuning that makes a fault
//! cost about 0.2 s.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use websockex_nova::behaviour::{Call, ConnectInfo};
use websockex_nova::metrics::DefaultMetricsCollector;
use websockex_nova::{ConnectionHandler, Error, Events, Jitter, OverflowPolicy, ReconnectPolicy};
use websockex_nova_deribit::channels::Interval;
use websockex_nova_deribit::{Credentials, DeribitClient, DeribitConfig, Endpoint};
use websockex_nova_testkit::deribit::SimConfig;

use super::continuity::Check;

pub(super) const ACCOUNTS: [(&str, &str); 3] = [
    ("chaos-requests", "chaos-secret-1"),
    ("chaos-market", "chaos-secret-2"),
    ("chaos-mixed", "chaos-secret-3"),
];
pub(super) const NAMES: [&str; 3] = ["requests", "market", "mixed"];
pub(super) const REQUESTS: usize = 0;
pub(super) const MARKET: usize = 1;
pub(super) const MIXED: usize = 2;
/// Venue heartbeat interval: the 4000 close comes within one to two of these.
const HEARTBEAT_S: f64 = 0.2;
const PING_INTERVAL: Duration = Duration::from_millis(100);
/// No inbound traffic for this long: the peer is dead (the `stall` fault).
const DEAD_PEER: Duration = Duration::from_millis(300);
/// Largest message; `oversized` sends a little more.
pub(super) const MAX_MESSAGE: usize = 64 * 1024;
/// Small, so that a reader that stops for a few hundred ms overflows its stream.
const SUBSCRIPTION_CAPACITY: usize = 8;
/// Timeout of the workers' requests; `slow_responses` answers later than this.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause of a worker between two requests: two workers and the heartbeat answers stay
/// under the account's 20 requests per second (answers to the venue's heartbeats cost
/// credits there, but are not metered by the client).
pub(super) const WORKER_PAUSE: Duration = Duration::from_millis(200);
pub(super) const QUEUE_LIMIT: usize = 10_000;
pub(super) const METHODS: [&str; 4] = [
    "public/get_time",
    "public/test",
    "private/get_position",
    "private/get_account_summary",
];

/// `public/hello` and a short `public/set_heartbeat` after every connect. The adapter's own
/// `DeribitConnection` keeps Deribit's 10 s minimum, which would make one heartbeat fault
/// cost up to 20 s; the simulator here accepts [`HEARTBEAT_S`].
struct ChaosConnection;

impl ConnectionHandler for ChaosConnection {
    fn connect_calls(&mut self, _info: &ConnectInfo<'_>) -> Vec<Call> {
        vec![
            Call {
                method: "public/hello".into(),
                params: json!({"client_name": "nova-chaos", "client_version": env!("CARGO_PKG_VERSION")}),
            },
            Call {
                method: "public/set_heartbeat".into(),
                params: json!({ "interval": HEARTBEAT_S }),
            },
        ]
    }
}

/// How each client's streams overflow: `requests` waits (the default, `Block`: a stalled
/// reader stops the socket, nothing is dropped), `market` drops the newest, `mixed` the
/// oldest.
pub(super) const OVERFLOW: [OverflowPolicy; 3] = [
    OverflowPolicy::Block,
    OverflowPolicy::DropNewest,
    OverflowPolicy::DropOldest,
];

pub(super) async fn connect(
    url: &str,
    i: usize,
    seed: u64,
) -> Result<(DeribitClient, Events, DefaultMetricsCollector), Error> {
    let mut config = DeribitConfig::new(Endpoint::Custom(url.to_owned()))
        .with_credentials(Credentials::client_signature(ACCOUNTS[i].0, ACCOUNTS[i].1));
    // Tokens last 6 s: refreshed every 3 s, so a token fault heals within 3 s on its own.
    config.refresh_margin = Duration::from_secs(3);
    let (builder, timing) = config.builder_with_timing();
    let metrics = DefaultMetricsCollector::new();
    let (client, events) = builder
        .connection_handler(ChaosConnection)
        .metrics(metrics.clone())
        .reconnect(
            ReconnectPolicy::jittered(
                Duration::from_millis(10),
                Duration::from_millis(80),
                Jitter::Full,
            )
            .with_reset_after(Duration::from_millis(200)),
        )
        .backoff_rng(StdRng::seed_from_u64(seed ^ (i as u64 + 1)))
        .ping_interval(Some(PING_INTERVAL))
        .ping_timeout(Some(DEAD_PEER))
        .max_message_size(MAX_MESSAGE)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .overflow_policy(OVERFLOW[i])
        .request_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok((DeribitClient::with_timing(client, timing), events, metrics))
}

pub(super) fn sim_config(seed: u64) -> SimConfig {
    let mut c = SimConfig::default().with_seed(seed);
    c.credentials = ACCOUNTS
        .iter()
        .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
        .collect();
    c.token_ttl = Duration::from_secs(6);
    c.min_heartbeat_interval = HEARTBEAT_S;
    c.max_queue = Some(QUEUE_LIMIT);
    // A busier market: a reader that stops for 250 ms overflows its stream of 8.
    c.market_tick = Duration::from_millis(25);
    // A long run must not grow the simulator's request log.
    c.record_requests = false;
    c
}

/// The streams the run reads, by client.
pub(super) struct StreamSpec {
    pub(super) client: usize,
    pub(super) channel: &'static str,
    pub(super) check: Check,
    /// Read through the typed `BookStream` rather than raw.
    pub(super) typed_book: bool,
}

pub(super) const STREAMS: [StreamSpec; 7] = [
    StreamSpec {
        client: REQUESTS,
        channel: "ticker.ETH-PERPETUAL.raw",
        check: Check::Ticker,
        typed_book: false,
    },
    StreamSpec {
        client: REQUESTS,
        channel: "trades.ETH-PERPETUAL.raw",
        check: Check::Trades,
        typed_book: false,
    },
    StreamSpec {
        client: MARKET,
        channel: "ticker.BTC-PERPETUAL.raw",
        check: Check::Ticker,
        typed_book: false,
    },
    StreamSpec {
        client: MARKET,
        channel: "trades.BTC-PERPETUAL.raw",
        check: Check::Trades,
        typed_book: false,
    },
    StreamSpec {
        client: MARKET,
        channel: "book.BTC-PERPETUAL.raw",
        check: Check::Book,
        typed_book: true,
    },
    StreamSpec {
        client: MIXED,
        channel: "book.ETH-PERPETUAL.raw",
        check: Check::Book,
        typed_book: false,
    },
    StreamSpec {
        client: MIXED,
        channel: "trades.ETH-PERPETUAL.100ms",
        check: Check::Trades,
        typed_book: false,
    },
];

/// The interval of a `book.{instrument}.{interval}` channel.
pub(super) fn book_interval(channel: &str) -> Interval {
    if channel.ends_with(".raw") {
        Interval::Raw
    } else {
        Interval::Ms100
    }
}
