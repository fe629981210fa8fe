//! Logging: the [`LoggingHandler`] behaviour, [`DefaultLoggingHandler`], and the table of
//! telemetry events every connection emits.
//!
//! Every happening on a connection is emitted twice from one call site: as a `tracing`
//! event (target `websockex_nova`, inside the `websockex_nova.connection` span) for any
//! subscriber you install, and as a [`LogRecord`] to the connection's [`LoggingHandler`]
//! if one is set. The handler is the simple way to get per-category levels, plain or JSON
//! lines and message logging without configuring `tracing`:
//!
//! ```
//! use websockex_nova::logging::{DefaultLoggingHandler, LogCategory, LogFormat, MessageLogging};
//! use websockex_nova::Client;
//! use tracing::level_filters::LevelFilter;
//!
//! let logging = DefaultLoggingHandler::new()
//!     .format(LogFormat::Json)
//!     .level(LogCategory::Auth, LevelFilter::DEBUG)
//!     .messages(MessageLogging::Full { max_len: 512 })
//!     .writer(std::io::stderr());
//! let builder = Client::builder("ws://127.0.0.1:9/").logging(logging);
//! # let _ = builder;
//! ```
//!
//! Secrets never reach a log line: credentials and tokens live in [`Secret`](crate::Secret)
//! (which prints `[redacted]`), no record carries them, and message payloads logged in
//! full have the values of secret-looking keys (`client_secret`, `access_token`,
//! `signature`, …, see [`DEFAULT_SECRET_KEYS`]) replaced before they are written.
//!
//! ## Telemetry events
//!
//! The `event` field names the happening; the names are stable. Every event carries the
//! span's `conn_id`, `host` and `attempt`.
//!
//! | event | category | level | fields |
//! |---|---|---|---|
//! | `state_changed` | connection | INFO | `from`, `to`, `attempt` |
//! | `connected` | connection | INFO | `attempt`, `subprotocol` |
//! | `disconnected` | error | WARN | `attempt`, `code`, `category`, `error` (an error that cost a link or an attempt) |
//! | `reconnecting` | connection | INFO | `attempt`, `delay_ms` |
//! | `dead_peer` | connection | WARN | `timeout_ms` |
//! | `close_handshake` | connection | DEBUG | `clean` |
//! | `closed` | connection | INFO / WARN | `error` (when it ended in one) |
//! | `reconfigured` | connection | INFO | `now`, `on_connect` (the changed fields, comma-separated) |
//! | `config_reloaded` | connection | INFO | `now`, `on_connect` (from a `ConfigWatcher`, outside the span) |
//! | `config_refused` | connection | WARN | `error` (from a `ConfigWatcher`; the old configuration stays) |
//! | `restarted` | connection | ERROR | `restarts`, `cause` |
//! | `restart_limit` | connection | ERROR | `restarts`, `cause` |
//! | `illegal_transition` | connection | ERROR | `error` |
//! | `pong` | connection | DEBUG | `rtt_us` |
//! | `heartbeat_answered` | connection | DEBUG | |
//! | `authenticated` | auth | INFO | `refresh`, `expires_in_ms` |
//! | `auth_refresh` | auth | DEBUG | |
//! | `auth_refresh_failed` | auth | WARN | `category`, `error` |
//! | `auth_failed` | auth | WARN | `category`, `error` |
//! | `subscribed` | subscription | INFO | `channels` |
//! | `resubscribed` | subscription | INFO | `channels`, `refused` |
//! | `subscription_refused` | subscription | WARN | `channels` |
//! | `request_sent` | request | DEBUG | `id`, `method` |
//! | `request_answered` | request | DEBUG | `id`, `latency_us`, `ok` |
//! | `call_answered` | request | DEBUG | `method` |
//! | `call_failed` | request | WARN | `method`, `code` |
//! | `call_unanswered` | request | WARN | `method` |
//! | `rate_limited` | rate_limit | DEBUG | `queued`, `wait_ms` (a wait for credits begins) |
//! | `message_received` | message | TRACE | `len`, `kind` |
//! | `message_sent` | message | TRACE | `len`, `kind` |
//! | `dropped` | message | DEBUG | `count`, `stream` |
//! | `decode_failed` | error | WARN | `category`, `error` (the codec refused a frame; the link stays up) |
//! | `backpressure` | message | INFO | `active`, `depth` (the event stream crossed a watermark) |
//!
//! `category` on errors is [`ErrorKind::name`](crate::ErrorKind::name).

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::time::{Duration, SystemTime};

