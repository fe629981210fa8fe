//! Metrics: the [`MetricsCollector`] behaviour and [`DefaultMetricsCollector`], which keeps
//! counters, gauges and a latency histogram in memory and hands out snapshots, with no
//! exporter at all.
//!
//! ```
//! use websockex_nova::metrics::DefaultMetricsCollector;
//! use websockex_nova::Client;
//!
//! let metrics = DefaultMetricsCollector::new();
//! let builder = Client::builder("ws://127.0.0.1:9/").metrics(metrics.clone());
//! # let _ = builder;
//! let snapshot = metrics.snapshot(); // from any task, at any time
//! assert_eq!(snapshot.connections_opened, 0);
//! ```
//!
//! No collector is installed by default: the hot path then pays nothing. Several collectors
//! at once: a `Vec<Box<dyn MetricsCollector>>` is one. With the `metrics` feature,
//! `FacadeMetricsCollector` records into the `metrics` facade for any exporter.

#[cfg(feature = "metrics")]
mod facade;
#[cfg(feature = "metrics")]
pub use facade::FacadeMetricsCollector;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What kind of frame a message counter is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// Text.
    Text,
    /// Binary.
    Binary,
}

/// A queue whose depth [`MetricsCollector::queue_depth`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueKind {
    /// Frames, requests and framework calls waiting to be written (offline or for credits).
    Outbound,
    /// Requests written and not yet answered.
    InFlight,
    /// Events waiting for the user, reported when a watermark is crossed.
    Inbound,
}

/// Connection-level happenings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionMetric {
    /// A link reached Ready.
    Opened,
    /// A connect attempt failed.
    Failed,
    /// A Ready link ended after this long.
    Closed(Duration),
    /// A reconnect was scheduled.
    Reconnect,
}

/// Records what happens on a connection. Every method has a no-op default; implement the
/// ones you need. Runs on the connection's task: keep it cheap.
pub trait MetricsCollector: Send + 'static {
    /// A connection-level happening.
    fn connection(&mut self, metric: ConnectionMetric) {
        let _ = metric;
    }
    /// A data message received.
    fn message_in(&mut self, kind: MessageKind, bytes: usize) {
        let _ = (kind, bytes);
    }
    /// A frame written (data or request).
    fn message_out(&mut self, kind: MessageKind, bytes: usize) {
        let _ = (kind, bytes);
    }
    /// A request answered after `latency`.
    fn request_latency(&mut self, latency: Duration) {
        let _ = latency;
    }
    /// An error by category (the error kind's name): one that cost a link or a connect
    /// attempt, or a frame the codec could not decode (`Decode`, the link stays up).
    fn error(&mut self, category: &'static str) {
        let _ = category;
    }
    /// Messages dropped by an overflow policy.
    fn dropped(&mut self, count: u64) {
        let _ = count;
    }
    /// The depth of a queue, reported after the writer has let out what it could.
    fn queue_depth(&mut self, queue: QueueKind, depth: usize) {
        let _ = (queue, depth);
    }
    /// The outbound queue's head waited this long for rate-limit credits.
    fn rate_limit_wait(&mut self, waited: Duration) {
        let _ = waited;
    }
}

impl MetricsCollector for () {}

impl MetricsCollector for Vec<Box<dyn MetricsCollector>> {
    fn connection(&mut self, metric: ConnectionMetric) {
        self.iter_mut().for_each(|c| c.connection(metric));
    }
    fn message_in(&mut self, kind: MessageKind, bytes: usize) {
        self.iter_mut().for_each(|c| c.message_in(kind, bytes));
    }
    fn message_out(&mut self, kind: MessageKind, bytes: usize) {
        self.iter_mut().for_each(|c| c.message_out(kind, bytes));
    }
    fn request_latency(&mut self, latency: Duration) {
        self.iter_mut().for_each(|c| c.request_latency(latency));
    }
    fn error(&mut self, category: &'static str) {
        self.iter_mut().for_each(|c| c.error(category));
    }
    fn dropped(&mut self, count: u64) {
        self.iter_mut().for_each(|c| c.dropped(count));
    }
    fn queue_depth(&mut self, queue: QueueKind, depth: usize) {
        self.iter_mut().for_each(|c| c.queue_depth(queue, depth));
    }
    fn rate_limit_wait(&mut self, waited: Duration) {
        self.iter_mut().for_each(|c| c.rate_limit_wait(waited));
    }
}

