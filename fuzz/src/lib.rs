//! Shared helpers for the websockex-nova fuzz targets: a structured JSON generator that
//! produces near-valid JSON (so the fuzzer gets past the parser), an RNG fed by the fuzz
//! input, and duration / number specs with the edge values that matter.

use std::fmt::Write as _;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

/// Words the venue actually uses: the generator picks keys and strings from here most of
/// the time, so the decoders see their own field names.
pub const WORDS: &[&str] = &[
    "jsonrpc",
    "2.0",
    "id",
    "method",
    "params",
    "result",
    "error",
    "code",
    "message",
    "data",
    "usIn",
    "usOut",
    "usDiff",
    "testnet",
    "channel",
    "type",
    "subscription",
    "heartbeat",
    "test_request",
    "public/test",
    "public/subscribe",
    "private/subscribe",
    "public/auth",
    "snapshot",
    "change",
    "new",
    "delete",
    "instrument_name",
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "timestamp",
    "change_id",
    "prev_change_id",
    "bids",
    "asks",
    "state",
    "open",
    "best_bid_price",
    "best_bid_amount",
    "best_ask_price",
    "best_ask_amount",
    "mark_price",
    "index_price",
    "last_price",
    "open_interest",
    "stats",
    "volume",
    "low",
    "high",
    "price_change",
    "current_funding",
    "funding_8h",
    "trade_id",
    "trade_seq",
    "price",
    "amount",
    "direction",
    "buy",
    "sell",
    "order_id",
    "order_state",
    "filled_amount",
    "order_type",
    "label",
    "cancel_reason",
    "market_price",
    "order",
    "trades",
    "currency",
    "balance",
    "equity",
    "available_funds",
    "margin_balance",
    "kind",
    "base_currency",
    "tick_size",
    "min_trade_amount",
    "is_active",
    "maintenance",
    "price_index",
    "locked",
    "expires_in",
    "refresh_token",
    "access_token",
    "book.BTC-PERPETUAL.100ms",
    "ticker.BTC-PERPETUAL.100ms",
    "trades.BTC-PERPETUAL.100ms",
    "user.orders.BTC-PERPETUAL.raw",
    "user.portfolio.btc",
    "platform_state",
    "",
    "\u{0}",
    "é",
    "\"",
    "\\",
    "/",
];

/// A number, as JSON text.
#[derive(Debug, Clone, Arbitrary)]
pub enum Num {
    Small(u8),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Hand-picked edges of the JSON number grammar and of u64/i64/f64.
    Edge(u8),
}

pub const NUM_EDGES: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "0.0",
    "-0.0",
    "1.0",
    "1e2",
    "1E+2",
    "2.2e3",
    "0.1",
    "1e-7",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "9007199254740993",
    "4503599627370496",
    "4503599627370560",
    "1e308",
    "1.7976931348623157e308",
    "1e309",
    "1e400",
    "-1e400",
    "5e-324",
    "1e-400",
    "1700000000000",
    "1700000000123001",
    "36442.5",
    "0.0000211",
    "99999999999999999999999",
];

impl Num {
    pub fn render(&self, out: &mut String) {
        match self {
            Num::Small(v) => write!(out, "{v}").unwrap(),
            Num::U64(v) => write!(out, "{v}").unwrap(),
            Num::I64(v) => write!(out, "{v}").unwrap(),
            Num::F64(v) if v.is_finite() => {
                // `{:?}` keeps a `.0` or exponent, as serde_json would write it.
                write!(out, "{v:?}").unwrap()
            }
            Num::F64(_) => out.push_str("1e999"),
            Num::Edge(i) => out.push_str(NUM_EDGES[*i as usize % NUM_EDGES.len()]),
        }
    }
}

/// A string, as JSON text.
#[derive(Debug, Clone, Arbitrary)]
pub enum Str {
    Word(u8),
    /// A word with one character written as a `\u` escape (same string, different text).
    Escaped(u8, u8),
    Raw(String),
}

impl Str {
    pub fn value(&self) -> String {
        match self {
            Str::Word(i) | Str::Escaped(i, _) => WORDS[*i as usize % WORDS.len()].to_owned(),
            Str::Raw(s) => s.clone(),
        }
    }

    pub fn render(&self, out: &mut String) {
        match self {
            Str::Escaped(i, at) => {
                let w = WORDS[*i as usize % WORDS.len()];
                let n = w.chars().count();
                out.push('"');
                for (k, c) in w.chars().enumerate() {
                    if n > 0 && k == *at as usize % n {
                        let mut buf = [0u16; 2];
                        for u in c.encode_utf16(&mut buf) {
                            write!(out, "\\u{:04x}", u).unwrap();
                        }
                    } else {
                        push_escaped_char(out, c);
                    }
                }
                out.push('"');
            }
            _ => out.push_str(&serde_json::to_string(&self.value()).unwrap()),
        }
    }

    /// Whether the JSON text of this string contains an escape sequence.
    pub fn has_escape(&self) -> bool {
        let mut s = String::new();
        self.render(&mut s);
        s[1..s.len() - 1].contains('\\')
    }
}

