//! The sans-IO cores driven by random event sequences: `lifecycle::Lifecycle` (legal and
//! illegal transitions, attempt/connect counters), `reconnect::Backoff` (delays within
//! the cap, retry limit, reset), `keepalive::Keepalive` (ping/dead deadlines) and
//! `ratelimit::TokenBucket` (never more than burst + refill, `ready_at` really is ready).
//!
//! Policies and configs are arbitrary, but only those their own `validate()` accepts are
//! driven: the actor refuses the others before it builds any of these.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use websockex_nova::keepalive::{Keepalive, KeepaliveAction, KeepaliveConfig};
use websockex_nova::lifecycle::{Lifecycle, State};
use websockex_nova::ratelimit::{RateLimit, TokenBucket};
use websockex_nova::reconnect::{Backoff, ReconnectPolicy, Strategy};
use websockex_nova::Jitter;
use websockex_nova_fuzz::{skip_known_issues, Dur, Float, FuzzRng};

const STATES: [State; 9] = [
    State::Connecting,
    State::Upgrading,
    State::Authenticating,
    State::Subscribing,
    State::Ready,
    State::Disconnected,
    State::Backoff,
    State::Closing,
    State::Closed,
];

/// The diagram of the module docs, written out independently of the implementation.
fn allowed(from: State, to: State) -> bool {
    use State::*;
    match from {
        Closed => false,
        Closing => to == Closed,
        _ if to == Closing || to == Closed => true,
        Connecting => matches!(to, Upgrading | Disconnected),
        Upgrading => matches!(to, Authenticating | Subscribing | Ready | Disconnected),
        Authenticating => matches!(to, Subscribing | Ready | Disconnected),
        Subscribing => matches!(to, Ready | Disconnected),
        Ready => to == Disconnected,
        Disconnected => to == Backoff,
        Backoff => to == Connecting,
        _ => false,
    }
}

#[derive(Debug, Arbitrary)]
enum StrategySpec {
    Never,
    Linear(Dur, Dur),
    Exponential(Dur, Float),
    Full(Dur, Float),
    Decorrelated(Dur, Float),
}

#[derive(Debug, Arbitrary)]
struct PolicySpec {
    strategy: StrategySpec,
    max_delay: Dur,
    max_retries: Option<u8>,
    reset_after: Dur,
}

impl PolicySpec {
    fn build(&self) -> ReconnectPolicy {
        let mut p = ReconnectPolicy::default();
        p.strategy = match self.strategy {
            StrategySpec::Never => Strategy::Never,
            StrategySpec::Linear(i, s) => Strategy::Linear {
                initial: i.get(),
                step: s.get(),
            },
            StrategySpec::Exponential(i, f) => Strategy::Exponential {
                initial: i.get(),
                factor: f.get(),
            },
            StrategySpec::Full(i, f) => Strategy::Jittered {
                initial: i.get(),
                factor: f.get(),
                jitter: Jitter::Full,
            },
            StrategySpec::Decorrelated(i, f) => Strategy::Jittered {
                initial: i.get(),
                factor: f.get(),
                jitter: Jitter::Decorrelated,
            },
        };
        p.max_delay = self.max_delay.get();
        p.max_retries = self.max_retries.map(u32::from);
        p.reset_after = self.reset_after.get();
        p
    }
}

#[derive(Debug, Arbitrary)]
enum BackoffOp {
    Next,
    Reset,
    Up(u32),
    Down(u32),
    SetPolicy(PolicySpec),
}

#[derive(Debug, Arbitrary)]
enum KaOp {
    Traffic(u32),
    Poll(u32),
    Deadline,
}

#[derive(Debug, Arbitrary)]
enum BucketOp {
    Take(u32, u32),
    ReadyThenTake(u32, u32),
}

#[derive(Debug, Arbitrary)]
struct Input {
    transitions: Vec<u8>,
    policy: PolicySpec,
    rng: Vec<u64>,
    backoff: Vec<BackoffOp>,
    ka_interval: Option<Dur>,
    ka_timeout: Option<Dur>,
    keepalive: Vec<KaOp>,
    burst: u32,
    per_second: Float,
    bucket: Vec<BucketOp>,
}

fuzz_target!(|input: Input| {
    lifecycle(&input.transitions);
    backoff(&input);
    keepalive(&input);
    bucket(&input);
});

