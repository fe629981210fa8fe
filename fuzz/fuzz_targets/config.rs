//! Configuration: there is no config file format yet (a TOML config comes later), so this
//! fuzzes what a file would feed: arbitrary `ClientConfig`, `JsonRpcConfig` and
//! `DeribitConfig` values through `validate()` and `ClientBuilder::build()` (URL, header,
//! subprotocol and certificate parsing, channel sizes). Invariants: nothing panics; errors
//! are configuration errors; a configuration that validates also builds, and the sans-IO
//! parts the connection makes from it (keepalive deadlines, token bucket, backoff) work on
//! their first steps, as the actor runs them.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use websockex_nova::jsonrpc::JsonRpcConfig;
use websockex_nova::keepalive::Keepalive;
use websockex_nova::ratelimit::TokenBucket;
use websockex_nova::reconnect::{Backoff, ReconnectPolicy, Strategy};
use websockex_nova::Jitter;
use websockex_nova::{
    ClientBuilder, ClientConfig, KeepaliveConfig, OfflinePolicy, OnLimit, OverflowPolicy,
    RateLimit, RestartLimit, RootCertificates,
};
use websockex_nova_deribit::{Credentials, CreditModel, DeribitConfig, Endpoint};
use websockex_nova_fuzz::{skip_known_issues, Dur, Float, FuzzRng, Str};

#[derive(Debug, Arbitrary)]
enum UrlSpec {
    Ws(Str, Option<u16>, Str),
    Wss(Str),
    Raw(String),
}

const HOSTS: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "[::1]",
    "test.deribit.com",
    "",
    "h",
    "[::1",
    "a:b",
    "x y",
];

