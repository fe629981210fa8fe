//! [`FacadeMetricsCollector`]: records into the [`metrics`](https://docs.rs/metrics) facade,
//! so any exporter works (Prometheus, StatsD, OpenTelemetry, …). Feature `metrics`.
//!
//! Handles are registered once, when the collector is made: install your recorder
//! (e.g. `metrics_exporter_prometheus::PrometheusBuilder::install`) *before* building it.
//! Every series carries one label, `connection`, whose value you choose: never the URL,
//! which may hold a token in its query.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `websockex_nova_connections_opened_total` | counter | |
//! | `websockex_nova_connections_failed_total` | counter | |
//! | `websockex_nova_connections_closed_total` | counter | |
//! | `websockex_nova_connections_open` | gauge | |
//! | `websockex_nova_connection_duration_seconds` | histogram | |
//! | `websockex_nova_reconnects_total` | counter | |
//! | `websockex_nova_messages_received_total` | counter | `kind` = text / binary |
//! | `websockex_nova_received_bytes_total` | counter | |
//! | `websockex_nova_messages_sent_total` | counter | `kind` = text / binary |
//! | `websockex_nova_sent_bytes_total` | counter | |
//! | `websockex_nova_request_duration_seconds` | histogram | |
//! | `websockex_nova_errors_total` | counter | `category` ([`ErrorKind::name`](crate::ErrorKind::name)) |
//! | `websockex_nova_dropped_total` | counter | |
//! | `websockex_nova_queue_depth` | gauge | `queue` = outbound / in_flight / inbound |
//! | `websockex_nova_rate_limit_waits_total` | counter | |
//! | `websockex_nova_rate_limit_wait_seconds` | histogram | |

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label};

use super::{ConnectionMetric, MessageKind, MetricsCollector, QueueKind};

/// Records into the `metrics` facade. Series (all labelled `connection`): connections
/// opened / failed / closed / open and their duration, reconnects, messages and bytes in and
/// out by kind, request latency, errors by category, drops, queue depths, rate-limit waits,
/// each named `websockex_nova_*` (the full table is in the source of this module).
///
/// ```
/// use websockex_nova::metrics::FacadeMetricsCollector;
/// use websockex_nova::Client;
///
/// // With a recorder installed first; without one, the handles record nothing.
/// let builder = Client::builder("ws://127.0.0.1:9/")
///     .metrics(FacadeMetricsCollector::new("deribit-main"));
/// # let _ = builder;
/// ```
#[derive(Debug)]
pub struct FacadeMetricsCollector {
    labels: Vec<Label>,
    opened: Counter,
    failed: Counter,
    closed: Counter,
    open: Gauge,
    duration: Histogram,
    reconnects: Counter,
    text_in: Counter,
    binary_in: Counter,
    bytes_in: Counter,
    text_out: Counter,
    binary_out: Counter,
    bytes_out: Counter,
    latency: Histogram,
    errors: Vec<(&'static str, Counter)>,
    dropped: Counter,
    outbound_depth: Gauge,
    in_flight: Gauge,
    inbound_depth: Gauge,
    waits: Counter,
    wait_time: Histogram,
}

impl FacadeMetricsCollector {
    /// Registers the series under `connection = name`.
    pub fn new(name: impl Into<String>) -> Self {
        let labels = vec![Label::new("connection", name.into())];
        let with = |k: &'static str, v: &'static str| {
            let mut l = labels.clone();
            l.push(Label::new(k, v));
            l
        };
        FacadeMetricsCollector {
            opened: counter!("websockex_nova_connections_opened_total", labels.clone()),
            failed: counter!("websockex_nova_connections_failed_total", labels.clone()),
            closed: counter!("websockex_nova_connections_closed_total", labels.clone()),
            open: gauge!("websockex_nova_connections_open", labels.clone()),
            duration: histogram!("websockex_nova_connection_duration_seconds", labels.clone()),
            reconnects: counter!("websockex_nova_reconnects_total", labels.clone()),
            text_in: counter!(
                "websockex_nova_messages_received_total",
                with("kind", "text")
            ),
            binary_in: counter!(
                "websockex_nova_messages_received_total",
                with("kind", "binary")
            ),
            bytes_in: counter!("websockex_nova_received_bytes_total", labels.clone()),
            text_out: counter!("websockex_nova_messages_sent_total", with("kind", "text")),
            binary_out: counter!("websockex_nova_messages_sent_total", with("kind", "binary")),
            bytes_out: counter!("websockex_nova_sent_bytes_total", labels.clone()),
            latency: histogram!("websockex_nova_request_duration_seconds", labels.clone()),
            errors: Vec::new(),
            dropped: counter!("websockex_nova_dropped_total", labels.clone()),
            outbound_depth: gauge!("websockex_nova_queue_depth", with("queue", "outbound")),
            in_flight: gauge!("websockex_nova_queue_depth", with("queue", "in_flight")),
            inbound_depth: gauge!("websockex_nova_queue_depth", with("queue", "inbound")),
            waits: counter!("websockex_nova_rate_limit_waits_total", labels.clone()),
            wait_time: histogram!("websockex_nova_rate_limit_wait_seconds", labels.clone()),
            labels,
        }
    }
}

impl MetricsCollector for FacadeMetricsCollector {
    fn connection(&mut self, metric: ConnectionMetric) {
        match metric {
            ConnectionMetric::Opened => {
                self.opened.increment(1);
                self.open.increment(1.0);
            }
            ConnectionMetric::Failed => self.failed.increment(1),
            ConnectionMetric::Closed(up) => {
                self.closed.increment(1);
                self.open.decrement(1.0);
                self.duration.record(up.as_secs_f64());
            }
            ConnectionMetric::Reconnect => self.reconnects.increment(1),
        }
    }

    fn message_in(&mut self, kind: MessageKind, bytes: usize) {
        match kind {
            MessageKind::Text => self.text_in.increment(1),
            MessageKind::Binary => self.binary_in.increment(1),
        }
        self.bytes_in.increment(bytes as u64);
    }

    fn message_out(&mut self, kind: MessageKind, bytes: usize) {
        match kind {
            MessageKind::Text => self.text_out.increment(1),
            MessageKind::Binary => self.binary_out.increment(1),
        }
        self.bytes_out.increment(bytes as u64);
    }

    fn request_latency(&mut self, latency: Duration) {
        self.latency.record(latency.as_secs_f64());
    }

    fn error(&mut self, category: &'static str) {
        // Categories are a small closed set (error kind names): one handle each, made once.
        let i = match self.errors.iter().position(|(c, _)| *c == category) {
            Some(i) => i,
            None => {
                let mut labels = self.labels.clone();
                labels.push(Label::new("category", category));
                self.errors
                    .push((category, counter!("websockex_nova_errors_total", labels)));
                self.errors.len() - 1
            }
        };
        self.errors[i].1.increment(1);
    }

    fn dropped(&mut self, count: u64) {
        self.dropped.increment(count);
    }

    fn queue_depth(&mut self, queue: QueueKind, depth: usize) {
        match queue {
            QueueKind::Outbound => self.outbound_depth.set(depth as f64),
            QueueKind::InFlight => self.in_flight.set(depth as f64),
            QueueKind::Inbound => self.inbound_depth.set(depth as f64),
        }
    }

    fn rate_limit_wait(&mut self, waited: Duration) {
        self.waits.increment(1);
        self.wait_time.record(waited.as_secs_f64());
    }
}