use tracing::level_filters::LevelFilter;
use tracing::Level;

use crate::frame::Frame;

/// What a record is about; each has its own level in [`DefaultLoggingHandler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LogCategory {
    /// Connects, disconnects, reconnects, state, keepalive.
    Connection,
    /// Authentication and token refresh.
    Auth,
    /// Subscribe, resubscribe, refusals.
    Subscription,
    /// Requests and framework calls.
    Request,
    /// Data messages in and out, drops.
    Message,
    /// Rate-limit waits.
    RateLimit,
    /// Errors that cost a link or an attempt (`disconnected`).
    Error,
}

impl LogCategory {
    /// All categories.
    pub const ALL: [LogCategory; 7] = [
        LogCategory::Connection,
        LogCategory::Auth,
        LogCategory::Subscription,
        LogCategory::Request,
        LogCategory::Message,
        LogCategory::RateLimit,
        LogCategory::Error,
    ];

    /// Stable lower-case name (`"rate_limit"`).
    pub fn name(self) -> &'static str {
        match self {
            LogCategory::Connection => "connection",
            LogCategory::Auth => "auth",
            LogCategory::Subscription => "subscription",
            LogCategory::Request => "request",
            LogCategory::Message => "message",
            LogCategory::RateLimit => "rate_limit",
            LogCategory::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A field's value: typed where it matters to a JSON reader, `Display` otherwise.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum LogValue<'a> {
    /// An unsigned number.
    U64(u64),
    /// A signed number.
    I64(i64),
    /// A flag.
    Bool(bool),
    /// Text.
    Str(&'a str),
    /// Anything else that prints.
    Display(&'a dyn fmt::Display),
    /// Absent (JSON `null`).
    Null,
}

impl<'a> LogValue<'a> {
    /// A value that prints through `Display`.
    pub fn display(value: &'a dyn fmt::Display) -> Self {
        LogValue::Display(value)
    }

    /// A duration in whole milliseconds.
    pub fn ms(d: Duration) -> Self {
        LogValue::U64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    /// A duration in whole microseconds.
    pub fn us(d: Duration) -> Self {
        LogValue::U64(d.as_micros().min(u128::from(u64::MAX)) as u64)
    }
}

macro_rules! log_value_from {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {$(
        impl From<$t> for LogValue<'_> {
            fn from(v: $t) -> Self {
                LogValue::$variant(v as $as)
            }
        }
    )*};
}
log_value_from!(u64 => U64 as u64, u32 => U64 as u64, u16 => U64 as u64, usize => U64 as u64,
    i64 => I64 as i64, i32 => I64 as i64);

impl<'a, T: Into<LogValue<'a>>> From<Option<T>> for LogValue<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(LogValue::Null, Into::into)
    }
}

impl From<bool> for LogValue<'_> {
    fn from(v: bool) -> Self {
        LogValue::Bool(v)
    }
}

impl<'a> From<&'a str> for LogValue<'a> {
    fn from(v: &'a str) -> Self {
        LogValue::Str(v)
    }
}

impl<'a> From<&'a String> for LogValue<'a> {
    fn from(v: &'a String) -> Self {
        LogValue::Str(v)
    }
}

impl fmt::Display for LogValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogValue::U64(v) => v.fmt(f),
            LogValue::I64(v) => v.fmt(f),
            LogValue::Bool(v) => v.fmt(f),
            LogValue::Str(v) => v.fmt(f),
            LogValue::Display(v) => v.fmt(f),
            LogValue::Null => f.write_str("null"),
        }
    }
}

impl fmt::Debug for LogValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogValue::Str(v) => fmt::Debug::fmt(v, f),
            other => fmt::Display::fmt(other, f),
        }
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the server.
    In,
    /// Written to the server.
    Out,
}

/// A data message attached to a [`LogRecord`] of category [`LogCategory::Message`].
#[derive(Debug, Clone, Copy)]
pub struct MessageLog<'a> {
    /// Which way it went.
    pub direction: Direction,
    /// `true` for a text frame.
    pub text: bool,
    /// The payload, as on the wire.
    pub payload: &'a [u8],
}

