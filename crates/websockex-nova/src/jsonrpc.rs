//! A generic JSON-RPC 2.0 platform: requests, subscriptions, authentication and venue
//! heartbeats against any JSON-RPC WebSocket server, with method names as configuration.
//!
//! ```no_run
//! # async fn demo() -> Result<(), websockex_nova::Error> {
//! use websockex_nova::jsonrpc::JsonRpcConfig;
//! use websockex_nova::Client;
//!
//! let rpc = JsonRpcConfig::default() // public/subscribe, public/unsubscribe, "subscription" pushes
//!     .with_credentials("my-id", "my-secret"); // public/auth, client_credentials + refresh_token
//! let (client, _events) = Client::builder("wss://test.deribit.com/ws/api/v2")
//!     .json_rpc(rpc)
//!     .connect()
//!     .await?;
//! let time: u64 = client.request_as("public/get_time", &serde_json::json!({})).await?;
//! let mut ticks = client.subscribe(["ticker.BTC-PERPETUAL.raw"]).await?;
//! while let Some(event) = ticks.next().await {
//!     println!("{event:?}");
//! }
//! # let _ = time; Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::behaviour::{
    AuthGrant, AuthHandler, Call, Classified, Handlers, MessageHandler, SubscriptionHandler,
};
use crate::error::{Error, ErrorKind};
use crate::frame::Frame;
use crate::json::{ApiError, RawJson, Secret, TextSlice};

/// Method names and credentials of a JSON-RPC 2.0 venue.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JsonRpcConfig {
    /// The method of server pushes. Default `"subscription"`.
    pub notification_method: String,
    /// Subscribe call; params `{"channels": [...]}`, result: the channels subscribed.
    /// Default `"public/subscribe"`.
    pub subscribe_method: String,
    /// Unsubscribe call, same shapes. Default `"public/unsubscribe"`.
    pub unsubscribe_method: String,
    /// Channels per subscribe call. Default 64.
    pub subscribe_batch: usize,
    /// Auth call (OAuth-style grants `client_credentials` and `refresh_token`).
    /// Default `"public/auth"`.
    pub auth_method: String,
    /// Credentials; `None`: no authentication.
    pub credentials: Option<(String, Secret)>,
    /// Error codes of the auth call that mean "refused" (bad credentials, invalid
    /// params): the connection stops instead of retrying. Any other error from the auth
    /// call (a rate limit, a busy server) backs off and retries. Default `[13004, -32602]`
    /// (`invalid_credentials`, `Invalid params`).
    pub auth_refusal_codes: Vec<i64>,
    /// Refresh this long before the grant expires. Default 30 s.
    pub refresh_margin: Duration,
    /// A server heartbeat (`method`, with `params.type == "test_request"`) and the method
    /// that answers it. Default `("heartbeat", "public/test")`.
    pub heartbeat: Option<(String, String)>,
}

impl Default for JsonRpcConfig {
    fn default() -> Self {
        JsonRpcConfig {
            notification_method: "subscription".into(),
            subscribe_method: "public/subscribe".into(),
            unsubscribe_method: "public/unsubscribe".into(),
            subscribe_batch: 64,
            auth_method: "public/auth".into(),
            credentials: None,
            auth_refusal_codes: vec![13004, -32602],
            refresh_margin: Duration::from_secs(30),
            heartbeat: Some(("heartbeat".into(), "public/test".into())),
        }
    }
}

