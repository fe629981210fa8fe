//! Live configuration: which fields of a [`ClientConfig`] a running connection takes at once,
//! which on its next connect, and which are fixed for its lifetime.
//!
//! [`Client::reconfigure`](crate::Client::reconfigure) validates the whole new configuration,
//! then applies it atomically on the connection's task (nothing of it, or all of it) and
//! says what changed and when it takes effect:
//!
//! | applies | fields |
//! |---|---|
//! | at once | `rate_limit` (credits carried over, capped at the new burst), `reconnect` (the next delay; the attempt count is kept), `keepalive` (re-armed now), `request_timeout` (new requests), `max_in_flight`, `write_timeout`, `close_timeout`, `offline`, `overflow` (not into or out of `DropOldest`), `watermarks`, `max_block`, `restart`, `subscription_capacity` (new subscriptions) |
//! | on the next connect | `url`, `headers`, `subprotocols`, `connect_timeout`, `upgrade_timeout`, `max_message_size`, `max_frame_size`, `tls` |
//! | fixed (a change is refused) | `command_capacity`, `event_capacity` (the channels are sized when the client is built) |
//!
//! ```no_run
//! # async fn demo(client: websockex_nova::Client) -> Result<(), websockex_nova::Error> {
//! use websockex_nova::RateLimit;
//! let applied = client
//!     .reconfigure(|c| c.rate_limit = Some(RateLimit::new(20, 10.0)))
//!     .await?;
//! assert_eq!(applied.now, ["rate_limit"]);
//! # Ok(()) }
//! ```

use crate::config::ClientConfig;
use crate::error::Error;

/// When a changed field takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applies {
    Now,
    OnConnect,
    Fixed,
}

/// What a reconfiguration changed, by when it takes effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconfigured {
    /// Fields in effect already.
    pub now: Vec<&'static str>,
    /// Fields that take effect on the next connect (the live link keeps the old ones).
    pub on_connect: Vec<&'static str>,
}

impl Reconfigured {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.now.is_empty() && self.on_connect.is_empty()
    }

    /// Whether `field` changed (at once or on the next connect).
    pub fn changed(&self, field: &str) -> bool {
        self.now.iter().chain(&self.on_connect).any(|f| *f == field)
    }
}

/// The fields that differ between `old` and `new`, with when each applies.
pub(crate) fn diff(old: &ClientConfig, new: &ClientConfig) -> Vec<(&'static str, Applies)> {
    use Applies::*;
    let mut out = Vec::new();
    macro_rules! field {
        ($name:ident, $applies:expr) => {
            if old.$name != new.$name {
                out.push((stringify!($name), $applies));
            }
        };
    }
    field!(url, OnConnect);
    field!(headers, OnConnect);
    field!(subprotocols, OnConnect);
    field!(connect_timeout, OnConnect);
    field!(upgrade_timeout, OnConnect);
    field!(write_timeout, Now);
    field!(close_timeout, Now);
    field!(keepalive, Now);
    field!(reconnect, Now);
    field!(max_message_size, OnConnect);
    field!(max_frame_size, OnConnect);
    field!(command_capacity, Fixed);
    field!(event_capacity, Fixed);
    field!(offline, Now);
    field!(overflow, Now);
    field!(watermarks, Now);
    field!(max_block, Now);
    field!(restart, Now);
    field!(request_timeout, Now);
    field!(max_in_flight, Now);
    field!(subscription_capacity, Now);
    field!(rate_limit, Now);
    field!(tls, OnConnect);
    out
}

/// Validates `new` as a successor of `old`: it must validate on its own and leave the
/// fixed fields alone.
pub(crate) fn check(old: &ClientConfig, new: &ClientConfig) -> Result<Reconfigured, Error> {
    new.validate()?;
    let mut r = Reconfigured::default();
    let oldest = |c: &ClientConfig| c.overflow == crate::config::OverflowPolicy::DropOldest;
    if oldest(old) != oldest(new) {
        return Err(Error::config(
            "overflow cannot change into or out of DropOldest on a live connection (its streams are made for it at build)",
        ));
    }
    for (field, applies) in diff(old, new) {
        match applies {
            Applies::Now => r.now.push(field),
            Applies::OnConnect => r.on_connect.push(field),
            Applies::Fixed => {
                return Err(Error::config(format!(
                    "{field} cannot change on a live connection (it sizes a channel made at build)"
                )))
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::RateLimit;
    use std::time::Duration;

    #[test]
    fn sorts_changes_by_when_they_apply_and_refuses_fixed_ones() {
        let old = ClientConfig::new("ws://127.0.0.1:1/");
        let mut new = old.clone();
        new.rate_limit = Some(RateLimit::new(5, 1.0));
        new.url = "ws://127.0.0.1:2/".into();
        new.request_timeout = Duration::from_secs(3);
        let r = check(&old, &new).unwrap();
        assert_eq!(r.now, ["request_timeout", "rate_limit"]);
        assert_eq!(r.on_connect, ["url"]);
        assert!(r.changed("url") && !r.changed("tls"));

        new.event_capacity += 1;
        let e = check(&old, &new).unwrap_err();
        assert!(e.to_string().contains("event_capacity"), "{e}");

        let mut bad = old.clone();
        bad.rate_limit = Some(RateLimit::new(0, 1.0));
        assert!(check(&old, &bad).is_err());
        assert!(check(&old, &old).unwrap().is_empty());
    }
}