/// One happening on a connection, handed to [`LoggingHandler::log`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LogRecord<'a> {
    /// The connection's process-wide id (the span's `conn_id`).
    pub conn_id: u64,
    /// What it is about.
    pub category: LogCategory,
    /// How much it matters.
    pub level: Level,
    /// The stable event name (see the module's table).
    pub event: &'static str,
    /// The event's fields, in order.
    pub fields: &'a [(&'static str, LogValue<'a>)],
    /// The message, for `message_received` / `message_sent`.
    pub message: Option<MessageLog<'a>>,
}

/// Receives a connection's [`LogRecord`]s. Runs on the connection's task: keep it cheap.
pub trait LoggingHandler: Send + 'static {
    /// Whether records of this category and level are wanted (asked before building one,
    /// so a message is not even looked at when message logging is off).
    fn enabled(&self, category: LogCategory, level: Level) -> bool;
    /// One record.
    fn log(&mut self, record: &LogRecord<'_>);
}

/// The line format of [`DefaultLoggingHandler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-11-26T12:00:00.123Z  WARN connection disconnected conn_id=1 attempt=1 …`
    #[default]
    Plain,
    /// One JSON object per line: `ts`, `level`, `category`, `event`, `conn_id`, the fields.
    Json,
}

/// How much of each data message [`DefaultLoggingHandler`] writes (at DEBUG, in the
/// [`LogCategory::Message`] category).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageLogging {
    /// Nothing.
    #[default]
    Off,
    /// Direction, kind and length.
    Summary,
    /// The payload as well (secret values redacted), cut after `max_len` bytes; binary
    /// payloads as hex.
    Full {
        /// Bytes of payload kept.
        max_len: usize,
    },
}

/// Keys whose values [`redact_secrets`] replaces, compared without case.
pub const DEFAULT_SECRET_KEYS: &[&str] = &[
    "client_secret",
    "secret",
    "access_token",
    "refresh_token",
    "token",
    "signature",
    "password",
    "passphrase",
    "api_key",
    "apikey",
    "api_secret",
    "private_key",
];

/// Writes records as plain or JSON lines with a level per category. Default: INFO for
/// every category, messages off, plain lines to stderr.
pub struct DefaultLoggingHandler {
    levels: [LevelFilter; LogCategory::ALL.len()],
    format: LogFormat,
    messages: MessageLogging,
    secret_keys: Vec<Cow<'static, str>>,
    writer: Box<dyn Write + Send>,
    line: Vec<u8>,
}

impl Default for DefaultLoggingHandler {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DefaultLoggingHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultLoggingHandler")
            .field("levels", &self.levels)
            .field("format", &self.format)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl DefaultLoggingHandler {
    /// INFO everywhere, messages off, plain lines to stderr.
    pub fn new() -> Self {
        DefaultLoggingHandler {
            levels: [LevelFilter::INFO; LogCategory::ALL.len()],
            format: LogFormat::Plain,
            messages: MessageLogging::Off,
            secret_keys: DEFAULT_SECRET_KEYS
                .iter()
                .map(|k| Cow::Borrowed(*k))
                .collect(),
            writer: Box::new(std::io::stderr()),
            line: Vec::with_capacity(256),
        }
    }

    /// The level of one category.
    pub fn level(mut self, category: LogCategory, level: LevelFilter) -> Self {
        self.levels[category.index()] = level;
        self
    }

    /// The same level for every category.
    pub fn all_levels(mut self, level: LevelFilter) -> Self {
        self.levels = [level; LogCategory::ALL.len()];
        self
    }

    /// Plain or JSON lines.
    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Message logging; anything but `Off` also raises [`LogCategory::Message`] to DEBUG
    /// if it was lower.
    pub fn messages(mut self, messages: MessageLogging) -> Self {
        self.messages = messages;
        let m = &mut self.levels[LogCategory::Message.index()];
        if messages != MessageLogging::Off && *m < LevelFilter::DEBUG {
            *m = LevelFilter::DEBUG;
        }
        self
    }

    /// One more key whose values are redacted in logged payloads.
    pub fn secret_key(mut self, key: impl Into<String>) -> Self {
        self.secret_keys.push(Cow::Owned(key.into()));
        self
    }

    /// Where lines go (one `write_all` per line).
    pub fn writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.writer = Box::new(writer);
        self
    }