impl JsonRpcConfig {
    /// Authenticate with `client_credentials`.
    #[must_use]
    pub fn with_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> Self {
        self.credentials = Some((client_id.into(), client_secret.into()));
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A configuration error for an empty method name or a zero batch size.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, m) in [
            ("notification_method", &self.notification_method),
            ("subscribe_method", &self.subscribe_method),
            ("unsubscribe_method", &self.unsubscribe_method),
            ("auth_method", &self.auth_method),
        ] {
            if m.is_empty() {
                return Err(Error::config(format!("json-rpc {name} is empty")));
            }
        }
        if self.subscribe_batch == 0 {
            return Err(Error::config("json-rpc subscribe_batch must be > 0"));
        }
        Ok(())
    }

    /// The behaviours for this configuration (connection and error handlers default).
    pub fn handlers(&self) -> Handlers {
        Handlers {
            message: Box::new(JsonRpcHandler::new(self)),
            subscription: Some(Box::new(JsonRpcSubscriptions {
                subscribe: self.subscribe_method.clone(),
                unsubscribe: self.unsubscribe_method.clone(),
                batch: self.subscribe_batch,
            })),
            auth: self.credentials.as_ref().map(|(id, secret)| {
                Box::new(JsonRpcAuth {
                    method: self.auth_method.clone(),
                    client_id: id.clone(),
                    client_secret: secret.clone(),
                    margin: self.refresh_margin,
                    refusal_codes: self.auth_refusal_codes.clone(),
                }) as Box<dyn AuthHandler>
            }),
            ..Handlers::default()
        }
    }
}

/// Ids of heartbeat answers start here, far from the ids requests use, so their replies
/// can be recognised and swallowed.
const HEARTBEAT_ID_BASE: u64 = 1 << 52;

/// The JSON-RPC 2.0 envelope.
#[derive(Debug)]
pub struct JsonRpcHandler {
    notification_method: String,
    heartbeat: Option<(String, String)>,
    heartbeat_ids: VecDeque<u64>,
    next_heartbeat_id: u64,
    timing: ServerTiming,
}

impl JsonRpcHandler {
    /// The envelope for `config`.
    pub fn new(config: &JsonRpcConfig) -> Self {
        JsonRpcHandler {
            notification_method: config.notification_method.clone(),
            heartbeat: config.heartbeat.clone(),
            heartbeat_ids: VecDeque::new(),
            next_heartbeat_id: HEARTBEAT_ID_BASE,
            timing: ServerTiming::default(),
        }
    }

    /// A handle on the server timestamps of responses (see [`ServerTiming`]).
    pub fn server_timing(&self) -> ServerTiming {
        self.timing.clone()
    }

    fn heartbeat_answer(&mut self, answer_method: &str) -> Frame {
        let id = self.next_heartbeat_id;
        self.next_heartbeat_id += 1;
        if self.heartbeat_ids.len() >= 64 {
            self.heartbeat_ids.pop_front();
        }
        self.heartbeat_ids.push_back(id);
        Frame::text(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":{},"params":{{}}}}"#,
            Value::from(answer_method)
        ))
    }
}

/// The envelope, read leniently: one odd field (an escaped string, a malformed error
/// object, a float timestamp, scalar params, a `channel` or `type` that is not a string)
/// must not turn a response into `Other`, which would leave its caller waiting for the
/// timeout.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<Id>,
    #[serde(borrow, default)]
    method: Option<Str<'a>>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Params<'a>,
    #[serde(rename = "usIn", default, deserialize_with = "lenient_u64")]
    us_in: Option<u64>,
    #[serde(rename = "usOut", default, deserialize_with = "lenient_u64")]
    us_out: Option<u64>,
}

/// A string borrowed from the frame when it has no escapes, owned when it has.
#[derive(Debug, Clone, PartialEq)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A string, or `None` for any other JSON value (skipped): a mistyped `channel` or `type`
/// in `params` must not fail the envelope, which may be a response someone waits for.
struct StrOrSkip<'a>(Option<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for StrOrSkip<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = StrOrSkip<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrSkip(Some(Str(Cow::Borrowed(v)))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrSkip(Some(Str(Cow::Owned(v.to_owned())))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StrOrSkip(None))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrSkip(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A timestamp if it is an unsigned integer; anything else is no timestamp.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let raw = <&RawValue>::deserialize(d)?;
    Ok(raw.get().parse::<u64>().ok())
}

