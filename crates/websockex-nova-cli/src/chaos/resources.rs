//! Open fds, live tasks and RSS of this process.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Resources {
    pub(super) fds: i64,
    pub(super) tasks: i64,
    pub(super) rss_kib: i64,
}

pub(super) fn resources() -> Resources {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(-1, |d| d.count() as i64 - 1);
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks() as i64;
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(-1);
    Resources {
        fds,
        tasks,
        rss_kib,
    }
}

/// Resources after closing everything, once aborted tasks finished dropping (bounded).
pub(super) async fn poll_for_teardown(baseline: Resources) -> Resources {
    let mut r = resources();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (r.tasks > baseline.tasks || r.fds > baseline.fds) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = resources();
    }
    r
}
