//! The simulated market: price indexes following a seeded random walk, one order book per
//! instrument (anonymous liquidity plus the accounts' resting orders), public trades, and a
//! small matching engine.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Value};

use super::channel::Interval;
use super::config::{InstrumentKind, InstrumentSpec, PERPETUAL_EXPIRY};
use super::rng::Rng;
use crate::rpc::RpcError;

/// Public trades kept per instrument for `public/get_last_trades_by_instrument`.
const RECENT_TRADES: usize = 100;

/// A buy or a sell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Buy,
    Sell,
}

impl Dir {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dir::Buy => "buy",
            Dir::Sell => "sell",
        }
    }

    pub(crate) fn sign(self) -> i64 {
        match self {
            Dir::Buy => 1,
            Dir::Sell => -1,
        }
    }

    fn opposite(self) -> Dir {
        match self {
            Dir::Buy => Dir::Sell,
            Dir::Sell => Dir::Buy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrderState {
    Open,
    Filled,
    Cancelled,
}

impl OrderState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OrderState::Open => "open",
            OrderState::Filled => "filled",
            OrderState::Cancelled => "cancelled",
        }
    }
}

/// Time in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tif {
    Gtc,
    Gtd,
    Fok,
    Ioc,
}

impl Tif {
    pub(crate) fn parse(s: &str) -> Option<Tif> {
        match s {
            "good_til_cancelled" => Some(Tif::Gtc),
            "good_til_day" => Some(Tif::Gtd),
            "fill_or_kill" => Some(Tif::Fok),
            "immediate_or_cancel" => Some(Tif::Ioc),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Tif::Gtc => "good_til_cancelled",
            Tif::Gtd => "good_til_day",
            Tif::Fok => "fill_or_kill",
            Tif::Ioc => "immediate_or_cancel",
        }
    }
}

/// An account's order.
#[derive(Clone, Debug)]
pub(crate) struct Order {
    pub(crate) order_id: String,
    pub(crate) account: String,
    pub(crate) conn: usize,
    pub(crate) inst: usize,
    pub(crate) dir: Dir,
    pub(crate) market: bool,
    /// Limit price in ticks (0 for market orders).
    pub(crate) price: i64,
    pub(crate) lots: i64,
    pub(crate) filled: i64,
    /// Sum of `price_ticks * lots` over fills.
    notional: i128,
    pub(crate) label: String,
    tif: Tif,
    post_only: bool,
    reject_post_only: bool,
    pub(crate) reduce_only: bool,
    pub(crate) state: OrderState,
    pub(crate) cancel_reason: Option<&'static str>,
    created: u64,
    updated: u64,
}

impl Order {
    pub(crate) fn is_open(&self) -> bool {
        self.state == OrderState::Open
    }

    fn remaining(&self) -> i64 {
        self.lots - self.filled
    }
}

/// What a new order asks for (validated by the caller).
pub(crate) struct NewOrder {
    pub(crate) account: String,
    pub(crate) conn: usize,
    pub(crate) inst: usize,
    pub(crate) dir: Dir,
    pub(crate) market: bool,
    pub(crate) price: i64,
    pub(crate) lots: i64,
    pub(crate) label: String,
    pub(crate) tif: Tif,
    pub(crate) post_only: bool,
    pub(crate) reject_post_only: bool,
    pub(crate) reduce_only: bool,
}

/// One execution.
#[derive(Clone, Debug)]
pub(crate) struct Fill {
    pub(crate) inst: usize,
    pub(crate) price: i64,
    pub(crate) lots: i64,
    /// The taking order, `None` for anonymous market flow.
    pub(crate) taker: Option<u64>,
    /// The resting order, `None` for anonymous liquidity.
    pub(crate) maker: Option<u64>,
    pub(crate) trade_id: String,
    pub(crate) trade_seq: u64,
    pub(crate) tick_direction: u8,
    pub(crate) timestamp: u64,
}

/// A price index (`btc_usd`, ...).
pub(crate) struct Index {
    pub(crate) name: String,
    pub(crate) price: f64,
    start: f64,
}

/// A book as last published on one interval's channels.
#[derive(Clone, Default)]
struct Published {
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
    change_id: u64,
}

type Levels = BTreeMap<i64, i64>;

/// Best level of a side: `(price_ticks, lots)`.
type Top = Option<(i64, i64)>;

pub(crate) struct Inst {
    pub(crate) spec: InstrumentSpec,
    pub(crate) id: u64,
    pub(crate) index: usize,
    price_dp: u32,
    amount_dp: u32,
    mark: f64,
    bids: Levels,
    asks: Levels,
    user_bids: BTreeMap<i64, Vec<u64>>,
    user_asks: BTreeMap<i64, Vec<u64>>,
    pub(crate) change_id: u64,
    timestamp: u64,
    published: [Published; 3],
    last_price: Option<i64>,
    last_tick_direction: u8,
    trade_seq: u64,
    volume: f64,
    volume_usd: f64,
    high: f64,
    low: f64,
    open_interest: f64,
    /// Public trades not yet sent on each interval's channels.
    pending_trades: [Vec<Value>; 3],
    ticker_dirty: [bool; 3],
    recent: VecDeque<Value>,
    last_quote: Option<(Top, Top)>,
    /// Fault injection: drop / repeat the next book change message per interval.
    pub(crate) gap: [bool; 3],
    pub(crate) dup: [bool; 3],
}

impl Inst {
    pub(crate) fn px(&self, ticks: i64) -> f64 {
        round(ticks as f64 * self.spec.tick_size, self.price_dp)
    }

    pub(crate) fn amt(&self, lots: i64) -> f64 {
        round(lots as f64 * self.spec.min_trade_amount, self.amount_dp)
    }

    /// The price in ticks, if it is a multiple of the tick size.
    pub(crate) fn to_ticks(&self, price: f64) -> Option<i64> {
        exact_multiple(price, self.spec.tick_size)
    }

