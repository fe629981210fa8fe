//! Typed Deribit payloads (reference §4–§5). Fields Deribit may leave out are `Option`s
//! or defaulted; unknown fields are ignored, so new API fields never break decoding.

use serde::{Deserialize, Serialize};

/// `ticker.*` notifications and the `public/ticker` result (§4.4). Numbers Deribit sends
/// as `null` for an empty side are `None`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ticker {
    /// Instrument.
    pub instrument_name: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// `open`, `settlement`, `delivered`, ….
    #[serde(default)]
    pub state: Option<String>,
    /// Best bid.
    #[serde(default)]
    pub best_bid_price: Option<f64>,
    /// Amount at the best bid.
    #[serde(default)]
    pub best_bid_amount: Option<f64>,
    /// Best ask.
    #[serde(default)]
    pub best_ask_price: Option<f64>,
    /// Amount at the best ask.
    #[serde(default)]
    pub best_ask_amount: Option<f64>,
    /// Mark price.
    #[serde(default)]
    pub mark_price: Option<f64>,
    /// Index price.
    #[serde(default)]
    pub index_price: Option<f64>,
    /// Last trade price.
    #[serde(default)]
    pub last_price: Option<f64>,
    /// Open interest.
    #[serde(default)]
    pub open_interest: Option<f64>,
    /// 24 h statistics (left out of some notifications).
    #[serde(default)]
    pub stats: Option<TickerStats>,
    /// Perpetuals: current funding.
    #[serde(default)]
    pub current_funding: Option<f64>,
    /// Perpetuals: 8 h funding.
    #[serde(default)]
    pub funding_8h: Option<f64>,
}

/// 24 h statistics of a ticker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TickerStats {
    /// Volume.
    #[serde(default)]
    pub volume: Option<f64>,
    /// Lowest price.
    #[serde(default)]
    pub low: Option<f64>,
    /// Highest price.
    #[serde(default)]
    pub high: Option<f64>,
    /// Change in percent.
    #[serde(default)]
    pub price_change: Option<f64>,
}

/// Whether a book notification is a snapshot or a change (§4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BookKind {
    /// All levels.
    Snapshot,
    /// Changes since `prev_change_id`.
    Change,
}

/// One `book.{instrument}.{interval}` notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BookData {
    /// Snapshot or change (older feeds leave it out: a message without
    /// `prev_change_id` is then a snapshot).
    #[serde(rename = "type", default)]
    pub kind: Option<BookKind>,
    /// Instrument.
    pub instrument_name: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// This message's id; not +1 per message (shared across instruments, it jumps).
    pub change_id: u64,
    /// The id this change follows; absent on snapshots.
    #[serde(default)]
    pub prev_change_id: Option<u64>,
    /// Bid levels.
    #[serde(default)]
    pub bids: Vec<BookLevel>,
    /// Ask levels.
    #[serde(default)]
    pub asks: Vec<BookLevel>,
}

impl BookData {
    /// Whether this message is a snapshot.
    pub fn is_snapshot(&self) -> bool {
        match self.kind {
            Some(kind) => kind == BookKind::Snapshot,
            None => self.prev_change_id.is_none(),
        }
    }
}

/// `[action, price, amount]` (a `delete` may come as `[action, price]` in old feeds).
#[derive(Debug, Clone, PartialEq)]
pub struct BookLevel {
    /// `new`, `change` or `delete`.
    pub action: LevelAction,
    /// Price.
    pub price: f64,
    /// Amount (0 for deletes).
    pub amount: f64,
}

/// What a book level does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LevelAction {
    /// A new level.
    New,
    /// A changed amount.
    Change,
    /// The level is gone.
    Delete,
}

impl<'de> Deserialize<'de> for BookLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Three(LevelAction, f64, f64),
            Two(LevelAction, f64),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Three(action, price, amount) => BookLevel {
                action,
                price,
                amount,
            },
            Raw::Two(action, price) => BookLevel {
                action,
                price,
                amount: 0.0,
            },
        })
    }
}

/// A public trade (`trades.*` notifications carry an array of them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Trade {
    /// Trade id.
    pub trade_id: String,
    /// Sequence number per instrument.
    #[serde(default)]
    pub trade_seq: Option<u64>,
    /// Instrument.
    pub instrument_name: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Price.
    pub price: f64,
    /// Amount.
    pub amount: f64,
    /// Taker side: `buy` or `sell`.
    pub direction: String,
}

/// An order (`private/buy` results, `user.orders.*` notifications).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Order {
    /// Order id.
    pub order_id: String,
    /// `open`, `filled`, `rejected`, `cancelled`, `untriggered`, `triggered`.
    pub order_state: String,
    /// Instrument.
    pub instrument_name: String,
    /// `buy` or `sell`.
    pub direction: String,
    /// Amount.
    pub amount: f64,
    /// Filled so far.
    #[serde(default)]
    pub filled_amount: f64,
    /// Price (Deribit sends the string `"market_price"` for market orders: `None`).
    #[serde(default, deserialize_with = "price_or_market")]
    pub price: Option<f64>,
    /// Order type.
    #[serde(default)]
    pub order_type: Option<String>,
    /// Client label.
    #[serde(default)]
    pub label: Option<String>,
    /// Why it was cancelled.
    #[serde(default)]
    pub cancel_reason: Option<String>,
}

fn price_or_market<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum P {
        Num(f64),
        // "market_price": no number.
        Str(serde::de::IgnoredAny),
    }
    Ok(match Option::<P>::deserialize(d)? {
        Some(P::Num(n)) => Some(n),
        _ => None,
    })
}

