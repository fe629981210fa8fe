//! What the CLI tells about itself: `tracing` output on stderr (`--log`, `--log-format`),
//! Prometheus exposition (`--metrics ADDR`) and the live status line on a terminal.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use websockex_nova::metrics::{DefaultMetricsCollector, FacadeMetricsCollector, MetricsCollector};
use websockex_nova::{Client, State};

/// The format of `tracing` output on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

static PROMETHEUS: OnceLock<SocketAddr> = OnceLock::new();
/// A status line is on screen: other stderr output clears it first.
static STATUS_SHOWN: AtomicBool = AtomicBool::new(false);

/// Installs the `tracing` subscriber (filter `off` unless `--log`/`RUST_LOG` say more).
pub(crate) fn init_logs(filter: Option<String>, format: LogFormat) {
    let filter = filter
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "off".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Starts the Prometheus endpoint (`GET /metrics` on `addr`); call inside the runtime.
pub(crate) fn init_prometheus(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let _ = PROMETHEUS.set(addr);
    Ok(())
}

/// The collector for one connection: numbers for the status line, and the Prometheus
/// series under `connection = name` when `--metrics` is on.
pub(crate) fn collector(name: &str) -> (DefaultMetricsCollector, Vec<Box<dyn MetricsCollector>>) {
    let local = DefaultMetricsCollector::new();
    let mut all: Vec<Box<dyn MetricsCollector>> = vec![Box::new(local.clone())];
    if PROMETHEUS.get().is_some() {
        all.push(Box::new(FacadeMetricsCollector::new(name)));
    }
    (local, all)
}

/// Clears the status line before a line of other output on stderr.
pub(crate) fn clear_status() {
    if STATUS_SHOWN.swap(false, Ordering::Relaxed) {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
    }
}

/// Redraws one status line on stderr every second while stderr is a terminal (nothing
/// when piped): state, messages per second, reconnects, request latency.
pub(crate) fn spawn_status_line(client: Client, metrics: DefaultMetricsCollector) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let status = client.status();
            let s = metrics.snapshot();
            let received = s.text_in + s.binary_in;
            let now = Instant::now();
            let rate = (received - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, received);
            let latency = match (s.latency_p50, s.latency_p99) {
                (Some(p50), Some(p99)) => format!(" latency p50={p50:?} p99={p99:?}"),
                _ => String::new(),
            };
            let line = status_text(status.state, rate, s.reconnects, s.dropped) + &latency;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            STATUS_SHOWN.store(true, Ordering::Relaxed);
            if status.state == State::Closed {
                break;
            }
        }
    });
}

fn status_text(state: State, rate: f64, reconnects: u64, dropped: u64) -> String {
    format!("[{state}] {rate:.0} msgs/s · reconnects {reconnects} · dropped {dropped}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_reads_well() {
        assert_eq!(
            status_text(State::Ready, 1234.4, 2, 0),
            "[ready] 1234 msgs/s · reconnects 2 · dropped 0"
        );
    }
}