/// Upper bounds (µs) of the latency histogram's buckets; the last bucket is open.
const BUCKETS_US: [u64; 16] = [
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    5_000_000,
    u64::MAX,
];

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    open: AtomicU64,
    reconnects: AtomicU64,
    up_us_total: AtomicU64,
    text_in: AtomicU64,
    binary_in: AtomicU64,
    bytes_in: AtomicU64,
    text_out: AtomicU64,
    binary_out: AtomicU64,
    bytes_out: AtomicU64,
    outbound_depth: AtomicU64,
    in_flight: AtomicU64,
    inbound_depth: AtomicU64,
    rate_limit_waits: AtomicU64,
    rate_limit_wait_us: AtomicU64,
    requests: AtomicU64,
    latency_max_us: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS_US.len()],
    errors: AtomicU64,
    dropped: AtomicU64,
}

/// Counters, gauges and a request-latency histogram in memory. Clones share the numbers:
/// keep one to take [`snapshot`](Self::snapshot)s while the connection records into another.
#[derive(Debug, Clone, Default)]
pub struct DefaultMetricsCollector {
    counters: Arc<Counters>,
    errors: Arc<std::sync::Mutex<Vec<(&'static str, u64)>>>,
}

/// A point-in-time copy of a [`DefaultMetricsCollector`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Links that reached Ready.
    pub connections_opened: u64,
    /// Connect attempts that failed.
    pub connections_failed: u64,
    /// Ready links that ended.
    pub connections_closed: u64,
    /// Links Ready now.
    pub connections_open: u64,
    /// Reconnects scheduled.
    pub reconnects: u64,
    /// Total time links were Ready.
    pub connected_time: Duration,
    /// Text messages received.
    pub text_in: u64,
    /// Binary messages received.
    pub binary_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Frames written (text and binary).
    pub messages_out: u64,
    /// Binary frames written (the rest are text).
    pub binary_out: u64,
    /// Payload bytes written.
    pub bytes_out: u64,
    /// Requests answered.
    pub requests: u64,
    /// Latency percentiles (upper bucket bounds) and the maximum.
    pub latency_p50: Option<Duration>,
    /// 90th percentile.
    pub latency_p90: Option<Duration>,
    /// 99th percentile.
    pub latency_p99: Option<Duration>,
    /// Largest latency seen.
    pub latency_max: Option<Duration>,
    /// Errors that cost a link or an attempt, by category.
    pub errors: Vec<(&'static str, u64)>,
    /// Messages dropped by overflow policies.
    pub dropped: u64,
    /// Items waiting to be written, as last reported.
    pub outbound_depth: u64,
    /// Requests in flight, as last reported.
    pub in_flight: u64,
    /// Events waiting for the user, as of the last watermark crossing.
    pub inbound_depth: u64,
    /// Waits for rate-limit credits.
    pub rate_limit_waits: u64,
    /// Total time spent waiting for rate-limit credits.
    pub rate_limit_wait_time: Duration,
}

impl DefaultMetricsCollector {
    /// A fresh collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The numbers now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let buckets: Vec<u64> = c.latency_buckets.iter().map(get).collect();
        let total: u64 = buckets.iter().sum();
        let max_us = get(&c.latency_max_us);
        let pct = |p: f64| -> Option<Duration> {
            if total == 0 {
                return None;
            }
            let rank = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Some(Duration::from_micros(BUCKETS_US[i].min(max_us)));
                }
            }
            Some(Duration::from_micros(max_us))
        };
        MetricsSnapshot {
            connections_opened: get(&c.opened),
            connections_failed: get(&c.failed),
            connections_closed: get(&c.closed),
            connections_open: get(&c.open),
            reconnects: get(&c.reconnects),
            connected_time: Duration::from_micros(get(&c.up_us_total)),
            text_in: get(&c.text_in),
            binary_in: get(&c.binary_in),
            bytes_in: get(&c.bytes_in),
            messages_out: get(&c.text_out) + get(&c.binary_out),
            binary_out: get(&c.binary_out),
            bytes_out: get(&c.bytes_out),
            requests: get(&c.requests),
            latency_p50: pct(0.50),
            latency_p90: pct(0.90),
            latency_p99: pct(0.99),
            latency_max: (total > 0).then(|| Duration::from_micros(max_us)),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
            dropped: get(&c.dropped),
            outbound_depth: get(&c.outbound_depth),
            in_flight: get(&c.in_flight),
            inbound_depth: get(&c.inbound_depth),
            rate_limit_waits: get(&c.rate_limit_waits),
            rate_limit_wait_time: Duration::from_micros(get(&c.rate_limit_wait_us)),
        }
    }
}

