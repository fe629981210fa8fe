//! Channel names: parsing and matching.

use super::config::InstrumentKind;
use super::market::Market;

/// A notification interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Interval {
    Raw,
    Ms100,
    Agg2,
}

impl Interval {
    pub(crate) const ALL: [Interval; 3] = [Interval::Raw, Interval::Ms100, Interval::Agg2];

    fn parse(s: &str) -> Option<Interval> {
        match s {
            "raw" => Some(Interval::Raw),
            "100ms" => Some(Interval::Ms100),
            "agg2" => Some(Interval::Agg2),
            _ => None,
        }
    }

    pub(crate) fn idx(self) -> usize {
        self as usize
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Interval::Raw => "raw",
            Interval::Ms100 => "100ms",
            Interval::Agg2 => "agg2",
        }
    }
}

/// Which instruments a `*.{kind}.{currency}.*` channel covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sel {
    Inst(usize),
    /// A valid selector for instruments the simulator does not have (spot, combos).
    Nothing,
    /// `None` = `any`.
    Group {
        kind: Option<InstrumentKind>,
        currency: Option<String>,
    },
}

impl Sel {
    pub(crate) fn matches(&self, market: &Market, inst: usize) -> bool {
        match self {
            Sel::Inst(i) => *i == inst,
            Sel::Nothing => false,
            Sel::Group { kind, currency } => {
                let spec = &market.insts[inst].spec;
                kind.is_none_or(|k| k == spec.kind)
                    && currency
                        .as_deref()
                        .is_none_or(|c| c.eq_ignore_ascii_case(&spec.base_currency))
            }
        }
    }

    fn parse_group(kind: &str, currency: &str, market: &Market) -> Option<Sel> {
        let kind = match kind {
            "any" => None,
            "future" => Some(InstrumentKind::Future),
            "option" => Some(InstrumentKind::Option),
            // Valid on Deribit, but the simulator has no such instruments: accepted, silent.
            "spot" | "combo" | "future_combo" | "option_combo" => return Some(Sel::Nothing),
            _ => return None,
        };
        let currency = if currency == "any" {
            None
        } else if market.has_currency(currency) {
            Some(currency.to_ascii_uppercase())
        } else {
            return None;
        };
        Some(Sel::Group { kind, currency })
    }
}

/// A parsed channel name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Channel {
    Ticker(usize, Interval),
    Book(usize, Interval),
    /// `book.{inst}.{group}.{depth}.{interval}`; `group` in price units, `None` for `none`.
    BookGrouped {
        inst: usize,
        group: Option<f64>,
        depth: usize,
        iv: Interval,
    },
    Trades(Sel, Interval),
    Quote(usize),
    Perpetual(usize, Interval),
    Index(usize),
    PlatformState,
    UserOrders(Sel, Interval),
    UserTrades(Sel, Interval),
    UserPortfolio(String),
}

impl Channel {
    /// Parse `name`; `None` if it is not a channel the simulator serves (unknown instrument,
    /// bad interval, unsupported channel).
    pub(crate) fn parse(name: &str, market: &Market) -> Option<Channel> {
        let parts: Vec<&str> = name.split('.').collect();
        let inst = |s: &str| market.inst_index(s);
        match parts.as_slice() {
            ["ticker", i, iv] => Some(Channel::Ticker(inst(i)?, Interval::parse(iv)?)),
            ["book", i, iv] => Some(Channel::Book(inst(i)?, Interval::parse(iv)?)),
            ["book", i, group, depth, iv] => {
                let inst = inst(i)?;
                let group = match *group {
                    "none" => None,
                    "1" | "2" | "5" | "10" | "25" | "100" | "250" => {
                        let g: f64 = group.parse().ok()?;
                        // Deribit: for ETH (and other small-priced coins) the group is /100.
                        let unit = if market.insts[inst].spec.tick_size >= 0.5 {
                            1.0
                        } else {
                            0.01
                        };
                        Some(g * unit)
                    }
                    _ => return None,
                };
                let depth = match *depth {
                    "1" => 1,
                    "10" => 10,
                    "20" => 20,
                    _ => return None,
                };
                Some(Channel::BookGrouped {
                    inst,
                    group,
                    depth,
                    iv: Interval::parse(iv)?,
                })
            }
            ["trades", i, iv] => Some(Channel::Trades(Sel::Inst(inst(i)?), Interval::parse(iv)?)),
            ["trades", kind, cur, iv] => Some(Channel::Trades(
                Sel::parse_group(kind, cur, market)?,
                Interval::parse(iv)?,
            )),
            ["quote", i] => Some(Channel::Quote(inst(i)?)),
            ["perpetual", i, iv] => {
                let i = inst(i)?;
                market.insts[i]
                    .spec
                    .is_perpetual()
                    .then_some(())
                    .and(Some(Channel::Perpetual(i, Interval::parse(iv)?)))
            }
            ["deribit_price_index", index] => Some(Channel::Index(market.index_index(index)?)),
            ["platform_state"] => Some(Channel::PlatformState),
            ["user", "orders", i, iv] => Some(Channel::UserOrders(
                Sel::Inst(inst(i)?),
                Interval::parse(iv)?,
            )),
            ["user", "orders", kind, cur, iv] => Some(Channel::UserOrders(
                Sel::parse_group(kind, cur, market)?,
                Interval::parse(iv)?,
            )),
            ["user", "trades", i, iv] => Some(Channel::UserTrades(
                Sel::Inst(inst(i)?),
                Interval::parse(iv)?,
            )),
            ["user", "trades", kind, cur, iv] => Some(Channel::UserTrades(
                Sel::parse_group(kind, cur, market)?,
                Interval::parse(iv)?,
            )),
            ["user", "portfolio", cur] => {
                let cur = cur.to_ascii_uppercase();
                market
                    .is_settlement_currency(&cur)
                    .then_some(Channel::UserPortfolio(cur))
            }
            _ => None,
        }
    }

    /// `user.*` channels: only `private/subscribe` on an authenticated connection.
    pub(crate) fn is_private(&self) -> bool {
        matches!(
            self,
            Channel::UserOrders(..) | Channel::UserTrades(..) | Channel::UserPortfolio(_)
        )
    }

    /// A public channel with the `raw` interval (authorized connections only).
    pub(crate) fn is_public_raw(&self) -> bool {
        !self.is_private() && self.interval() == Some(Interval::Raw)
    }

    pub(crate) fn interval(&self) -> Option<Interval> {
        match self {
            Channel::Ticker(_, iv)
            | Channel::Book(_, iv)
            | Channel::BookGrouped { iv, .. }
            | Channel::Trades(_, iv)
            | Channel::Perpetual(_, iv)
            | Channel::UserOrders(_, iv)
            | Channel::UserTrades(_, iv) => Some(*iv),
            Channel::Quote(_)
            | Channel::Index(_)
            | Channel::PlatformState
            | Channel::UserPortfolio(_) => None,
        }
    }
}