    /// The amount in lots of `min_trade_amount`, if it is a multiple of it.
    pub(crate) fn to_lots(&self, amount: f64) -> Option<i64> {
        exact_multiple(amount, self.spec.min_trade_amount)
    }

    pub(crate) fn mark(&self) -> f64 {
        self.mark
    }

    /// The value of `lots` at `price` in the settlement currency (for fees, margin, P&L).
    pub(crate) fn value_in_coin(&self, lots: i64, price: f64) -> f64 {
        let amount = lots as f64 * self.spec.min_trade_amount;
        match self.spec.kind {
            InstrumentKind::Option => amount * price,
            InstrumentKind::Future if self.spec.linear => amount * price,
            InstrumentKind::Future => {
                if price > 0.0 {
                    amount / price
                } else {
                    0.0
                }
            }
        }
    }
}

fn exact_multiple(x: f64, step: f64) -> Option<i64> {
    if !x.is_finite() || step <= 0.0 {
        return None;
    }
    let n = x / step;
    let r = n.round();
    ((n - r).abs() < 1e-6 && r.abs() < 9e15).then_some(r as i64)
}

pub(crate) fn round(x: f64, dp: u32) -> f64 {
    let m = 10f64.powi(dp as i32);
    (x * m).round() / m
}

/// Decimal places needed to write multiples of `step` exactly.
fn decimals(step: f64) -> u32 {
    (0..10u32)
        .find(|d| {
            let v = step * 10f64.powi(*d as i32);
            (v - v.round()).abs() < 1e-9
        })
        .unwrap_or(10)
}

pub(crate) struct Market {
    pub(crate) insts: Vec<Inst>,
    pub(crate) indexes: Vec<Index>,
    pub(crate) orders: BTreeMap<u64, Order>,
    order_ids: HashMap<String, u64>,
    next_order: u64,
    change_id: u64,
    next_trade: u64,
    rng: Rng,
    depth: i64,
    created_ms: u64,
}

impl Market {
    pub(crate) fn new(specs: &[InstrumentSpec], seed: u64, depth: usize, now_ms: u64) -> Market {
        let mut rng = Rng::new(seed);
        let mut indexes: Vec<Index> = Vec::new();
        for spec in specs {
            if indexes.iter().any(|i| i.name == spec.index_name()) {
                continue;
            }
            // The index starts at the currency's first future price (its strike for options-only).
            let start = specs
                .iter()
                .filter(|s| {
                    s.base_currency == spec.base_currency && s.kind == InstrumentKind::Future
                })
                .find(|s| s.is_perpetual())
                .or_else(|| {
                    specs.iter().find(|s| {
                        s.base_currency == spec.base_currency && s.kind == InstrumentKind::Future
                    })
                })
                .map(|s| s.price)
                .or(spec.option.map(|(strike, _)| strike))
                .unwrap_or(spec.price);
            indexes.push(Index {
                name: spec.index_name(),
                price: start,
                start,
            });
        }
        let change_id = 10_000_000 + (rng.next_u64() % 1_000_000);
        let mut market = Market {
            insts: Vec::new(),
            indexes,
            orders: BTreeMap::new(),
            order_ids: HashMap::new(),
            next_order: 1,
            change_id,
            next_trade: 100_000 + rng.next_u64() % 100_000,
            rng,
            depth: depth.max(2) as i64,
            created_ms: now_ms,
        };
        for (n, spec) in specs.iter().enumerate() {
            let index = market
                .indexes
                .iter()
                .position(|i| i.name == spec.index_name())
                .unwrap_or(0);
            let price = spec.price;
            market.insts.push(Inst {
                spec: spec.clone(),
                id: 100 + n as u64,
                index,
                price_dp: decimals(spec.tick_size),
                amount_dp: decimals(spec.min_trade_amount),
                mark: price,
                bids: Levels::new(),
                asks: Levels::new(),
                user_bids: BTreeMap::new(),
                user_asks: BTreeMap::new(),
                change_id,
                timestamp: now_ms,
                published: Default::default(),
                last_price: None,
                last_tick_direction: 0,
                trade_seq: 0,
                volume: 0.0,
                volume_usd: 0.0,
                high: price,
                low: price,
                open_interest: 0.0,
                pending_trades: Default::default(),
                ticker_dirty: [true; 3],
                recent: VecDeque::new(),
                last_quote: None,
                gap: [false; 3],
                dup: [false; 3],
            });
            market.fill_book(n);
            market.bump(n, now_ms);
            let inst = &mut market.insts[n];
            inst.open_interest =
                (inst.bids.values().sum::<i64>() * 3) as f64 * inst.spec.min_trade_amount;
        }
        for i in 0..market.insts.len() {
            let (bids, asks) = market.book(i);
            let inst = &mut market.insts[i];
            let p = Published {
                bids,
                asks,
                change_id: inst.change_id,
            };
            inst.published = [p.clone(), p.clone(), p];
        }
        market
    }

    pub(crate) fn inst_index(&self, name: &str) -> Option<usize> {
        self.insts.iter().position(|i| i.spec.name == name)
    }

    pub(crate) fn index_index(&self, name: &str) -> Option<usize> {
        self.indexes.iter().position(|i| i.name == name)
    }

    pub(crate) fn has_currency(&self, currency: &str) -> bool {
        self.insts
            .iter()
            .any(|i| i.spec.base_currency.eq_ignore_ascii_case(currency))
    }

    pub(crate) fn is_settlement_currency(&self, currency: &str) -> bool {
        self.insts
            .iter()
            .any(|i| i.spec.settlement_currency.eq_ignore_ascii_case(currency))
    }

    pub(crate) fn order_seq(&self, order_id: &str) -> Option<u64> {
        self.order_ids.get(order_id).copied()
    }

    fn target(&self, i: usize) -> f64 {
        let inst = &self.insts[i];
        let index = &self.indexes[inst.index];
        let ratio = index.price / index.start;
        match inst.spec.option {
            None => inst.spec.price * ratio,
            Some((_, call)) => {
                // Crude but monotone: an elasticity of 8 to the underlying.
                let e: f64 = if call { 8.0 } else { -8.0 };
                (inst.spec.price * ratio.powf(e)).max(inst.spec.tick_size)
            }
        }
    }

