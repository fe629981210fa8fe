//! Deribit notifications end to end: a payload is wrapped in a `subscription`
//! notification, classified by the core's JSON-RPC handler, decoded into the adapter's
//! typed structs (`BookData`, `Ticker`, `Trade`, `Order`, `AccountSummary`, ...), and book
//! messages are applied to an `OrderBook`, whose state is compared after every message with
//! a model written from the module docs (continuity by `prev_change_id`, gaps typed and
//! sticky until the next snapshot, bids best-first descending, asks ascending, zero
//! amounts and deletes remove levels, empty views while resyncing).
//!
//! Book messages are structured (a small price grid, change ids that follow or jump) so
//! sequences stay in sync long enough to matter; `Direct` messages skip JSON and carry
//! NaN, infinities and -0.0. Also: `errors::lookup`/`action` on any code, `channels`.
#![no_main]

use std::cmp::Ordering;
use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use websockex_nova::behaviour::{Classified, MessageHandler};
use websockex_nova::jsonrpc::{JsonRpcConfig, JsonRpcHandler};
use websockex_nova::{Frame, RawJson};
use websockex_nova_deribit::book::{Applied, OrderBook};
use websockex_nova_deribit::channels::{self, Interval};
use websockex_nova_deribit::errors::{self, ERROR_CODES};
use websockex_nova_deribit::types::{
    AccountSummary, BookData, BookKind, BookLevel, Instrument, LevelAction, Order,
    OrderBookSnapshot, OrderResult, PlatformState, Ticker, Trade,
};
use websockex_nova_fuzz::{Float, Num, Str, J};

#[derive(Debug, Arbitrary)]
enum ActSpec {
    New,
    Change,
    Delete,
    Bogus(Str),
}

#[derive(Debug, Arbitrary)]
enum PriceSpec {
    Grid(u8),
    Raw(Num),
}

#[derive(Debug, Arbitrary)]
enum AmountSpec {
    Zero,
    ZeroFloat,
    Int(u16),
    Exp(u8),
    Raw(Num),
    /// `[action, price]` (old feeds' deletes).
    Absent,
}

#[derive(Debug, Arbitrary)]
struct LevelSpec {
    act: ActSpec,
    price: PriceSpec,
    amount: AmountSpec,
}

#[derive(Debug, Arbitrary)]
enum KindSpec {
    Snapshot,
    Change,
    Absent,
    Other(Str),
}

#[derive(Debug, Arbitrary)]
enum PrevSpec {
    Absent,
    Null,
    Last,
    Abs(u64),
}

#[derive(Debug, Arbitrary)]
enum CidSpec {
    Jump(u16),
    Abs(u64),
}

#[derive(Debug, Arbitrary)]
struct BookSpec {
    kind: KindSpec,
    timestamp: u64,
    cid: CidSpec,
    prev: PrevSpec,
    bids: Vec<LevelSpec>,
    asks: Vec<LevelSpec>,
    extra: Option<(Str, J)>,
}

#[derive(Debug, Arbitrary)]
struct DirectLevel {
    act: u8,
    price: Float,
    amount: Float,
}

#[derive(Debug, Arbitrary)]
struct DirectBook {
    kind: Option<bool>,
    timestamp: u64,
    cid: CidSpec,
    prev: PrevSpec,
    bids: Vec<DirectLevel>,
    asks: Vec<DirectLevel>,
}

#[derive(Debug, Arbitrary)]
enum Msg {
    Book(BookSpec),
    Direct(DirectBook),
    Invalidate,
    Payload(u8, J),
    ErrorCode(i64),
    Channel(String, u8),
}

fn grid(i: u8) -> f64 {
    36_440.0 + f64::from(i % 24) * 0.5
}