    fn format_record(&mut self, record: &LogRecord<'_>) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let ts = humantime::format_rfc3339_millis(SystemTime::now());
        let payload = record.message.and_then(|m| self.payload(m));
        match self.format {
            LogFormat::Plain => {
                let _ = write!(
                    line,
                    "{ts} {:>5} {} {} conn_id={}",
                    record.level,
                    record.category.name(),
                    record.event,
                    record.conn_id
                );
                for (k, v) in record.fields {
                    match v {
                        LogValue::Str(_) | LogValue::Display(_) => {
                            let _ = write!(line, " {k}={:?}", v.to_string());
                        }
                        _ => {
                            let _ = write!(line, " {k}={v}");
                        }
                    }
                }
                if let Some(m) = record.message {
                    let _ = write!(
                        line,
                        " direction={} kind={} len={}",
                        direction_name(m.direction),
                        if m.text { "text" } else { "binary" },
                        m.payload.len()
                    );
                }
                if let Some(p) = &payload {
                    let _ = write!(line, " payload={p:?}");
                }
            }
            LogFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("ts".into(), ts.to_string().into());
                obj.insert("level".into(), record.level.as_str().into());
                obj.insert("category".into(), record.category.name().into());
                obj.insert("event".into(), record.event.into());
                obj.insert("conn_id".into(), record.conn_id.into());
                for (k, v) in record.fields {
                    let value = match *v {
                        LogValue::U64(n) => n.into(),
                        LogValue::I64(n) => n.into(),
                        LogValue::Bool(b) => b.into(),
                        LogValue::Str(s) => s.into(),
                        LogValue::Display(d) => d.to_string().into(),
                        LogValue::Null => serde_json::Value::Null,
                    };
                    obj.insert((*k).into(), value);
                }
                if let Some(m) = record.message {
                    obj.insert("direction".into(), direction_name(m.direction).into());
                    obj.insert("kind".into(), if m.text { "text" } else { "binary" }.into());
                    obj.insert("len".into(), m.payload.len().into());
                }
                if let Some(p) = payload {
                    obj.insert("payload".into(), p.into_owned().into());
                }
                let _ = serde_json::to_writer(&mut line, &obj);
            }
        }
        line.push(b'\n');
        let _ = self.writer.write_all(&line);
        self.line = line;
    }

    fn payload(&self, m: MessageLog<'_>) -> Option<Cow<'_, str>> {
        let MessageLogging::Full { max_len } = self.messages else {
            return None;
        };
        if !m.text {
            let shown = &m.payload[..m.payload.len().min(max_len.div_ceil(2))];
            let mut hex = String::with_capacity(shown.len() * 2 + 3);
            for b in shown {
                hex.push_str(&format!("{b:02x}"));
            }
            if shown.len() < m.payload.len() {
                hex.push('…');
            }
            return Some(Cow::Owned(hex));
        }
        let text = String::from_utf8_lossy(m.payload);
        let redacted = redact_secrets(&text, &self.secret_keys);
        Some(Cow::Owned(truncate(&redacted, max_len)))
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl LoggingHandler for DefaultLoggingHandler {
    fn enabled(&self, category: LogCategory, level: Level) -> bool {
        self.levels[category.index()] >= level
    }

    fn log(&mut self, record: &LogRecord<'_>) {
        if record.message.is_some() && self.messages == MessageLogging::Off {
            return;
        }
        self.format_record(record);
    }
}

/// Replaces the values of `keys` (compared without case) in JSON-ish text with
/// `"[redacted]"`. Works on text that is not valid JSON (a truncated payload, say): it
/// looks for `"key"` followed by `:` and replaces the string, number or bare word after it.
///
/// ```
/// use websockex_nova::logging::{redact_secrets, DEFAULT_SECRET_KEYS};
///
/// let line = r#"{"params":{"client_id":"abc","client_secret":"s3cr3t"}}"#;
/// let out = redact_secrets(line, DEFAULT_SECRET_KEYS);
/// assert_eq!(out, r#"{"params":{"client_id":"abc","client_secret":"[redacted]"}}"#);
/// ```
pub fn redact_secrets<'a, K: AsRef<str>>(text: &'a str, keys: &[K]) -> Cow<'a, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `text` already in `out`
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let Some(key_end) = string_end(bytes, i) else {
            break;
        };
        let key = &text[i + 1..key_end];
        let mut j = key_end + 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let is_key = j < bytes.len() && bytes[j] == b':';
        if !(is_key && keys.iter().any(|k| k.as_ref().eq_ignore_ascii_case(key))) {
            i = key_end + 1;
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let (start, end) = if j < bytes.len() && bytes[j] == b'"' {
            (j, string_end(bytes, j).map_or(bytes.len(), |e| e + 1))
        } else {
            let mut e = j;
            while e < bytes.len() && !matches!(bytes[e], b',' | b'}' | b']') {
                e += 1;
            }
            (j, e)
        };
        if end > start {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[copied..start]);
            o.push_str("\"[redacted]\"");
            copied = end;
        }
        i = end.max(j);
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// `url` without what may carry credentials: user-info becomes `[redacted]@` and the
/// query `?[redacted]` (the fragment is dropped).
///
/// ```
/// use websockex_nova::logging::redact_url;
///
/// assert_eq!(redact_url("wss://u:p@host:443/ws/api/v2?key=abc"), "wss://[redacted]@host:443/ws/api/v2?[redacted]");
/// assert_eq!(redact_url("wss://host/ws"), "wss://host/ws");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let authority_end = rest.find(['/', '?', '#']).map_or(rest.len(), |i| i);
    let authority = &rest[..authority_end];
    let userinfo = authority.rfind('@');
    let query = rest[authority_end..]
        .find(['?', '#'])
        .map(|i| authority_end + i);
    if userinfo.is_none() && query.is_none() {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..after_scheme]);
    match userinfo {
        Some(at) => {
            out.push_str("[redacted]@");
            out.push_str(&authority[at + 1..]);
        }
        None => out.push_str(authority),
    }
    match query {
        Some(q) => {
            out.push_str(&rest[authority_end..q]);
            out.push_str("?[redacted]");
        }
        None => out.push_str(&rest[authority_end..]),
    }
    Cow::Owned(out)
}