/// The error object as well as it can be read: a `code` given as a string is parsed, a
/// missing or odd one is 0, a `message` that is not a string is empty; the raw object is
/// kept as `data` when it does not follow the spec.
fn lenient_error(raw: &RawValue) -> ApiError {
    if let Ok(e) = serde_json::from_str::<ApiError>(raw.get()) {
        return e;
    }
    let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    let code = match &v["code"] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    };
    let message = v["message"].as_str().unwrap_or_default().to_owned();
    ApiError {
        code,
        message,
        data: Some(v),
    }
}

/// Server-side timestamps of the latest response that carried them (Deribit's `usIn` /
/// `usOut`: µs since the epoch when the request arrived and when the answer left). Cheap
/// to clone; read it from any task.
#[derive(Debug, Clone, Default)]
pub struct ServerTiming(Arc<[AtomicU64; 3]>);

impl ServerTiming {
    fn record(&self, us_in: u64, us_out: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.0[0].store(us_in, Ordering::Relaxed);
        self.0[1].store(us_out, Ordering::Relaxed);
        self.0[2].store(now, Ordering::Relaxed);
    }

    /// `(usIn, usOut, received)` of the latest timed response, µs since the epoch
    /// (`received` by this host's clock).
    pub fn last(&self) -> Option<(u64, u64, u64)> {
        let us_out = self.0[1].load(Ordering::Relaxed);
        (us_out != 0).then(|| {
            (
                self.0[0].load(Ordering::Relaxed),
                us_out,
                self.0[2].load(Ordering::Relaxed),
            )
        })
    }

    /// Time the server spent on the latest timed request (`usOut − usIn`).
    pub fn server_time(&self) -> Option<Duration> {
        self.last()
            .map(|(i, o, _)| Duration::from_micros(o.saturating_sub(i)))
    }

    /// Server → client delay of the latest timed response (`received − usOut`; meaningful
    /// when both clocks agree, as on one host or with NTP-synchronised ones).
    pub fn delivery_delay(&self) -> Option<Duration> {
        self.last()
            .map(|(_, o, r)| Duration::from_micros(r.saturating_sub(o)))
    }
}

/// A response id: we only ever send unsigned integers; anything else is not ours.
#[derive(Debug)]
enum Id {
    Ours(u64),
    Foreign,
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <&RawValue>::deserialize(d)?;
        Ok(v.get().parse::<u64>().map_or(Id::Foreign, Id::Ours))
    }
}

