//! The JSON-RPC envelope, differentially: structured, near-valid messages (responses with
//! `result` / `error`, `subscription` notifications, `heartbeat` / `test_request`, with
//! mutated ids, types, key orders, whitespace and nesting) go through
//! `JsonRpcHandler::classify`, and the verdict is compared with an oracle that reads the
//! same text as a `serde_json::Value` and applies the rules of the module docs. Also checked:
//! a response's id round-trips, `RawJson` results and notification data re-parse to the
//! same value and are slices of the frame, heartbeat answers carry fresh ids whose replies
//! are consumed, `usIn`/`usOut` are recorded.
//!
//! Known quirks (README, finding F7) are tolerated unless FUZZ_STRICT is set: then
//! any message the handler turns into `Other` while the oracle says otherwise fails.
#![no_main]

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use websockex_nova::behaviour::{Classified, MessageHandler};
use websockex_nova::jsonrpc::{JsonRpcConfig, JsonRpcHandler};
use websockex_nova::Frame;
use websockex_nova_fuzz::{Num, Str, J};

const HEARTBEAT_ID_BASE: u64 = 1 << 52;

#[derive(Debug, Arbitrary)]
enum IdSpec {
    Absent,
    Null,
    Small(u8),
    U64(u64),
    /// The id of a heartbeat answer sent earlier (its reply must be consumed).
    Echo(u8),
    Num(Num),
    Str(Str),
    Any(J),
}

#[derive(Debug, Arbitrary)]
enum MethodSpec {
    Absent,
    Null,
    Subscription,
    Heartbeat,
    Str(Str),
    Any(J),
}

#[derive(Debug, Arbitrary)]
enum ErrorSpec {
    Absent,
    Null,
    Good {
        code: i32,
        message: Option<Str>,
        data: Option<J>,
    },
    Any(J),
}

#[derive(Debug, Arbitrary)]
enum ParamsSpec {
    Absent,
    Null,
    Obj {
        channel: Option<Str>,
        data: Option<J>,
        test_request: Option<bool>,
        extra: Vec<(Str, J)>,
        rotate: u8,
    },
    Any(J),
}

#[derive(Debug, Arbitrary)]
enum TsSpec {
    Absent,
    U64(u64),
    Num(Num),
    Any(J),
}

#[derive(Debug, Arbitrary)]
struct Msg {
    jsonrpc: bool,
    id: IdSpec,
    method: MethodSpec,
    result: Option<J>,
    error: ErrorSpec,
    params: ParamsSpec,
    us_in: TsSpec,
    us_out: TsSpec,
    extra: Vec<(Str, J)>,
    rotate: u8,
    spaces: bool,
}

fn push_field(fields: &mut Vec<(String, String)>, key: &str, value: String) {
    fields.push((serde_json::to_string(key).unwrap(), value));
}

fn render_obj(mut fields: Vec<(String, String)>, rotate: u8, spaces: bool) -> String {
    if !fields.is_empty() {
        let n = rotate as usize % fields.len();
        fields.rotate_left(n);
    }
    let (colon, comma) = if spaces { (" : ", " ,\n ") } else { (":", ",") };
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{k}{colon}{v}"))
        .collect();
    if spaces {
        format!("{{ {} }}", body.join(comma))
    } else {
        format!("{{{}}}", body.join(comma))
    }
}

