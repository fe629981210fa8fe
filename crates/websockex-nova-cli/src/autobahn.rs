//! `nova autobahn`: the Autobahn TestSuite client procedure through our own client.
//!
//! `GET /getCaseCount`, then for each case `/runCase?case=N&agent=A` echoing every text and
//! binary message until the server ends the connection, then `/updateReports?agent=A`.

use std::process::ExitCode;
use std::time::Duration;

use websockex_nova::behaviour::Classified;
use websockex_nova::{
    Client, ClientBuilder, Event, Frame, KeepaliveConfig, MessageHandler, ReconnectPolicy,
};

/// Echoes each data message from inside the connection, before the next frame is read:
/// Autobahn's strict verdicts want the echo out before the connection fails on a later,
/// invalid frame, and a round trip through the user's task would come too late.
struct Echo;

impl MessageHandler for Echo {
    fn classify(&mut self, frame: &Frame) -> Classified {
        Classified::Reply(frame.clone())
    }
}

/// `nova autobahn` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The fuzzing server, `HOST:PORT`.
    #[arg(long)]
    server: String,
    /// Agent name in the reports.
    #[arg(long, default_value = "websockex-nova")]
    agent: String,
}

fn client(url: String) -> ClientBuilder {
    Client::builder(url)
        .reconnect(ReconnectPolicy::never())
        .keepalive(KeepaliveConfig::disabled())
        // Section 9 sends messages of up to 16 MiB.
        .max_message_size(64 << 20)
        .close_timeout(Duration::from_secs(2))
}

/// Runs every case; exit 0 when all ran and the reports were requested.
pub(crate) async fn run(args: Args) -> ExitCode {
    let base = format!("ws://{}", args.server);
    let count = match case_count(&base).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("nova: autobahn: cannot get the case count: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("nova: autobahn: {count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={}", args.agent);
        if let Err(e) = run_case(url).await {
            eprintln!("nova: autobahn: case {case}: {e}");
        }
    }
    let url = format!("{base}/updateReports?agent={}", args.agent);
    match client(url).connect().await {
        Ok((c, mut events)) => {
            // The server ends the connection itself once the reports are written.
            while let Some(event) = events.next().await {
                if matches!(event, Event::Closed { .. }) {
                    break;
                }
            }
            drop(c);
        }
        // Some fuzzing servers (kosoku) drop the connection right after the 101: the
        // request arrived, which is all that counts.
        Err(e) if e.is_disconnected() => {}
        Err(e) => {
            eprintln!("nova: autobahn: updateReports failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!("nova: autobahn: done");
    ExitCode::SUCCESS
}

async fn case_count(base: &str) -> Result<u32, String> {
    let (_client, mut events) = client(format!("{base}/getCaseCount"))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    while let Some(event) = events.next().await {
        match event {
            Event::Message(frame) => {
                let text = frame.as_text().unwrap_or_default().trim().to_owned();
                return text.parse().map_err(|_| format!("bad case count {text:?}"));
            }
            Event::Closed { .. } => break,
            _ => {}
        }
    }
    Err("the server sent no case count".into())
}

async fn run_case(url: String) -> Result<(), websockex_nova::Error> {
    let (_client, mut events) = client(url).message_handler(Echo).connect().await?;
    while let Some(event) = events.next().await {
        if matches!(event, Event::Closed { .. }) {
            break;
        }
    }
    Ok(())
}
