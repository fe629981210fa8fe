//! [`SimConfig`] and what it is made of.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A credit pool of Deribit's rate-limit model: each request costs `cost` credits; the pool holds
/// at most `max` and refills continuously at `refill_per_sec`. A request that finds fewer than
/// `cost` credits is rejected with `10028 too_many_requests` and the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditPool {
    /// Credits per request.
    pub cost: u64,
    /// Pool size (the burst is `max / cost` requests).
    pub max: u64,
    /// Credits added per second.
    pub refill_per_sec: u64,
}

impl CreditPool {
    /// A pool from its three numbers.
    pub const fn new(cost: u64, max: u64, refill_per_sec: u64) -> CreditPool {
        CreditPool {
            cost,
            max,
            refill_per_sec,
        }
    }

    /// `rate` requests per second sustained with a burst of `burst` (cost 1,000 per request).
    pub const fn per_second(rate: u64, burst: u64) -> CreditPool {
        CreditPool::new(1_000, burst * 1_000, rate * 1_000)
    }

    /// The matching-engine pool of Deribit's account tier `tier` (1 = highest volume); tier 4,
    /// the default for new accounts, allows 5 requests/s with a burst of 20. Tiers outside
    /// 1..=4 give tier 4.
    pub const fn matching_engine_tier(tier: u8) -> CreditPool {
        match tier {
            1 => CreditPool::per_second(30, 100),
            2 => CreditPool::per_second(20, 50),
            3 => CreditPool::per_second(10, 30),
            _ => CreditPool::per_second(5, 20),
        }
    }
}

/// The credit-based rate limits (reference §7). Authenticated connections draw on their
/// account's pools (shared by all its connections); unauthenticated connections each have
/// their own pools with the same numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreditLimits {
    /// Whether requests are rate limited at all. Default: `true`.
    pub enabled: bool,
    /// Every request not in another pool. Default: cost 500, max 50,000, refill 10,000/s.
    pub non_matching_engine: CreditPool,
    /// `private/buy`, `sell`, `edit`, `cancel*`, `close_position`. Default: tier 4 (5/s, burst 20).
    pub matching_engine: CreditPool,
    /// `public/subscribe` and `private/subscribe`. Default: cost 3,000, max 30,000, refill 10,000/s.
    pub subscribe: CreditPool,
    /// `public/get_instruments`. Default: cost 10,000, max 500,000, refill 10,000/s.
    pub get_instruments: CreditPool,
}

impl Default for CreditLimits {
    fn default() -> Self {
        CreditLimits {
            enabled: true,
            non_matching_engine: CreditPool::new(500, 50_000, 10_000),
            matching_engine: CreditPool::matching_engine_tier(4),
            subscribe: CreditPool::new(3_000, 30_000, 10_000),
            get_instruments: CreditPool::new(10_000, 500_000, 10_000),
        }
    }
}

impl CreditLimits {
    /// No rate limiting.
    pub fn unlimited() -> CreditLimits {
        CreditLimits {
            enabled: false,
            ..CreditLimits::default()
        }
    }
}

/// The kind of an instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstrumentKind {
    /// A future or a perpetual (`kind: "future"`).
    Future,
    /// An option (`kind: "option"`), priced in the base coin.
    Option,
}

impl InstrumentKind {
    /// `"future"` or `"option"`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstrumentKind::Future => "future",
            InstrumentKind::Option => "option",
        }
    }
}