impl Msg {
    fn render(&self, pending: &VecDeque<u64>) -> String {
        let mut f = Vec::new();
        if self.jsonrpc {
            push_field(&mut f, "jsonrpc", "\"2.0\"".into());
        }
        let id = match &self.id {
            IdSpec::Absent => None,
            IdSpec::Null => Some("null".to_owned()),
            IdSpec::Small(v) => Some(v.to_string()),
            IdSpec::U64(v) => Some(v.to_string()),
            IdSpec::Echo(k) => Some(match pending.len() {
                0 => (HEARTBEAT_ID_BASE + u64::from(*k)).to_string(),
                n => pending[*k as usize % n].to_string(),
            }),
            IdSpec::Num(n) => Some(text(|s| n.render(s))),
            IdSpec::Str(s) => Some(text(|o| s.render(o))),
            IdSpec::Any(j) => Some(j.to_text()),
        };
        if let Some(id) = id {
            push_field(&mut f, "id", id);
        }
        let method = match &self.method {
            MethodSpec::Absent => None,
            MethodSpec::Null => Some("null".to_owned()),
            MethodSpec::Subscription => Some("\"subscription\"".to_owned()),
            MethodSpec::Heartbeat => Some("\"heartbeat\"".to_owned()),
            MethodSpec::Str(s) => Some(text(|o| s.render(o))),
            MethodSpec::Any(j) => Some(j.to_text()),
        };
        if let Some(m) = method {
            push_field(&mut f, "method", m);
        }
        if let Some(r) = &self.result {
            push_field(&mut f, "result", r.to_text());
        }
        match &self.error {
            ErrorSpec::Absent => {}
            ErrorSpec::Null => push_field(&mut f, "error", "null".into()),
            ErrorSpec::Good {
                code,
                message,
                data,
            } => {
                let mut e = Vec::new();
                push_field(&mut e, "code", code.to_string());
                if let Some(m) = message {
                    push_field(&mut e, "message", text(|o| m.render(o)));
                }
                if let Some(d) = data {
                    push_field(&mut e, "data", d.to_text());
                }
                push_field(&mut f, "error", render_obj(e, 0, self.spaces));
            }
            ErrorSpec::Any(j) => push_field(&mut f, "error", j.to_text()),
        }
        match &self.params {
            ParamsSpec::Absent => {}
            ParamsSpec::Null => push_field(&mut f, "params", "null".into()),
            ParamsSpec::Obj {
                channel,
                data,
                test_request,
                extra,
                rotate,
            } => {
                let mut p = Vec::new();
                if let Some(c) = channel {
                    push_field(&mut p, "channel", text(|o| c.render(o)));
                }
                if let Some(d) = data {
                    push_field(&mut p, "data", d.to_text());
                }
                if let Some(t) = test_request {
                    let v = if *t {
                        "\"test_request\""
                    } else {
                        "\"heartbeat\""
                    };
                    push_field(&mut p, "type", v.into());
                }
                for (k, v) in extra.iter().take(8) {
                    p.push((text(|o| k.render(o)), v.to_text()));
                }
                push_field(&mut f, "params", render_obj(p, *rotate, self.spaces));
            }
            ParamsSpec::Any(j) => push_field(&mut f, "params", j.to_text()),
        }
        for (key, ts) in [("usIn", &self.us_in), ("usOut", &self.us_out)] {
            let v = match ts {
                TsSpec::Absent => continue,
                TsSpec::U64(v) => v.to_string(),
                TsSpec::Num(n) => text(|o| n.render(o)),
                TsSpec::Any(j) => j.to_text(),
            };
            push_field(&mut f, key, v);
        }
        for (k, v) in self.extra.iter().take(8) {
            f.push((text(|o| k.render(o)), v.to_text()));
        }
        render_obj(f, self.rotate, self.spaces)
    }
}

fn text(f: impl FnOnce(&mut String)) -> String {
    let mut s = String::new();
    f(&mut s);
    s
}

/// What the docs say a message is.
#[derive(Debug, PartialEq)]
enum Expect {
    Response {
        id: u64,
        result: Result<Value, (i64, String, Option<Value>)>,
    },
    Consume(u64),
    Notification {
        channel: String,
        data: Value,
    },
    Heartbeat,
    Other,
    Unknown,
}

