//! The one JSON line and the invariant verdicts.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::plan::Kind;
use super::resources::Resources;
use super::setup::{NAMES, STREAMS};
use super::state::{lock, EventTally, Shared, Side};
use super::Args;

/// A connection the venue just closed may still be on its way out on the simulator's side.
const FD_TOLERANCE: i64 = 2;
const RSS_GROWTH_LIMIT_KIB: i64 = 64 * 1024;

pub(super) struct ReportInput<'a> {
    pub(super) sh: &'a Shared,
    pub(super) args: &'a Args,
    pub(super) plan_fp: String,
    pub(super) injected: u64,
    pub(super) counts: &'a BTreeMap<Kind, u64>,
    pub(super) no_effect: &'a BTreeMap<&'static str, u64>,
    pub(super) seconds: &'a BTreeMap<&'static str, f64>,
    pub(super) not_ready: u64,
    pub(super) back: bool,
    pub(super) active: usize,
    pub(super) ready: &'a [bool],
    pub(super) fault_secs: f64,
}

/// The report without the resources at teardown, and the invariant verdicts so far.
pub(super) struct Report {
    json: serde_json::Map<String, Value>,
    violations: Vec<String>,
    invariants: serde_json::Map<String, Value>,
}

pub(super) fn report(r: &ReportInput<'_>) -> Report {
    let sh = r.sh;
    let mut violations = lock(&sh.violations).clone();
    let q = lock(&sh.requests);
    let streams = lock(&sh.streams);
    let events = lock(&sh.events);
    let by_kind: serde_json::Map<String, Value> = Kind::ALL
        .iter()
        .map(|k| {
            (
                k.name().to_owned(),
                json!(r.counts.get(k).copied().unwrap_or(0)),
            )
        })
        .collect();
    let pending = q.sent - q.resolved;
    let requests_ok = pending == 0 && q.abandoned == 0;
    if !requests_ok {
        violations.push(format!(
            "requests: {} sent, {} resolved, {} abandoned",
            q.sent, q.resolved, q.abandoned
        ));
    }
    let silent: u64 = streams.iter().map(|t| t.silent).sum();
    let disorder: u64 = streams
        .iter()
        .map(|t| t.repeats + t.backwards + t.malformed)
        .sum();
    let back_ok = r.back && r.ready.iter().all(|x| *x) && r.active == STREAMS.len();
    if !back_ok {
        let stale: Vec<&str> = streams
            .iter()
            .filter(|t| {
                t.last_at
                    .is_none_or(|at| at.elapsed() > Duration::from_secs(1))
            })
            .map(|t| t.channel.as_str())
            .collect();
        violations.push(format!(
            "not back after the faults: ready {:?}, {} of {} subscriptions active (stale: {stale:?})",
            r.ready,
            r.active,
            STREAMS.len()
        ));
    }
    let sum = |f: fn(&EventTally) -> u64| events.iter().map(f).sum::<u64>();
    let mut disconnects: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter() {
        for (k, n) in &e.disconnects {
            *disconnects.entry(k.clone()).or_default() += n;
        }
    }
    let gaps: BTreeMap<&str, u64> = streams.iter().fold(BTreeMap::new(), |mut m, t| {
        for (k, n) in &t.gaps {
            *m.entry(*k).or_default() += n;
        }
        m
    });
    let per_stream: Vec<Value> = streams
        .iter()
        .map(|t| {
            json!({
                "client": NAMES[t.client], "channel": t.channel, "received": t.received,
                "lagged": t.lagged, "resubscribed": t.resubscribed, "resyncs": t.resyncs,
                "gaps": t.gaps, "by_hand": t.by_hand,
            })
        })
        .collect();
    let dropped_counted: u64 = sh.sides.iter().map(Side::drops).sum();
    let mut json = serde_json::Map::new();
    json.insert("seed".into(), json!(r.args.seed));
    json.insert(
        "faults".into(),
        json!({
            "requested": r.args.faults,
            "injected": r.injected,
            "by_kind": by_kind,
            "sequence": r.plan_fp,
            "without_visible_effect": r.no_effect,
            "seconds_by_kind": r.seconds.iter().map(|(k, v)| ((*k).to_owned(), json!((v * 10.0).round() / 10.0))).collect::<serde_json::Map<_, _>>(),
            "not_ready_before": r.not_ready,
            "seconds": (r.fault_secs * 10.0).round() / 10.0,
        }),
    );
    json.insert(
        "requests".into(),
        json!({
            "sent": q.sent, "resolved": q.resolved, "pending": pending, "abandoned": q.abandoned,
            "ok": q.ok, "api_error": q.api_error, "timeout": q.timeout,
            "disconnected": {"sent": q.disconnected_sent, "unsent": q.disconnected_unsent},
            "other": q.other, "api_codes": q.api_codes.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "other_kinds": q.other_kinds,
            "late_responses": sum(|e| e.late_responses),
        }),
    );
    json.insert(
        "subscriptions".into(),
        json!({"desired": STREAMS.len(), "active": r.active, "refused_by_client": sum(|e| e.refused),
               "resubscribed_by_hand": streams.iter().map(|t| t.by_hand).sum::<u64>()}),
    );
    json.insert(
        "notifications".into(),
        json!({
            "received": streams.iter().map(|t| t.received).sum::<u64>(),
            "drops_announced": streams.iter().map(|t| t.dropped).sum::<u64>() + sum(|e| e.dropped),
            "lagged_announcements": streams.iter().map(|t| t.lagged).sum::<u64>() + sum(|e| e.lagged),
            "drops_counted": dropped_counted,
            "gaps": gaps,
            "silent_losses": silent,
            "repeated_reordered_or_malformed": disorder,
            "streams": per_stream,
        }),
    );
    json.insert(
        "drops_announced".into(),
        json!(streams.iter().map(|t| t.dropped).sum::<u64>() + sum(|e| e.dropped)),
    );
    json.insert("resubscribes".into(), json!(sum(|e| e.resubscribes)));
    json.insert(
        "book_resyncs".into(),
        json!(streams.iter().map(|t| t.resyncs).sum::<u64>()),
    );
    json.insert("silent_losses".into(), json!(silent));
    json.insert(
        "connections".into(),
        json!({
            "reconnects": sum(|e| e.reconnects),
            "disconnects_by_close_code": disconnects,
            "authentications": sum(|e| e.authenticated),
            "refreshes": sum(|e| e.refreshed),
            "unknown_messages": sum(|e| e.messages),
            "error_events": sum(|e| e.errors),
            "restarts": sum(|e| e.restarts),
        }),
    );
    let mut invariants = serde_json::Map::new();
    invariants.insert("every_request_resolved".into(), json!(requests_ok));
    invariants.insert("no_silent_loss".into(), json!(silent == 0 && disorder == 0));
    invariants.insert("back_after_faults".into(), json!(back_ok));
    Report {
        json,
        violations,
        invariants,
    }
}

