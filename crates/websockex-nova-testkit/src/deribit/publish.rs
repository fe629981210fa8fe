//! Notifications: the market tick, interval flushes, private channels, first messages on
//! subscribe.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use tokio::time::Instant;

use super::channel::{Channel, Interval, Sel};
use super::market::round;
use super::state::{notification, State};

impl State {
    /// One market tick: the market moves, fills of resting orders are settled and notified,
    /// and `raw` channels publish.
    pub(crate) fn market_tick(&mut self, now: Instant) {
        let now_ms = self.clock.ms(now);
        let (_, fills) = self.market.tick(now_ms);
        if !fills.is_empty() {
            let ups = self.settle(&fills, now);
            self.emit_updates(ups);
        }
        let all: Vec<usize> = (0..self.market.insts.len()).collect();
        self.flush(Interval::Raw, &all, now);
    }

    /// Publish interval `iv` for these instruments: book changes (with the gap and duplicate
    /// faults), grouped books, tickers, trades, quotes; and, for `100ms`/`agg2`, the private
    /// notifications batched for that interval.
    pub(crate) fn flush(&mut self, iv: Interval, insts: &[usize], now: Instant) {
        let now_ms = self.clock.ms(now);
        let active: BTreeMap<String, Channel> = self
            .conns
            .values()
            .flat_map(|c| {
                c.subs
                    .iter()
                    .filter(|(_, s)| s.active)
                    .map(|(n, s)| (n.clone(), s.ch.clone()))
            })
            .collect();
        let ivs = iv.as_str();
        let mut trades_by_inst: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
        for &i in insts {
            let name = self.market.insts[i].spec.name.clone();
            let book = format!("book.{name}.{ivs}");
            let change = self.market.book_change(i, iv);
            let changed = change.is_some();
            if let Some(data) = change {
                if active.contains_key(&book) {
                    let change_id = data["change_id"].as_u64().unwrap_or(0);
                    if std::mem::take(&mut self.market.insts[i].gap[iv.idx()]) {
                        self.record_book_fault(true, i, &book, change_id, now);
                    } else {
                        let text = notification(&book, &data);
                        self.send_channel(&book, &text);
                        if std::mem::take(&mut self.market.insts[i].dup[iv.idx()]) {
                            self.send_channel(&book, &text);
                            self.record_book_fault(false, i, &book, change_id, now);
                        }
                    }
                }
            }
            if changed {
                for (ch_name, ch) in &active {
                    if let Channel::BookGrouped {
                        inst,
                        group,
                        depth,
                        iv: civ,
                    } = ch
                    {
                        if *inst == i && *civ == iv {
                            let w = self.market.book_window(i, *group, *depth);
                            self.send_channel(ch_name, &notification(ch_name, &w));
                        }
                    }
                }
            }
            if self.market.take_ticker_dirty(i, iv) {
                let ticker = format!("ticker.{name}.{ivs}");
                if active.contains_key(&ticker) {
                    let t = self.market.ticker(i, now_ms);
                    self.send_channel(&ticker, &notification(&ticker, &t));
                }
                let perpetual = format!("perpetual.{name}.{ivs}");
                if active.contains_key(&perpetual) {
                    let p = self.market.perpetual(i, now_ms);
                    self.send_channel(&perpetual, &notification(&perpetual, &p));
                }
            }
            let trades = self.market.take_trades(i, iv);
            if !trades.is_empty() {
                let ch = format!("trades.{name}.{ivs}");
                if active.contains_key(&ch) {
                    self.send_channel(&ch, &notification(&ch, &json!(trades)));
                }
                trades_by_inst.insert(i, trades);
            }
            if iv == Interval::Raw {
                let ch = format!("quote.{name}");
                if active.contains_key(&ch) {
                    if let Some(q) = self.market.quote_change(i, now_ms) {
                        self.send_channel(&ch, &notification(&ch, &q));
                    }
                }
            }
        }
        if !trades_by_inst.is_empty() {
            for (ch_name, ch) in &active {
                let Channel::Trades(sel, civ) = ch else {
                    continue;
                };
                if *civ != iv || matches!(sel, Sel::Inst(_)) {
                    continue;
                }
                let items: Vec<&Value> = trades_by_inst
                    .iter()
                    .filter(|(i, _)| sel.matches(&self.market, **i))
                    .flat_map(|(_, v)| v.iter())
                    .collect();
                if !items.is_empty() {
                    let text = notification(ch_name, &json!(items));
                    self.send_channel(ch_name, &text);
                }
            }
        }
        if iv != Interval::Raw {
            self.flush_pending(iv);
        }
    }