impl LevelSpec {
    /// The JSON text and whether it is a level as the reference describes one.
    fn render(&self, out: &mut String) -> bool {
        let mut ok = true;
        out.push('[');
        match &self.act {
            ActSpec::New => out.push_str("\"new\""),
            ActSpec::Change => out.push_str("\"change\""),
            ActSpec::Delete => out.push_str("\"delete\""),
            ActSpec::Bogus(s) => {
                ok = false;
                s.render(out)
            }
        }
        out.push(',');
        match &self.price {
            PriceSpec::Grid(i) => out.push_str(&format!("{:?}", grid(*i))),
            PriceSpec::Raw(n) => {
                ok = false;
                n.render(out)
            }
        }
        match &self.amount {
            AmountSpec::Zero => out.push_str(",0"),
            AmountSpec::ZeroFloat => out.push_str(",0.0"),
            AmountSpec::Int(v) => out.push_str(&format!(",{v}")),
            AmountSpec::Exp(v) => out.push_str(&format!(",{}.{}e3", v / 10, v % 10)),
            AmountSpec::Raw(n) => {
                ok = false;
                out.push(',');
                n.render(out)
            }
            AmountSpec::Absent => ok &= matches!(self.act, ActSpec::Delete),
        }
        out.push(']');
        ok
    }
}

fn cid(spec: &CidSpec, last: Option<u64>) -> u64 {
    match spec {
        CidSpec::Jump(k) => last.unwrap_or(1000).saturating_add(1 + u64::from(*k)),
        CidSpec::Abs(v) => *v,
    }
}

fn prev(spec: &PrevSpec, last: Option<u64>) -> Option<Option<u64>> {
    match spec {
        PrevSpec::Absent => None,
        PrevSpec::Null => Some(None),
        PrevSpec::Last => Some(Some(last.unwrap_or(0))),
        PrevSpec::Abs(v) => Some(Some(*v)),
    }
}

impl BookSpec {
    fn render(&self, last: Option<u64>) -> (String, bool) {
        let mut ok = true;
        let mut s = String::from("{");
        match &self.kind {
            KindSpec::Snapshot => s.push_str("\"type\":\"snapshot\","),
            KindSpec::Change => s.push_str("\"type\":\"change\","),
            KindSpec::Absent => {}
            KindSpec::Other(k) => {
                ok = false;
                s.push_str("\"type\":");
                k.render(&mut s);
                s.push(',');
            }
        }
        s.push_str(&format!(
            "\"timestamp\":{},\"instrument_name\":\"BTC-PERPETUAL\",\"change_id\":{}",
            self.timestamp,
            cid(&self.cid, last)
        ));
        match prev(&self.prev, last) {
            None => {}
            Some(None) => s.push_str(",\"prev_change_id\":null"),
            Some(Some(p)) => s.push_str(&format!(",\"prev_change_id\":{p}")),
        }
        for (key, side) in [("bids", &self.bids), ("asks", &self.asks)] {
            s.push_str(&format!(",\"{key}\":["));
            for (i, l) in side.iter().take(32).enumerate() {
                if i > 0 {
                    s.push(',');
                }
                ok &= l.render(&mut s);
            }
            s.push(']');
        }
        if let Some((k, v)) = &self.extra {
            // Unknown fields are ignored ... unless they repeat a known one.
            let key = k.value();
            ok &= ![
                "type",
                "timestamp",
                "instrument_name",
                "change_id",
                "prev_change_id",
                "bids",
                "asks",
            ]
            .contains(&key.as_str());
            s.push(',');
            k.render(&mut s);
            s.push(':');
            let mut t = String::new();
            v.render(&mut t);
            ok &= serde_json::from_str::<serde::de::IgnoredAny>(&t).is_ok();
            s.push_str(&t);
        }
        s.push('}');
        (s, ok)
    }
}