    fn random_lots(&mut self, far: i64) -> i64 {
        self.rng.range(1, 40) * (1 + far / 8)
    }

    /// Fill every level of the window around the current target (at start).
    fn fill_book(&mut self, i: usize) {
        let mid = self.mid(i);
        for t in (mid - self.depth + 1).max(1)..=mid {
            let lots = self.random_lots(mid - t);
            self.insts[i].bids.insert(t, lots);
        }
        for t in mid + 1..=mid + self.depth {
            let lots = self.random_lots(t - mid - 1);
            self.insts[i].asks.insert(t, lots);
        }
    }

    /// The best bid of the anonymous book, in ticks.
    fn mid(&self, i: usize) -> i64 {
        let inst = &self.insts[i];
        ((self.target(i) / inst.spec.tick_size).floor() as i64).max(1)
    }

    /// Move the anonymous book to the current target. Whether anything changed.
    fn step_book(&mut self, i: usize) -> bool {
        let mid = self.mid(i);
        let depth = self.depth;
        let mut changed = false;
        {
            let inst = &mut self.insts[i];
            let (nb, na) = (inst.bids.len(), inst.asks.len());
            inst.bids.retain(|t, _| *t <= mid && *t > mid - depth);
            inst.asks.retain(|t, _| *t > mid && *t <= mid + depth);
            changed |= nb != inst.bids.len() || na != inst.asks.len();
        }
        for t in (mid - depth + 1).max(1)..=mid {
            changed |= self.step_level(i, Dir::Buy, t, t == mid, mid - t);
        }
        for t in mid + 1..=mid + depth {
            changed |= self.step_level(i, Dir::Sell, t, t == mid + 1, t - mid - 1);
        }
        changed
    }

    fn step_level(&mut self, i: usize, side: Dir, t: i64, top: bool, far: i64) -> bool {
        let present = match side {
            Dir::Buy => self.insts[i].bids.contains_key(&t),
            Dir::Sell => self.insts[i].asks.contains_key(&t),
        };
        let action = if !present {
            (top || self.rng.chance(0.3)).then(|| Some(self.random_lots(far)))
        } else if self.rng.chance(0.08) {
            Some(Some(self.random_lots(far)))
        } else if !top && self.rng.chance(0.02) {
            Some(None)
        } else {
            None
        };
        let Some(action) = action else {
            return false;
        };
        let levels = match side {
            Dir::Buy => &mut self.insts[i].bids,
            Dir::Sell => &mut self.insts[i].asks,
        };
        match action {
            Some(lots) => levels.insert(t, lots) != Some(lots),
            None => levels.remove(&t).is_some(),
        }
    }

    fn bump(&mut self, i: usize, now_ms: u64) {
        self.change_id += self.rng.range(1, 15) as u64;
        let inst = &mut self.insts[i];
        inst.change_id = self.change_id;
        inst.timestamp = now_ms;
        inst.ticker_dirty = [true; 3];
    }

    /// One market tick: indexes walk, every book moves, random trades, and resting orders the
    /// market crossed are filled. Returns the instruments whose book changed and the fills of
    /// accounts' orders.
    pub(crate) fn tick(&mut self, now_ms: u64) -> (Vec<usize>, Vec<Fill>) {
        for k in 0..self.indexes.len() {
            let step = (self.rng.f64() * 2.0 - 1.0) * 0.000_02;
            let idx = &mut self.indexes[k];
            let revert = (idx.start - idx.price) / idx.start * 0.000_5;
            idx.price *= 1.0 + step + revert;
        }
        let mut changed = Vec::new();
        let mut fills = Vec::new();
        for i in 0..self.insts.len() {
            let mut moved = self.step_book(i);
            if self.rng.chance(0.3) {
                let dir = if self.rng.chance(0.5) {
                    Dir::Buy
                } else {
                    Dir::Sell
                };
                let want = self.rng.range(1, 10);
                let inst = &mut self.insts[i];
                let levels = match dir {
                    Dir::Buy => &mut inst.asks,
                    Dir::Sell => &mut inst.bids,
                };
                let best = match dir {
                    Dir::Buy => levels.first_key_value().map(|(p, l)| (*p, *l)),
                    Dir::Sell => levels.last_key_value().map(|(p, l)| (*p, *l)),
                };
                if let Some((p, lots)) = best {
                    let q = want.min(lots);
                    if q == lots {
                        levels.remove(&p);
                    } else {
                        levels.insert(p, lots - q);
                    }
                    self.trade(i, p, q, dir, now_ms);
                    moved = true;
                }
            }
            let mark_dp = self.insts[i].price_dp + 2;
            let mark = round(self.target(i), mark_dp);
            let inst = &mut self.insts[i];
            inst.mark = mark;
            inst.ticker_dirty = [true; 3];
            let passive = self.passive_fills(i, now_ms);
            if moved || !passive.is_empty() {
                self.bump(i, now_ms);
                changed.push(i);
            }
            fills.extend(passive);
        }
        (changed, fills)
    }

    /// Fill resting orders that the anonymous book now crosses, at their limit price.
    fn passive_fills(&mut self, i: usize, now_ms: u64) -> Vec<Fill> {
        let mut fills = Vec::new();
        loop {
            let inst = &self.insts[i];
            let best_ask = inst.asks.first_key_value().map(|(p, _)| *p);
            let bid = inst.user_bids.last_key_value().map(|(p, _)| *p);
            let (Some(a), Some(b)) = (best_ask, bid) else {
                break;
            };
            if b < a {
                break;
            }
            let ids = self.insts[i].user_bids.remove(&b).unwrap_or_default();
            for id in ids {
                fills.extend(self.fill_resting(i, id, b, Dir::Sell, None, now_ms));
            }
        }
        loop {
            let inst = &self.insts[i];
            let best_bid = inst.bids.last_key_value().map(|(p, _)| *p);
            let ask = inst.user_asks.first_key_value().map(|(p, _)| *p);
            let (Some(b), Some(a)) = (best_bid, ask) else {
                break;
            };
            if a > b {
                break;
            }
            let ids = self.insts[i].user_asks.remove(&a).unwrap_or_default();
            for id in ids {
                fills.extend(self.fill_resting(i, id, a, Dir::Buy, None, now_ms));
            }
        }
        fills
    }

