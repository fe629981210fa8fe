//! `nova connect` as a user runs it: a real `nova serve` process is killed and started
//! again on the same port, and the client carries on with no action from the user.

mod common;

use std::process::Stdio;

use common::{next_line, start_server, NOVA, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

async fn serve(listen: &str) -> (Child, String) {
    start_server(&["serve", "--listen", listen], Stdio::null()).await
}

/// Reads JSON events from stderr until one has `event == name`.
async fn wait_event(err: &mut Lines<BufReader<ChildStderr>>, name: &str) -> serde_json::Value {
    loop {
        let line = next_line(err).await;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["event"] == name {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn connect_keeps_working_across_a_server_restart() {
    let (mut server, url) = serve("127.0.0.1:0").await;
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();

    let mut client = Command::new(NOVA)
        .args([
            "connect",
            &url,
            "--events",
            "json",
            "--reconnect",
            "exponential",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nova connect");
    let mut stdin = client.stdin.take().unwrap();
    let mut out: Lines<BufReader<ChildStdout>> =
        BufReader::new(client.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(client.stderr.take().unwrap()).lines();

    let connected = wait_event(&mut err, "connected").await;
    assert_eq!(connected["attempt"], 1);
    stdin.write_all(b"one\n").await.unwrap();
    assert_eq!(next_line(&mut out).await, "one");

    // Kill the server process outright.
    server.kill().await.unwrap();
    let lost = wait_event(&mut err, "disconnected").await;
    assert!(lost["error"].is_string());
    let retry = wait_event(&mut err, "reconnecting").await;
    assert!(retry["delay"].as_f64().unwrap() > 0.0);
    assert!(retry["attempt"].as_u64().unwrap() >= 2);

    // Typed while the server is away: queued, sent after the reconnect.
    stdin.write_all(b"two\n").await.unwrap();
    let (_server, _) = serve(&addr).await;
    wait_event(&mut err, "connected").await;
    assert_eq!(next_line(&mut out).await, "two");
    stdin.write_all(b"three\n").await.unwrap();
    assert_eq!(next_line(&mut out).await, "three");

    // EOF: close handshake, exit 0.
    drop(stdin);
    let closed = wait_event(&mut err, "closed").await;
    assert!(closed["error"].is_null());
    let status = tokio::time::timeout(WAIT, client.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn count_exits_zero_after_n_messages() {
    let (_server, url) = serve("127.0.0.1:0").await;
    let mut client = Command::new(NOVA)
        .args(["connect", &url, "--count", "2", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"a\nb\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(WAIT, client.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success());
    assert!(output.stdout.is_empty(), "--quiet prints no messages");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stderr.lines().last().unwrap();
    assert!(summary.starts_with("count=2 seconds="), "{summary}");
    assert!(summary.contains("msgs_per_sec="), "{summary}");
}

#[tokio::test]
async fn retries_exhausted_is_a_one_line_error_and_nonzero_exit() {
    // A port nothing listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(NOVA)
        .args([
            "connect",
            &format!("ws://127.0.0.1:{port}/"),
            "--reconnect",
            "linear",
            "--max-retries",
            "2",
            "--events",
            "none",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Keep stdin open: EOF would be a request to close, which is a success.
    let _stdin = child.stdin.take();
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("nova: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("gave up reconnecting after 2 attempts"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_url_is_a_usage_error() {
    let output = Command::new(NOVA)
        .args(["connect", "http://not-websocket"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ws://"));
}
