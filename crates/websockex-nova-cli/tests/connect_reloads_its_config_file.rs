//! `nova connect --config FILE`: the file is applied at start and again whenever it changes,
//! without dropping the link; a bad file is refused with its reason and the session goes on.

mod common;

use std::process::Stdio;

use common::{next_line, NOVA, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStderr, Command};
use websockex_nova_testkit::{Script, TestServer};

/// The next JSON event on stderr; panics on a disconnect (the link must stay up).
async fn next_event(err: &mut Lines<BufReader<ChildStderr>>) -> serde_json::Value {
    loop {
        let line = next_line(err).await;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            assert_ne!(v["event"], "disconnected", "{line}");
            if v["event"] != "state_changed" {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn a_changed_file_applies_live_and_a_bad_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("nova-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nova.toml");
    std::fs::write(&path, "request_timeout = \"5s\"\n").unwrap();
    let server = TestServer::start(Script::echo()).await.unwrap();

    let mut child = Command::new(NOVA)
        .args(["connect", &server.url(), "--events", "json", "--config"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    assert_eq!(next_event(&mut err).await["event"], "connected");

    std::fs::write(
        &path,
        "request_timeout = \"5s\"\n[rate_limit]\nburst = 5\nper_second = 5.0\n[keepalive]\nping_interval = \"3s\"\n",
    )
    .unwrap();
    let reloaded = next_event(&mut err).await;
    assert_eq!(reloaded["event"], "config_reloaded", "{reloaded}");
    assert_eq!(
        reloaded["now"],
        serde_json::json!(["keepalive", "rate_limit"])
    );

    std::fs::write(&path, "[rate_limit]\nburst = \"many\"\n").unwrap();
    let refused = next_event(&mut err).await;
    assert_eq!(refused["event"], "config_refused", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("burst"),
        "{refused}"
    );

    // Still the same link, still echoing.
    stdin.write_all(b"still here\n").await.unwrap();
    assert_eq!(next_line(&mut out).await, "still here");
    assert_eq!(server.upgraded(), 1);
    drop(stdin);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