/// The index of the quote closing the string that opens at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut k = start + 1;
    while k < bytes.len() {
        match bytes[k] {
            b'\\' => k += 2,
            b'"' => return Some(k),
            _ => k += 1,
        }
    }
    None
}

/// Emits one telemetry event: a `tracing` event and, if the connection has a
/// [`LoggingHandler`] that wants it, a [`LogRecord`]. Fields convert into [`LogValue`].
macro_rules! telemetry {
    ($logger:expr, $cat:ident, $lvl:ident, $event:literal $(, $k:ident = $v:expr)* $(,)?) => {{
        $(let $k = $crate::logging::LogValue::from($v);)*
        tracing::event!(target: "websockex_nova", tracing::Level::$lvl, event = $event $(, $k = %$k)*);
        $logger.log(
            $crate::logging::LogCategory::$cat,
            tracing::Level::$lvl,
            $event,
            &[$((stringify!($k), $k)),*],
        );
    }};
}
pub(crate) use telemetry;

/// The connection's optional handler, with the record plumbing the actor needs.
#[derive(Default)]
pub(crate) struct Logger {
    pub(crate) conn_id: u64,
    pub(crate) handler: Option<Box<dyn LoggingHandler>>,
}

impl Logger {
    pub(crate) fn log(
        &mut self,
        category: LogCategory,
        level: Level,
        event: &'static str,
        fields: &[(&'static str, LogValue<'_>)],
    ) {
        if let Some(h) = self.handler.as_mut() {
            if h.enabled(category, level) {
                h.log(&LogRecord {
                    conn_id: self.conn_id,
                    category,
                    level,
                    event,
                    fields,
                    message: None,
                });
            }
        }
    }

