//! Bounded waits on the clients' state.

use std::time::Duration;

use websockex_nova::State;

use super::state::Shared;

/// Longest wait for a fault's effect.
const EFFECT_BOUND: Duration = Duration::from_secs(3);

pub(super) async fn poll_until(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) fn all_ready(sh: &Shared) -> bool {
    sh.sides
        .iter()
        .all(|s| s.client().status().state == State::Ready)
}

/// Client `i` went through a new Ready since it had `before` connects.
pub(super) async fn reconnected(sh: &Shared, i: usize, before: u64) -> bool {
    poll_until(EFFECT_BOUND, || {
        let s = sh.sides[i].client().status();
        s.connects > before && s.state == State::Ready
    })
    .await
}