fn push_escaped_char(out: &mut String, c: char) {
    let mut b = [0u8; 4];
    let s = serde_json::to_string(c.encode_utf8(&mut b) as &str).unwrap();
    out.push_str(&s[1..s.len() - 1]);
}

/// A JSON value. Objects draw their keys from [`WORDS`] most of the time.
#[derive(Debug, Clone, Arbitrary)]
pub enum J {
    Null,
    Bool(bool),
    Num(Num),
    Str(Str),
    Arr(Vec<J>),
    Obj(Vec<(Str, J)>),
    /// Not JSON at all: a token that breaks the document (kept rare by the fuzzer's
    /// choice, useful to test error paths deep inside an otherwise valid document).
    Junk(u8),
}

const JUNK: &[&str] = &[
    "", ",", "]", "}", "{", "[", "nul", "tru", "\"", "NaN", "Infinity", "'x'", "01", "+1", ".5",
    "1.",
];

/// The deepest nesting the renderer writes (deeper values become `null`).
pub const MAX_DEPTH: usize = 48;

impl J {
    pub fn render(&self, out: &mut String) {
        self.render_at(out, 0)
    }

    fn render_at(&self, out: &mut String, depth: usize) {
        if depth > MAX_DEPTH {
            out.push_str("null");
            return;
        }
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => n.render(out),
            J::Str(s) => s.render(out),
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.render_at(out, depth + 1);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    k.render(out);
                    out.push(':');
                    v.render_at(out, depth + 1);
                }
                out.push('}');
            }
            J::Junk(i) => out.push_str(JUNK[*i as usize % JUNK.len()]),
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.render(&mut s);
        s
    }
}

/// A duration with the edges that matter for time arithmetic.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Dur {
    Zero,
    Millis(u16),
    Secs(u16),
    Raw(u64, u32),
    Max,
    /// Large but plausible: `u32::MAX` seconds (136 years).
    Huge,
}

impl Dur {
    pub fn get(self) -> Duration {
        match self {
            Dur::Zero => Duration::ZERO,
            Dur::Millis(v) => Duration::from_millis(u64::from(v)),
            Dur::Secs(v) => Duration::from_secs(u64::from(v)),
            Dur::Raw(s, n) => Duration::new(s, n % 1_000_000_000),
            Dur::Max => Duration::MAX,
            Dur::Huge => Duration::from_secs(u64::from(u32::MAX)),
        }
    }
}

/// An f64 with edges.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Float {
    Small(u8),
    Raw(f64),
    Edge(u8),
}

pub const FLOAT_EDGES: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    2.0,
    0.5,
    1.000_000_1,
    1e-300,
    5e-324,
    1e300,
    f64::MAX,
    f64::MIN_POSITIVE,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    -1.0,
    10_000.0,
    1e9,
    1e15,
    1e19,
    1e20,
];

impl Float {
    pub fn get(self) -> f64 {
        match self {
            Float::Small(v) => f64::from(v),
            Float::Raw(v) => v,
            Float::Edge(i) => FLOAT_EDGES[i as usize % FLOAT_EDGES.len()],
        }
    }
}

/// An RNG whose output the fuzzer chooses (cycled), so jitter can hit 0 and 1-ε.
pub struct FuzzRng {
    words: Vec<u64>,
    at: usize,
}

impl FuzzRng {
    pub fn new(words: Vec<u64>) -> Self {
        FuzzRng { words, at: 0 }
    }
}

impl rand::RngCore for FuzzRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        if self.words.is_empty() {
            return 0x9e37_79b9_7f4a_7c15;
        }
        let w = self.words[self.at % self.words.len()];
        self.at = self.at.wrapping_add(1);
        w
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

/// Reads one `T` or gives up quietly (for targets that parse their input by hand).
pub fn take<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> Option<T> {
    T::arbitrary(u).ok()
}

/// Whether to step around the known issues listed in fuzz/README.md (so a run keeps
/// exploring past them). Set `FUZZ_NO_KNOWN_ISSUES=1` to hit them again, e.g. to check
/// a fix with the inputs in fuzz/regressions/.
pub fn skip_known_issues() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("FUZZ_NO_KNOWN_ISSUES").is_none())
}

/// `RawJson::to_value` for a value that came out of a classified frame. It fails only
/// where its docs say (since F8 in fuzz/README.md was fixed by saying so): for numbers
/// beyond f64 (`1e400`, valid JSON a `Value` cannot hold). Returns `None` for that case and
/// panics for any other failure.
pub fn reparse(raw: &websockex_nova::RawJson) -> Option<serde_json::Value> {
    match raw.to_value() {
        Ok(v) => Some(v),
        Err(e) if format!("{e:?}").contains("number out of range") => None,
        Err(e) => panic!("JSON from a classified frame does not re-parse: {e:?}: {raw}"),
    }
}

/// JSON by the grammar (what the envelope parser accepts), whether or not serde_json can
/// hold every number in it.
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}