    /// A data message in or out: a TRACE `tracing` event and a DEBUG record.
    #[inline]
    pub(crate) fn message(&mut self, direction: Direction, frame: &Frame) {
        let (text, payload) = match frame {
            Frame::Text(t) => (true, t.as_bytes()),
            Frame::Binary(b) => (false, &b[..]),
            _ => return,
        };
        let kind = if text { "text" } else { "binary" };
        match direction {
            Direction::In => {
                tracing::trace!(target: "websockex_nova", event = "message_received", len = payload.len(), kind)
            }
            Direction::Out => {
                tracing::trace!(target: "websockex_nova", event = "message_sent", len = payload.len(), kind)
            }
        }
        let Some(h) = self.handler.as_mut() else {
            return;
        };
        if h.enabled(LogCategory::Message, Level::DEBUG) {
            let event = match direction {
                Direction::In => "message_received",
                Direction::Out => "message_sent",
            };
            h.log(&LogRecord {
                conn_id: self.conn_id,
                category: LogCategory::Message,
                level: Level::DEBUG,
                event,
                fields: &[],
                message: Some(MessageLog {
                    direction,
                    text,
                    payload,
                }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The event names in the module's table.
    fn documented() -> std::collections::BTreeSet<String> {
        include_str!("logging.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_emitted_event_is_in_the_table_and_every_row_is_emitted() {
        let sources = [
            include_str!("actor.rs"),
            include_str!("logging.rs"),
            include_str!("config_file.rs"),
        ];
        let mut emitted = std::collections::BTreeSet::new();
        for src in sources {
            for part in src.split("telemetry!(").skip(1) {
                if let Some(name) = part.split('"').nth(1) {
                    emitted.insert(name.to_owned());
                }
            }
            for part in src.split("event = \"").skip(1) {
                emitted.insert(part.split('"').next().unwrap().to_owned());
            }
        }
        // Skip the macro's own definition and this test's patterns.
        emitted.retain(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        let documented = documented();
        assert_eq!(emitted, documented);
    }

    #[test]
    fn redacts_strings_numbers_and_nested_keys_without_case() {
        let keys = DEFAULT_SECRET_KEYS;
        let cases = [
            (
                r#"{"Access_Token" : "abc","x":1}"#,
                r#"{"Access_Token" : "[redacted]","x":1}"#,
            ),
            (r#"{"signature":12345}"#, r#"{"signature":"[redacted]"}"#),
            (
                r#"{"a":{"refresh_token":"r\"q","b":"token"}}"#,
                r#"{"a":{"refresh_token":"[redacted]","b":"token"}}"#,
            ),
            (
                r#"{"client_secret":"cut-of"#,
                r#"{"client_secret":"[redacted]""#,
            ),
            (r#"["token","secret"]"#, r#"["token","secret"]"#),
            ("not json at all", "not json at all"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_secrets(input, keys), want, "{input}");
        }
    }

    #[test]
    fn levels_per_category_and_json_lines() {
        let sink = Sink::default();
        let mut h = DefaultLoggingHandler::new()
            .format(LogFormat::Json)
            .level(LogCategory::Auth, LevelFilter::WARN)
            .writer(sink.clone());
        assert!(h.enabled(LogCategory::Connection, Level::INFO));
        assert!(!h.enabled(LogCategory::Auth, Level::INFO));
        assert!(!h.enabled(LogCategory::Message, Level::DEBUG));
        let delay = LogValue::ms(Duration::from_millis(250));
        h.log(&LogRecord {
            conn_id: 7,
            category: LogCategory::Connection,
            level: Level::INFO,
            event: "reconnecting",
            fields: &[("attempt", 2u32.into()), ("delay_ms", delay)],
            message: None,
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["event"], "reconnecting");
        assert_eq!(v["category"], "connection");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["conn_id"], 7);
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["delay_ms"], 250);
    }

    #[test]
    fn full_message_logging_redacts_and_truncates() {
        let sink = Sink::default();
        let mut h = DefaultLoggingHandler::new()
            .messages(MessageLogging::Full { max_len: 40 })
            .writer(sink.clone());
        assert!(h.enabled(LogCategory::Message, Level::DEBUG));
        let payload = br#"{"method":"public/auth","params":{"client_secret":"hunter2-hunter2"}}"#;
        h.log(&LogRecord {
            conn_id: 1,
            category: LogCategory::Message,
            level: Level::DEBUG,
            event: "message_sent",
            fields: &[],
            message: Some(MessageLog {
                direction: Direction::Out,
                text: true,
                payload,
            }),
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(!out.contains("hunter2"), "{out}");
        let want = format!("direction=out kind=text len={}", payload.len());
        assert!(out.contains(&want), "{out}");
        assert!(out.contains('…'), "{out}");
    }
}
