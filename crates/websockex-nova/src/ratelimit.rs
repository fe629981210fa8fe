//! Rate limiting at the single writer (sans-IO).
//!
//! Venues meter requests in credits: a bucket of `burst` credits refilled at `per_second`.
//! Every outgoing frame costs what the [`RateLimitHandler`] says (1 by default) and waits
//! in the bounded user queue until the bucket can pay (or is refused, per [`OnLimit`]). The
//! framework's own traffic (re-authentication, the resubscribe burst after a reconnect)
//! pays too, ahead of user traffic; heartbeat answers and pongs never wait.
//!
//! Sizing against a venue's "N per sliding second" limit: a full bucket lets `burst` go at
//! once and then `per_second` more within the same second, so choose
//! `burst + per_second ≤ N + 1` (e.g. `RateLimit::new(50, 50.0)` for 99 per second).
//! Heartbeat answers are not metered (they must never wait): leave the venue room for them.
//!
//! Why not the `governor` crate: it reads its own clock (quanta or `std::time::Instant`),
//! so it neither follows tokio's paused time in tests nor fits the sans-IO core, where the
//! actor passes the current instant in. The arithmetic below is a plain token bucket.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use websockex_nova::ratelimit::TokenBucket;
//!
//! let t0 = Instant::now();
//! let mut bucket = TokenBucket::new(2, 10.0, t0);
//! assert!(bucket.try_take(1, t0) && bucket.try_take(1, t0));
//! assert!(!bucket.try_take(1, t0));
//! assert_eq!(bucket.ready_at(1, t0), t0 + Duration::from_millis(100));
//! assert!(bucket.try_take(1, t0 + Duration::from_millis(100)));
//! ```

use std::time::{Duration, Instant};

use crate::error::Error;

/// What to do with a frame the bucket cannot pay for right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnLimit {
    /// Wait in the bounded user queue (at most [`RateLimit::max_wait`]).
    #[default]
    Queue,
    /// Fail at once with [`ErrorKind::RateLimited`](crate::ErrorKind::RateLimited).
    Reject,
}

/// A credit budget for outgoing traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Credits available at once (the bucket size).
    pub burst: u32,
    /// Credits refilled per second.
    pub per_second: f64,
    /// Longest a frame may wait for credits before it fails with `RateLimited`
    /// (`None`: no limit). Default 10 s.
    pub max_wait: Option<Duration>,
    /// Queue or reject when credits run out.
    pub on_limit: OnLimit,
}

impl RateLimit {
    /// `burst` credits, refilled at `per_second`, queueing up to 10 s.
    pub fn new(burst: u32, per_second: f64) -> RateLimit {
        RateLimit {
            burst,
            per_second,
            max_wait: Some(Duration::from_secs(10)),
            on_limit: OnLimit::Queue,
        }
    }

    /// Sets the longest wait.
    #[must_use]
    pub fn with_max_wait(mut self, max_wait: Option<Duration>) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Sets the policy when credits run out.
    #[must_use]
    pub fn with_on_limit(mut self, on_limit: OnLimit) -> Self {
        self.on_limit = on_limit;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A configuration error for a zero burst or a refill rate that is not a positive number.
    pub fn validate(&self) -> Result<(), Error> {
        if self.burst == 0 {
            return Err(Error::config("rate limit burst must be > 0"));
        }
        // Below one credit per 1,000,000 s a refill is not a rate; it is a typo.
        if !(self.per_second.is_finite() && self.per_second >= 1e-6) {
            return Err(Error::config(
                "rate limit per_second must be a number >= 0.000001",
            ));
        }
        if self.max_wait == Some(Duration::ZERO) {
            return Err(Error::config("rate limit max_wait must be > 0 (or None)"));
        }
        Ok(())
    }
}

/// What a frame about to be written is, for [`RateLimitHandler::cost`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Outgoing<'a> {
    /// The method, for requests (user or framework).
    pub method: Option<&'a str>,
    /// Payload length in bytes.
    pub len: usize,
}