fn lifecycle(transitions: &[u8]) {
    let mut lc = Lifecycle::new();
    assert_eq!(
        (lc.state(), lc.attempt(), lc.connects()),
        (State::Connecting, 1, 0)
    );
    for &b in transitions {
        let to = STATES[b as usize % STATES.len()];
        let (from, attempt, connects) = (lc.state(), lc.attempt(), lc.connects());
        match lc.transition(to) {
            Ok(t) => {
                assert!(allowed(from, to), "{from} -> {to} accepted");
                assert_eq!((t.from, t.to), (from, to));
                assert_eq!(lc.state(), to);
                let bumped = from == State::Backoff && to == State::Connecting;
                let want = if bumped {
                    attempt.saturating_add(1)
                } else {
                    attempt
                };
                assert_eq!(lc.attempt(), want);
                assert_eq!(t.attempt, lc.attempt());
                let want = connects + u64::from(to == State::Ready);
                assert_eq!(lc.connects(), want);
            }
            Err(e) => {
                assert!(!allowed(from, to), "{from} -> {to} refused");
                assert_eq!((e.from, e.to), (from, to));
                assert_eq!(
                    (lc.state(), lc.attempt(), lc.connects()),
                    (from, attempt, connects)
                );
                assert!(e.to_string().contains(from.as_str()));
            }
        }
        assert_eq!(lc.state().to_string(), lc.state().as_str());
    }
}

/// `a >= b` up to the f64 seconds arithmetic the backoff does (relative 1e-12, 1 ns).
fn ge_approx(a: Duration, b: Duration) -> bool {
    a.as_secs_f64() >= b.as_secs_f64() * (1.0 - 1e-12) - 1e-9
}

/// Known issue F2 (README): decorrelated jitter with an initial delay above ~2^62 s
/// panics in `Duration::from_secs_f64` (reconnect.rs, `next_delay`).
fn known_issue(p: &ReconnectPolicy) -> bool {
    skip_known_issues()
        && matches!(p.strategy, Strategy::Jittered { initial, jitter: Jitter::Decorrelated, .. } if initial.as_secs_f64() >= 4.0e18)
}

fn backoff(input: &Input) {
    let policy = input.policy.build();
    if policy.validate().is_err() || known_issue(&policy) {
        return;
    }
    let t0 = Instant::now();
    let mut b = Backoff::with_rng(policy.clone(), Box::new(FuzzRng::new(input.rng.clone())));
    let mut policy = policy;
    // Delays handed out since the last reset (the counter `attempts` follows it).
    let mut since_reset: u32 = 0;
    let mut previous: Option<Duration> = None;
    let mut up_at: Option<Instant> = None;
    let mut now = t0;
    for op in input.backoff.iter().take(256) {
        match op {
            BackoffOp::Next => {
                let d = b.next_delay();
                let gave_up = policy.max_retries.is_some_and(|m| since_reset >= m)
                    || policy.strategy == Strategy::Never;
                match d {
                    None => assert!(gave_up, "gave up early: {policy:?} after {since_reset}"),
                    Some(d) => {
                        assert!(!gave_up, "{policy:?} retried past its limit");
                        assert!(d <= policy.max_delay, "{d:?} above cap {policy:?}");
                        match policy.strategy {
                            Strategy::Linear { initial, step } => {
                                let want = initial
                                    .saturating_add(step.saturating_mul(since_reset))
                                    .min(policy.max_delay);
                                assert_eq!(d, want);
                            }
                            Strategy::Exponential { initial, .. } => {
                                if since_reset == 0 {
                                    // initial·factor⁰, through f64 seconds (ns rounding).
                                    let want = initial.min(policy.max_delay);
                                    assert!(
                                        ge_approx(d, want) && ge_approx(want, d),
                                        "{d:?} vs {want:?}"
                                    );
                                }
                                if let Some(p) = previous {
                                    assert!(ge_approx(d, p), "exponential shrank {p:?} -> {d:?}");
                                }
                            }
                            Strategy::Jittered {
                                initial,
                                jitter: Jitter::Decorrelated,
                                ..
                            } => {
                                let lo = initial.min(policy.max_delay);
                                assert!(ge_approx(d, lo), "{d:?} below {lo:?}");
                            }
                            _ => {}
                        }
                        since_reset += 1;
                        previous = Some(d);
                    }
                }
                assert_eq!(b.attempts(), since_reset);
            }
            BackoffOp::Reset => {
                b.reset();
                since_reset = 0;
                previous = None;
                assert_eq!(b.attempts(), 0);
            }
            BackoffOp::Up(ms) => {
                let Some(t) = now.checked_add(Duration::from_millis(u64::from(*ms))) else {
                    return;
                };
                now = t;
                b.on_up(now);
                up_at = Some(now);
            }
            BackoffOp::Down(ms) => {
                let Some(t) = now.checked_add(Duration::from_millis(u64::from(*ms))) else {
                    return;
                };
                now = t;
                b.on_down(now);
                if let Some(since) = up_at.take() {
                    if now.duration_since(since) >= policy.reset_after {
                        since_reset = 0;
                        previous = None;
                    }
                }
                assert_eq!(b.attempts(), since_reset);
            }
            BackoffOp::SetPolicy(spec) => {
                let p = spec.build();
                if p.validate().is_ok() && !known_issue(&p) {
                    b.set_policy(p.clone());
                    policy = p;
                    // The count is kept; growth continues from it.
                    previous = None;
                    assert_eq!(b.attempts(), since_reset);
                    assert_eq!(b.policy(), &policy);
                }
            }
        }
    }
}

