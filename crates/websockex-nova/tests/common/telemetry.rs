//! Captures `tracing` events and `LoggingHandler` records, for asserting telemetry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use websockex_nova::logging::{LogCategory, LogRecord, LoggingHandler};

/// One captured `tracing` event: its `event` name and its fields as text.
#[derive(Debug, Clone)]
pub struct Captured {
    pub level: tracing::Level,
    pub fields: BTreeMap<String, String>,
}

impl Captured {
    pub fn name(&self) -> &str {
        self.fields.get("event").map_or("", String::as_str)
    }
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// The events `websockex_nova` emitted while the guard of [`capture`] lived.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    pub fn all(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }
    pub fn named(&self, name: &str) -> Vec<Captured> {
        self.all()
            .into_iter()
            .filter(|c| c.name() == name)
            .collect()
    }
    pub fn names(&self) -> Vec<String> {
        self.all().iter().map(|c| c.name().to_owned()).collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "websockex_nova" {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// Captures every `websockex_nova` event on this thread (the paused-time tests run the
/// connection's task on the test's own thread) until the guard drops.
pub fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

/// A `LoggingHandler` that keeps (category, event, fields) of every record.
#[derive(Clone, Default)]
pub struct Records(pub Arc<Mutex<Vec<Record>>>);

/// (category, event, fields as text).
pub type Record = (LogCategory, String, BTreeMap<String, String>);

impl Records {
    pub fn names(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|r| r.1.clone()).collect()
    }
    pub fn named(&self, name: &str) -> Vec<(LogCategory, BTreeMap<String, String>)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.1 == name)
            .map(|r| (r.0, r.2.clone()))
            .collect()
    }
}

impl LoggingHandler for Records {
    fn enabled(&self, _: LogCategory, level: tracing::Level) -> bool {
        level <= tracing::Level::DEBUG
    }
    fn log(&mut self, record: &LogRecord<'_>) {
        let fields = record
            .fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_string()))
            .collect();
        self.0
            .lock()
            .unwrap()
            .push((record.category, record.event.to_owned(), fields));
    }
}