    /// Fill the whole remainder of resting order `id` (already taken off its level).
    fn fill_resting(
        &mut self,
        i: usize,
        id: u64,
        price: i64,
        taker_dir: Dir,
        taker: Option<u64>,
        now_ms: u64,
    ) -> Option<Fill> {
        let o = self.orders.get_mut(&id)?;
        let q = o.remaining();
        if q <= 0 {
            return None;
        }
        o.filled += q;
        o.notional += i128::from(price) * i128::from(q);
        o.state = OrderState::Filled;
        o.updated = now_ms;
        let mut fill = self.trade(i, price, q, taker_dir, now_ms);
        fill.maker = Some(id);
        fill.taker = taker;
        Some(fill)
    }

    /// Record a public trade; returns it as a fill with no orders attached.
    fn trade(&mut self, i: usize, price: i64, lots: i64, taker_dir: Dir, now_ms: u64) -> Fill {
        self.next_trade += 1;
        let trade_id = self.next_trade.to_string();
        let index_price = round(self.indexes[self.insts[i].index].price, 2);
        let inst = &mut self.insts[i];
        inst.trade_seq += 1;
        let tick_direction = match inst.last_price {
            None => 0,
            Some(last) if price > last => 0,
            Some(last) if price < last => 2,
            Some(_) => match inst.last_tick_direction {
                0 | 1 => 1,
                _ => 3,
            },
        };
        inst.last_tick_direction = tick_direction;
        inst.last_price = Some(price);
        let p = inst.px(price);
        let amount = inst.amt(lots);
        inst.volume += inst.value_in_coin(lots, p).abs();
        inst.volume_usd += if inst.spec.kind == InstrumentKind::Option {
            amount * p * index_price
        } else if inst.spec.linear {
            amount * p
        } else {
            amount
        };
        inst.high = inst.high.max(p);
        inst.low = inst.low.min(p);
        inst.open_interest += amount / 2.0;
        let mut t = json!({
            "trade_seq": inst.trade_seq,
            "trade_id": trade_id,
            "timestamp": now_ms,
            "tick_direction": tick_direction,
            "price": p,
            "mark_price": inst.mark,
            "index_price": index_price,
            "instrument_name": inst.spec.name,
            "direction": taker_dir.as_str(),
            "amount": amount,
            "contracts": round(amount / inst.spec.contract_size, inst.amount_dp + 2),
        });
        if inst.spec.kind == InstrumentKind::Option {
            t["iv"] = json!(55.0);
        }
        for iv in &mut inst.pending_trades {
            iv.push(t.clone());
        }
        inst.recent.push_back(t);
        if inst.recent.len() > RECENT_TRADES {
            inst.recent.pop_front();
        }
        Fill {
            inst: i,
            price,
            lots,
            taker: None,
            maker: None,
            trade_id,
            trade_seq: inst.trade_seq,
            tick_direction,
            timestamp: now_ms,
        }
    }

    /// The whole book: anonymous liquidity plus open orders.
    pub(crate) fn book(&self, i: usize) -> (Levels, Levels) {
        let inst = &self.insts[i];
        let mut bids = inst.bids.clone();
        let mut asks = inst.asks.clone();
        for (side, user) in [(&mut bids, &inst.user_bids), (&mut asks, &inst.user_asks)] {
            for (p, ids) in user {
                let lots: i64 = ids
                    .iter()
                    .filter_map(|id| self.orders.get(id))
                    .map(Order::remaining)
                    .sum();
                if lots > 0 {
                    *side.entry(*p).or_default() += lots;
                }
            }
        }
        (bids, asks)
    }

    fn best(&self, i: usize) -> (Top, Top) {
        let (bids, asks) = self.book(i);
        (
            bids.last_key_value().map(|(p, l)| (*p, *l)),
            asks.first_key_value().map(|(p, l)| (*p, *l)),
        )
    }

    /// A `change` message for `iv` if the book differs from what that interval last
    /// published; updates the published state.
    pub(crate) fn book_change(&mut self, i: usize, iv: Interval) -> Option<Value> {
        let (bids, asks) = self.book(i);
        let inst = &mut self.insts[i];
        let p = &inst.published[iv.idx()];
        let db = diff(&p.bids, &bids, true);
        let da = diff(&p.asks, &asks, false);
        if db.is_empty() && da.is_empty() {
            return None;
        }
        let prev = p.change_id;
        let change_id = inst.change_id.max(prev + 1);
        let level = |(action, t, l): (&str, i64, i64)| json!([action, inst.px(t), inst.amt(l)]);
        let data = json!({
            "type": "change",
            "timestamp": inst.timestamp,
            "instrument_name": inst.spec.name,
            "prev_change_id": prev,
            "change_id": change_id,
            "bids": db.into_iter().map(level).collect::<Vec<_>>(),
            "asks": da.into_iter().map(level).collect::<Vec<_>>(),
        });
        inst.published[iv.idx()] = Published {
            bids,
            asks,
            change_id,
        };
        Some(data)
    }

    /// The `snapshot` message of `iv`'s channel (what it last published).
    pub(crate) fn book_snapshot(&self, i: usize, iv: Interval) -> Value {
        let inst = &self.insts[i];
        let p = &inst.published[iv.idx()];
        let level = |(t, l): (&i64, &i64)| json!(["new", inst.px(*t), inst.amt(*l)]);
        json!({
            "type": "snapshot",
            "timestamp": inst.timestamp,
            "instrument_name": inst.spec.name,
            "change_id": p.change_id,
            "bids": p.bids.iter().rev().map(level).collect::<Vec<_>>(),
            "asks": p.asks.iter().map(level).collect::<Vec<_>>(),
        })
    }

