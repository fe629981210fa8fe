//! `nova deribit`: subscribe to channels or call a method, on Deribit or any URL speaking
//! its API (the simulator).

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use websockex_nova::{Event, SubscriptionEvent};
use websockex_nova_deribit::{Credentials, DeribitClient, DeribitConfig, Endpoint};

use crate::report::{print_event, EventFormat};

/// `nova deribit` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Use the testnet (default: production).
    #[arg(long, conflicts_with = "url")]
    testnet: bool,
    /// Any URL speaking Deribit's API (e.g. `nova simulate deribit`).
    #[arg(long)]
    url: Option<String>,
    /// API key id.
    #[arg(long, requires = "client_secret_env")]
    client_id: Option<String>,
    /// Name of the environment variable holding the API secret (never on the command line).
    #[arg(long, requires = "client_id")]
    client_secret_env: Option<String>,
    /// Lifecycle event format on stderr.
    #[arg(long, value_enum, default_value_t = EventFormat::Text)]
    events: EventFormat,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Subscribe and print each notification's `params` as one JSON line.
    Subscribe {
        /// Channels, e.g. `ticker.BTC-PERPETUAL.100ms`.
        #[arg(required = true)]
        channels: Vec<String>,
        /// Exit 0 after this many notifications.
        #[arg(long)]
        count: Option<u64>,
        /// Print only a summary (count, seconds, msgs/s) on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Call a method and print its result as JSON.
    Call {
        /// e.g. `public/get_time`.
        method: String,
        /// Params as a JSON object (default `{}`).
        params: Option<String>,
    },
}

fn config(args: &Args) -> Result<DeribitConfig, String> {
    let endpoint = match (&args.url, args.testnet) {
        (Some(url), _) => Endpoint::Custom(url.clone()),
        (None, true) => Endpoint::Testnet,
        (None, false) => Endpoint::Production,
    };
    let mut config = DeribitConfig::new(endpoint);
    if let (Some(id), Some(var)) = (&args.client_id, &args.client_secret_env) {
        let secret = std::env::var(var)
            .map_err(|_| format!("environment variable {var} (the API secret) is not set"))?;
        config = config.with_credentials(Credentials::client_signature(id.clone(), secret));
    }
    Ok(config)
}

/// Runs `nova deribit`.
pub(crate) async fn run(args: Args) -> ExitCode {
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nova: {e}");
            return ExitCode::from(2);
        }
    };
    // A usage error, so it is reported before connecting: nothing goes on the wire, and
    // the answer does not wait for the venue (or for ever, if it cannot be reached).
    let call_params = match &args.action {
        Action::Call {
            params: Some(params),
            ..
        } => match serde_json::from_str::<serde_json::Value>(params) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("nova: params are not JSON: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let (metrics, collectors) = crate::telemetry::collector("deribit");
    let (builder, timing) = config.builder_with_timing();
    let (deribit, mut events) = match builder.metrics(collectors).connect().await {
        Ok((client, events)) => (DeribitClient::with_timing(client, timing), events),
        Err(e) => {
            eprintln!("nova: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let format = args.events;
    // Lifecycle events to stderr while the command runs.
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if !matches!(event, Event::Message(_)) {
                print_event(format, &event);
            }
        }
    });
    match args.action {
        Action::Call { method, .. } => {
            let params = call_params.unwrap_or_else(|| serde_json::json!({}));
            let outcome = deribit.client().request(&method, &params).await;
            let _ = deribit.client().close().await;
            match outcome {
                Ok(result) => {
                    println!("{result}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    match e.api_error() {
                        Some(api) => eprintln!(
                            "{}",
                            serde_json::to_string(api).unwrap_or_else(|_| api.to_string())
                        ),
                        None => eprintln!("nova: error: {e}"),
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Action::Subscribe {
            channels,
            count,
            quiet,
        } => {
            let mut sub = match deribit.client().subscribe(channels).await {
                Ok(sub) => sub,
                Err(e) => {
                    eprintln!("nova: error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if !sub.refused().is_empty() {
                eprintln!("nova: refused: {}", sub.refused().join(", "));
            }
            crate::telemetry::spawn_status_line(deribit.client().clone(), metrics);
            let started = Instant::now();
            let mut received = 0u64;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            while let Some(event) = sub.next().await {
                if let SubscriptionEvent::Notification { channel, data } = event {
                    received += 1;
                    if !quiet {
                        let line = format!(
                            r#"{{"channel":{},"data":{}}}"#,
                            serde_json::Value::from(channel.as_str()),
                            data
                        );
                        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                            break;
                        }
                    }
                    if count.is_some_and(|n| received >= n) {
                        break;
                    }
                }
            }
            drop(out);
            let _ = deribit.client().close().await;
            crate::telemetry::clear_status();
            if quiet {
                let secs = started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 {
                    received as f64 / secs
                } else {
                    0.0
                };
                eprintln!("count={received} seconds={secs:.3} msgs_per_sec={rate:.0}");
            }
            if count.is_some_and(|n| received < n) {
                eprintln!("nova: error: the connection closed after {received} notifications");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}
