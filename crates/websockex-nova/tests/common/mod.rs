//! Helpers shared by the integration tests: bounded waits on the event stream and a compact
//! textual trace of events, so each test can assert a whole event sequence in one line.
//!
//! Every wait is bounded by [`T`]. Under `start_paused` that bound is virtual time, so a test
//! that would hang fails at once instead.
#![allow(dead_code)]

use std::time::Duration;

use websockex_nova::{Client, Error, ErrorKind, Event, Events, Frame};
use websockex_nova_testkit::TestServer;

/// Upper bound for any single wait.
pub const T: Duration = Duration::from_secs(60);

/// Milliseconds.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The next event (any kind); panics on timeout or when the stream has ended.
pub async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(T, events.next())
        .await
        .expect("timed out waiting for an event")
        .expect("event stream ended")
}

/// The next event that is not a `StateChanged`.
pub async fn next_significant(events: &mut Events) -> Event {
    loop {
        let e = next(events).await;
        if !matches!(e, Event::StateChanged { .. }) {
            return e;
        }
    }
}

/// An error kind, compactly (`Io`, `UpgradeRejected { status: 503 }`,
/// `ClosedByServer(1001 "bye")`, …).
pub fn kind(e: &Error) -> String {
    match e.kind() {
        ErrorKind::ClosedByServer { code, reason } => format!(
            "ClosedByServer({} {reason:?})",
            code.map_or_else(|| "none".to_owned(), |c| c.as_u16().to_string())
        ),
        k => format!("{k:?}"),
    }
}

/// One event, compactly: `connected#2`, `disconnected#1 Io`, `reconnecting#2 100ms`,
/// `message hello`, `lagged 995`, `restarted 1`, `closed`, `closed RetriesExhausted { .. }`, or
/// `connecting->upgrading` for state changes.
pub fn describe(e: &Event) -> String {
    match e {
        Event::StateChanged { from, to, .. } => format!("{from}->{to}"),
        Event::Connected { attempt, .. } => format!("connected#{attempt}"),
        Event::Disconnected {
            attempt,
            error,
            code,
        } => match code {
            Some(c) => format!("disconnected#{attempt} {} code={}", kind(error), c.as_u16()),
            None => format!("disconnected#{attempt} {}", kind(error)),
        },
        Event::Reconnecting { attempt, delay } => format!("reconnecting#{attempt} {delay:?}"),
        Event::Message(Frame::Text(t)) => format!("message {t}"),
        Event::Message(f) => format!("message <{} bytes>", f.len()),
        Event::Lagged { dropped } => format!("lagged {dropped}"),
        Event::Error(e) => format!("error {}", kind(e)),
        Event::Restarted { restarts, .. } => format!("restarted {restarts}"),
        Event::Closed { error: None } => "closed".to_owned(),
        Event::Closed { error: Some(e) } => format!("closed {}", kind(e)),
        other => format!("other {}", other.name()),
    }
}

/// Reads events until `stop` matches one (inclusive) and returns the significant ones (no
/// `StateChanged`), described.
pub async fn trace_until(events: &mut Events, stop: impl Fn(&Event) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let e = next(events).await;
        let done = stop(&e);
        if !matches!(e, Event::StateChanged { .. }) {
            out.push(describe(&e));
        }
        if done {
            return out;
        }
    }
}

/// [`trace_until`] the `n`-th `Connected` event counted from now.
pub async fn trace_until_connected(events: &mut Events, n: usize) -> Vec<String> {
    let seen = std::cell::Cell::new(0);
    trace_until(events, |e| {
        if matches!(e, Event::Connected { .. }) {
            seen.set(seen.get() + 1);
        }
        seen.get() == n
    })
    .await
}

/// Reads the rest of the stream (until it ends), described, state changes included.
pub async fn drain(events: &mut Events) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(T, events.next())
            .await
            .expect("timed out waiting for the event stream to end")
        {
            Some(e) => out.push(describe(&e)),
            None => return out,
        }
    }
}

/// Sends `text` and expects the echo server to return it as the next significant event.
pub async fn assert_echo(client: &Client, events: &mut Events, text: &str) {
    tokio::time::timeout(T, client.send_text(text))
        .await
        .expect("send timed out")
        .expect("send failed");
    assert_eq!(
        describe(&next_significant(events).await),
        format!("message {text}")
    );
}

/// Waits until the server has no open connection left.
pub async fn wait_server_idle(server: &TestServer) {
    assert!(
        server.wait_open_at_most(0, T).await,
        "server connections did not end"
    );
}

pub mod rpc;
pub mod telemetry;