impl DirectBook {
    fn build(&self, last: Option<u64>) -> BookData {
        let level = |l: &DirectLevel| BookLevel {
            action: [LevelAction::New, LevelAction::Change, LevelAction::Delete]
                [l.act as usize % 3],
            price: l.price.get(),
            amount: l.amount.get(),
        };
        BookData {
            kind: self.kind.map(|s| {
                if s {
                    BookKind::Snapshot
                } else {
                    BookKind::Change
                }
            }),
            instrument_name: "BTC-PERPETUAL".into(),
            timestamp: self.timestamp,
            change_id: cid(&self.cid, last),
            prev_change_id: prev(&self.prev, last).flatten(),
            bids: self.bids.iter().take(32).map(level).collect(),
            asks: self.asks.iter().take(32).map(level).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Key(f64);
impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// The book as the docs describe it.
#[derive(Default)]
struct Model {
    bids: BTreeMap<Key, f64>,
    asks: BTreeMap<Key, f64>,
    change_id: Option<u64>,
    synced: bool,
    timestamp: u64,
}

impl Model {
    fn apply(&mut self, d: &BookData) -> Applied {
        let snapshot = match d.kind {
            Some(k) => k == BookKind::Snapshot,
            None => d.prev_change_id.is_none(),
        };
        assert_eq!(d.is_snapshot(), snapshot);
        if snapshot {
            self.bids.clear();
            self.asks.clear();
        } else if !self.synced {
            return Applied::Ignored;
        } else {
            // A change without prev_change_id reads as prev 0 (see README, note N1).
            let p = d.prev_change_id.unwrap_or(0);
            if self.change_id != Some(p) {
                self.synced = false;
                return Applied::Gap {
                    expected: self.change_id.unwrap_or(0),
                    got: p,
                };
            }
        }
        for (side, levels) in [(&mut self.bids, &d.bids), (&mut self.asks, &d.asks)] {
            for l in levels {
                if l.action == LevelAction::Delete || l.amount == 0.0 {
                    side.remove(&Key(l.price));
                } else {
                    side.insert(Key(l.price), l.amount);
                }
            }
        }
        self.change_id = Some(d.change_id);
        self.timestamp = d.timestamp;
        if snapshot {
            self.synced = true;
            Applied::Snapshot
        } else {
            Applied::Change
        }
    }
}

fn same(a: &[(f64, f64)], b: &[(f64, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0.to_bits() == y.0.to_bits() && x.1.to_bits() == y.1.to_bits())
}

fn check(book: &OrderBook, m: &Model) {
    assert_eq!(book.is_resyncing(), !m.synced);
    assert_eq!(book.change_id(), m.change_id);
    assert_eq!(book.timestamp(), m.timestamp);
    assert_eq!(book.instrument(), "BTC-PERPETUAL");
    let bids: Vec<_> = book.bids().collect();
    let asks: Vec<_> = book.asks().collect();
    if m.synced {
        let want_b: Vec<_> = m.bids.iter().rev().map(|(k, a)| (k.0, *a)).collect();
        let want_a: Vec<_> = m.asks.iter().map(|(k, a)| (k.0, *a)).collect();
        assert!(same(&bids, &want_b), "bids {bids:?} want {want_b:?}");
        assert!(same(&asks, &want_a), "asks {asks:?} want {want_a:?}");
    } else {
        assert!(
            bids.is_empty() && asks.is_empty(),
            "views must be empty while resyncing"
        );
    }
    assert!(
        bids.windows(2)
            .all(|w| w[0].0.total_cmp(&w[1].0) == Ordering::Greater),
        "bids not descending"
    );
    assert!(
        asks.windows(2)
            .all(|w| w[0].0.total_cmp(&w[1].0) == Ordering::Less),
        "asks not ascending"
    );
    assert!(
        bids.iter().chain(&asks).all(|l| l.1 != 0.0),
        "zero-amount level kept"
    );
    let bb = book.best_bid();
    let ba = book.best_ask();
    assert_eq!(
        bb.map(|l| (l.0.to_bits(), l.1.to_bits())),
        bids.first().map(|l| (l.0.to_bits(), l.1.to_bits()))
    );
    assert_eq!(
        ba.map(|l| (l.0.to_bits(), l.1.to_bits())),
        asks.first().map(|l| (l.0.to_bits(), l.1.to_bits()))
    );
}

/// Wraps `data` in a notification and classifies it as the client would.
fn notify(h: &mut JsonRpcHandler, channel: &str, data: &str) -> Option<RawJson> {
    let text = format!(
        r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":{},"data":{data}}}}}"#,
        Value::from(channel)
    );
    let valid = serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok();
    match h.classify(&Frame::text(text)) {
        Classified::Notification {
            channel: c,
            data: d,
        } => {
            assert!(valid);
            assert_eq!(c.as_str(), channel);
            assert_eq!(d.as_str(), data.trim());
            Some(d)
        }
        Classified::Other => {
            assert!(!valid, "a valid notification was not recognised: {data}");
            None
        }
        other => panic!("{other:?}"),
    }
}

fn decode_checked<T: serde::de::DeserializeOwned>(raw: &RawJson, check: impl FnOnce(&T, &Value)) {
    if let Ok(t) = raw.decode_owned::<T>() {
        if let Some(v) = websockex_nova_fuzz::reparse(raw) {
            // serde's derived structs also accept positional arrays (`["BTC", 1.5]`):
            // field-by-name checks only apply to objects.
            let is_vec = std::any::type_name::<T>().starts_with("alloc::vec::Vec");
            if is_vec || v.is_object() {
                check(&t, &v);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = JsonRpcHandler::new(&JsonRpcConfig::default());
    let mut book = OrderBook::new("BTC-PERPETUAL");
    let mut model = Model::default();
    check(&book, &model);
    if data.first() == Some(&b'{') {
        // Raw form: whole notifications, one per line (the seed corpus is real traffic).
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        for line in s.split('\n').take(32) {
            raw_line(&mut h, &mut book, &mut model, line);
            check(&book, &model);
        }
        return;
    }
    let Ok(msgs) = arbitrary::Unstructured::new(data).arbitrary::<Vec<Msg>>() else {
        return;
    };
    for msg in msgs.iter().take(32) {
        match msg {
            Msg::Book(spec) => {
                let (data, well_formed) = spec.render(model.change_id);
                let Some(raw) = notify(&mut h, "book.BTC-PERPETUAL.100ms", &data) else {
                    assert!(!well_formed, "{data}");
                    continue;
                };
                // As BookStream does: borrowed decode, skip what does not decode.
                let decoded = raw.decode::<BookData>();
                let Ok(d) = decoded else {
                    assert!(
                        !well_formed,
                        "well-formed book message refused: {data}: {decoded:?}"
                    );
                    continue;
                };
                // (An ignored extra field may hold a number serde_json cannot: F8.)
                if let Some(v) = websockex_nova_fuzz::reparse(&raw) {
                    assert_eq!(d.change_id, v["change_id"].as_u64().unwrap());
                    assert_eq!(
                        d.prev_change_id,
                        v.get("prev_change_id").and_then(Value::as_u64)
                    );
                    assert_eq!(d.bids.len(), v["bids"].as_array().map_or(0, Vec::len));
                    assert_eq!(d.asks.len(), v["asks"].as_array().map_or(0, Vec::len));
                    for (l, lv) in d.bids.iter().chain(&d.asks).zip(
                        v["bids"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .chain(v["asks"].as_array().into_iter().flatten()),
                    ) {
                        assert_eq!(l.price.to_bits(), lv[1].as_f64().unwrap().to_bits());
                        assert_eq!(
                            l.amount.to_bits(),
                            lv.get(2).map_or(0.0, |a| a.as_f64().unwrap()).to_bits()
                        );
                    }
                }
                let want = model.apply(&d);
                assert_eq!(book.apply(&d), want, "{data}");
            }
            Msg::Direct(spec) => {
                let d = spec.build(model.change_id);
                let want = model.apply(&d);
                assert_eq!(book.apply(&d), want);
            }
            Msg::Invalidate => {
                book.invalidate();
                model.synced = false;
            }
            Msg::Payload(which, j) => {
                let data = j.to_text();
                let ch = [
                    "ticker.BTC-PERPETUAL.100ms",
                    "trades.BTC-PERPETUAL.100ms",
                    "user.orders.BTC-PERPETUAL.raw",
                    "user.orders.BTC-PERPETUAL.100ms",
                    "user.portfolio.btc",
                    "platform_state",
                    "book.BTC-PERPETUAL.none.10.100ms",
                ][*which as usize % 7];
                let Some(raw) = notify(&mut h, ch, &data) else {
                    continue;
                };
                let name_ts = |name: &str, ts: Option<u64>, v: &Value| {
                    if !v.is_object() {
                        return;
                    }
                    assert_eq!(Some(name), v["instrument_name"].as_str());
                    if let Some(ts) = ts {
                        assert_eq!(Some(ts), v["timestamp"].as_u64());
                    }
                };
                decode_checked::<Ticker>(&raw, |t, v| {
                    name_ts(&t.instrument_name, Some(t.timestamp), v);
                    assert_eq!(t.best_bid_price, v["best_bid_price"].as_f64());
                });
                decode_checked::<Vec<Trade>>(&raw, |t, v| {
                    for (t, v) in t.iter().zip(v.as_array().unwrap()) {
                        name_ts(&t.instrument_name, Some(t.timestamp), v);
                    }
                });
                decode_checked::<Order>(&raw, |o, v| {
                    name_ts(&o.instrument_name, None, v);
                    assert_eq!(o.price, v["price"].as_f64(), "price or market_price");
                });
                decode_checked::<Vec<Order>>(&raw, |_, _| {});
                decode_checked::<OrderResult>(&raw, |_, _| {});
                decode_checked::<AccountSummary>(&raw, |a, v| {
                    assert_eq!(Some(a.currency.as_str()), v["currency"].as_str())
                });
                decode_checked::<PlatformState>(&raw, |_, _| {});
                decode_checked::<Instrument>(&raw, |i, v| name_ts(&i.instrument_name, None, v));
                decode_checked::<OrderBookSnapshot>(&raw, |s, v| {
                    name_ts(&s.instrument_name, Some(s.timestamp), v);
                    assert_eq!(s.bids.len(), v["bids"].as_array().map_or(0, Vec::len));
                });
                // Grouped book channels carry BookData without actions: never a panic.
                let _ = raw.decode::<BookData>();
            }
            Msg::ErrorCode(code) => {
                let row = errors::lookup(*code);
                assert_eq!(row.is_some(), ERROR_CODES.iter().any(|e| e.code == *code));
                if let Some(r) = row {
                    assert_eq!(r.code, *code);
                    assert_eq!(errors::action(*code), r.action);
                } else {
                    assert_eq!(errors::action(*code), errors::Action::Surface);
                }
                let _ = errors::is_auth_refusal(*code);
            }
            Msg::Channel(s, i) => {
                let iv = [Interval::Raw, Interval::Ms100, Interval::Agg2][*i as usize % 3];
                assert_eq!(channels::is_private(s), s.starts_with("user."));
                assert_eq!(
                    channels::needs_auth(s),
                    s.starts_with("user.") || s.ends_with(".raw")
                );
                let t = channels::ticker(s, iv);
                assert!(t.starts_with("ticker.") && t.ends_with(iv.as_str()));
                assert_eq!(channels::needs_auth(&t), iv == Interval::Raw);
                assert!(channels::book(s, iv).contains(s.as_str()));
                assert!(channels::trades(s, iv).contains(s.as_str()));
                let uo = channels::user_orders(s);
                assert!(channels::is_private(&uo) && channels::needs_auth(&uo));
                assert!(channels::is_private(&channels::user_portfolio(s)));
            }
        }
        check(&book, &model);
    }
});

/// One raw notification: classify, decode by channel as the typed client would, apply
/// book messages for BTC-PERPETUAL.
fn raw_line(h: &mut JsonRpcHandler, book: &mut OrderBook, model: &mut Model, line: &str) {
    let Classified::Notification { channel, data } = h.classify(&Frame::text(line.to_owned()))
    else {
        return;
    };
    let Some(v) = websockex_nova_fuzz::reparse(&data) else {
        return;
    };
    let ch = channel.as_str();
    if ch.starts_with("book.") {
        if let Ok(d) = data.decode::<BookData>() {
            if d.instrument_name == "BTC-PERPETUAL" && ch.split('.').count() == 3 {
                let want = model.apply(&d);
                assert_eq!(book.apply(&d), want, "{line}");
            }
        }
    } else if ch.starts_with("ticker.") {
        decode_checked::<Ticker>(&data, |t, v| {
            assert_eq!(
                Some(t.instrument_name.as_str()),
                v["instrument_name"].as_str()
            )
        });
    } else if ch.starts_with("trades.") || ch.starts_with("user.trades.") {
        decode_checked::<Vec<Trade>>(&data, |t, v| {
            assert_eq!(t.len(), v.as_array().unwrap().len())
        });
    } else if ch.starts_with("user.orders.") {
        if v.is_array() {
            decode_checked::<Vec<Order>>(&data, |_, _| {});
        } else {
            decode_checked::<Order>(&data, |o, v| assert_eq!(o.price, v["price"].as_f64()));
        }
    } else if ch.starts_with("user.portfolio.") {
        decode_checked::<AccountSummary>(&data, |_, _| {});
    } else if ch == "platform_state" {
        decode_checked::<PlatformState>(&data, |_, _| {});
    }
}