/// One simulated instrument.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InstrumentSpec {
    /// E.g. `BTC-PERPETUAL`, `BTC-27JUN25`, `BTC-27JUN25-70000-C`.
    pub name: String,
    /// Future (perpetuals included) or option.
    pub kind: InstrumentKind,
    /// E.g. `BTC`.
    pub base_currency: String,
    /// E.g. `USD` (options: the base coin).
    pub quote_currency: String,
    /// The currency margin, fees and P&L are in, e.g. `BTC`.
    pub settlement_currency: String,
    /// `instrument_type: "linear"` (amounts in the base coin) instead of `"reversed"` (inverse,
    /// amounts in USD).
    pub linear: bool,
    /// Price increment.
    pub tick_size: f64,
    /// Smallest amount, and the amount increment.
    pub min_trade_amount: f64,
    /// Contract size (`contracts = amount / contract_size`).
    pub contract_size: f64,
    /// Starting price (options: in the base coin).
    pub price: f64,
    /// Expiry in ms since the epoch; `None` for a perpetual.
    pub expiration_timestamp: Option<u64>,
    /// For options: strike and call (`true`) or put.
    pub option: Option<(f64, bool)>,
}

/// `expiration_timestamp` Deribit reports for perpetuals (year 3000).
pub(crate) const PERPETUAL_EXPIRY: u64 = 32_503_708_800_000;

impl InstrumentSpec {
    fn preset(currency: &str, kind: &str) -> (f64, f64, f64) {
        // (tick_size, min_trade_amount, contract_size)
        match (currency, kind) {
            ("BTC", "perpetual") => (0.5, 10.0, 10.0),
            ("BTC", "future") => (2.5, 10.0, 10.0),
            ("ETH", "perpetual") => (0.05, 1.0, 1.0),
            ("ETH", "future") => (0.25, 1.0, 1.0),
            (_, "option") => (0.0005, 0.1, 1.0),
            _ => (0.01, 1.0, 1.0),
        }
    }

    fn new(
        name: String,
        kind: InstrumentKind,
        currency: &str,
        preset: &str,
        price: f64,
        expiry: Option<u64>,
    ) -> InstrumentSpec {
        let (tick_size, min_trade_amount, contract_size) = InstrumentSpec::preset(currency, preset);
        let quote = if kind == InstrumentKind::Option {
            currency.to_owned()
        } else {
            "USD".to_owned()
        };
        InstrumentSpec {
            name,
            kind,
            base_currency: currency.to_owned(),
            quote_currency: quote,
            settlement_currency: currency.to_owned(),
            linear: false,
            tick_size,
            min_trade_amount,
            contract_size,
            price,
            expiration_timestamp: expiry,
            option: None,
        }
    }

    /// An inverse perpetual `{CURRENCY}-PERPETUAL` starting at `price` USD (BTC: tick 0.5,
    /// amounts in multiples of 10 USD; ETH: tick 0.05, multiples of 1 USD).
    pub fn perpetual(currency: &str, price: f64) -> InstrumentSpec {
        let name = format!("{currency}-PERPETUAL");
        InstrumentSpec::new(
            name,
            InstrumentKind::Future,
            currency,
            "perpetual",
            price,
            None,
        )
    }

    /// An inverse future `{CURRENCY}-{DMMMYY}` expiring at `expiration_ms`.
    pub fn future(currency: &str, expiration_ms: u64, price: f64) -> InstrumentSpec {
        let name = format!("{currency}-{}", expiry_code(expiration_ms));
        InstrumentSpec::new(
            name,
            InstrumentKind::Future,
            currency,
            "future",
            price,
            Some(expiration_ms),
        )
    }

    /// An option `{CURRENCY}-{DMMMYY}-{STRIKE}-{C|P}` priced in the coin (tick 0.0005).
    pub fn option(
        currency: &str,
        expiration_ms: u64,
        strike: f64,
        call: bool,
        price: f64,
    ) -> InstrumentSpec {
        let strike_text = if strike.fract() == 0.0 {
            format!("{}", strike as i64)
        } else {
            format!("{strike}").replace('.', "d")
        };
        let name = format!(
            "{currency}-{}-{strike_text}-{}",
            expiry_code(expiration_ms),
            if call { "C" } else { "P" }
        );
        let mut spec = InstrumentSpec::new(
            name,
            InstrumentKind::Option,
            currency,
            "option",
            price,
            Some(expiration_ms),
        );
        spec.option = Some((strike, call));
        spec
    }