/// Expected verdict and whether the message has a feature of a known quirk (the handler
/// may then say Other instead).
fn oracle(
    text: &str,
    pending: &VecDeque<u64>,
    config: &JsonRpcConfig,
) -> (Expect, Vec<&'static str>) {
    let mut quirks = Vec::new();
    let obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => obj,
        // Valid JSON with a number serde_json cannot hold (F8): no oracle.
        Err(_) if websockex_nova_fuzz::is_json(text) => {
            return (Expect::Unknown, vec!["number-out-of-range"])
        }
        _ => return (Expect::Other, quirks),
    };
    if text.contains('\\') && escaped_where_borrowed(text, &obj) {
        // F7a: escaped strings where the envelope borrows (&str): method, params keys,
        // channel, type.
        quirks.push("escape");
    }
    let params = obj.get("params");
    let pobj = params.and_then(Value::as_object);
    match params {
        None | Some(Value::Null) | Some(Value::Array(_)) | Some(Value::Object(_)) => {}
        Some(_) => quirks.push("params-not-object"),
    }
    if let Some(p) = pobj {
        if p.get("channel").is_some_and(|c| !c.is_string()) {
            quirks.push("params-channel-type");
        }
        if p.get("type")
            .is_some_and(|c| !c.is_string() && !c.is_null())
        {
            quirks.push("params-type-type");
        }
    }
    // F7b: fields read in the same typed pass as the routing ones: a mistyped `usIn`,
    // `usOut` or `error` fails the whole message, whatever it is (notifications too).
    for k in ["usIn", "usOut"] {
        if obj.get(k).is_some_and(|v| !v.is_null() && !v.is_u64()) {
            quirks.push("timestamp-type");
        }
    }
    if obj
        .get("error")
        .is_some_and(|e| !e.is_null() && api_error(e).is_none())
    {
        quirks.push("error-shape");
    }
    let expect = match obj.get("method") {
        Some(Value::String(m)) if *m == config.notification_method => {
            match (
                pobj.and_then(|p| p.get("channel")).and_then(Value::as_str),
                pobj.and_then(|p| p.get("data")),
            ) {
                (Some(c), Some(d)) => Expect::Notification {
                    channel: c.to_owned(),
                    data: d.clone(),
                },
                _ => Expect::Other,
            }
        }
        Some(Value::String(m)) => match &config.heartbeat {
            Some((hb, _))
                if m == hb
                    && pobj.and_then(|p| p.get("type")).and_then(Value::as_str)
                        == Some("test_request") =>
            {
                Expect::Heartbeat
            }
            _ => Expect::Other,
        },
        Some(Value::Null) | None => match obj.get("id").and_then(Value::as_u64) {
            None => Expect::Other,
            Some(id) => {
                if pending.contains(&id) {
                    Expect::Consume(id)
                } else {
                    let result = match obj.get("error") {
                        None | Some(Value::Null) => {
                            Ok(obj.get("result").cloned().unwrap_or(Value::Null))
                        }
                        Some(e) => match api_error(e) {
                            Some(e) => Err(e),
                            None => Err((i64::MIN, String::new(), None)),
                        },
                    };
                    Expect::Response { id, result }
                }
            }
        },
        Some(_) => Expect::Other,
    };
    (expect, quirks)
}

#[derive(serde::Deserialize)]
struct ProbeMethod<'a> {
    #[serde(borrow, default)]
    #[allow(dead_code)]
    method: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct ProbeParams<'a> {
    #[serde(borrow, default)]
    params: Option<std::collections::HashMap<&'a str, &'a serde_json::value::RawValue>>,
}

