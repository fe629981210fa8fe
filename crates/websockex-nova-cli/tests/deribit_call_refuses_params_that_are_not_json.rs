//! `nova deribit call` with params that are not JSON is a usage error: one line on stderr,
//! exit code 2, nothing on stdout, and the venue is never contacted.

mod common;

use std::process::Stdio;

use common::*;
use tokio::process::Command;
use websockex_nova_testkit::deribit::{DeribitSim, SimConfig};

#[tokio::test]
async fn params_that_are_not_json_are_a_usage_error_before_connecting() {
    let sim = DeribitSim::start(SimConfig::default()).await.unwrap();
    for params in ["{not json", "", r#"{"currency":"BTC""#, "BTC"] {
        let child = Command::new(NOVA)
            .args([
                "deribit",
                "--url",
                &sim.url(),
                "--events",
                "none",
                "call",
                "public/get_time",
                params,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("nova finished")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{params:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{params:?}");
        assert_eq!(stderr.lines().count(), 1, "{params:?}: {stderr}");
        assert!(
            stderr.starts_with("nova: params are not JSON: "),
            "{params:?}: {stderr}"
        );
        assert_eq!(sim.accepted(), 0, "{params:?}: nothing was sent");
    }
    // The same call with JSON params goes through.
    let out = Command::new(NOVA)
        .args([
            "deribit",
            "--url",
            &sim.url(),
            "--events",
            "none",
            "call",
            "public/get_time",
            "{}",
        ])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert!(out.status.success());
    assert_eq!(sim.accepted(), 1);
}