pub(super) fn finish(
    mut report: Report,
    baseline: Resources,
    start: Resources,
    end: Resources,
    teardown: Resources,
    started: Instant,
) -> ExitCode {
    let res = |f: fn(&Resources) -> i64| json!({"baseline": f(&baseline), "start": f(&start), "end": f(&end), "teardown": f(&teardown)});
    report.json.insert(
        "resources".into(),
        json!({
            "open_fds": res(|r| r.fds),
            "live_tasks": res(|r| r.tasks),
            "rss_kib": res(|r| r.rss_kib),
            "limits": {"fd_tolerance": FD_TOLERANCE, "rss_growth_kib": RSS_GROWTH_LIMIT_KIB},
        }),
    );
    let mut leak = Vec::new();
    if end.fds > start.fds + FD_TOLERANCE {
        leak.push(format!(
            "open fds {} at start, {} at end",
            start.fds, end.fds
        ));
    }
    if end.tasks > start.tasks {
        leak.push(format!(
            "live tasks {} at start, {} at end",
            start.tasks, end.tasks
        ));
    }
    if end.rss_kib - start.rss_kib >= RSS_GROWTH_LIMIT_KIB {
        leak.push(format!(
            "RSS grew {} KiB (limit {RSS_GROWTH_LIMIT_KIB})",
            end.rss_kib - start.rss_kib
        ));
    }
    if teardown.fds > baseline.fds + FD_TOLERANCE {
        leak.push(format!(
            "open fds {} before the simulator, {} after closing everything",
            baseline.fds, teardown.fds
        ));
    }
    if teardown.tasks > baseline.tasks {
        leak.push(format!(
            "live tasks {} before the simulator, {} after closing everything",
            baseline.tasks, teardown.tasks
        ));
    }
    report
        .invariants
        .insert("no_leak".into(), json!(leak.is_empty()));
    report.violations.extend(leak);
    let ok = report.invariants.values().all(|v| v == &json!(true));
    report.json.insert(
        "wall_s".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    report
        .json
        .insert("invariants".into(), Value::Object(report.invariants));
    report
        .json
        .insert("violations".into(), json!(report.violations));
    report.json.insert("ok".into(), json!(ok));
    let line = Value::Object(report.json).to_string();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if ok {
        ExitCode::SUCCESS
    } else {
        for v in &report.violations {
            eprintln!("nova: chaos: invariant failed: {v}");
        }
        ExitCode::FAILURE
    }
}