    /// The price index the instrument follows, e.g. `btc_usd`.
    pub fn index_name(&self) -> String {
        format!("{}_usd", self.base_currency.to_ascii_lowercase())
    }

    /// Whether it is a perpetual.
    pub fn is_perpetual(&self) -> bool {
        self.kind == InstrumentKind::Future && self.expiration_timestamp.is_none()
    }
}

/// Everything about a [`DeribitSim`](super::DeribitSim). Start from [`SimConfig::default`] and
/// change fields (or use the `with_*` helpers). Its `Debug` output leaves the secrets out.
#[derive(Clone)]
#[non_exhaustive]
pub struct SimConfig {
    /// Seed of the market's random walk (and of tokens, order ids, ack order). Default: 1.
    pub seed: u64,
    /// The `testnet` flag on every response. Default: `true`.
    pub testnet: bool,
    /// Accepted `(client_id, client_secret)` pairs; each is one account.
    /// Default: `[("demo-key", "demo-secret")]`.
    pub credentials: Vec<(String, String)>,
    /// Access-token lifetime (`expires_in`), unless the auth request asks for `expires:N`.
    /// Default: 900 s.
    pub token_ttl: Duration,
    /// Rate limits. Default: Deribit's published defaults (tier 4).
    pub credits: CreditLimits,
    /// The instruments. Default: [`SimConfig::default_instruments`] for today.
    pub instruments: Vec<InstrumentSpec>,
    /// Starting balance of each account per currency. Default: BTC 10, ETH 100, USDC 100,000,
    /// USDT 100,000.
    pub balances: Vec<(String, f64)>,
    /// How often the market moves (one book change, maybe trades, per instrument).
    /// Default: 50 ms.
    pub market_tick: Duration,
    /// The period of `100ms` channels. Default: 100 ms.
    pub fast_interval: Duration,
    /// The period of `agg2` channels. UNCERTAIN (reference §4.3: 2 s vs ~1 s). Default: 2 s.
    pub agg2_interval: Duration,
    /// The period of `deribit_price_index.*`. Default: 1 s.
    pub index_interval: Duration,
    /// Price levels per side of the simulated book. Default: 25.
    pub book_depth: usize,
    /// Largest request message accepted; larger ones get `-32600 "request entity too large"`.
    /// Default: 32 KiB.
    pub max_frame_bytes: usize,
    /// Open connections allowed; the upgrade of one more is refused with HTTP 429. Default: 32.
    pub max_connections: Option<usize>,
    /// Messages queued for a connection (not yet written) before it is closed as
    /// `connection_too_slow`. Default: 10,000.
    pub max_queue: Option<usize>,
    /// Smallest `public/set_heartbeat` interval in seconds. Default: 10.
    pub min_heartbeat_interval: f64,
    /// How far a `client_signature` timestamp may be from the simulator's clock. Default: 60 s.
    pub signature_skew: Duration,
    /// Return subscribe acks in a (seeded) shuffled order, as Deribit may. Default: `true`.
    pub reorder_acks: bool,
    /// Drop (no close frame) a connection with no subscription and no heartbeat that sent
    /// nothing for this long. UNCERTAIN (60 s observed, "10 minutes" in the COD docs).
    /// Default: `None` (never).
    pub idle_timeout: Option<Duration>,
    /// Close code after a `10028` answer. UNCERTAIN (Deribit's code is not documented).
    /// Default: 1008 (policy violation).
    pub rate_limit_close_code: u16,
    /// Close code for `connection_too_slow`. UNCERTAIN. Default: 1008.
    pub too_slow_close_code: u16,
    /// The `version` in `public/test` and `public/hello` results. Default: `"1.2.26"`.
    pub version: String,
    /// The simulator's clock at start, in ms since the epoch (it then advances with
    /// `tokio::time`). Default: `None`, the system clock at start.
    pub start_time_ms: Option<u64>,
    /// Keep every request for [`DeribitSim::requests`](super::DeribitSim::requests) (and
    /// `methods`, `wait_requests`). Default: `true`. A simulator that runs for long (`nova
    /// chaos`) turns it off, so that its memory stays flat; the counters stay.
    pub record_requests: bool,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<(&str, &str)> = self
            .credentials
            .iter()
            .map(|(id, _)| (id.as_str(), "<redacted>"))
            .collect();
        let names: Vec<&str> = self.instruments.iter().map(|i| i.name.as_str()).collect();
        f.debug_struct("SimConfig")
            .field("seed", &self.seed)
            .field("testnet", &self.testnet)
            .field("credentials", &keys)
            .field("token_ttl", &self.token_ttl)
            .field("credits", &self.credits)
            .field("instruments", &names)
            .field("balances", &self.balances)
            .field("market_tick", &self.market_tick)
            .field("fast_interval", &self.fast_interval)
            .field("agg2_interval", &self.agg2_interval)
            .field("index_interval", &self.index_interval)
            .field("book_depth", &self.book_depth)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_connections", &self.max_connections)
            .field("max_queue", &self.max_queue)
            .field("min_heartbeat_interval", &self.min_heartbeat_interval)
            .field("signature_skew", &self.signature_skew)
            .field("reorder_acks", &self.reorder_acks)
            .field("idle_timeout", &self.idle_timeout)
            .field("rate_limit_close_code", &self.rate_limit_close_code)
            .field("too_slow_close_code", &self.too_slow_close_code)
            .field("version", &self.version)
            .field("start_time_ms", &self.start_time_ms)
            .field("record_requests", &self.record_requests)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            testnet: true,
            credentials: vec![("demo-key".to_owned(), "demo-secret".to_owned())],
            token_ttl: Duration::from_secs(900),
            credits: CreditLimits::default(),
            instruments: SimConfig::default_instruments(system_ms()),
            balances: vec![
                ("BTC".to_owned(), 10.0),
                ("ETH".to_owned(), 100.0),
                ("USDC".to_owned(), 100_000.0),
                ("USDT".to_owned(), 100_000.0),
            ],
            market_tick: Duration::from_millis(50),
            fast_interval: Duration::from_millis(100),
            agg2_interval: Duration::from_secs(2),
            index_interval: Duration::from_secs(1),
            book_depth: 25,
            max_frame_bytes: 32 * 1024,
            max_connections: Some(32),
            max_queue: Some(10_000),
            min_heartbeat_interval: 10.0,
            signature_skew: Duration::from_secs(60),
            reorder_acks: true,
            idle_timeout: None,
            rate_limit_close_code: 1008,
            too_slow_close_code: 1008,
            version: "1.2.26".to_owned(),
            start_time_ms: None,
            record_requests: true,
        }
    }
}

