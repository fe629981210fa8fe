//! `nova connect URL`.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::ValueEnum;
use tokio::io::AsyncBufReadExt;
use websockex_nova::config_file::{ConfigFile, ConfigWatcher};
use websockex_nova::{Client, ClientBuilder, Event, Frame, Jitter, OfflinePolicy, ReconnectPolicy};

use crate::parse_duration;
use crate::report::{print_event, EventFormat};

/// Reconnect strategies on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Strategy {
    /// Doubling delays from 250 ms, capped at 30 s.
    Exponential,
    /// 250 ms more per attempt, capped at 30 s.
    Linear,
    /// Doubling with full jitter (the library default).
    Jittered,
    /// Never reconnect.
    None,
}

/// `nova connect` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// `ws://` or `wss://` URL.
    url: String,
    /// Extra upgrade header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Subprotocol to offer (repeatable, in order of preference).
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    /// Client ping interval (e.g. 20s; 0 disables pings).
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    ping_interval: Duration,
    /// Dead-peer timeout: no traffic for this long replaces the link (0 disables).
    #[arg(long, value_parser = parse_duration, default_value = "40s")]
    ping_timeout: Duration,
    /// Reconnect strategy.
    #[arg(long, value_enum, default_value_t = Strategy::Jittered)]
    reconnect: Strategy,
    /// Give up after this many consecutive failed attempts (default: never give up).
    #[arg(long)]
    max_retries: Option<u32>,
    /// Exit 0 after this many received messages (stdin EOF then does not close early).
    #[arg(long)]
    count: Option<u64>,
    /// Print no messages; at exit print count, seconds and msgs/s on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Lifecycle event format on stderr.
    #[arg(long, value_enum, default_value_t = EventFormat::Text)]
    events: EventFormat,
    /// Lines kept while the server is away (sent after the reconnect, in order).
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// A TOML configuration file, applied over the flags at start and again whenever it
    /// changes (rate limit, reconnect policy, keepalive, timeouts, … without dropping the link).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

fn policy(args: &Args) -> ReconnectPolicy {
    let initial = Duration::from_millis(250);
    let cap = Duration::from_secs(30);
    let p = match args.reconnect {
        Strategy::Exponential => ReconnectPolicy::exponential(initial, cap),
        Strategy::Linear => ReconnectPolicy::linear(initial, initial, cap),
        Strategy::Jittered => ReconnectPolicy::jittered(initial, cap, Jitter::Full),
        Strategy::None => return ReconnectPolicy::never(),
    };
    match args.max_retries {
        Some(n) => p.with_max_retries(n),
        None => p,
    }
}

fn builder(args: &Args) -> Result<ClientBuilder, String> {
    let mut b = Client::builder(args.url.clone())
        .reconnect(policy(args))
        .ping_interval((!args.ping_interval.is_zero()).then_some(args.ping_interval))
        .ping_timeout((!args.ping_timeout.is_zero()).then_some(args.ping_timeout))
        .offline_policy(OfflinePolicy::Queue {
            capacity: args.queue,
        });
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} must look like `Name: value`"))?;
        b = b.header(name.trim(), value.trim());
    }
    for p in &args.subprotocols {
        b = b.subprotocol(p.clone());
    }
    if let Some(path) = &args.config {
        let file = ConfigFile::load(path).map_err(|e| e.to_string())?;
        b = b.configure(|c| file.apply(c));
    }
    Ok(b)
}

/// Runs `nova connect`.
pub(crate) async fn run(args: Args) -> ExitCode {
    let b = match builder(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("nova: {e}");
            return ExitCode::from(2);
        }
    };
    let (metrics, collectors) = crate::telemetry::collector("connect");
    let (client, mut events) = match b.metrics(collectors).spawn() {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("nova: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.config {
        match ConfigWatcher::spawn(path, client.clone()) {
            Ok(watcher) => {
                tokio::spawn(report_reloads(watcher, args.events));
            }
            Err(e) => {
                eprintln!("nova: {e}");
                return ExitCode::from(2);
            }
        }
    }
    tokio::spawn(pump_stdin(client.clone(), args.count.is_none()));
    crate::telemetry::spawn_status_line(client.clone(), metrics);

    let started = Instant::now();
    let mut first_message: Option<Instant> = None;
    let mut received: u64 = 0;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut outcome = ExitCode::SUCCESS;
    'events: while let Some(event) = events.next().await {
        let mut next = Some(event);
        // Drain what is already waiting before flushing stdout once.
        while let Some(event) = next.take() {
            match event {
                Event::Message(frame) => {
                    received += 1;
                    first_message.get_or_insert_with(Instant::now);
                    if !args.quiet && write_message(&mut out, &frame).is_err() {
                        // stdout closed (e.g. `| head`): stop quietly.
                        let _ = client.close().await;
                        break 'events;
                    }
                    if args.count.is_some_and(|n| received >= n) {
                        let _ = out.flush();
                        let _ = client.close().await;
                        break 'events;
                    }
                }
                Event::Closed { error } => {
                    print_event(
                        args.events,
                        &Event::Closed {
                            error: error.clone(),
                        },
                    );
                    if let Some(e) = error {
                        let _ = out.flush();
                        eprintln!("nova: error: {e}");
                        outcome = ExitCode::FAILURE;
                    }
                    break 'events;
                }
                other => print_event(args.events, &other),
            }
            next = events.try_next();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
    crate::telemetry::clear_status();
    if args.quiet {
        let secs = started.elapsed().as_secs_f64();
        let active = first_message.map_or(secs, |t| t.elapsed().as_secs_f64());
        let rate = if active > 0.0 {
            received as f64 / active
        } else {
            0.0
        };
        eprintln!("count={received} seconds={secs:.3} msgs_per_sec={rate:.0}");
    }
    outcome
}

fn write_message(out: &mut impl Write, frame: &Frame) -> std::io::Result<()> {
    match frame {
        Frame::Text(t) => {
            out.write_all(t.as_bytes())?;
            out.write_all(b"\n")
        }
        Frame::Binary(b) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(b);
            writeln!(out, "base64:{encoded}")
        }
        _ => Ok(()),
    }
}

/// Says what each reload of the config file changed, or why it was refused.
async fn report_reloads(mut watcher: ConfigWatcher, format: EventFormat) {
    while let Some(outcome) = watcher.next().await {
        crate::telemetry::clear_status();
        let line = match (&outcome, format) {
            (_, EventFormat::None) => continue,
            (Ok(r), EventFormat::Json) => serde_json::json!({
                "event": "config_reloaded", "now": r.now, "on_connect": r.on_connect,
            })
            .to_string(),
            (Err(e), EventFormat::Json) => {
                serde_json::json!({"event": "config_refused", "error": e.to_string()}).to_string()
            }
            (Ok(r), EventFormat::Text) => format!(
                "nova: config reloaded: now [{}], next connect [{}]",
                r.now.join(", "),
                r.on_connect.join(", ")
            ),
            (Err(e), EventFormat::Text) => {
                format!("nova: config refused, keeping the old one: {e}")
            }
        };
        eprintln!("{line}");
    }
}

/// Sends each stdin line as a text frame, in order; closes on EOF when asked to.
async fn pump_stdin(client: Client, close_on_eof: bool) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Err(e) = client.send_text(line).await {
            if e.is_closed() {
                return;
            }
            eprintln!("nova: line not sent: {e}");
        }
    }
    if close_on_eof {
        let _ = client.close().await;
    }
}