    /// A grouped window (`book.{inst}.{group}.{depth}.{interval}`).
    pub(crate) fn book_window(&self, i: usize, group: Option<f64>, depth: usize) -> Value {
        let inst = &self.insts[i];
        let (bids, asks) = self.book(i);
        let grouped = |levels: &Levels, bid: bool| -> Vec<Value> {
            let mut out: Vec<(f64, i64)> = Vec::new();
            let iter: Box<dyn Iterator<Item = (&i64, &i64)>> = if bid {
                Box::new(levels.iter().rev())
            } else {
                Box::new(levels.iter())
            };
            for (t, l) in iter {
                let price = inst.px(*t);
                let key = match group {
                    None => price,
                    Some(g) if bid => round((price / g).floor() * g, inst.price_dp + 2),
                    Some(g) => round((price / g).ceil() * g, inst.price_dp + 2),
                };
                match out.last_mut() {
                    Some((k, sum)) if *k == key => *sum += l,
                    _ => {
                        if out.len() == depth {
                            break;
                        }
                        out.push((key, *l));
                    }
                }
            }
            out.into_iter()
                .map(|(p, l)| json!([p, inst.amt(l)]))
                .collect()
        };
        json!({
            "timestamp": inst.timestamp,
            "instrument_name": inst.spec.name,
            "change_id": inst.change_id,
            "bids": grouped(&bids, true),
            "asks": grouped(&asks, false),
        })
    }

    /// Whether the ticker changed since `iv` last sent it (and mark it sent).
    pub(crate) fn take_ticker_dirty(&mut self, i: usize, iv: Interval) -> bool {
        std::mem::replace(&mut self.insts[i].ticker_dirty[iv.idx()], false)
    }

    pub(crate) fn take_trades(&mut self, i: usize, iv: Interval) -> Vec<Value> {
        std::mem::take(&mut self.insts[i].pending_trades[iv.idx()])
    }

    /// A `quote` message if the best bid or ask changed since the last one.
    pub(crate) fn quote_change(&mut self, i: usize, now_ms: u64) -> Option<Value> {
        let (bb, ba) = self.best(i);
        let inst = &mut self.insts[i];
        if inst.last_quote == Some((bb, ba)) {
            return None;
        }
        inst.last_quote = Some((bb, ba));
        Some(json!({
            "timestamp": now_ms,
            "instrument_name": inst.spec.name,
            "best_bid_price": bb.map(|(p, _)| inst.px(p)),
            "best_bid_amount": bb.map_or(0.0, |(_, l)| inst.amt(l)),
            "best_ask_price": ba.map(|(p, _)| inst.px(p)),
            "best_ask_amount": ba.map_or(0.0, |(_, l)| inst.amt(l)),
        }))
    }

    /// Data of `perpetual.{inst}.{interval}`.
    pub(crate) fn perpetual(&self, i: usize, now_ms: u64) -> Value {
        let inst = &self.insts[i];
        json!({
            "timestamp": now_ms,
            "index_price": round(self.indexes[inst.index].price, 2),
            "interest": 0.0,
        })
    }

    /// The ticker object (reference §4.4).
    pub(crate) fn ticker(&self, i: usize, now_ms: u64) -> Value {
        let inst = &self.insts[i];
        let (bb, ba) = self.best(i);
        let index = round(self.indexes[inst.index].price, 2);
        let tick = inst.spec.tick_size;
        let min_price = inst.px(((inst.mark * 0.975) / tick).floor() as i64);
        let max_price = inst.px(((inst.mark * 1.025) / tick).ceil() as i64);
        let change = (inst.mark / inst.spec.price - 1.0) * 100.0;
        let mut t = json!({
            "timestamp": now_ms,
            "instrument_name": inst.spec.name,
            "state": "open",
            "stats": {
                "volume": round(inst.volume, 4),
                "volume_usd": round(inst.volume_usd, 2),
                "low": inst.low,
                "high": inst.high,
                "price_change": round(change, 4),
            },
            "open_interest": round(inst.open_interest, inst.amount_dp),
            "best_bid_price": bb.map(|(p, _)| inst.px(p)),
            "best_bid_amount": bb.map_or(0.0, |(_, l)| inst.amt(l)),
            "best_ask_price": ba.map(|(p, _)| inst.px(p)),
            "best_ask_amount": ba.map_or(0.0, |(_, l)| inst.amt(l)),
            "index_price": index,
            "estimated_delivery_price": index,
            "mark_price": inst.mark,
            "last_price": inst.last_price.map(|p| inst.px(p)),
            "min_price": min_price,
            "max_price": max_price,
            "settlement_price": inst.spec.price,
        });
        if inst.spec.is_perpetual() {
            t["interest_value"] = json!(0.0);
            t["current_funding"] = json!(0.0);
            t["funding_8h"] = json!(0.000_01);
        }
        if let Some((strike, call)) = inst.spec.option {
            let moneyness = (index / strike).ln();
            let delta = if call {
                0.5 + 0.5 * (moneyness * 8.0).tanh()
            } else {
                -0.5 + 0.5 * (moneyness * 8.0).tanh()
            };
            t["underlying_price"] = json!(index);
            t["underlying_index"] = json!("index_price");
            t["interest_rate"] = json!(0.0);
            t["bid_iv"] = json!(54.0);
            t["ask_iv"] = json!(56.0);
            t["mark_iv"] = json!(55.0);
            t["greeks"] = json!({
                "delta": round(delta, 5),
                "gamma": 0.000_02,
                "vega": 50.0,
                "theta": -40.0,
                "rho": 10.0,
            });
        }
        t
    }

