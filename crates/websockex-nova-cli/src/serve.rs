//! `nova serve`: the testkit echo server on its own.

use std::net::SocketAddr;
use std::process::ExitCode;

use websockex_nova_testkit::{Script, TestServer};

/// `nova serve` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// Runs the echo server until Ctrl-C (or until killed).
pub(crate) async fn run(args: Args) -> ExitCode {
    let server = match TestServer::start_on(args.listen, Script::echo()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nova: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    // The URL on stdout, so scripts can read the port.
    println!("{}", server.url());
    eprintln!(
        "nova: echo server listening on {} (Ctrl-C stops it)",
        server.url()
    );
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
