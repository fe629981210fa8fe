//! `nova deribit` against `nova simulate deribit`, both as real processes: notifications as
//! JSON lines, `--count`, `--quiet`, a call's result, an API error on stderr with a nonzero
//! exit.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{start_server, NOVA};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(30);

async fn simulator() -> (Child, String) {
    start_server(
        &["simulate", "deribit", "--listen", "127.0.0.1:0"],
        Stdio::null(),
    )
    .await
}

async fn nova(args: &[&str]) -> std::process::Output {
    let child = Command::new(NOVA)
        .args(args)
        .env("DEMO_SECRET", "demo-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("nova finished")
        .unwrap()
}

#[tokio::test]
async fn subscribe_prints_params_per_line_and_stops_after_count() {
    let (_sim, url) = simulator().await;
    let out = nova(&[
        "deribit",
        "--url",
        &url,
        "--events",
        "none",
        "subscribe",
        "ticker.BTC-PERPETUAL.100ms",
        "--count",
        "3",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for v in &lines {
        assert_eq!(v["channel"], "ticker.BTC-PERPETUAL.100ms");
        assert_eq!(v["data"]["instrument_name"], "BTC-PERPETUAL");
    }
}

#[tokio::test]
async fn quiet_prints_a_summary_only() {
    let (_sim, url) = simulator().await;
    let out = nova(&[
        "deribit",
        "--url",
        &url,
        "--events",
        "none",
        "subscribe",
        "ticker.BTC-PERPETUAL.100ms",
        "--count",
        "2",
        "--quiet",
    ])
    .await;
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("count=2 seconds=")),
        "{stderr}"
    );
}

#[tokio::test]
async fn call_prints_the_result_and_api_errors_fail() {
    let (_sim, url) = simulator().await;
    let out = nova(&[
        "deribit",
        "--url",
        &url,
        "--events",
        "none",
        "call",
        "public/get_time",
    ])
    .await;
    assert!(out.status.success());
    let time: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(time > 1_600_000_000_000);

    // Authenticated, with the secret from the environment.
    let out = nova(&[
        "deribit",
        "--url",
        &url,
        "--client-id",
        "demo-key",
        "--client-secret-env",
        "DEMO_SECRET",
        "--events",
        "none",
        "call",
        "private/get_account_summary",
        r#"{"currency":"BTC"}"#,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["currency"], "BTC");

    let out = nova(&[
        "deribit",
        "--url",
        &url,
        "--events",
        "none",
        "call",
        "public/ticker",
        r#"{"instrument_name":"NOPE"}"#,
    ])
    .await;
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["code"], -32602);
}