impl MetricsCollector for DefaultMetricsCollector {
    fn connection(&mut self, metric: ConnectionMetric) {
        let c = &self.counters;
        match metric {
            ConnectionMetric::Opened => {
                c.opened.fetch_add(1, Ordering::Relaxed);
                c.open.fetch_add(1, Ordering::Relaxed);
            }
            ConnectionMetric::Failed => {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
            ConnectionMetric::Closed(up) => {
                c.closed.fetch_add(1, Ordering::Relaxed);
                let _ = c
                    .open
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
                c.up_us_total
                    .fetch_add(up.as_micros() as u64, Ordering::Relaxed);
            }
            ConnectionMetric::Reconnect => {
                c.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn message_in(&mut self, kind: MessageKind, bytes: usize) {
        let c = &self.counters;
        match kind {
            MessageKind::Text => c.text_in.fetch_add(1, Ordering::Relaxed),
            MessageKind::Binary => c.binary_in.fetch_add(1, Ordering::Relaxed),
        };
        c.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn message_out(&mut self, kind: MessageKind, bytes: usize) {
        let c = &self.counters;
        match kind {
            MessageKind::Text => c.text_out.fetch_add(1, Ordering::Relaxed),
            MessageKind::Binary => c.binary_out.fetch_add(1, Ordering::Relaxed),
        };
        c.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn request_latency(&mut self, latency: Duration) {
        let c = &self.counters;
        let us = latency.as_micros().min(u128::from(u64::MAX - 1)) as u64;
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.latency_max_us.fetch_max(us, Ordering::Relaxed);
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len() - 1);
        c.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn error(&mut self, category: &'static str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.errors.lock() {
            match e.iter_mut().find(|(c, _)| *c == category) {
                Some((_, n)) => *n += 1,
                None => e.push((category, 1)),
            }
        }
    }

    fn dropped(&mut self, count: u64) {
        self.counters.dropped.fetch_add(count, Ordering::Relaxed);
    }

    fn queue_depth(&mut self, queue: QueueKind, depth: usize) {
        let gauge = match queue {
            QueueKind::Outbound => &self.counters.outbound_depth,
            QueueKind::InFlight => &self.counters.in_flight,
            QueueKind::Inbound => &self.counters.inbound_depth,
        };
        gauge.store(depth as u64, Ordering::Relaxed);
    }

    fn rate_limit_wait(&mut self, waited: Duration) {
        let c = &self.counters;
        c.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
        c.rate_limit_wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_counts_and_percentiles() {
        let m = DefaultMetricsCollector::new();
        let mut recorder = m.clone();
        recorder.connection(ConnectionMetric::Opened);
        recorder.connection(ConnectionMetric::Closed(Duration::from_secs(2)));
        recorder.connection(ConnectionMetric::Failed);
        recorder.message_in(MessageKind::Text, 10);
        recorder.message_out(MessageKind::Text, 5);
        for us in [
            40, 80, 80, 150, 900, 3_000, 40_000, 40_000, 40_000, 2_000_000,
        ] {
            recorder.request_latency(Duration::from_micros(us));
        }
        recorder.error("Io");
        recorder.error("Io");
        recorder.dropped(3);
        let s = m.snapshot();
        assert_eq!(
            (
                s.connections_opened,
                s.connections_closed,
                s.connections_open
            ),
            (1, 1, 0)
        );
        assert_eq!(s.connected_time, Duration::from_secs(2));
        assert_eq!(
            (s.text_in, s.bytes_in, s.messages_out, s.bytes_out),
            (1, 10, 1, 5)
        );
        assert_eq!(s.requests, 10);
        assert_eq!(s.latency_p50, Some(Duration::from_micros(1_000)));
        assert_eq!(s.latency_p90, Some(Duration::from_micros(50_000)));
        assert_eq!(s.latency_max, Some(Duration::from_micros(2_000_000)));
        assert_eq!(s.errors, vec![("Io", 2)]);
        assert_eq!(s.dropped, 3);
    }
}