/// The result of `private/buy` / `private/sell`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderResult {
    /// The order.
    pub order: Order,
    /// Trades it made at once.
    #[serde(default)]
    pub trades: Vec<serde_json::Value>,
}

/// Parameters of `private/buy` / `private/sell`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct OrderRequest {
    /// Instrument.
    pub instrument_name: String,
    /// Amount.
    pub amount: f64,
    /// `limit` (default) or `market`, ….
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub order_type: Option<String>,
    /// Limit price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Client label (≤ 64 chars).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Time in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_in_force: Option<String>,
    /// Post only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_only: Option<bool>,
    /// Reduce only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reduce_only: Option<bool>,
}

impl OrderRequest {
    /// A limit order.
    pub fn limit(instrument: impl Into<String>, amount: f64, price: f64) -> Self {
        OrderRequest {
            instrument_name: instrument.into(),
            amount,
            order_type: Some("limit".into()),
            price: Some(price),
            ..Default::default()
        }
    }

    /// A market order.
    pub fn market(instrument: impl Into<String>, amount: f64) -> Self {
        OrderRequest {
            instrument_name: instrument.into(),
            amount,
            order_type: Some("market".into()),
            ..Default::default()
        }
    }
}

/// The result of `private/get_account_summary` (and `user.portfolio.*` data), leniently.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountSummary {
    /// Currency.
    pub currency: String,
    /// Balance.
    #[serde(default)]
    pub balance: f64,
    /// Equity.
    #[serde(default)]
    pub equity: f64,
    /// Available funds.
    #[serde(default)]
    pub available_funds: f64,
    /// Margin balance.
    #[serde(default)]
    pub margin_balance: f64,
}

/// An instrument from `public/get_instruments`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Instrument {
    /// Name.
    pub instrument_name: String,
    /// `future`, `option`, `spot`, ….
    pub kind: String,
    /// Base currency.
    #[serde(default)]
    pub base_currency: Option<String>,
    /// Tick size.
    #[serde(default)]
    pub tick_size: Option<f64>,
    /// Minimum amount.
    #[serde(default)]
    pub min_trade_amount: Option<f64>,
    /// Whether it trades.
    #[serde(default)]
    pub is_active: Option<bool>,
}

/// The `public/get_order_book` result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderBookSnapshot {
    /// Instrument.
    pub instrument_name: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Change id of this state.
    #[serde(default)]
    pub change_id: Option<u64>,
    /// `[price, amount]`, best first.
    #[serde(default)]
    pub bids: Vec<(f64, f64)>,
    /// `[price, amount]`, best first.
    #[serde(default)]
    pub asks: Vec<(f64, f64)>,
}

/// A `platform_state` notification (§8.3): an index locked or unlocked, or a maintenance
/// break beginning. During maintenance requests fail with `11051 system_maintenance`
/// ([`Action::Backoff`](crate::errors::Action::Backoff)): pause trading until it ends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlatformState {
    /// A maintenance break begins (`true`) or ended (`false`).
    #[serde(default)]
    pub maintenance: Option<bool>,
    /// The price index this is about.
    #[serde(default)]
    pub price_index: Option<String>,
    /// Whether that index is locked.
    #[serde(default)]
    pub locked: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_examples_decode() {
        let ticker: Ticker = serde_json::from_str(r#"{"timestamp":1700000001100,"instrument_name":"BTC-PERPETUAL","state":"open","stats":{"volume":7871.02,"volume_usd":284061480,"low":35213.5,"high":36824.5,"price_change":0.72},"open_interest":502097590,"best_bid_price":36442.5,"best_bid_amount":5000,"best_ask_price":36443.0,"best_ask_amount":100,"index_price":36441.64,"estimated_delivery_price":36441.64,"mark_price":36446.51,"last_price":36443.0,"min_price":35898.37,"max_price":36991.72,"settlement_price":36169.49,"interest_value":1.7362,"current_funding":0.0,"funding_8h":0.0000211}"#).unwrap();
        assert_eq!(ticker.best_bid_price, Some(36442.5));
        let empty: Ticker =
            serde_json::from_str(r#"{"timestamp":1,"instrument_name":"X","best_bid_price":null}"#)
                .unwrap();
        assert_eq!(empty.best_bid_price, None);
        let snap: BookData = serde_json::from_str(r#"{"type":"snapshot","timestamp":1700000001000,"instrument_name":"BTC-PERPETUAL","change_id":5000,"bids":[["new",36442.5,5000],["new",36442.0,1200]],"asks":[["new",36443.0,100]]}"#).unwrap();
        assert!(snap.is_snapshot());
        let change: BookData = serde_json::from_str(r#"{"type":"change","timestamp":1,"instrument_name":"BTC-PERPETUAL","prev_change_id":5000,"change_id":5007,"bids":[["change",36442.5,4200],["delete",36442.0,0.0],["delete",1.0]],"asks":[["new",36443.5,2.2e3]]}"#).unwrap();
        assert_eq!(change.bids[2].amount, 0.0);
        assert_eq!(change.asks[0].amount, 2200.0);
        let order: Order = serde_json::from_str(r#"{"order_id":"SIM-1","order_state":"open","instrument_name":"BTC-PERPETUAL","direction":"buy","amount":100,"price":"market_price"}"#).unwrap();
        assert_eq!(order.price, None);
    }
}
