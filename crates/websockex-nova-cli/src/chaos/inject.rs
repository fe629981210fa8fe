//! Injecting one fault and waiting for its effect.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use websockex_nova::OverflowPolicy;
use websockex_nova_testkit::deribit::Faults;
use websockex_nova_testkit::RpcError;

use super::plan::{Fault, Kind};
use super::requests::Pending;
use super::setup::{
    ACCOUNTS, MARKET, MAX_MESSAGE, METHODS, OVERFLOW, QUEUE_LIMIT, REQUESTS, REQUEST_TIMEOUT,
};
use super::state::{lock, Shared};
use super::wait::{poll_until, reconnected};

/// How long `stall` keeps a connection silent (well past the dead-peer timeout).
const STALL: Duration = Duration::from_secs(2);
/// The simulator's queue limit while `slow_client` runs (otherwise 10,000).
const SLOW_QUEUE: usize = 8;
/// What `slow_client` queues (never delivered).
const HEARTBEAT_MESSAGE: &str =
    r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}"#;
const GARBAGE: [&str; 4] = [
    "this is not json",
    "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\",\"params\":{\"channel\":",
    "<html><body>502 Bad Gateway</body></html>",
    "\u{0}\u{1}\u{2}",
];
const ERRORS: [(i64, &str); 4] = [
    (13028, "temporarily_unavailable"),
    (10040, "retry"),
    (11094, "internal_server_error"),
    (10047, "matching_engine_queue_full"),
];

/// Injects one fault and waits (bounded) for its effect; returns whether it was seen.
pub(super) async fn inject(sh: &Shared, faults: &Faults, f: Fault) -> bool {
    let i = f.target;
    let before = sh.sides[i].client().status().connects;
    let Some(conn) = sh.conn_of(i) else {
        return false;
    };
    let account = ACCOUNTS[i].0;
    match f.kind {
        Kind::Drop => {
            faults.drop_connection(conn);
            reconnected(sh, i, before).await
        }
        Kind::Stall => {
            faults.stall(conn, STALL);
            reconnected(sh, i, before).await
        }
        Kind::Garbage => {
            faults.push(conn, GARBAGE[f.param as usize % GARBAGE.len()]);
            tokio::time::sleep(Duration::from_millis(10)).await;
            true
        }
        Kind::InvalidUtf8 => {
            faults.send_invalid_utf8(conn);
            reconnected(sh, i, before).await
        }
        Kind::Oversized => {
            faults.send_oversized(conn, MAX_MESSAGE + 1 + (f.param as usize % 4096));
            reconnected(sh, i, before).await
        }
        Kind::SlowClient => {
            faults.set_max_queue(Some(SLOW_QUEUE));
            faults.pause_writes(conn, true);
            // Fill its queue at once rather than waiting for the market (the simulator
            // discards what is queued when it closes the connection).
            for _ in 0..=SLOW_QUEUE {
                faults.push(conn, HEARTBEAT_MESSAGE);
            }
            let seen = reconnected(sh, i, before).await;
            faults.set_max_queue(Some(QUEUE_LIMIT));
            faults.pause_writes(conn, false);
            seen
        }
        Kind::LaggingReader => {
            let drops = sh.sides[i].drops();
            sh.sides[i].paused.send_replace(true);
            tokio::time::sleep(Duration::from_millis(220 + u64::from(f.param % 80))).await;
            sh.sides[i].paused.send_replace(false);
            // Under `Block` nothing is dropped: the connection waited.
            OVERFLOW[i] == OverflowPolicy::Block || sh.sides[i].drops() > drops
        }
        Kind::RateLimit => {
            faults.exhaust_credits(Some(account));
            // The pools refill (one request in 50 ms): make the next request now.
            one_request(sh, i).await;
            reconnected(sh, i, before).await
        }
        Kind::Heartbeat => {
            faults.ignore_heartbeat_answers_from(conn, true);
            let seen = reconnected(sh, i, before).await;
            faults.ignore_heartbeat_answers_from(conn, false);
            seen
        }
        Kind::TokenExpiry => {
            faults.expire_tokens();
            tokio::time::sleep(Duration::from_millis(20)).await;
            true
        }
        Kind::TokenRevocation => {
            faults.revoke_tokens();
            tokio::time::sleep(Duration::from_millis(20)).await;
            true
        }
        Kind::BookGap => {
            let gaps = sh.venue_gaps[i].load(Ordering::SeqCst);
            let instrument = if i == MARKET {
                "BTC-PERPETUAL"
            } else {
                "ETH-PERPETUAL"
            };
            if faults.book_gap(Some(instrument)) == 0 {
                // The book is being resynced right now: nothing to skip.
                return false;
            }
            poll_until(Duration::from_secs(1), || {
                sh.venue_gaps[i].load(Ordering::SeqCst) > gaps
            })
            .await
        }
        Kind::Maintenance => {
            faults.set_maintenance(true);
            tokio::time::sleep(Duration::from_millis(50 + u64::from(f.param % 100))).await;
            faults.set_maintenance(false);
            true
        }
        Kind::FailingMethod => {
            let (code, message) = ERRORS[f.param as usize % ERRORS.len()];
            let error = RpcError::new(code, message);
            if i != REQUESTS && f.param.is_multiple_of(3) {
                // The venue fails subscribe calls while the link is restored.
                faults.fail_method("private/subscribe", error);
                faults.drop_connection(conn);
                let seen = reconnected(sh, i, before).await;
                faults.clear_failures();
                seen
            } else {
                let method = METHODS[(f.param as usize / 7) % METHODS.len()];
                faults.fail_next(method, error, 1 + (f.param as usize % 3));
                tokio::time::sleep(Duration::from_millis(100)).await;
                faults.clear_failures();
                true
            }
        }
        Kind::SlowResponses => {
            // Every answer comes late, until a request timed out.
            let timeouts = lock(&sh.requests).timeout;
            let late = REQUEST_TIMEOUT + Duration::from_millis(50 + u64::from(f.param % 200));
            faults.delay_responses(Some(late));
            one_request(sh, i).await;
            faults.delay_responses(None);
            lock(&sh.requests).timeout > timeouts
        }
    }
}

/// One `public/get_time` from client `i`, counted like the workers' requests.
async fn one_request(sh: &Shared, i: usize) {
    let pending = Pending::sent(&sh.requests);
    let result = sh.sides[i]
        .client()
        .request_with_timeout("public/get_time", &json!({}), REQUEST_TIMEOUT)
        .await;
    pending.resolve(&result);
}

/// Switches every fault off.
pub(super) fn calm(faults: &Faults) {
    faults.set_maintenance(false);
    faults.clear_failures();
    faults.delay_responses(None);
    for m in METHODS {
        faults.delay_method(m, None);
    }
    faults.set_max_queue(Some(QUEUE_LIMIT));
    faults.ignore_heartbeat_answers(false);
}