impl SimConfig {
    /// `BTC-PERPETUAL` (65,000), `ETH-PERPETUAL` (3,200), the first quarterly BTC future at
    /// least 30 days after `now_ms` (65,500), and a BTC call on it struck at 70,000 (0.03 BTC).
    pub fn default_instruments(now_ms: u64) -> Vec<InstrumentSpec> {
        let expiry = quarterly_expiry(now_ms + 30 * DAY_MS);
        vec![
            InstrumentSpec::perpetual("BTC", 65_000.0),
            InstrumentSpec::perpetual("ETH", 3_200.0),
            InstrumentSpec::future("BTC", expiry, 65_500.0),
            InstrumentSpec::option("BTC", expiry, 70_000.0, true, 0.03),
        ]
    }

    /// With this seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> SimConfig {
        self.seed = seed;
        self
    }

    /// With this access-token lifetime.
    #[must_use]
    pub fn with_token_ttl(mut self, ttl: Duration) -> SimConfig {
        self.token_ttl = ttl;
        self
    }

    /// Also accept this key (a new account).
    #[must_use]
    pub fn with_credentials(mut self, client_id: &str, client_secret: &str) -> SimConfig {
        self.credentials
            .push((client_id.to_owned(), client_secret.to_owned()));
        self
    }

    /// With these rate limits.
    #[must_use]
    pub fn with_credits(mut self, credits: CreditLimits) -> SimConfig {
        self.credits = credits;
        self
    }

    /// With the `testnet` flag set or not.
    #[must_use]
    pub fn with_testnet(mut self, testnet: bool) -> SimConfig {
        self.testnet = testnet;
        self
    }

    /// With this market tick (how often books change).
    #[must_use]
    pub fn with_market_tick(mut self, tick: Duration) -> SimConfig {
        self.market_tick = tick;
        self
    }
}

