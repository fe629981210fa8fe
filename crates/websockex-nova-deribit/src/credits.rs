//! Deribit's credit model (reference §7) as a [`RateLimitHandler`]: each request costs
//! credits from the account's bucket (non-matching-engine defaults: 500 per request, a pool
//! of 50,000 refilled at 10,000 per second; subscribe calls 3,000; `get_instruments`
//! 10,000). Running dry makes Deribit answer 10028 *and terminate the session*, so the
//! client must never get there.
//!
//! Simplification (documented): Deribit keeps separate pools for subscribe calls,
//! `get_instruments` and matching-engine requests (tier 4 default: 5/s, burst 20). The core
//! meters one bucket per connection; the costs below are set so that the single bucket is
//! never looser than any of Deribit's pools for a mixed workload, at some cost of
//! throughput when one class dominates.

use websockex_nova::ratelimit::{Outgoing, RateLimitHandler};
use websockex_nova::RateLimit;

/// Credits per class of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreditCosts {
    /// Most requests.
    pub default: u32,
    /// `public/subscribe` and `private/subscribe`.
    pub subscribe: u32,
    /// `public/get_instruments`.
    pub get_instruments: u32,
    /// Matching-engine requests (`private/buy`, `sell`, `edit`, `cancel*`, `close_position`).
    pub matching_engine: u32,
}

impl Default for CreditCosts {
    /// The documented defaults; matching-engine requests priced so that the tier-4 rate
    /// (5/s, burst 20) holds against the 10,000/s refill: 2,000 credits each.
    fn default() -> Self {
        CreditCosts {
            default: 500,
            subscribe: 3_000,
            get_instruments: 10_000,
            matching_engine: 2_000,
        }
    }
}

/// The account's bucket and the cost table.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CreditModel {
    /// Bucket size. Default 50,000.
    pub max_credits: u32,
    /// Refill per second. Default 10,000.
    pub refill_per_second: u32,
    /// Costs.
    pub costs: CreditCosts,
}

impl Default for CreditModel {
    fn default() -> Self {
        CreditModel {
            max_credits: 50_000,
            refill_per_second: 10_000,
            costs: CreditCosts::default(),
        }
    }
}

impl CreditModel {
    /// The core's rate limit for this model (queue while waiting, at most 10 s).
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit::new(self.max_credits, f64::from(self.refill_per_second))
    }
}

fn is_matching_engine(method: &str) -> bool {
    matches!(
        method,
        "private/buy"
            | "private/sell"
            | "private/edit"
            | "private/edit_by_label"
            | "private/cancel"
            | "private/cancel_by_label"
            | "private/cancel_all"
            | "private/cancel_all_by_currency"
            | "private/cancel_all_by_instrument"
            | "private/close_position"
    )
}

impl RateLimitHandler for CreditCosts {
    fn cost(&mut self, outgoing: &Outgoing<'_>) -> u32 {
        match outgoing.method {
            Some("public/subscribe" | "private/subscribe") => self.subscribe,
            Some("public/get_instruments") => self.get_instruments,
            Some(m) if is_matching_engine(m) => self.matching_engine,
            // Heartbeat answers never reach the limiter; everything else is a request.
            _ => self.default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_by_method() {
        let mut c = CreditCosts::default();
        let cost = |c: &mut CreditCosts, m: &str| c.cost(&Outgoing::new(Some(m), 10));
        assert_eq!(cost(&mut c, "public/get_time"), 500);
        assert_eq!(cost(&mut c, "private/subscribe"), 3_000);
        assert_eq!(cost(&mut c, "public/get_instruments"), 10_000);
        assert_eq!(cost(&mut c, "private/buy"), 2_000);
        let m = CreditModel::default();
        assert_eq!(m.rate_limit().burst, 50_000);
    }
}