impl UrlSpec {
    fn get(&self) -> String {
        match self {
            UrlSpec::Ws(h, port, path) => {
                let host = match h {
                    Str::Word(i) => HOSTS[*i as usize % HOSTS.len()].to_owned(),
                    other => other.value(),
                };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("ws://{host}{port}/{}", path.value())
            }
            UrlSpec::Wss(h) => format!("wss://{}/ws/api/v2", h.value()),
            UrlSpec::Raw(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Size {
    Zero,
    Small(u16),
    Max,
    Raw(usize),
}

impl Size {
    fn get(&self) -> usize {
        match self {
            Size::Zero => 0,
            Size::Small(v) => usize::from(*v),
            Size::Max => usize::MAX,
            Size::Raw(v) => *v,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct ConfigSpec {
    url: UrlSpec,
    headers: Vec<(Str, Str)>,
    subprotocols: Vec<Str>,
    timeouts: [Option<Dur>; 5],
    ping_interval: Option<Option<Dur>>,
    ping_timeout: Option<Option<Dur>>,
    reconnect: Option<(u8, Dur, Dur, Float, Option<u8>)>,
    sizes: [Option<Size>; 6],
    offline: Option<Option<Size>>,
    overflow: bool,
    restart: Option<(u32, Dur)>,
    rate_limit: Option<(u32, Float, Option<Dur>, bool)>,
    native_roots: bool,
    extra_roots: Vec<Vec<u8>>,
    rng: Vec<u64>,
}

#[derive(Debug, Arbitrary)]
struct DeribitSpec {
    url: UrlSpec,
    credentials: Option<(bool, String, String)>,
    heartbeat: Option<u32>,
    cancel_on_disconnect: bool,
    credits: Option<(u32, u32)>,
    batch: Size,
    refresh_margin: Dur,
    hello: Option<(String, String)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    client: ConfigSpec,
    rpc: Option<([Str; 4], Size, Dur)>,
    deribit: Option<DeribitSpec>,
}

fn client_config(s: &ConfigSpec) -> ClientConfig {
    let mut c = ClientConfig::new(s.url.get());
    c.headers = s
        .headers
        .iter()
        .take(8)
        .map(|(k, v)| (k.value(), v.value()))
        .collect();
    c.subprotocols = s.subprotocols.iter().take(4).map(Str::value).collect();
    let t = |i: usize, d: Duration| s.timeouts[i].map_or(d, Dur::get);
    c.connect_timeout = t(0, c.connect_timeout);
    c.upgrade_timeout = t(1, c.upgrade_timeout);
    c.write_timeout = t(2, c.write_timeout);
    c.close_timeout = t(3, c.close_timeout);
    c.request_timeout = t(4, c.request_timeout);
    let mut ka = KeepaliveConfig::default();
    if let Some(p) = s.ping_interval {
        ka.ping_interval = p.map(Dur::get);
    }
    if let Some(p) = s.ping_timeout {
        ka.timeout = p.map(Dur::get);
    }
    c.keepalive = ka;
    if let Some((kind, initial, cap, factor, retries)) = &s.reconnect {
        let mut p = match kind % 4 {
            0 => ReconnectPolicy::never(),
            1 => ReconnectPolicy::linear(initial.get(), initial.get(), cap.get()),
            2 => ReconnectPolicy::exponential(initial.get(), cap.get()),
            _ => ReconnectPolicy::jittered(initial.get(), cap.get(), Jitter::Decorrelated),
        };
        if let websockex_nova::reconnect::Strategy::Exponential { factor: f, .. } = &mut p.strategy
        {
            *f = factor.get();
        }
        if let Some(r) = retries {
            p = p.with_max_retries(u32::from(*r));
        }
        c.reconnect = p;
    }
    let sz = |i: usize, d: usize| s.sizes[i].as_ref().map_or(d, Size::get);
    c.max_message_size = sz(0, c.max_message_size);
    c.max_frame_size = sz(1, c.max_frame_size);
    c.command_capacity = sz(2, c.command_capacity);
    c.event_capacity = sz(3, c.event_capacity);
    c.max_in_flight = sz(4, c.max_in_flight);
    c.subscription_capacity = sz(5, c.subscription_capacity);
    if let Some(o) = &s.offline {
        c.offline = match o {
            Some(n) => OfflinePolicy::Queue { capacity: n.get() },
            None => OfflinePolicy::Reject,
        };
    }
    if s.overflow {
        c.overflow = OverflowPolicy::DropNewest;
    }
    if let Some((n, w)) = s.restart {
        let mut r = RestartLimit::default();
        r.max_restarts = n;
        r.window = w.get();
        c.restart = r;
    }
    if let Some((burst, per_second, max_wait, reject)) = s.rate_limit {
        let mut rl = RateLimit::new(burst, per_second.get()).with_max_wait(max_wait.map(Dur::get));
        if reject {
            rl = rl.with_on_limit(OnLimit::Reject);
        }
        c.rate_limit = Some(rl);
    }
    if s.native_roots {
        c.tls.roots = RootCertificates::Native;
    }
    c.tls.extra_roots_der = s.extra_roots.iter().take(2).cloned().collect();
    c
}

/// A validated configuration: build it and run the first steps of what the actor runs.
fn exercise(config: ClientConfig, rng: &[u64]) {
    assert!(config.validate().is_ok());
    // Known issue F4 (README): a keepalive duration near Duration::MAX validates, then
    // Keepalive::next_deadline overflows the Instant (the actor calls it on every wake).
    let ka = config.keepalive;
    if skip_known_issues()
        && [ka.ping_interval, ka.timeout]
            .iter()
            .flatten()
            .any(|d| d.as_secs() > i64::MAX as u64 / 2)
    {
        return;
    }
    // Known issue F2 (README): decorrelated jitter from an initial delay above ~2^62 s.
    if skip_known_issues()
        && matches!(config.reconnect.strategy, Strategy::Jittered { initial, jitter: Jitter::Decorrelated, .. } if initial.as_secs_f64() >= 4.0e18)
    {
        return;
    }
    // Known issue F5 (README): a tiny positive refill rate.
    if skip_known_issues() && config.rate_limit.is_some_and(|rl| rl.per_second < 1e-6) {
        return;
    }
    let now = Instant::now();
    let mut ka = Keepalive::new(config.keepalive, now);
    let _ = ka.next_deadline();
    let _ = ka.poll(now + Duration::from_secs(1));
    let _ = ka.next_deadline();
    if let Some(rl) = config.rate_limit {
        let mut b = TokenBucket::new(rl.burst, rl.per_second, now);
        for cost in [1, rl.burst, rl.burst / 2 + 1] {
            if b.can_ever_pay(cost) && !b.try_take(cost, now) {
                let at = b.ready_at(cost, now);
                assert!(at >= now);
            }
        }
    }
    let mut backoff = Backoff::with_rng(
        config.reconnect.clone(),
        Box::new(FuzzRng::new(rng.to_vec())),
    );
    for _ in 0..4 {
        if let Some(d) = backoff.next_delay() {
            assert!(d <= config.reconnect.max_delay);
        }
    }
    // Known issue F3 (README): channel capacities above tokio's MAX_PERMITS
    // (usize::MAX >> 3) validate but panic in build() / on subscribe.
    let max_permits = usize::MAX >> 3;
    if skip_known_issues()
        && [
            config.command_capacity,
            config.event_capacity,
            config.subscription_capacity,
        ]
        .iter()
        .any(|c| *c > max_permits)
    {
        return;
    }
    match ClientBuilder::new(config).build() {
        Ok(_) => {}
        // Things validate() cannot see without building (certificates, the TLS setup).
        Err(e) => assert!(
            e.is_config() || matches!(e.kind(), websockex_nova::ErrorKind::Tls),
            "{e:?}"
        ),
    }
}

fuzz_target!(|input: Input| {
    let config = client_config(&input.client);
    match config.validate() {
        Ok(()) => exercise(config, &input.client.rng),
        Err(e) => {
            assert!(e.is_config(), "{e:?}");
            // build() refuses what validate() refuses.
            assert!(ClientBuilder::new(config).build().is_err());
        }
    }

    if let Some((names, batch, margin)) = &input.rpc {
        let mut rpc = JsonRpcConfig::default();
        rpc.notification_method = names[0].value();
        rpc.subscribe_method = names[1].value();
        rpc.unsubscribe_method = names[2].value();
        rpc.auth_method = names[3].value();
        rpc.subscribe_batch = batch.get();
        rpc.refresh_margin = margin.get();
        let valid = rpc.validate().is_ok();
        assert_eq!(
            valid,
            names.iter().all(|n| !n.value().is_empty()) && batch.get() > 0
        );
        let handlers = rpc.clone().with_credentials("id", "secret").handlers();
        assert!(handlers.auth.is_some() && handlers.subscription.is_some());
        assert_eq!(
            handlers.subscription.unwrap().batch_size(),
            rpc.subscribe_batch
        );
    }

    if let Some(d) = &input.deribit {
        let mut cfg = DeribitConfig::new(Endpoint::Custom(d.url.get()));
        if let Some((sig, id, secret)) = &d.credentials {
            cfg = cfg.with_credentials(if *sig {
                Credentials::client_signature(id.clone(), secret.clone())
            } else {
                Credentials::client_credentials(id.clone(), secret.clone())
            });
        }
        cfg.heartbeat_interval = d.heartbeat;
        cfg.cancel_on_disconnect = d.cancel_on_disconnect;
        cfg.credits = d.credits.map(|(max, refill)| {
            let mut m = CreditModel::default();
            m.max_credits = max;
            m.refill_per_second = refill;
            m
        });
        cfg.subscribe_batch = d.batch.get();
        cfg.refresh_margin = d.refresh_margin.get();
        cfg.hello = d.hello.clone();
        let builder = cfg.builder();
        let valid = builder.config().validate();
        match valid {
            Ok(()) => exercise(builder.config().clone(), &[]),
            Err(e) => assert!(e.is_config(), "{e:?}"),
        }
        let c = builder.config();
        if skip_known_issues()
            && [c.command_capacity, c.event_capacity]
                .iter()
                .any(|c| *c > usize::MAX >> 3)
        {
            return;
        }
        let _ = builder.build();
    }
});
