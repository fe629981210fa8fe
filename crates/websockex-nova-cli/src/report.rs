//! Lifecycle events on stderr, as text or as one JSON object per line.

use std::io::Write;

use clap::ValueEnum;
use serde_json::{json, Value};
use websockex_nova::{ErrorKind, Event};

/// How lifecycle events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EventFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line with at least an `event` field.
    Json,
    /// Nothing.
    None,
}

/// The JSON form of a lifecycle event (`None` for data messages).
pub(crate) fn event_json(event: &Event) -> Option<Value> {
    let v = match event {
        Event::Message(_) => return None,
        Event::StateChanged { from, to, attempt } => {
            json!({"event": "state_changed", "from": from.as_str(), "to": to.as_str(), "attempt": attempt})
        }
        Event::Connected {
            attempt,
            subprotocol,
        } => json!({"event": "connected", "attempt": attempt, "subprotocol": subprotocol}),
        Event::Disconnected {
            attempt,
            error,
            code,
        } => {
            let reason = match error.kind() {
                ErrorKind::ClosedByServer { reason, .. } => reason.clone(),
                _ => String::new(),
            };
            json!({
                "event": "disconnected",
                "attempt": attempt,
                "code": code.map(|c| c.as_u16()),
                "reason": reason,
                "error": error.to_string(),
            })
        }
        Event::Reconnecting { attempt, delay } => json!({
            "event": "reconnecting",
            "attempt": attempt,
            "delay": delay.as_secs_f64(),
            "delay_ms": delay.as_millis() as u64,
        }),
        Event::Lagged { dropped } => json!({"event": "lagged", "dropped": dropped}),
        Event::Error(e) => json!({"event": "error", "error": e.to_string()}),
        Event::Restarted { restarts, cause } => {
            json!({"event": "restarted", "restarts": restarts, "reason": cause})
        }
        Event::Closed { error } => json!({
            "event": "closed",
            "error": error.as_ref().map(|e| e.to_string()),
        }),
        _ => json!({"event": event.name()}),
    };
    Some(v)
}

/// A one-line human description of a lifecycle event.
pub(crate) fn event_text(event: &Event) -> Option<String> {
    let s = match event {
        Event::Message(_) => return None,
        Event::StateChanged { from, to, attempt } => {
            format!("state {from} -> {to} (attempt {attempt})")
        }
        Event::Connected {
            attempt,
            subprotocol,
        } => match subprotocol {
            Some(p) => format!("connected (attempt {attempt}, subprotocol {p})"),
            None => format!("connected (attempt {attempt})"),
        },
        Event::Disconnected { attempt, error, .. } => {
            format!("disconnected (attempt {attempt}): {error}")
        }
        Event::Reconnecting { attempt, delay } => {
            format!("reconnecting in {delay:.3?} (attempt {attempt})")
        }
        Event::Lagged { dropped } => format!("lagged: {dropped} messages dropped"),
        Event::Error(e) => format!("error: {e}"),
        Event::Restarted { restarts, cause } => format!("restarted ({restarts}): {cause}"),
        Event::Closed { error: None } => "closed".to_owned(),
        Event::Closed { error: Some(e) } => format!("closed: {e}"),
        _ => event.name().to_owned(),
    };
    Some(s)
}

/// Prints a lifecycle event to stderr in `format`; data messages are ignored.
pub(crate) fn print_event(format: EventFormat, event: &Event) {
    let line = match format {
        EventFormat::None => return,
        EventFormat::Json => event_json(event).map(|v| v.to_string()),
        EventFormat::Text => event_text(event).map(|s| format!("nova: {s}")),
    };
    if let Some(line) = line {
        crate::telemetry::clear_status();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}