/// Whether a string the envelope reads as a borrowed `&str` (the method, the params keys,
/// `params.channel`, `params.type`) is written with an escape in `text`.
fn escaped_where_borrowed(text: &str, obj: &Map<String, Value>) -> bool {
    if obj.get("method").is_some_and(Value::is_string)
        && serde_json::from_str::<ProbeMethod<'_>>(text).is_err()
    {
        return true;
    }
    if obj.get("params").is_some_and(Value::is_object) {
        match serde_json::from_str::<ProbeParams<'_>>(text) {
            Err(_) => return true,
            Ok(p) => {
                let p = p.params.unwrap_or_default();
                for k in ["channel", "type"] {
                    if p.get(k)
                        .is_some_and(|r| r.get().starts_with('"') && r.get().contains('\\'))
                    {
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// A JSON-RPC error object as the docs read it: integer code, optional string message,
/// optional data.
fn api_error(e: &Value) -> Option<(i64, String, Option<Value>)> {
    let o = e.as_object()?;
    let code = o.get("code")?.as_i64()?;
    let message = match o.get("message") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return None,
    };
    let data = o.get("data").filter(|d| !d.is_null()).cloned();
    Some((code, message, data))
}

fn has_duplicate_keys(text: &str) -> bool {
    // Value keeps the last of repeated keys, the derived envelope refuses them: ambiguous.
    fn walk(v: &Value, text_keys: &mut usize) {
        match v {
            Value::Object(m) => {
                *text_keys += m.len();
                m.values().for_each(|v| walk(v, text_keys));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, text_keys)),
            _ => {}
        }
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let mut unique = 0;
    walk(&v, &mut unique);
    // Count keys in the text with a streaming pass that does not merge duplicates.
    count_keys(text).is_some_and(|n| n != unique)
}

fn count_keys(text: &str) -> Option<usize> {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct C;
    impl<'de> Visitor<'de> for C {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("json")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<usize, M::Error> {
            let mut n = 0;
            while m.next_key::<serde::de::IgnoredAny>()?.is_some() {
                n += 1 + m.next_value::<S>()?.0;
            }
            Ok(n)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while let Some(s) = a.next_element::<S>()? {
                n += s.0;
            }
            Ok(n)
        }
        fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_str<E>(self, _: &str) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }
    }
    struct S(usize);
    impl<'de> serde::Deserialize<'de> for S {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(C).map(S)
        }
    }
    serde_json::from_str::<S>(text).ok().map(|s| s.0)
}

/// Two input forms: text starting with `{` is raw messages, one per line (the seed corpus
/// holds real Deribit traffic in this form); anything else is structured `Vec<Msg>`.
enum Source<'a> {
    Raw(std::str::Split<'a, char>),
    Structured(std::vec::IntoIter<Msg>),
}

fuzz_target!(|data: &[u8]| {
    let mut source = if data.first() == Some(&b'{') {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        Source::Raw(s.split('\n'))
    } else {
        let Ok(msgs) = arbitrary::Unstructured::new(data).arbitrary::<Vec<Msg>>() else {
            return;
        };
        Source::Structured(msgs.into_iter())
    };
    let strict = std::env::var_os("FUZZ_STRICT").is_some();
    let config = JsonRpcConfig::default();
    let mut h = JsonRpcHandler::new(&config);
    let timing = h.server_timing();
    let mut pending: VecDeque<u64> = VecDeque::new();
    let mut next_hb = HEARTBEAT_ID_BASE;
    let mut last_timing: Option<(u64, u64)> = None;
    for _ in 0..16 {
        let text = match &mut source {
            Source::Raw(lines) => match lines.next() {
                Some(l) => l.to_owned(),
                None => break,
            },
            Source::Structured(msgs) => match msgs.next() {
                Some(m) => m.render(&pending),
                None => break,
            },
        };
        let frame = Frame::text(text.clone());
        let got = h.classify(&frame);
        let dup = has_duplicate_keys(&text);
        let (want, quirks) = oracle(&text, &pending, &config);

        // Model the handler's state for what the actor relies on. Without a Value (a
        // number serde_json cannot hold, F8) the model cannot follow: resync it.
        if matches!(want, Expect::Unknown) {
            last_timing = timing.last().map(|(i, o, _)| (i, o));
        }
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&text) {
            if obj.get("method").is_none_or(Value::is_null)
                && obj.get("id").and_then(Value::as_u64).is_some()
                && !matches!(got, Classified::Other)
            {
                if let (Some(i), Some(o)) = (
                    obj.get("usIn").and_then(Value::as_u64),
                    obj.get("usOut").and_then(Value::as_u64),
                ) {
                    last_timing = if o == 0 { None } else { Some((i, o)) };
                }
            }
        }
        let stamped = timing.last().map(|(i, o, _)| (i, o));
        if !dup {
            assert_eq!(stamped, last_timing, "{text}");
        }

        let lenient = dup || (!strict && !quirks.is_empty());
        match (&got, &want) {
            (Classified::Other, Expect::Other) => {}
            (_, Expect::Unknown) => {
                // No oracle; still: no panic, and what was found re-parses or is F8.
                match &got {
                    Classified::Response {
                        result: Ok(raw), ..
                    } => {
                        let _ = websockex_nova_fuzz::reparse(raw);
                    }
                    Classified::Notification { data, .. } => {
                        let _ = websockex_nova_fuzz::reparse(data);
                    }
                    Classified::Heartbeat(_) => {
                        if pending.len() >= 64 {
                            pending.pop_front();
                        }
                        pending.push_back(next_hb);
                        next_hb += 1;
                    }
                    Classified::Consume => {
                        // Only ours: drop it from the model too (its id is in the text).
                        pending.retain(|p| !text.contains(&p.to_string()));
                    }
                    _ => {}
                }
                // The timing model cannot follow without a Value: resync it.
                last_timing = timing.last().map(|(i, o, _)| (i, o));
            }
            (Classified::Other, _) if lenient => {}
            (
                Classified::Response { id, result },
                Expect::Response {
                    id: wid,
                    result: wres,
                },
            ) => {
                assert_eq!(id, wid, "{text}");
                match (result, wres) {
                    (Ok(raw), Ok(v)) => {
                        let parsed = raw.to_value().expect("result re-parses");
                        if !dup {
                            assert_eq!(&parsed, v, "{text}");
                        }
                        let top_result = serde_json::from_str::<Value>(&text)
                            .ok()
                            .is_some_and(|v| v.get("result").is_some());
                        if top_result && !dup {
                            assert!(
                                text.contains(raw.as_str()),
                                "result is a slice of the frame"
                            );
                        }
                    }
                    (Err(api), Err((code, message, data))) => {
                        if !quirks.contains(&"error-shape") && !dup {
                            assert_eq!(
                                (&api.code, &api.message, &api.data),
                                (code, message, data),
                                "{text}"
                            );
                        }
                    }
                    (r, w) => panic!("{text}: got {r:?}, want {w:?}"),
                }
            }
            (Classified::Consume, Expect::Consume(id)) => {
                let i = pending.iter().position(|p| p == id).unwrap();
                pending.remove(i);
            }
            (
                Classified::Notification { channel, data },
                Expect::Notification {
                    channel: wc,
                    data: wd,
                },
            ) => {
                if !dup {
                    assert_eq!(channel.as_str(), wc, "{text}");
                    assert_eq!(&data.to_value().expect("data re-parses"), wd, "{text}");
                }
                assert!(text.contains(data.as_str()), "data is a slice of the frame");
            }
            (Classified::Heartbeat(answer), Expect::Heartbeat) => {
                let v: Value = serde_json::from_str(answer.as_text().unwrap()).unwrap();
                let want_method = &config.heartbeat.as_ref().unwrap().1;
                assert_eq!(v["method"].as_str(), Some(want_method.as_str()));
                assert_eq!(v["params"], Value::Object(Map::new()));
                assert_eq!(v["id"].as_u64(), Some(next_hb));
                if pending.len() >= 64 {
                    pending.pop_front();
                }
                pending.push_back(next_hb);
                next_hb += 1;
            }
            (g, w) => panic!("{text}\n got {g:?}\nwant {w:?} (quirks {quirks:?})"),
        }
    }
});