impl<'a> Outgoing<'a> {
    /// Describes a frame (for tests of a [`RateLimitHandler`]).
    pub fn new(method: Option<&'a str>, len: usize) -> Self {
        Outgoing { method, len }
    }
}

/// The cost of each outgoing frame in credits.
pub trait RateLimitHandler: Send + 'static {
    /// Credits this frame costs (0: free).
    fn cost(&mut self, outgoing: &Outgoing<'_>) -> u32;
}

/// Every frame costs one credit.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRateLimitHandler;

impl RateLimitHandler for DefaultRateLimitHandler {
    fn cost(&mut self, _outgoing: &Outgoing<'_>) -> u32 {
        1
    }
}

impl<F> RateLimitHandler for F
where
    F: FnMut(&Outgoing<'_>) -> u32 + Send + 'static,
{
    fn cost(&mut self, outgoing: &Outgoing<'_>) -> u32 {
        self(outgoing)
    }
}

/// A token bucket with time passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` credits refilling at `per_second`.
    pub fn new(capacity: u32, per_second: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            capacity: f64::from(capacity),
            tokens: f64::from(capacity),
            per_second,
            last: now,
        }
    }

    /// The same bucket with a new capacity and rate: the credits it holds now carry over,
    /// capped at the new capacity.
    pub fn resized(mut self, capacity: u32, per_second: f64, now: Instant) -> TokenBucket {
        self.refill(now);
        TokenBucket {
            capacity: f64::from(capacity),
            tokens: self.tokens.min(f64::from(capacity)),
            per_second,
            last: self.last,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Takes `cost` credits if they are there.
    pub fn try_take(&mut self, cost: u32, now: Instant) -> bool {
        self.refill(now);
        // A hair of tolerance so float rounding never makes a due frame wait another tick.
        if self.tokens + 1e-9 >= f64::from(cost) {
            self.tokens = (self.tokens - f64::from(cost)).max(0.0);
            true
        } else {
            false
        }
    }

    /// When `cost` credits will be there (now if they are).
    pub fn ready_at(&self, cost: u32, now: Instant) -> Instant {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        let missing = f64::from(cost) - tokens;
        if missing <= 0.0 {
            now
        } else {
            // Rounded up to the nanosecond: `try_take` at this instant must succeed, or the
            // writer would wake early and spin until the clock moves on.
            let far = Duration::from_secs(86_400 * 365);
            let nanos = (missing / self.per_second * 1e9).ceil();
            let wait = if nanos < far.as_nanos() as f64 {
                Duration::from_nanos(nanos as u64)
            } else {
                far
            };
            now + wait
        }
    }

    /// Whether a frame of `cost` can ever be paid (cost ≤ capacity).
    pub fn can_ever_pay(&self, cost: u32) -> bool {
        f64::from(cost) <= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_burst_plus_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, 10.0, t0);
        let mut sent = 0;
        let mut t = t0;
        // Drive 1,000 attempts over one simulated second at 1 ms steps.
        for _ in 0..1000 {
            while b.try_take(1, t) {
                sent += 1;
            }
            t += Duration::from_millis(1);
        }
        assert!((14..=15).contains(&sent), "{sent}");
    }

    #[test]
    fn costs_and_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 1.0, t0);
        assert!(b.try_take(7, t0));
        assert!(!b.try_take(7, t0));
        assert_eq!(b.ready_at(7, t0), t0 + Duration::from_secs(4));
        assert!(!b.can_ever_pay(11));
    }

    #[test]
    fn validate() {
        assert!(RateLimit::new(0, 1.0).validate().is_err());
        assert!(RateLimit::new(1, 0.0).validate().is_err());
        assert!(RateLimit::new(1, f64::NAN).validate().is_err());
        assert!(RateLimit::new(5, 2.5).validate().is_ok());
    }
}
