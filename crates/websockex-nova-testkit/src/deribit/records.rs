//! What the simulator records, for tests to inspect.

use serde_json::Value;
use tokio::time::Instant;

/// A request the simulator received (frames that did not parse as one are only counted, in
/// [`DeribitSim::invalid_frames`](super::DeribitSim::invalid_frames)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SimRequest {
    /// The connection index (0 for the first TCP connection accepted, and so on).
    pub conn: usize,
    /// The `id` (`None` if the request had none).
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// The params (`{}` when left out). Secrets are kept as sent: this is a test record, never
    /// logged.
    pub params: Value,
    /// When it arrived (`tokio::time`).
    pub at: Instant,
    /// The error code it was answered with, `None` for a result.
    pub error: Option<i64>,
}

/// One heartbeat `test_request` the simulator sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatRecord {
    /// The connection.
    pub conn: usize,
    /// When it was sent.
    pub sent_at: Instant,
    /// When the client's `public/test` arrived, if it did before the next tick.
    pub answered_at: Option<Instant>,
}

/// Who ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClosedBy {
    /// The simulator sent a close frame (heartbeat, 10028, logout, too slow, a fault).
    Server,
    /// The client sent a close frame.
    Client,
    /// The TCP connection ended without a close frame (a drop fault, an idle drop, the client
    /// vanished, or the simulator stopped).
    Dropped,
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseRecord {
    /// The connection.
    pub conn: usize,
    /// When.
    pub at: Instant,
    /// Who ended it.
    pub by: ClosedBy,
    /// The close code (`None` when dropped, or a close frame without a code).
    pub code: Option<u16>,
    /// The close reason (for drops: why, e.g. `"fault"`, `"idle"`, `"connection_too_slow"`).
    pub reason: String,
}

/// A book change message the simulator skipped (a gap) or sent twice, by fault injection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BookFault {
    /// The instrument.
    pub instrument: String,
    /// The channel, e.g. `book.BTC-PERPETUAL.100ms`.
    pub channel: String,
    /// `change_id` of the skipped or repeated message.
    pub change_id: u64,
    /// When.
    pub at: Instant,
}
