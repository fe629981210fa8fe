//! `JsonRpcHandler::classify` (the default JSON-RPC `MessageHandler`) on arbitrary text
//! and binary frames, one handler per input so heartbeat bookkeeping carries over between
//! frames; `encode_request` with arbitrary ids, methods and params; and the results of
//! classified responses fed to the JSON-RPC auth and subscription behaviours, as the actor
//! does with the answers to `public/auth` and `public/subscribe`.
//!
//! Input: frames separated by 0xFF bytes (never in UTF-8). A frame whose first byte is
//! 0xFE is binary; other frames are text (lossy UTF-8). The first frame may configure the
//! handler (`0xFD method\0heartbeat\0answer`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use websockex_nova::behaviour::{Classified, MessageHandler};
use websockex_nova::jsonrpc::{JsonRpcConfig, JsonRpcHandler};
use websockex_nova::{DefaultMessageHandler, Frame};
use websockex_nova_fuzz::{is_json, reparse};

const HEARTBEAT_ID_BASE: u64 = 1 << 52;

fuzz_target!(|data: &[u8]| {
    let mut frames = data.split(|b| *b == 0xFF);
    let mut config = JsonRpcConfig::default();
    let mut first = frames.next();
    if let Some(f) = first {
        if f.first() == Some(&0xFD) {
            let s = String::from_utf8_lossy(&f[1..]);
            let mut parts = s.split('\0');
            if let Some(m) = parts.next() {
                config.notification_method = m.to_owned();
            }
            match (parts.next(), parts.next()) {
                (Some(hb), Some(ans)) => config.heartbeat = Some((hb.to_owned(), ans.to_owned())),
                (Some(_), None) => config.heartbeat = None,
                _ => {}
            }
            first = None;
        }
    }
    let mut h = JsonRpcHandler::new(&config);
    let timing = h.server_timing();
    let mut handlers = config.clone().with_credentials("id", "secret").handlers();
    let mut sent_heartbeats = 0u64;
    for f in first.into_iter().chain(frames).take(64) {
        let frame = if f.first() == Some(&0xFE) {
            Frame::binary(f[1..].to_vec())
        } else {
            Frame::text(String::from_utf8_lossy(f).into_owned())
        };
        assert!(matches!(
            DefaultMessageHandler.classify(&frame),
            Classified::Other
        ));
        let parsed = frame.as_text().map(serde_json::from_str::<Value>);
        let class = h.classify(&frame);
        // Whatever is not a JSON text frame is never anything but Other.
        if !frame.as_text().is_some_and(is_json) {
            assert!(matches!(class, Classified::Other), "{frame:?} -> {class:?}");
        }
        // JSON with a number serde_json cannot hold (F8): only the no-panic checks apply.
        let Some(Ok(_)) = parsed else {
            if let Classified::Response {
                result: Ok(raw), ..
            } = &class
            {
                let _ = reparse(raw);
            }
            continue;
        };
        let text = frame.as_text().unwrap_or_default();
        match class {
            Classified::Response { id, result } => {
                let v = parsed.unwrap().unwrap();
                assert!(v.get("method").is_none_or(Value::is_null), "{text}");
                match result {
                    Ok(raw) => {
                        let r =
                            reparse(&raw).expect("the frame parsed as a Value, so its result does");
                        if let Some(obj) = v.as_object() {
                            if obj.contains_key("result") && !has_duplicate_keys(text) {
                                assert_eq!(Some(&r), obj.get("result"));
                            }
                        }
                        // What the actor does with the answer to auth / subscribe.
                        if let Some(auth) = handlers.auth.as_mut() {
                            if !known_expires_in_overflow(&r) {
                                let _ = auth.granted(Ok(&raw));
                            }
                        }
                        if let Some(sub) = handlers.subscription.as_mut() {
                            let _ = sub.confirmed(&["a".to_owned()], &raw);
                        }
                    }
                    Err(api) => {
                        let _ = api.to_string();
                        if let Some(auth) = handlers.auth.as_mut() {
                            let e = auth.granted(Err(&api)).unwrap_err();
                            assert!(e.is_auth(), "{e:?}");
                        }
                    }
                }
                let _ = id;
                // usOut 0 reads as "no timing yet"; anything else must be what we sent.
                if let (Some(i), Some(o)) = (
                    v.get("usIn").and_then(Value::as_u64),
                    v.get("usOut").and_then(Value::as_u64),
                ) {
                    if o != 0 && !has_duplicate_keys(text) {
                        let (gi, go, _) = timing.last().expect("timing recorded");
                        assert_eq!((gi, go), (i, o));
                        assert_eq!(
                            timing.server_time().unwrap().as_micros(),
                            u128::from(o.saturating_sub(i))
                        );
                    }
                }
                let _ = timing.delivery_delay();
            }
            Classified::Notification { channel, data } => {
                let _ = channel.to_string();
                assert!(text.contains(channel.as_str()) || text.contains('\\'));
                reparse(&data).expect("the frame parsed as a Value, so its data does");
                assert_eq!(data.as_str(), data.to_string());
            }
            Classified::Heartbeat(answer) => {
                let v: Value = serde_json::from_str(answer.as_text().expect("text answer"))
                    .expect("the heartbeat answer is JSON");
                let id = v["id"].as_u64().expect("integer id");
                assert_eq!(id, HEARTBEAT_ID_BASE + sent_heartbeats);
                sent_heartbeats += 1;
                let (_, ans) = config.heartbeat.clone().unwrap();
                assert_eq!(v["method"], Value::from(ans));
                assert_eq!(v["jsonrpc"], "2.0");
            }
            Classified::Consume => {
                let v = parsed.unwrap().unwrap();
                let id = v["id"]
                    .as_u64()
                    .expect("only our heartbeat replies are consumed");
                assert!((HEARTBEAT_ID_BASE..HEARTBEAT_ID_BASE + sent_heartbeats).contains(&id));
            }
            Classified::Reply(_) | Classified::Other => {}
            _ => {}
        }
    }

    // encode_request: the tail of the input is (id, method, params).
    let s = String::from_utf8_lossy(data);
    let mut parts = s.splitn(3, '\u{1}');
    let (Some(id), Some(method), Some(params)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let id = id
        .bytes()
        .fold(0u64, |a, b| a.wrapping_mul(131).wrapping_add(u64::from(b)));
    assert!(DefaultMessageHandler
        .encode_request(id, method, params)
        .is_none());
    let f = h
        .encode_request(id, method, params)
        .expect("JSON-RPC has requests");
    let Ok(p) = serde_json::from_str::<Value>(params) else {
        return; // params are the caller's JSON text; garbage in, garbage out
    };
    let v: Value = serde_json::from_str(f.as_text().unwrap()).expect("a request is JSON");
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"].as_u64(), Some(id));
    assert_eq!(v["method"].as_str(), Some(method));
    assert_eq!(v["params"], p);
    // Our own request is never mistaken for a response.
    assert!(!matches!(
        h.classify(&f),
        Classified::Response { .. } | Classified::Consume
    ));
});

/// JSON with a repeated key is ambiguous (serde_json's `Value` keeps the last, a derived
/// struct refuses it); such inputs are skipped by the equality checks.
fn has_duplicate_keys(text: &str) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Dup;
    impl<'de> Visitor<'de> for Dup {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("json")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<bool, M::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut dup = false;
            while let Some(k) = m.next_key::<String>()? {
                dup |= !seen.insert(k);
                dup |= m.next_value::<DupSeed>()?.0;
            }
            Ok(dup)
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<bool, S::Error> {
            let mut dup = false;
            while let Some(d) = s.next_element::<DupSeed>()? {
                dup |= d.0;
            }
            Ok(dup)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    struct DupSeed(bool);
    impl<'de> serde::Deserialize<'de> for DupSeed {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Dup).map(DupSeed)
        }
    }
    let _ = IgnoredAny;
    serde_json::from_str::<DupSeed>(text).map_or(true, |d| d.0)
}

/// Known issue (see fuzz/README.md, finding F1): an auth result with an `expires_in` too
/// large for a `Duration` panics in `JsonRpcAuth::granted`. Skipped here so the target
/// keeps exploring; the regression input is in regressions/classify_jsonrpc/.
fn known_expires_in_overflow(result: &Value) -> bool {
    if !websockex_nova_fuzz::skip_known_issues() {
        return false;
    }
    result
        .get("expires_in")
        .and_then(Value::as_f64)
        .is_some_and(|s| s.is_finite() && s >= u64::MAX as f64)
}