    /// `public/get_order_book`: the ticker plus `change_id` and the top `depth` levels.
    pub(crate) fn order_book(&self, i: usize, depth: usize, now_ms: u64) -> Value {
        let inst = &self.insts[i];
        let (bids, asks) = self.book(i);
        let level = |(t, l): (&i64, &i64)| json!([inst.px(*t), inst.amt(*l)]);
        let mut v = self.ticker(i, now_ms);
        v["change_id"] = json!(inst.change_id);
        v["bids"] = json!(bids.iter().rev().take(depth).map(level).collect::<Vec<_>>());
        v["asks"] = json!(asks.iter().take(depth).map(level).collect::<Vec<_>>());
        v
    }

    /// `public/get_last_trades_by_instrument`.
    pub(crate) fn last_trades(&self, i: usize, count: usize) -> Value {
        let recent = &self.insts[i].recent;
        let trades: Vec<&Value> = recent.iter().rev().take(count).collect();
        json!({ "trades": trades, "has_more": recent.len() > count })
    }

    /// One `public/get_instruments` entry.
    pub(crate) fn instrument(&self, i: usize) -> Value {
        let inst = &self.insts[i];
        let s = &inst.spec;
        let option = s.kind == InstrumentKind::Option;
        let mut v = json!({
            "instrument_name": s.name,
            "instrument_id": inst.id,
            "kind": s.kind.as_str(),
            "base_currency": s.base_currency,
            "quote_currency": s.quote_currency,
            "counter_currency": s.quote_currency,
            "settlement_currency": s.settlement_currency,
            "settlement_period": if s.is_perpetual() { "perpetual" } else { "month" },
            "instrument_type": if s.linear { "linear" } else { "reversed" },
            "future_type": if s.linear { "linear" } else { "reversed" },
            "tick_size": s.tick_size,
            "tick_size_steps": [],
            "min_trade_amount": s.min_trade_amount,
            "contract_size": s.contract_size,
            "is_active": true,
            "rfq": false,
            "creation_timestamp": self.created_ms,
            "expiration_timestamp": s.expiration_timestamp.unwrap_or(PERPETUAL_EXPIRY),
            "maker_commission": if option { 0.0003 } else { 0.0 },
            "taker_commission": if option { 0.0003 } else { 0.0005 },
            "max_liquidation_commission": 0.0075,
            "price_index": s.index_name(),
            "block_trade_commission": 0.00025,
            "block_trade_min_trade_amount": if option { 25.0 } else { 200_000.0 },
            "block_trade_tick_size": 0.01,
        });
        if let Some((strike, call)) = s.option {
            v["strike"] = json!(strike);
            v["option_type"] = json!(if call { "call" } else { "put" });
        } else {
            v["max_leverage"] = json!(50);
        }
        v
    }

    // ---- the matching engine ----

    /// Place an order: match what crosses, rest (or cancel) the remainder. Returns the
    /// order's key and its fills (maker fills of other accounts included).
    pub(crate) fn place(&mut self, o: NewOrder, now_ms: u64) -> Result<(u64, Vec<Fill>), RpcError> {
        let i = o.inst;
        let crosses = |dir: Dir, limit: Option<i64>, p: i64| match (dir, limit) {
            (_, None) => true,
            (Dir::Buy, Some(l)) => p <= l,
            (Dir::Sell, Some(l)) => p >= l,
        };
        let mut limit = (!o.market).then_some(o.price);
        // Self-trade prevention: refuse an order that would reach the account's own order.
        let own = self.orders.values().any(|x| {
            x.is_open()
                && x.inst == i
                && x.account == o.account
                && x.dir == o.dir.opposite()
                && crosses(o.dir, limit, x.price)
        });
        if own {
            return Err(RpcError::new(10003, "order_overlap"));
        }
        let (best_bid, best_ask) = self.best(i);
        let best_opposite = match o.dir {
            Dir::Buy => best_ask,
            Dir::Sell => best_bid,
        };
        if let (Some(l), true, Some((b, _))) = (limit, o.post_only, best_opposite) {
            if crosses(o.dir, Some(l), b) {
                if o.reject_post_only {
                    return Err(RpcError::new(11054, "post_only_reject"));
                }
                let moved = b - o.dir.sign();
                if moved < 1 {
                    return Err(RpcError::new(11054, "post_only_reject"));
                }
                limit = Some(moved);
            }
        }
        let seq = self.next_order;
        self.next_order += 1;
        let order_id = format!("{}-{}", self.insts[i].spec.base_currency, 100_000_000 + seq);
        self.order_ids.insert(order_id.clone(), seq);
        self.orders.insert(
            seq,
            Order {
                order_id,
                account: o.account,
                conn: o.conn,
                inst: i,
                dir: o.dir,
                market: o.market,
                price: limit.unwrap_or(0),
                lots: o.lots,
                filled: 0,
                notional: 0,
                label: o.label,
                tif: o.tif,
                post_only: o.post_only,
                reject_post_only: o.reject_post_only,
                reduce_only: o.reduce_only,
                state: OrderState::Open,
                cancel_reason: None,
                created: now_ms,
                updated: now_ms,
            },
        );
        // Liquidity that crosses, best price first.
        let mut levels: Vec<i64> = {
            let (bids, asks) = self.book(i);
            match o.dir {
                Dir::Buy => asks
                    .keys()
                    .copied()
                    .filter(|p| crosses(o.dir, limit, *p))
                    .collect(),
                Dir::Sell => bids
                    .keys()
                    .rev()
                    .copied()
                    .filter(|p| crosses(o.dir, limit, *p))
                    .collect(),
            }
        };
        if o.tif == Tif::Fok {
            let (bids, asks) = self.book(i);
            let side = if o.dir == Dir::Buy { &asks } else { &bids };
            let available: i64 = levels.iter().filter_map(|p| side.get(p)).sum();
            if available < o.lots {
                levels.clear();
            }
        }
        let mut fills = Vec::new();
        let mut remaining = o.lots;
        for p in levels {
            if remaining == 0 {
                break;
            }
            // Accounts' resting orders first (time priority), then anonymous liquidity.
            let ids: Vec<u64> = match o.dir {
                Dir::Buy => self.insts[i].user_asks.get(&p).cloned().unwrap_or_default(),
                Dir::Sell => self.insts[i].user_bids.get(&p).cloned().unwrap_or_default(),
            };
            for id in ids {
                if remaining == 0 {
                    break;
                }
                let Some(maker) = self.orders.get_mut(&id) else {
                    continue;
                };
                let q = remaining.min(maker.remaining());
                maker.filled += q;
                maker.notional += i128::from(p) * i128::from(q);
                maker.updated = now_ms;
                if maker.remaining() == 0 {
                    maker.state = OrderState::Filled;
                    self.unrest(id);
                }
                remaining -= q;
                let mut fill = self.trade(i, p, q, o.dir, now_ms);
                fill.maker = Some(id);
                fill.taker = Some(seq);
                fills.push(fill);
            }
            if remaining == 0 {
                break;
            }
            let anon = match o.dir {
                Dir::Buy => self.insts[i].asks.get(&p).copied(),
                Dir::Sell => self.insts[i].bids.get(&p).copied(),
            };
            if let Some(lots) = anon {
                let q = remaining.min(lots);
                let side = match o.dir {
                    Dir::Buy => &mut self.insts[i].asks,
                    Dir::Sell => &mut self.insts[i].bids,
                };
                if q == lots {
                    side.remove(&p);
                } else {
                    side.insert(p, lots - q);
                }
                remaining -= q;
                let mut fill = self.trade(i, p, q, o.dir, now_ms);
                fill.taker = Some(seq);
                fills.push(fill);
            }
        }
        let filled = o.lots - remaining;
        let rests = !o.market && matches!(o.tif, Tif::Gtc | Tif::Gtd) && remaining > 0;
        {
            let order = self.orders.get_mut(&seq).expect("just inserted");
            order.filled = filled;
            order.notional = fills
                .iter()
                .map(|f| i128::from(f.price) * i128::from(f.lots))
                .sum();
            order.state = if remaining == 0 {
                OrderState::Filled
            } else if rests {
                OrderState::Open
            } else {
                OrderState::Cancelled
            };
            if order.market && filled > 0 {
                // Market orders report the worst price reached.
                order.price = fills.last().map_or(0, |f| f.price);
            }
        }
        if rests {
            let p = limit.unwrap_or(0);
            let inst = &mut self.insts[i];
            match o.dir {
                Dir::Buy => inst.user_bids.entry(p).or_default().push(seq),
                Dir::Sell => inst.user_asks.entry(p).or_default().push(seq),
            }
        }
        if rests || !fills.is_empty() {
            self.bump(i, now_ms);
        }
        Ok((seq, fills))
    }

