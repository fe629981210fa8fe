//! `nova simulate deribit`: the Deribit simulator on its own, with optional periodic faults.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use websockex_nova_testkit::deribit::{DeribitSim, SimConfig};

use crate::parse_duration;

/// `nova simulate` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    venue: Venue,
}

#[derive(clap::Subcommand, Debug)]
enum Venue {
    /// Deribit API v2 over WebSocket (demo key: `demo-key` / `demo-secret`).
    Deribit(DeribitArgs),
}

#[derive(clap::Args, Debug)]
struct DeribitArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seed of the market random walk.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Access token lifetime.
    #[arg(long, value_parser = parse_duration, default_value = "900s")]
    token_ttl: Duration,
    /// Drop every connection this often (no close frame).
    #[arg(long, value_parser = parse_duration)]
    drop_every: Option<Duration>,
    /// Skip a book change this often (clients see a change_id gap).
    #[arg(long, value_parser = parse_duration)]
    gap_every: Option<Duration>,
    /// Start in maintenance mode (11051 system_maintenance, platform_state maintenance).
    #[arg(long)]
    maintenance: bool,
}

/// Runs the simulator until killed.
pub(crate) async fn run(args: Args) -> ExitCode {
    let Venue::Deribit(args) = args.venue;
    let config = SimConfig::default()
        .with_seed(args.seed)
        .with_token_ttl(args.token_ttl);
    let sim = match DeribitSim::start_on(args.listen, config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("nova: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let faults = sim.faults();
    if args.maintenance {
        faults.set_maintenance(true);
    }
    // The URL on stdout says "ready": whatever was asked for must hold before it.
    println!("{}", sim.url());
    eprintln!(
        "nova: Deribit simulator on {} (demo key: demo-key / demo-secret; Ctrl-C stops it)",
        sim.url()
    );
    let mut drop_timer = args.drop_every.map(tokio::time::interval);
    let mut gap_timer = args.gap_every.map(tokio::time::interval);
    // The first tick of an interval is immediate; skip it.
    if let Some(t) = drop_timer.as_mut() {
        t.tick().await;
    }
    if let Some(t) = gap_timer.as_mut() {
        t.tick().await;
    }
    loop {
        tokio::select! {
            _ = tick(&mut drop_timer) => {
                eprintln!("nova: fault: dropping every connection");
                faults.drop_all();
            }
            _ = tick(&mut gap_timer) => {
                let n = faults.book_gap(None);
                eprintln!("nova: fault: book gap on {n} book(s)");
            }
        }
    }
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