/// The parts of `params` routing needs, read in the same pass as the envelope; params that
/// are not an object (a positional array) are skipped.
#[derive(Default)]
struct Params<'a> {
    channel: Option<Str<'a>>,
    data: Option<&'a RawValue>,
    kind: Option<Str<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Params<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Params<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON-RPC params")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Params<'a>, M::Error> {
                let mut p = Params::default();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match key.0.as_ref() {
                        "channel" => p.channel = map.next_value::<StrOrSkip<'de>>()?.0,
                        "data" => p.data = Some(map.next_value()?),
                        "type" => p.kind = map.next_value::<StrOrSkip<'de>>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(p)
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Params<'a>, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Params::default())
            }
            // Scalar params carry nothing to route: skipped, the envelope still counts.
            fn visit_unit<E: de::Error>(self) -> Result<Params<'a>, E> {
                Ok(Params::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Params<'a>, E> {
                Ok(Params::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Params<'a>, E> {
                Ok(Params::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Params<'a>, E> {
                Ok(Params::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Params<'a>, E> {
                Ok(Params::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Params<'a>, E> {
                Ok(Params::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl MessageHandler for JsonRpcHandler {
    fn classify(&mut self, frame: &Frame) -> Classified {
        let Frame::Text(text) = frame else {
            return Classified::Other;
        };
        let Ok(env) = serde_json::from_str::<Envelope<'_>>(text.as_str()) else {
            return Classified::Other;
        };
        match (env.method, env.id) {
            (None, Some(Id::Ours(id))) => {
                if let (Some(us_in), Some(us_out)) = (env.us_in, env.us_out) {
                    self.timing.record(us_in, us_out);
                }
                if id >= HEARTBEAT_ID_BASE {
                    if let Some(i) = self.heartbeat_ids.iter().position(|h| *h == id) {
                        self.heartbeat_ids.remove(i);
                        return Classified::Consume;
                    }
                }
                let result = match env.error {
                    Some(e) => Err(lenient_error(e)),
                    None => Ok(match env.result {
                        Some(raw) => RawJson::slice_of(text, raw.get()),
                        None => RawJson::slice_of(text, "null"),
                    }),
                };
                Classified::Response { id, result }
            }
            (Some(method), _) if method.0 == self.notification_method => {
                match (env.params.channel, env.params.data) {
                    (Some(channel), Some(data)) => Classified::Notification {
                        channel: TextSlice::of(text, &channel.0),
                        data: RawJson::slice_of(text, data.get()),
                    },
                    _ => Classified::Other,
                }
            }
            (Some(method), _) => match &self.heartbeat {
                Some((hb, answer))
                    if method.0 == *hb
                        && env
                            .params
                            .kind
                            .as_ref()
                            .is_some_and(|k| k.0 == "test_request") =>
                {
                    let answer = answer.clone();
                    Classified::Heartbeat(self.heartbeat_answer(&answer))
                }
                _ => Classified::Other,
            },
            _ => Classified::Other,
        }
    }

    fn encode_request(&mut self, id: u64, method: &str, params: &str) -> Option<Frame> {
        let mut s = String::with_capacity(48 + method.len() + params.len());
        s.push_str(r#"{"jsonrpc":"2.0","id":"#);
        s.push_str(&id.to_string());
        s.push_str(r#","method":"#);
        s.push_str(&Value::from(method).to_string());
        s.push_str(r#","params":"#);
        s.push_str(params);
        s.push('}');
        Some(Frame::text(s))
    }
}

/// `{"channels": [...]}` subscribe / unsubscribe calls; the ack is the list of channels.
#[derive(Debug, Clone)]
pub struct JsonRpcSubscriptions {
    subscribe: String,
    unsubscribe: String,
    batch: usize,
}

impl SubscriptionHandler for JsonRpcSubscriptions {
    fn subscribe(&mut self, channels: &[String]) -> Call {
        Call {
            method: self.subscribe.clone(),
            params: json!({ "channels": channels }),
        }
    }

    fn unsubscribe(&mut self, channels: &[String]) -> Call {
        Call {
            method: self.unsubscribe.clone(),
            params: json!({ "channels": channels }),
        }
    }

    fn confirmed(&mut self, _requested: &[String], ack: &RawJson) -> Result<Vec<String>, Error> {
        ack.decode_owned::<Vec<String>>()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }
}

/// OAuth-style `client_credentials` / `refresh_token` grants.
#[derive(Debug, Clone)]
pub struct JsonRpcAuth {
    method: String,
    client_id: String,
    client_secret: Secret,
    margin: Duration,
    refusal_codes: Vec<i64>,
}

#[derive(Deserialize)]
struct Grant {
    #[serde(default)]
    expires_in: Option<f64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

impl AuthHandler for JsonRpcAuth {
    fn authenticate(&mut self, refresh: Option<&Secret>) -> Call {
        let params = match refresh {
            Some(token) => json!({"grant_type": "refresh_token", "refresh_token": token.expose()}),
            None => json!({
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret.expose(),
            }),
        };
        Call {
            method: self.method.clone(),
            params,
        }
    }

    fn granted(&mut self, result: Result<&RawJson, &ApiError>) -> Result<AuthGrant, Error> {
        match result {
            Ok(raw) => {
                let grant: Grant = raw.decode().map_err(|e| {
                    Error::new(ErrorKind::Auth)
                        .with_context("unexpected auth result")
                        .with_source(e)
                })?;
                Ok(AuthGrant {
                    expires_in: grant
                        .expires_in
                        .filter(|s| s.is_finite() && *s > 0.0)
                        // A grant beyond what a `Duration` holds is no expiry at all.
                        .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                    refresh_token: grant.refresh_token.map(Secret::new),
                    ..AuthGrant::default()
                })
            }
            Err(api) if self.refusal_codes.contains(&api.code) => {
                Err(Error::new(ErrorKind::Auth).with_source(api.clone()))
            }
            Err(api) => Err(Error::new(ErrorKind::AuthUnavailable).with_source(api.clone())),
        }
    }

    fn refresh_margin(&self) -> Duration {
        self.margin
    }
}

/// Decodes a JSON-RPC `params` text for a request built from a serializable value.
pub(crate) fn params_text<P: serde::Serialize + ?Sized>(params: &P) -> Result<String, Error> {
    serde_json::to_string(params).map_err(|e| Error::new(ErrorKind::Encode).with_source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(s: &str) -> Classified {
        JsonRpcHandler::new(&JsonRpcConfig::default()).classify(&Frame::text(s.to_owned()))
    }

    /// Found by fuzzing (fuzz/regressions/jsonrpc_envelope): one odd field used to make the
    /// whole message `Other`, losing a response, a notification or a heartbeat.
    #[test]
    fn odd_fields_do_not_lose_the_message() {
        for (text, want_code) in [
            (
                r#"{"id":3,"error":{"code":"10028","message":"too_many_requests"}}"#,
                10028,
            ),
            (r#"{"id":3,"error":{"code":10009,"message":null}}"#, 10009),
            (r#"{"id":3,"error":"bad"}"#, 0),
        ] {
            match classify(text) {
                Classified::Response {
                    id: 3,
                    result: Err(e),
                } => assert_eq!(e.code, want_code, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        for text in [
            r#"{"id":4,"result":1,"usIn":1.5,"usOut":-2}"#,
            r#"{"id":4,"result":1,"params":7}"#,
            r#"{"id":4,"result":1,"params":"x"}"#,
            // Found by fuzzing after F7 was fixed: a mistyped routing field in params.
            r#"{"id":4,"result":1,"params":{"channel":false,"data":null}}"#,
            r#"{"id":4,"result":1,"params":{"chann\u0065l":[1],"type":{"a":2}}}"#,
            r#"{"id":4,"result":1,"params":{"type":7,"channel":{"x":[]}}}"#,
        ] {
            assert!(
                matches!(
                    classify(text),
                    Classified::Response {
                        id: 4,
                        result: Ok(_)
                    }
                ),
                "{text}"
            );
        }
        match classify(
            r#"{"method":"subscription","params":{"chan\u006eel":"trades\/BTC","data":[1]}}"#,
        ) {
            Classified::Notification { channel, data } => {
                assert_eq!(channel.as_str(), "trades/BTC");
                assert_eq!(data.as_str(), "[1]");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn responses_and_errors() {
        match classify(r#"{"jsonrpc":"2.0","id":42,"result":{"x":[1,2]},"usIn":1}"#) {
            Classified::Response {
                id: 42,
                result: Ok(raw),
            } => assert_eq!(raw.as_str(), r#"{"x":[1,2]}"#),
            other => panic!("{other:?}"),
        }
        match classify(
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":10028,"message":"too_many_requests"}}"#,
        ) {
            Classified::Response {
                id: 7,
                result: Err(e),
            } => assert_eq!(e.code, 10028),
            other => panic!("{other:?}"),
        }
        match classify(r#"{"jsonrpc":"2.0","id":8,"result":null}"#) {
            Classified::Response {
                id: 8,
                result: Ok(raw),
            } => assert_eq!(raw.as_str(), "null"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(r#"{"id":"abc","result":1}"#),
            Classified::Other
        ));
    }

    #[test]
    fn server_timestamps_are_kept() {
        let mut h = JsonRpcHandler::new(&JsonRpcConfig::default());
        let timing = h.server_timing();
        assert!(timing.last().is_none());
        h.classify(&Frame::text(
            r#"{"jsonrpc":"2.0","id":1,"result":1,"usIn":1700000000000100,"usOut":1700000000000190,"usDiff":90}"#,
        ));
        let (us_in, us_out, _) = timing.last().unwrap();
        assert_eq!(
            (us_in, us_out),
            (1_700_000_000_000_100, 1_700_000_000_000_190)
        );
        assert_eq!(timing.server_time(), Some(Duration::from_micros(90)));
    }

    #[test]
    fn notifications_are_sliced_not_copied() {
        match classify(
            r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.BTC","data":{"p":1.5}}}"#,
        ) {
            Classified::Notification { channel, data } => {
                assert_eq!(channel.as_str(), "ticker.BTC");
                assert_eq!(data.as_str(), r#"{"p":1.5}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heartbeat_is_answered_and_its_reply_swallowed() {
        let mut h = JsonRpcHandler::new(&JsonRpcConfig::default());
        let hb = r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#;
        let Classified::Heartbeat(Frame::Text(answer)) = h.classify(&Frame::text(hb)) else {
            panic!("heartbeat not recognised");
        };
        let v: Value = serde_json::from_str(answer.as_str()).unwrap();
        assert_eq!(v["method"], "public/test");
        let id = v["id"].as_u64().unwrap();
        let reply = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"version":"1"}}}}"#);
        assert!(matches!(
            h.classify(&Frame::text(reply)),
            Classified::Consume
        ));
        let plain = r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}"#;
        assert!(matches!(h.classify(&Frame::text(plain)), Classified::Other));
    }

    #[test]
    fn garbage_is_other_never_a_panic() {
        for s in [
            "",
            "{",
            "[1,2]",
            "null",
            r#"{"method":5}"#,
            r#"{"params":[1]}"#,
            "\u{0}",
        ] {
            assert!(matches!(classify(s), Classified::Other), "{s:?}");
        }
    }

    #[test]
    fn requests_are_well_formed() {
        let mut h = JsonRpcHandler::new(&JsonRpcConfig::default());
        let f = h.encode_request(3, "public/get_time", "{}").unwrap();
        let v: Value = serde_json::from_str(f.as_text().unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":3,"method":"public/get_time","params":{}})
        );
    }

    #[test]
    fn auth_grant_and_refusal() {
        let mut a = JsonRpcAuth {
            method: "public/auth".into(),
            client_id: "id".into(),
            client_secret: Secret::new("s3cret"),
            margin: Duration::from_secs(30),
            refusal_codes: vec![13004],
        };
        let call = a.authenticate(None);
        assert_eq!(call.params["client_secret"], "s3cret");
        assert!(!format!("{a:?}").contains("s3cret"));
        let ok = RawJson::from_string(
            r#"{"access_token":"t","expires_in":900,"refresh_token":"r"}"#.into(),
        )
        .unwrap();
        let g = a.granted(Ok(&ok)).unwrap();
        assert_eq!(g.expires_in, Some(Duration::from_secs(900)));
        assert_eq!(g.refresh_token.unwrap().expose(), "r");
        let bad = ApiError {
            code: 13004,
            message: "invalid_credentials".into(),
            data: None,
        };
        let refused = a.granted(Err(&bad)).unwrap_err();
        assert!(refused.is_auth() && !refused.is_transient());
        let busy = ApiError {
            code: 10028,
            message: "too_many_requests".into(),
            data: None,
        };
        let later = a.granted(Err(&busy)).unwrap_err();
        assert!(
            later.is_auth() && later.is_transient(),
            "a rate-limited auth retries"
        );
    }
}