    /// Take a resting order off its level.
    fn unrest(&mut self, id: u64) {
        let Some(o) = self.orders.get(&id) else {
            return;
        };
        let (p, dir, i) = (o.price, o.dir, o.inst);
        let inst = &mut self.insts[i];
        let side = match dir {
            Dir::Buy => &mut inst.user_bids,
            Dir::Sell => &mut inst.user_asks,
        };
        if let Some(ids) = side.get_mut(&p) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                side.remove(&p);
            }
        }
    }

    /// Cancel an open order; whether it was open.
    pub(crate) fn cancel(&mut self, id: u64, reason: &'static str, now_ms: u64) -> bool {
        match self.orders.get(&id) {
            Some(o) if o.is_open() => {}
            _ => return false,
        }
        self.unrest(id);
        let o = self.orders.get_mut(&id).expect("checked");
        o.state = OrderState::Cancelled;
        o.cancel_reason = Some(reason);
        o.updated = now_ms;
        let i = o.inst;
        self.bump(i, now_ms);
        true
    }

    /// The order object (reference §5.3).
    pub(crate) fn order_json(&self, id: u64) -> Value {
        let o = &self.orders[&id];
        let inst = &self.insts[o.inst];
        let average = if o.filled > 0 {
            let avg_ticks = o.notional as f64 / o.filled as f64;
            round(avg_ticks * inst.spec.tick_size, inst.price_dp + 2)
        } else {
            0.0
        };
        let amount = inst.amt(o.lots);
        let mut v = json!({
            "order_id": o.order_id,
            "order_state": o.state.as_str(),
            "order_type": if o.market { "market" } else { "limit" },
            "time_in_force": o.tif.as_str(),
            "instrument_name": inst.spec.name,
            "direction": o.dir.as_str(),
            "price": if o.market { json!("market_price") } else { json!(inst.px(o.price)) },
            "amount": amount,
            "contracts": round(amount / inst.spec.contract_size, inst.amount_dp + 2),
            "filled_amount": inst.amt(o.filled),
            "average_price": average,
            "label": o.label,
            "post_only": o.post_only,
            "reject_post_only": o.reject_post_only,
            "reduce_only": o.reduce_only,
            "api": true,
            "web": false,
            "creation_timestamp": o.created,
            "last_update_timestamp": o.updated,
            "replaced": false,
            "is_liquidation": false,
            "risk_reducing": false,
            "mmp": false,
            "max_show": amount,
        });
        if let Some(reason) = o.cancel_reason {
            v["cancel_reason"] = json!(reason);
        }
        v
    }
}

