//! `nova`: a resilient WebSocket client on the command line.
//!
//! * `nova connect URL`: like websocat, but it comes back by itself after every fault.
//! * `nova demo`: the whole story on an in-process test server (drop, outage, recovery).
//! * `nova serve`: the testkit echo server on its own, for trying `connect` against.
//! * `nova autobahn`: the Autobahn TestSuite client procedure, through our own client.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod autobahn;
mod chaos;
mod connect;
mod demo;
mod deribit;
mod echo_demo;
mod report;
mod serve;
mod simulate;
mod telemetry;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "nova",
    version,
    about = "Resilient WebSocket client (websockex-nova)"
)]
struct Cli {
    /// Log filter for tracing output on stderr (e.g. `websockex_nova=debug`); env RUST_LOG works too.
    #[arg(long, global = true)]
    log: Option<String>,
    /// Format of the tracing output on stderr.
    #[arg(long, global = true, value_enum, default_value_t = telemetry::LogFormat::Plain)]
    log_format: telemetry::LogFormat,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g. 127.0.0.1:9184.
    #[arg(long, global = true, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect to URL: stdin lines go out as text frames, received messages are printed one per line.
    Connect(connect::Args),
    /// Run the demo: a Deribit client against the in-process simulator, injected faults and
    /// the recovery (`--echo`: the plain echo-server demo).
    Demo(demo::Args),
    /// Deribit API v2: subscribe to channels or call a method.
    Deribit(deribit::Args),
    /// Run a venue simulator (`nova simulate deribit`).
    Simulate(simulate::Args),
    /// Run the testkit echo server until interrupted.
    Serve(serve::Args),
    /// Run the Autobahn TestSuite client cases against a fuzzing server.
    Autobahn(autobahn::Args),
    /// Inject seeded random faults into Deribit clients on the in-process simulator and
    /// check that nothing is lost, everything recovers and nothing leaks (one JSON line).
    Chaos(chaos::Args),
}

/// Parses a duration like `500ms`, `2s`, `1.5s`, `3m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 500ms, 2s, 1m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logs(cli.log.clone(), cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nova: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        if let Some(addr) = cli.metrics {
            if let Err(e) = telemetry::init_prometheus(addr) {
                eprintln!("nova: {e}");
                return ExitCode::from(2);
            }
        }
        match cli.command {
            Command::Connect(args) => connect::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Deribit(args) => deribit::run(args).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Autobahn(args) => autobahn::run(args).await,
            Command::Chaos(args) => chaos::run(args).await,
        }
    });
    // stdin is read on a blocking thread that may sit in read(2) forever; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