const DAY_MS: u64 = 86_400_000;
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

pub(crate) fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `DMMMYY` of a UTC instant, e.g. `27JUN25` (day without a leading zero).
pub fn expiry_code(ms: u64) -> String {
    let (y, m, d) = civil_from_days((ms / DAY_MS) as i64);
    format!("{d}{}{:02}", MONTHS[(m - 1) as usize], y.rem_euclid(100))
}

/// The last Friday 08:00 UTC of the first quarter month (Mar/Jun/Sep/Dec) that is at or after
/// `not_before_ms`.
pub(crate) fn quarterly_expiry(not_before_ms: u64) -> u64 {
    let (mut y, mut m, _) = civil_from_days((not_before_ms / DAY_MS) as i64);
    loop {
        if m % 3 == 0 {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let mut day = days_from_civil(ny, nm, 1) - 1;
            // 1970-01-01 was a Thursday; Friday is 1 (mod 7).
            while (day - 1).rem_euclid(7) != 0 {
                day -= 1;
            }
            let ms = day as u64 * DAY_MS + 8 * 3_600_000;
            if ms >= not_before_ms {
                return ms;
            }
        }
        if m == 12 {
            y += 1;
            m = 1;
        } else {
            m += 1;
        }
    }
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2025, 6, 27), 20_266);
        assert_eq!(civil_from_days(20_266), (2025, 6, 27));
        // 2025-06-27 was the last Friday of June 2025.
        assert_eq!(expiry_code(20_266 * DAY_MS), "27JUN25");
        assert_eq!(
            expiry_code(days_from_civil(2026, 3, 6) as u64 * DAY_MS),
            "6MAR26"
        );
        let from = days_from_civil(2025, 5, 1) as u64 * DAY_MS;
        assert_eq!(quarterly_expiry(from), 20_266 * DAY_MS + 8 * 3_600_000);
        let from = days_from_civil(2025, 6, 28) as u64 * DAY_MS;
        assert_eq!(expiry_code(quarterly_expiry(from)), "26SEP25");
        let from = days_from_civil(2025, 12, 27) as u64 * DAY_MS;
        assert_eq!(expiry_code(quarterly_expiry(from)), "27MAR26");
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!(
            "{:?}",
            SimConfig::default().with_credentials("k2", "s3cr3t")
        );
        assert!(text.contains("demo-key") && text.contains("k2"));
        assert!(
            !text.contains("demo-secret") && !text.contains("s3cr3t"),
            "{text}"
        );
    }

    #[test]
    fn instrument_names() {
        let exp = 20_266 * DAY_MS + 8 * 3_600_000;
        assert_eq!(InstrumentSpec::future("BTC", exp, 1.0).name, "BTC-27JUN25");
        assert_eq!(
            InstrumentSpec::option("BTC", exp, 100_000.0, false, 0.01).name,
            "BTC-27JUN25-100000-P"
        );
        assert_eq!(
            InstrumentSpec::option("XRP", exp, 0.625, true, 0.01).name,
            "XRP-27JUN25-0d625-C"
        );
        assert_eq!(
            InstrumentSpec::perpetual("ETH", 1.0).index_name(),
            "eth_usd"
        );
    }
}