/// Level actions turning `old` into `new`, best first (bids descending, asks ascending).
fn diff(old: &Levels, new: &Levels, bids: bool) -> Vec<(&'static str, i64, i64)> {
    let mut out = Vec::new();
    for (t, l) in new {
        match old.get(t) {
            None => out.push(("new", *t, *l)),
            Some(o) if o != l => out.push(("change", *t, *l)),
            Some(_) => {}
        }
    }
    for t in old.keys() {
        if !new.contains_key(t) {
            out.push(("delete", *t, 0));
        }
    }
    out.sort_by_key(|(_, t, _)| if bids { -*t } else { *t });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market() -> Market {
        Market::new(
            &[
                InstrumentSpec::perpetual("BTC", 65_000.0),
                InstrumentSpec::perpetual("ETH", 3_200.0),
            ],
            7,
            10,
            1_700_000_000_000,
        )
    }

    fn order(dir: Dir, price: Option<i64>, lots: i64) -> NewOrder {
        NewOrder {
            account: "a".into(),
            conn: 0,
            inst: 0,
            dir,
            market: price.is_none(),
            price: price.unwrap_or(0),
            lots,
            label: String::new(),
            tif: Tif::Gtc,
            post_only: false,
            reject_post_only: false,
            reduce_only: false,
        }
    }

    #[test]
    fn books_are_uncrossed_and_change_ids_increase() {
        let mut m = market();
        let mut last = m.insts[0].change_id;
        for n in 0..500 {
            let (changed, _) = m.tick(1_700_000_000_000 + n * 50);
            for i in 0..2 {
                let (bb, ba) = m.best(i);
                let (bb, ba) = (bb.unwrap().0, ba.unwrap().0);
                assert!(bb < ba, "crossed at tick {n}");
            }
            if changed.contains(&0) {
                assert!(m.insts[0].change_id > last);
                last = m.insts[0].change_id;
            }
        }
    }

    #[test]
    fn changes_chain_onto_the_snapshot() {
        let mut m = market();
        let snap = m.book_snapshot(0, Interval::Raw);
        assert_eq!(snap["type"], "snapshot");
        assert!(snap.get("prev_change_id").is_none());
        let mut book: BTreeMap<String, f64> = BTreeMap::new();
        for l in snap["bids"].as_array().unwrap() {
            book.insert(format!("b{}", l[1]), l[2].as_f64().unwrap());
        }
        let mut last = snap["change_id"].as_u64().unwrap();
        for n in 0..50 {
            m.tick(1_700_000_000_000 + n * 50);
            if let Some(c) = m.book_change(0, Interval::Raw) {
                assert_eq!(c["prev_change_id"].as_u64(), Some(last));
                let id = c["change_id"].as_u64().unwrap();
                assert!(id > last);
                last = id;
                for l in c["bids"].as_array().unwrap() {
                    let key = format!("b{}", l[1]);
                    match l[0].as_str().unwrap() {
                        "new" => assert!(book.insert(key, l[2].as_f64().unwrap()).is_none()),
                        "change" => assert!(book.insert(key, l[2].as_f64().unwrap()).is_some()),
                        "delete" => assert!(book.remove(&key).is_some()),
                        a => panic!("{a}"),
                    }
                }
            }
        }
        let bids = m.book(0).0;
        assert_eq!(book.len(), bids.len());
    }

    #[test]
    fn crossing_orders_fill_and_resting_orders_show_in_the_book() {
        let mut m = market();
        let (_, ba) = m.best(0);
        let (ask, ask_lots) = ba.unwrap();
        // A market buy larger than the best ask walks the book.
        let (seq, fills) = m.place(order(Dir::Buy, None, ask_lots + 1), 1).unwrap();
        assert_eq!(fills[0].price, ask);
        assert_eq!(fills.iter().map(|f| f.lots).sum::<i64>(), ask_lots + 1);
        assert!(fills[1].price > ask);
        assert_eq!(m.orders[&seq].state, OrderState::Filled);
        let j = m.order_json(seq);
        assert_eq!(j["order_type"], "market");
        assert_eq!(j["price"], "market_price");

        // A passive bid rests and appears in the book.
        let (bb, _) = m.best(0);
        let bid = bb.unwrap().0 - 3;
        let before = m.book(0).0.get(&bid).copied().unwrap_or(0);
        let (rest, fills) = m.place(order(Dir::Buy, Some(bid), 4), 2).unwrap();
        assert!(fills.is_empty());
        assert_eq!(m.book(0).0[&bid], before + 4);
        assert!(m.orders[&rest].is_open());
        // A sell from another account at that price trades against anonymous bids first
        // (better prices), and an own crossing sell is refused.
        let mut own = order(Dir::Sell, Some(bid), 1);
        own.account = "a".into();
        assert_eq!(m.place(own, 3).unwrap_err().code, 10003);
        assert!(m.cancel(rest, "user_request", 4));
        assert!(!m.cancel(rest, "user_request", 5));
        assert_eq!(m.book(0).0.get(&bid).copied().unwrap_or(0), before);
    }

    #[test]
    fn post_only_moves_or_rejects() {
        let mut m = market();
        let (_, ba) = m.best(0);
        let ask = ba.unwrap().0;
        let mut o = order(Dir::Buy, Some(ask + 2), 1);
        o.post_only = true;
        let (seq, fills) = m.place(o, 1).unwrap();
        assert!(fills.is_empty());
        assert_eq!(m.orders[&seq].price, ask - 1);
        let mut o = order(Dir::Buy, Some(ask), 1);
        o.account = "b".into();
        o.post_only = true;
        o.reject_post_only = true;
        assert_eq!(m.place(o, 2).unwrap_err().code, 11054);
    }

    #[test]
    fn fill_or_kill_and_ioc() {
        let mut m = market();
        let (_, ba) = m.best(0);
        let (ask, lots) = ba.unwrap();
        let mut o = order(Dir::Buy, Some(ask), lots + 1);
        o.tif = Tif::Fok;
        let (seq, fills) = m.place(o, 1).unwrap();
        assert!(fills.is_empty());
        assert_eq!(m.orders[&seq].state, OrderState::Cancelled);
        let mut o = order(Dir::Buy, Some(ask), lots + 1);
        o.tif = Tif::Ioc;
        let (seq, fills) = m.place(o, 2).unwrap();
        assert_eq!(fills.iter().map(|f| f.lots).sum::<i64>(), lots);
        assert_eq!(m.orders[&seq].state, OrderState::Cancelled);
        assert_eq!(m.orders[&seq].filled, lots);
    }
}
