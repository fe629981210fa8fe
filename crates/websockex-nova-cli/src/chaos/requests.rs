//! Request workers; a request is a value that can only be consumed by resolving it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde_json::json;
use websockex_nova::Error;

use super::setup::{METHODS, REQUEST_TIMEOUT, WORKER_PAUSE};
use super::state::{lock, RequestTally, Shared};

/// A request on its way: it can only be consumed by [`Pending::resolve`]; dropped
/// unresolved it counts as abandoned.
pub(super) struct Pending<'a> {
    tally: &'a Mutex<RequestTally>,
    done: bool,
}

impl<'a> Pending<'a> {
    pub(super) fn sent(tally: &'a Mutex<RequestTally>) -> Self {
        lock(tally).sent += 1;
        Pending { tally, done: false }
    }

    pub(super) fn resolve(mut self, result: &Result<websockex_nova::RawJson, Error>) {
        self.done = true;
        let mut t = lock(self.tally);
        t.resolved += 1;
        match result {
            Ok(_) => t.ok += 1,
            Err(e) => {
                if let Some(api) = e.api_error() {
                    t.api_error += 1;
                    *t.api_codes.entry(api.code).or_default() += 1;
                } else if e.is_timeout() {
                    t.timeout += 1;
                } else if let Some(sent) = e.was_sent() {
                    if sent {
                        t.disconnected_sent += 1;
                    } else {
                        t.disconnected_unsent += 1;
                    }
                } else {
                    t.other += 1;
                    *t.other_kinds.entry(e.kind_name()).or_default() += 1;
                }
            }
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(self.tally).abandoned += 1;
        }
    }
}

pub(super) async fn worker(sh: Arc<Shared>, i: usize, first: usize) {
    let client = sh.sides[i].client().clone();
    let mut k = first;
    while !sh.stop.load(Ordering::SeqCst) {
        let method = METHODS[k % METHODS.len()];
        k += 1;
        let params = match method {
            "private/get_position" => json!({"instrument_name": "BTC-PERPETUAL"}),
            "private/get_account_summary" => json!({"currency": "BTC"}),
            _ => json!({}),
        };
        let pending = Pending::sent(&sh.requests);
        let result = client
            .request_with_timeout(method, &params, REQUEST_TIMEOUT)
            .await;
        pending.resolve(&result);
        if matches!(&result, Err(e) if e.is_closed()) {
            return;
        }
        tokio::time::sleep(WORKER_PAUSE).await;
    }
}
