//! Reconnection policy (configuration) and backoff (sans-IO state).
//!
//! [`ReconnectPolicy`] says how long to wait before each attempt; [`Backoff`] is the plain
//! state machine the connection actor drives: it counts attempts, applies the cap, the jitter
//! and the retry limit, and resets only after a link stayed up for
//! [`ReconnectPolicy::reset_after`]. It never reads a clock: time is passed in.
//!
//! ```
//! use std::time::Duration;
//! use rand::{rngs::StdRng, SeedableRng};
//! use websockex_nova::reconnect::{Backoff, ReconnectPolicy};
//!
//! let policy = ReconnectPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
//!     .with_max_retries(4);
//! let mut backoff = Backoff::with_rng(policy, Box::new(StdRng::seed_from_u64(7)));
//! let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay()).collect();
//! assert_eq!(delays, [100, 200, 400, 800].map(Duration::from_millis));
//! ```

use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};

use crate::error::Error;

/// How delays grow between reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Strategy {
    /// Never reconnect: the first loss closes the connection.
    Never,
    /// `initial`, `initial + step`, `initial + 2·step`, … up to the cap.
    Linear {
        /// Delay before the first retry.
        initial: Duration,
        /// Added per attempt.
        step: Duration,
    },
    /// `initial · factorⁿ` up to the cap.
    Exponential {
        /// Delay before the first retry.
        initial: Duration,
        /// Growth factor per attempt (≥ 1).
        factor: f64,
    },
    /// Exponential growth with randomness, so that many clients cut off at once do not
    /// come back at once.
    Jittered {
        /// Base delay.
        initial: Duration,
        /// Growth factor per attempt (≥ 1), for [`Jitter::Full`].
        factor: f64,
        /// Which jitter formula.
        jitter: Jitter,
    },
}

/// The jitter formulas of "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// `random(0, min(cap, initial · factorⁿ))`.
    Full,
    /// `min(cap, random(initial, previous · 3))`.
    Decorrelated,
}

/// When and how often to reconnect.
///
/// The default is jittered exponential backoff (full jitter) from 250 ms, doubling, capped
/// at 30 s, unlimited retries, reset after the link stayed up 30 s: it is what a
/// market-data collector that must run for weeks wants, and jitter keeps a fleet of clients
/// from reconnecting in lockstep after a venue outage.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// How delays grow.
    pub strategy: Strategy,
    /// The largest delay.
    pub max_delay: Duration,
    /// Give up after this many consecutive failed attempts (`None`: never give up).
    pub max_retries: Option<u32>,
    /// A link must stay up this long before the attempt counter resets, so a server that
    /// accepts and drops at once does not get hammered at the initial delay.
    pub reset_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            strategy: Strategy::Jittered {
                initial: Duration::from_millis(250),
                factor: 2.0,
                jitter: Jitter::Full,
            },
            max_delay: Duration::from_secs(30),
            max_retries: None,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect.
    pub fn never() -> Self {
        ReconnectPolicy {
            strategy: Strategy::Never,
            max_retries: Some(0),
            ..Default::default()
        }
    }

    /// Linear growth: `initial`, `initial + step`, … capped at `max_delay`.
    pub fn linear(initial: Duration, step: Duration, max_delay: Duration) -> Self {
        ReconnectPolicy {
            strategy: Strategy::Linear { initial, step },
            max_delay,
            ..Default::default()
        }
    }

    /// Exponential growth (doubling) from `initial`, capped at `max_delay`.
    pub fn exponential(initial: Duration, max_delay: Duration) -> Self {
        ReconnectPolicy {
            strategy: Strategy::Exponential {
                initial,
                factor: 2.0,
            },
            max_delay,
            ..Default::default()
        }
    }

    /// Jittered exponential growth from `initial`, capped at `max_delay`.
    pub fn jittered(initial: Duration, max_delay: Duration, jitter: Jitter) -> Self {
        ReconnectPolicy {
            strategy: Strategy::Jittered {
                initial,
                factor: 2.0,
                jitter,
            },
            max_delay,
            ..Default::default()
        }
    }

    /// Sets the retry limit.
    #[must_use]
    pub fn with_max_retries(mut self, max: u32) -> Self {
        self.max_retries = Some(max);
        self
    }

    /// Sets how long a link must stay up before the attempt counter resets.
    #[must_use]
    pub fn with_reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// Checks the policy.
    ///
    /// # Errors
    ///
    /// A configuration error for a growth factor below 1 (or not finite), or a zero cap
    /// with a strategy that reconnects.
    pub fn validate(&self) -> Result<(), Error> {
        let factor = match self.strategy {
            Strategy::Exponential { factor, .. } | Strategy::Jittered { factor, .. } => factor,
            _ => 1.0,
        };
        if !factor.is_finite() || factor < 1.0 {
            return Err(Error::config(format!(
                "reconnect factor must be a finite number >= 1, got {factor}"
            )));
        }
        if self.strategy != Strategy::Never && self.max_delay.is_zero() {
            return Err(Error::config("reconnect max_delay must be > 0"));
        }
        Ok(())
    }
}

/// Attempt counting and delay computation for one connection.
pub struct Backoff {
    policy: ReconnectPolicy,
    rng: Box<dyn RngCore + Send>,
    attempts: u32,
    previous: Duration,
    up_since: Option<Instant>,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("policy", &self.policy)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Backoff {
    /// A backoff seeded from the operating system.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self::with_rng(policy, Box::new(rand::rngs::SmallRng::from_os_rng()))
    }

