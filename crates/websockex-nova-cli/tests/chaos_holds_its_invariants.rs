//! `nova chaos` as a real process: 60 seeded faults of every kind, and its JSON line says
//! every invariant held (requests resolved, no silent loss, everything back, no leak). The
//! same seed injects the same sequence (two runs side by side: the run mostly waits for the
//! clients to recover, so they hardly compete for the CPU).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

mod common;
use common::NOVA;
const KINDS: [&str; 15] = [
    "drop",
    "stall",
    "garbage",
    "invalid_utf8",
    "oversized",
    "slow_client",
    "lagging_reader",
    "rate_limit",
    "heartbeat",
    "token_expiry",
    "token_revocation",
    "book_gap",
    "maintenance",
    "failing_method",
    "slow_responses",
];

/// Runs `nova chaos --faults 60 --seed 7`; its exit status and its one JSON line.
async fn chaos() -> (bool, Value, String) {
    let child = Command::new(NOVA)
        .args(["chaos", "--faults", "60", "--seed", "7"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nova chaos");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("nova chaos finished")
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line on stdout: {stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    (out.status.success(), report, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_holds_its_invariants_and_the_seed_fixes_the_faults() {
    let ((ok, a, stderr), (ok2, b, stderr2)) = tokio::join!(chaos(), chaos());
    for (ok, r, err) in [(ok, &a, &stderr), (ok2, &b, &stderr2)] {
        assert!(ok, "nova chaos failed:\n{r:#}\n{err}");
        assert_eq!(r["ok"], true, "{r:#}");
        assert_eq!(r["violations"], serde_json::json!([]), "{r:#}");
        for inv in [
            "every_request_resolved",
            "no_silent_loss",
            "back_after_faults",
            "no_leak",
        ] {
            assert_eq!(r["invariants"][inv], true, "{inv}: {r:#}");
        }
        // Faults of every kind, 60 in all.
        assert_eq!(r["faults"]["injected"], 60, "{r:#}");
        for kind in KINDS {
            assert!(
                r["faults"]["by_kind"][kind].as_u64() >= Some(1),
                "no {kind} fault: {r:#}"
            );
        }
        // Every request resolved, none pending, none lost on the way.
        let q = &r["requests"];
        assert_eq!(q["sent"], q["resolved"], "{r:#}");
        assert_eq!(q["pending"], 0, "{r:#}");
        assert_eq!(q["abandoned"], 0, "{r:#}");
        let by_kind: u64 = ["ok", "api_error", "timeout", "other"]
            .iter()
            .map(|k| q[k].as_u64().unwrap())
            .sum::<u64>()
            + q["disconnected"]["sent"].as_u64().unwrap()
            + q["disconnected"]["unsent"].as_u64().unwrap();
        assert_eq!(Some(by_kind), q["resolved"].as_u64(), "{r:#}");
        assert!(q["ok"].as_u64() > Some(0), "{r:#}");
        // Nothing lost silently; everything back; the faults did something.
        assert_eq!(r["silent_losses"], 0, "{r:#}");
        assert_eq!(
            r["subscriptions"]["desired"], r["subscriptions"]["active"],
            "{r:#}"
        );
        assert!(r["connections"]["reconnects"].as_u64() >= Some(10), "{r:#}");
        assert!(r["book_resyncs"].as_u64() >= Some(1), "{r:#}");
        // Resources were measured.
        for res in ["open_fds", "live_tasks", "rss_kib"] {
            assert!(
                r["resources"][res]["start"].as_i64() > Some(0),
                "{res}: {r:#}"
            );
        }
    }
    // The same seed, the same faults.
    assert_eq!(a["faults"]["by_kind"], b["faults"]["by_kind"]);
    assert_eq!(a["faults"]["sequence"], b["faults"]["sequence"]);
}