/// Known issue F4 (README): `Keepalive::next_deadline` adds the interval / timeout to an
/// `Instant` unchecked; `Some(Duration::MAX)` validates and then panics.
fn keepalive_overflows(cfg: &KeepaliveConfig) -> bool {
    [cfg.ping_interval, cfg.timeout]
        .iter()
        .flatten()
        .any(|d| d.as_secs() > i64::MAX as u64 / 2)
}

fn keepalive(input: &Input) {
    let mut cfg = KeepaliveConfig::default();
    cfg.ping_interval = input.ka_interval.map(Dur::get);
    cfg.timeout = input.ka_timeout.map(Dur::get);
    if cfg.validate().is_err() || (skip_known_issues() && keepalive_overflows(&cfg)) {
        return;
    }
    let t0 = Instant::now();
    let mut ka = Keepalive::new(cfg, t0);
    let (mut last_rx, mut last_ping, mut now) = (t0, t0, t0);
    assert_eq!(ka.timeout(), cfg.timeout);
    for op in input.keepalive.iter().take(256) {
        let step = match op {
            KaOp::Traffic(ms) | KaOp::Poll(ms) => Duration::from_millis(u64::from(*ms)),
            KaOp::Deadline => Duration::ZERO,
        };
        let Some(t) = now.checked_add(step) else {
            return;
        };
        now = t;
        match op {
            KaOp::Traffic(_) => {
                ka.on_traffic(now);
                last_rx = now;
            }
            KaOp::Poll(_) => {
                let dead = cfg
                    .timeout
                    .is_some_and(|t| now.duration_since(last_rx) >= t);
                let ping = cfg
                    .ping_interval
                    .is_some_and(|i| now.duration_since(last_ping) >= i);
                let want = if dead {
                    KeepaliveAction::Dead
                } else if ping {
                    last_ping = now;
                    KeepaliveAction::SendPing
                } else {
                    KeepaliveAction::Idle
                };
                assert_eq!(ka.poll(now), want);
            }
            KaOp::Deadline => {
                // What the actor computes on every wake-up.
                let ping = cfg.ping_interval.map(|i| last_ping.checked_add(i));
                let dead = cfg.timeout.map(|t| last_rx.checked_add(t));
                let got = ka.next_deadline();
                let want = match (ping, dead) {
                    (Some(Some(a)), Some(Some(b))) => Some(a.min(b)),
                    (Some(Some(a)), None | Some(None)) | (None | Some(None), Some(Some(a))) => {
                        Some(a)
                    }
                    (None, None) => None,
                    _ => return,
                };
                assert_eq!(got, want);
                if let Some(d) = got {
                    if now < d {
                        let mut probe = ka.clone();
                        assert_eq!(
                            probe.poll(now),
                            KeepaliveAction::Idle,
                            "something due before the deadline"
                        );
                    }
                }
            }
        }
    }
}

fn bucket(input: &Input) {
    let rl = RateLimit::new(input.burst, input.per_second.get());
    // Known issue F5 (README): a tiny positive refill rate validates, then `ready_at`
    // panics converting `missing / per_second` seconds to a Duration (or an Instant).
    if rl.validate().is_err() || (skip_known_issues() && rl.per_second < 1e-6) {
        return;
    }
    let t0 = Instant::now();
    let mut b = TokenBucket::new(rl.burst, rl.per_second, t0);
    let mut now = t0;
    let mut taken = 0f64;
    for op in input.bucket.iter().take(256) {
        let (cost, ms) = match op {
            BucketOp::Take(c, ms) | BucketOp::ReadyThenTake(c, ms) => {
                (*c % (rl.burst.saturating_mul(2).max(1)), *ms)
            }
        };
        let Some(t) = now.checked_add(Duration::from_millis(u64::from(ms))) else {
            return;
        };
        now = t;
        match op {
            BucketOp::Take(..) => {
                if b.try_take(cost, now) {
                    taken += f64::from(cost);
                }
            }
            BucketOp::ReadyThenTake(..) => {
                let at = b.ready_at(cost, now);
                assert!(at >= now);
                if b.can_ever_pay(cost) && at.duration_since(now) < Duration::from_secs(3600) {
                    now = at;
                    let mut paid = b.try_take(cost, now);
                    if !paid && skip_known_issues() {
                        // Known issue F6 (README): `ready_at` rounds the wait to the nearest
                        // nanosecond, so it can be up to 1 ns early. One tick later it pays.
                        let Some(t) = now.checked_add(Duration::from_nanos(1)) else {
                            return;
                        };
                        now = t;
                        paid = b.try_take(cost, now);
                    }
                    assert!(paid, "not ready at ready_at: cost {cost} {rl:?}");
                    taken += f64::from(cost);
                }
            }
        }
        // Never more than a full bucket plus the refill since the start.
        let budget = f64::from(rl.burst) + now.duration_since(t0).as_secs_f64() * rl.per_second;
        assert!(
            taken <= budget * (1.0 + 1e-9) + 1e-6,
            "took {taken} of {budget}"
        );
    }
}
