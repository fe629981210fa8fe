//! Dead-peer detection (sans-IO).
//!
//! The client pings every [`KeepaliveConfig::ping_interval`]; any inbound traffic counts as
//! a sign of life. When nothing at all arrived for [`KeepaliveConfig::timeout`], the link is
//! dead and is replaced. [`Keepalive`] only does the arithmetic: the actor feeds it the
//! current instant and performs what [`Keepalive::poll`] returns.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use websockex_nova::keepalive::{Keepalive, KeepaliveAction, KeepaliveConfig};
//!
//! // `#[non_exhaustive]`: start from the defaults and set the fields.
//! let mut cfg = KeepaliveConfig::default();
//! cfg.ping_interval = Some(Duration::from_secs(10));
//! cfg.timeout = Some(Duration::from_secs(25));
//! let t0 = Instant::now();
//! let mut ka = Keepalive::new(cfg, t0);
//! assert_eq!(ka.poll(t0 + Duration::from_secs(10)), KeepaliveAction::SendPing);
//! assert_eq!(ka.poll(t0 + Duration::from_secs(25)), KeepaliveAction::Dead);
//! ```

use std::time::{Duration, Instant};

use crate::error::Error;

/// Keepalive settings.
///
/// Defaults: ping every 20 s, dead after 40 s without any traffic: the values Python
/// `websockets` users know (20 s / 20 s after the ping), loose enough for congested links,
/// tight enough that a half-open TCP connection is noticed within a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeepaliveConfig {
    /// Send a ping this long after the last ping (`None`: no pings).
    pub ping_interval: Option<Duration>,
    /// Declare the link dead after this long without any inbound traffic (`None`: never).
    pub timeout: Option<Duration>,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            ping_interval: Some(Duration::from_secs(20)),
            timeout: Some(Duration::from_secs(40)),
        }
    }
}

impl KeepaliveConfig {
    /// No pings, no timeout.
    pub fn disabled() -> Self {
        KeepaliveConfig {
            ping_interval: None,
            timeout: None,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A configuration error for a zero interval or timeout, or a timeout not longer than
    /// the ping interval (a healthy link would be declared dead).
    pub fn validate(&self) -> Result<(), Error> {
        if self.ping_interval == Some(Duration::ZERO) || self.timeout == Some(Duration::ZERO) {
            return Err(Error::config("keepalive durations must be > 0"));
        }
        if let (Some(interval), Some(timeout)) = (self.ping_interval, self.timeout) {
            if timeout <= interval {
                return Err(Error::config(format!(
                    "keepalive timeout ({timeout:?}) must exceed the ping interval ({interval:?})"
                )));
            }
        }
        Ok(())
    }
}

/// What the actor should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Nothing is due.
    Idle,
    /// Send a keepalive ping now.
    SendPing,
    /// No traffic within the timeout: the link is dead.
    Dead,
}

/// Keepalive deadlines for one link.
#[derive(Debug, Clone)]
pub struct Keepalive {
    config: KeepaliveConfig,
    last_rx: Instant,
    last_ping: Instant,
}

impl Keepalive {
    /// Starts tracking a link that came up at `now`.
    pub fn new(config: KeepaliveConfig, now: Instant) -> Self {
        Keepalive {
            config,
            last_rx: now,
            last_ping: now,
        }
    }

    /// Any inbound frame at `now`.
    pub fn on_traffic(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// The next instant at which [`poll`](Self::poll) may return something other than idle.
    pub fn next_deadline(&self) -> Option<Instant> {
        // An interval too long to add to the clock never comes due.
        let ping = self
            .config
            .ping_interval
            .and_then(|i| self.last_ping.checked_add(i));
        let dead = self
            .config
            .timeout
            .and_then(|t| self.last_rx.checked_add(t));
        match (ping, dead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`. Returning [`KeepaliveAction::SendPing`] records the ping.
    pub fn poll(&mut self, now: Instant) -> KeepaliveAction {
        if let Some(timeout) = self.config.timeout {
            if now.saturating_duration_since(self.last_rx) >= timeout {
                return KeepaliveAction::Dead;
            }
        }
        if let Some(interval) = self.config.ping_interval {
            if now.saturating_duration_since(self.last_ping) >= interval {
                self.last_ping = now;
                return KeepaliveAction::SendPing;
            }
        }
        KeepaliveAction::Idle
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.config.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    #[test]
    fn traffic_postpones_death_but_not_pings() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(
            KeepaliveConfig {
                ping_interval: Some(s(5)),
                timeout: Some(s(12)),
            },
            t0,
        );
        assert_eq!(ka.next_deadline(), Some(t0 + s(5)));
        assert_eq!(ka.poll(t0 + s(4)), KeepaliveAction::Idle);
        assert_eq!(ka.poll(t0 + s(5)), KeepaliveAction::SendPing);
        ka.on_traffic(t0 + s(6));
        assert_eq!(ka.poll(t0 + s(10)), KeepaliveAction::SendPing);
        assert_eq!(ka.poll(t0 + s(17)), KeepaliveAction::SendPing);
        assert_eq!(ka.poll(t0 + s(18)), KeepaliveAction::Dead);
    }

    #[test]
    fn disabled_never_fires() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(KeepaliveConfig::disabled(), t0);
        assert_eq!(ka.next_deadline(), None);
        assert_eq!(ka.poll(t0 + s(1_000_000)), KeepaliveAction::Idle);
    }

    #[test]
    fn validate_rejects_timeout_not_above_interval() {
        let cfg = KeepaliveConfig {
            ping_interval: Some(s(10)),
            timeout: Some(s(10)),
        };
        assert!(cfg.validate().unwrap_err().is_config());
        assert!(KeepaliveConfig::default().validate().is_ok());
    }
}
