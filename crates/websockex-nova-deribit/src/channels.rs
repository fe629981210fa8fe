//! Channel names: which need `private/subscribe`, which need authentication.

/// Whether `channel` is private (`user.*`): subscribed with `private/subscribe` on an
/// authenticated connection.
pub fn is_private(channel: &str) -> bool {
    channel.starts_with("user.")
}

/// Whether `channel` needs an authenticated connection: private channels, and public
/// `.raw` feeds (Deribit serves those to authorised users only).
pub fn needs_auth(channel: &str) -> bool {
    is_private(channel) || channel.ends_with(".raw")
}

/// `ticker.{instrument}.{interval}`.
pub fn ticker(instrument: &str, interval: Interval) -> String {
    format!("ticker.{instrument}.{}", interval.as_str())
}

/// `book.{instrument}.{interval}` (full depth, snapshot then changes).
pub fn book(instrument: &str, interval: Interval) -> String {
    format!("book.{instrument}.{}", interval.as_str())
}

/// `trades.{instrument}.{interval}`.
pub fn trades(instrument: &str, interval: Interval) -> String {
    format!("trades.{instrument}.{}", interval.as_str())
}

/// `user.orders.{instrument}.raw` (one order per notification).
pub fn user_orders(instrument: &str) -> String {
    format!("user.orders.{instrument}.raw")
}

/// `user.portfolio.{currency}`.
pub fn user_portfolio(currency: &str) -> String {
    format!("user.portfolio.{}", currency.to_ascii_lowercase())
}

/// Notification batching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Every event (authorised users only).
    Raw,
    /// Batched over 100 ms.
    Ms100,
    /// Aggregated (about every 2 s).
    Agg2,
}

impl Interval {
    /// The channel suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Raw => "raw",
            Interval::Ms100 => "100ms",
            Interval::Agg2 => "agg2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes() {
        assert_eq!(
            ticker("BTC-PERPETUAL", Interval::Ms100),
            "ticker.BTC-PERPETUAL.100ms"
        );
        assert_eq!(user_portfolio("BTC"), "user.portfolio.btc");
        assert!(is_private("user.orders.BTC-PERPETUAL.raw"));
        assert!(needs_auth("book.BTC-PERPETUAL.raw"));
        assert!(!needs_auth("book.BTC-PERPETUAL.100ms"));
    }
}