    /// Send the batched private notifications of interval `iv` (arrays).
    fn flush_pending(&mut self, iv: Interval) {
        let limit = self.queue_limit();
        let State { conns, rec, .. } = self;
        for c in conns.values_mut() {
            let due: Vec<String> = c
                .pending
                .iter()
                .filter(|(_, (piv, items))| *piv == iv && !items.is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            for name in due {
                let Some((_, items)) = c.pending.remove(&name) else {
                    continue;
                };
                if c.is_subscribed(&name) {
                    c.enqueue(notification(&name, &Value::Array(items)), limit);
                    *rec.published.entry(name).or_default() += 1;
                }
            }
        }
    }

    /// `deribit_price_index.*`.
    pub(crate) fn publish_index(&mut self, now: Instant) {
        let now_ms = self.clock.ms(now);
        for k in 0..self.market.indexes.len() {
            let idx = &self.market.indexes[k];
            let ch = format!("deribit_price_index.{}", idx.name);
            if !self.conns.values().any(|c| c.is_subscribed(&ch)) {
                continue;
            }
            let data = json!({
                "index_name": idx.name,
                "price": round(idx.price, 2),
                "timestamp": now_ms,
            });
            self.send_channel(&ch, &notification(&ch, &data));
        }
    }

    /// `platform_state` to every subscriber.
    pub(crate) fn platform_state(&mut self, data: &Value) {
        self.send_channel("platform_state", &notification("platform_state", data));
    }

    /// Notify `account`'s connections of changed orders, user trades and portfolios: `raw`
    /// channels at once (orders one object each, trades an array), others batched for their
    /// interval (arrays).
    pub(crate) fn emit_private(
        &mut self,
        account: &str,
        orders: &[(usize, Value)],
        trades: &[(usize, Value)],
        currencies: &BTreeSet<String>,
    ) {
        let now = Instant::now();
        let summaries: BTreeMap<&String, Value> = currencies
            .iter()
            .map(|c| (c, self.summary(account, c, false, now)))
            .collect();
        let limit = self.queue_limit();
        let State {
            conns, market, rec, ..
        } = self;
        for c in conns.values_mut() {
            if c.auth.as_ref().is_none_or(|a| a.account != account) {
                continue;
            }
            let mut sends: Vec<(String, String)> = Vec::new();
            let mut batched: Vec<(String, Interval, Vec<Value>)> = Vec::new();
            for (name, sub) in c.subs.iter().filter(|(_, s)| s.active) {
                let (items, iv, one_each) = match &sub.ch {
                    Channel::UserOrders(sel, iv) => (
                        orders
                            .iter()
                            .filter(|(i, _)| sel.matches(market, *i))
                            .map(|(_, v)| v.clone())
                            .collect::<Vec<_>>(),
                        *iv,
                        true,
                    ),
                    Channel::UserTrades(sel, iv) => (
                        trades
                            .iter()
                            .filter(|(i, _)| sel.matches(market, *i))
                            .map(|(_, v)| v.clone())
                            .collect(),
                        *iv,
                        false,
                    ),
                    Channel::UserPortfolio(cur) => {
                        if let Some(s) = summaries.get(cur) {
                            sends.push((name.clone(), notification(name, s)));
                        }
                        continue;
                    }
                    _ => continue,
                };
                if items.is_empty() {
                    continue;
                }
                match (iv, one_each) {
                    (Interval::Raw, true) => {
                        for it in items {
                            sends.push((name.clone(), notification(name, &it)));
                        }
                    }
                    (Interval::Raw, false) => {
                        sends.push((name.clone(), notification(name, &Value::Array(items))));
                    }
                    _ => batched.push((name.clone(), iv, items)),
                }
            }
            for (name, text) in sends {
                c.enqueue(text, limit);
                *rec.published.entry(name).or_default() += 1;
            }
            for (name, iv, items) in batched {
                c.pending
                    .entry(name)
                    .or_insert_with(|| (iv, Vec::new()))
                    .1
                    .extend(items);
            }
        }
    }

    /// The acks of these channels were written: notifications flow from now on, and those
    /// with a first message get it (book snapshot, grouped window, portfolio, maintenance).
    pub(crate) fn activate(&mut self, conn: usize, names: &[String], now: Instant) {
        for name in names {
            let Some(sub) = self.conns.get_mut(&conn).and_then(|c| c.subs.get_mut(name)) else {
                continue;
            };
            if sub.active {
                continue;
            }
            sub.active = true;
            let first = match sub.ch.clone() {
                Channel::Book(i, iv) => Some(self.market.book_snapshot(i, iv)),
                Channel::BookGrouped {
                    inst, group, depth, ..
                } => Some(self.market.book_window(inst, group, depth)),
                Channel::UserPortfolio(cur) => self
                    .account_of(conn)
                    .map(str::to_owned)
                    .map(|a| self.summary(&a, &cur, false, now)),
                Channel::PlatformState if self.faults.maintenance => {
                    Some(json!({ "maintenance": true }))
                }
                _ => None,
            };
            if let Some(data) = first {
                self.send_to(conn, Some(name), notification(name, &data));
            }
        }
    }
}
