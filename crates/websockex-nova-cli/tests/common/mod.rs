//! Helpers shared by the CLI tests, which run the real `nova` binary.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, Command};

/// The binary under test.
pub const NOVA: &str = env!("CARGO_BIN_EXE_nova");

/// Upper bound for any single wait (real time: these tests run processes).
pub const WAIT: Duration = Duration::from_secs(20);

/// The next line, within [`WAIT`].
pub async fn next_line<R: AsyncBufRead + Unpin>(lines: &mut Lines<R>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line within the wait")
        .unwrap()
        .expect("stream still open")
}

/// Starts a `nova` server command (`serve`, `simulate deribit`), killed on drop, and returns
/// it with the URL it prints on stdout once it listens.
pub async fn start_server(args: &[&str], stderr: Stdio) -> (Child, String) {
    let mut child = Command::new(NOVA)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nova");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, out.next_line())
        .await
        .expect("it prints its URL")
        .unwrap()
        .expect("stdout open");
    (child, url)
}
