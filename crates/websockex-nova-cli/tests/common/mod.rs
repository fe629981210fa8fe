//! Helpers shared by the CLI tests, which run the real `nova` binary.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncBufRead, Lines};

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