    /// A backoff with the given random source (seed one for deterministic tests).
    pub fn with_rng(policy: ReconnectPolicy, rng: Box<dyn RngCore + Send>) -> Self {
        Backoff {
            previous: Duration::ZERO,
            policy,
            rng,
            attempts: 0,
            up_since: None,
        }
    }

    /// Replaces the policy (live configuration); the attempt count is kept.
    pub fn set_policy(&mut self, policy: ReconnectPolicy) {
        self.policy = policy;
    }

    /// The policy in force.
    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// Consecutive failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Call when a link is up (Ready).
    pub fn on_up(&mut self, now: Instant) {
        self.up_since = Some(now);
    }

    /// Call when the link goes down; resets the count if it stayed up long enough.
    pub fn on_down(&mut self, now: Instant) {
        if let Some(since) = self.up_since.take() {
            if now.saturating_duration_since(since) >= self.policy.reset_after {
                self.reset();
            }
        }
    }

    /// Forgets all previous attempts.
    pub fn reset(&mut self) {
        self.attempts = 0;
        self.previous = Duration::ZERO;
    }

    /// The delay before the next attempt, or `None` when the policy gives up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if let Some(max) = self.policy.max_retries {
            if self.attempts >= max {
                return None;
            }
        }
        let n = self.attempts;
        let cap = self.policy.max_delay;
        let delay = match self.policy.strategy {
            Strategy::Never => return None,
            Strategy::Linear { initial, step } => {
                initial.saturating_add(step.saturating_mul(n)).min(cap)
            }
            Strategy::Exponential { initial, factor } => grow(initial, factor, n, cap),
            Strategy::Jittered {
                initial,
                factor,
                jitter: Jitter::Full,
            } => {
                let ceiling = grow(initial, factor, n, cap);
                ceiling.mul_f64(self.rng.random::<f64>())
            }
            Strategy::Jittered {
                initial,
                jitter: Jitter::Decorrelated,
                ..
            } => {
                let upper = self.previous.max(initial).saturating_mul(3);
                let lo = initial.as_secs_f64();
                let hi = upper.as_secs_f64().max(lo);
                Duration::try_from_secs_f64(lo + (hi - lo) * self.rng.random::<f64>())
                    .unwrap_or(cap)
                    .min(cap)
            }
        };
        self.attempts += 1;
        self.previous = delay;
        Some(delay)
    }
}

fn grow(initial: Duration, factor: f64, n: u32, cap: Duration) -> Duration {
    let secs = initial.as_secs_f64() * factor.powi(n.min(1024) as i32);
    if !secs.is_finite() || secs >= cap.as_secs_f64() {
        cap
    } else {
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn seeded(policy: ReconnectPolicy) -> Backoff {
        Backoff::with_rng(policy, Box::new(StdRng::seed_from_u64(1)))
    }

    #[test]
    fn linear_grows_by_step_up_to_cap() {
        let mut b = seeded(ReconnectPolicy::linear(ms(100), ms(100), ms(350)));
        let d: Vec<_> = (0..5).map(|_| b.next_delay().unwrap()).collect();
        assert_eq!(d, [ms(100), ms(200), ms(300), ms(350), ms(350)]);
    }

    #[test]
    fn exponential_caps_and_survives_huge_attempt_counts() {
        let mut b = seeded(ReconnectPolicy::exponential(ms(10), ms(1000)));
        for _ in 0..5000 {
            assert!(b.next_delay().unwrap() <= ms(1000));
        }
        assert_eq!(b.next_delay(), Some(ms(1000)));
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling() {
        let mut b = seeded(ReconnectPolicy::jittered(ms(100), ms(2000), Jitter::Full));
        for n in 0..20u32 {
            let ceiling = ms(100).saturating_mul(1 << n.min(20)).min(ms(2000));
            assert!(b.next_delay().unwrap() <= ceiling);
        }
    }

    #[test]
    fn decorrelated_jitter_stays_between_initial_and_cap() {
        let mut b = seeded(ReconnectPolicy::jittered(
            ms(100),
            ms(5000),
            Jitter::Decorrelated,
        ));
        for _ in 0..100 {
            let d = b.next_delay().unwrap();
            assert!(d >= ms(100) && d <= ms(5000), "{d:?}");
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let p = ReconnectPolicy::default();
        let a: Vec<_> = {
            let mut b = seeded(p.clone());
            (0..10).map(|_| b.next_delay()).collect()
        };
        let b: Vec<_> = {
            let mut b = seeded(p);
            (0..10).map(|_| b.next_delay()).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn max_retries_and_never_give_up() {
        let mut b = seeded(ReconnectPolicy::exponential(ms(1), ms(10)).with_max_retries(2));
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert_eq!(b.next_delay(), None);
        assert_eq!(seeded(ReconnectPolicy::never()).next_delay(), None);
    }

    #[test]
    fn reset_only_after_the_link_stayed_up() {
        let policy = ReconnectPolicy::exponential(ms(100), ms(10_000)).with_reset_after(ms(5000));
        let mut b = seeded(policy);
        let t0 = Instant::now();
        b.next_delay();
        b.next_delay();
        b.on_up(t0);
        b.on_down(t0 + ms(1000));
        assert_eq!(b.next_delay(), Some(ms(400)), "short uptime keeps growing");
        b.on_up(t0);
        b.on_down(t0 + ms(5000));
        assert_eq!(b.next_delay(), Some(ms(100)), "long uptime resets");
    }

    #[test]
    fn validate_rejects_bad_factor() {
        let p = ReconnectPolicy {
            strategy: Strategy::Exponential {
                initial: ms(1),
                factor: 0.5,
            },
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().is_config());
        assert!(ReconnectPolicy::default().validate().is_ok());
    }
}
