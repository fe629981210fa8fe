//! Deribit's error codes and what each means for a client (reference §6).
//!
//! ```
//! use websockex_nova_deribit::errors::{action, Action};
//!
//! assert_eq!(action(10028), Action::Backoff);      // too_many_requests: session terminated
//! assert_eq!(action(13009), Action::Reauthenticate);
//! assert_eq!(action(10009), Action::Surface);      // not_enough_funds
//! ```

/// What to do about an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Authenticate again, then retry idempotent reads (never blindly retry orders).
    Reauthenticate,
    /// Back off and retry (or reconnect): the condition passes.
    Backoff,
    /// Resynchronise state (resubscribe, reconcile).
    Resync,
    /// Hand it to the caller; retrying will not help.
    Surface,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    /// The code.
    pub code: i64,
    /// Deribit's message.
    pub message: &'static str,
    /// What to do.
    pub action: Action,
}

macro_rules! table {
    ($($code:expr, $msg:expr, $action:ident;)*) => {
        /// Every code of the reference's complete table, in order.
        pub const ERROR_CODES: &[ErrorCode] = &[
            $(ErrorCode { code: $code, message: $msg, action: Action::$action },)*
        ];
    };
}

table! {
    -32700, "Parse error", Surface;
    -32600, "request entity too large", Surface;
    -32601, "Method not found", Surface;
    -32602, "Invalid params", Surface;
    -32000, "Missing params", Surface;
    10000, "authorization_required", Reauthenticate;
    10001, "error", Surface;
    10002, "qty_too_low", Surface;
    10003, "order_overlap", Surface;
    10004, "order_not_found", Surface;
    10005, "price_too_low", Surface;
    10006, "price_too_low4idx", Surface;
    10007, "price_too_high", Surface;
    10009, "not_enough_funds", Surface;
    10010, "already_closed", Surface;
    10012, "book_closed", Surface;
    10019, "locked_by_admin", Surface;
    10020, "invalid_or_unsupported_instrument", Surface;
    10021, "invalid_amount", Surface;
    10023, "invalid_price", Surface;
    10025, "invalid_order_id", Surface;
    10026, "price_precision_exceeded", Surface;
    10028, "too_many_requests", Backoff;
    10029, "not_owner_of_order", Surface;
    10030, "must_be_websocket_request", Surface;
    10040, "retry", Backoff;
    10041, "settlement_in_progress", Backoff;
    10043, "price_wrong_tick", Surface;
    10047, "matching_engine_queue_full", Backoff;
    10049, "cancel_on_disconnect_failed", Surface;
    10066, "too_many_concurrent_requests", Backoff;
    11029, "invalid_arguments", Surface;
    11043, "bad_argument", Surface;
    11044, "not_open_order", Surface;
    11049, "bad_arguments", Surface;
    11050, "bad_request", Surface;
    11051, "system_maintenance", Backoff;
    11052, "subscribe_error_unsubscribed", Resync;
    11054, "post_only_reject", Surface;
    11056, "unauthenticated_public_requests_temporarily_disabled", Reauthenticate;
    11094, "internal_server_error", Backoff;
    12998, "security_key_authorization_over_limit", Backoff;
    13004, "invalid_credentials", Surface;
    13009, "unauthorized", Reauthenticate;
    13010, "value_required", Surface;
    13011, "value_too_short", Surface;
    13019, "orderbook_closed", Surface;
    13020, "not_found", Surface;
    13021, "forbidden", Surface;
    13025, "method_switched_off_by_admin", Surface;
    13028, "temporarily_unavailable", Backoff;
    13030, "mmp_trigger", Surface;
    13032, "non_unique_order_label", Surface;
    13042, "cod_not_enabled", Surface;
    13403, "scope_exceeded", Surface;
    13503, "unavailable", Backoff;
    13666, "request_cancelled_by_user", Surface;
    13668, "security_key_authorization_error", Surface;
    13777, "replaced", Surface;
    13778, "raw_subscriptions_not_available_for_unauthorized", Surface;
    13780, "move_positions_over_limit", Backoff;
    13888, "timed_out", Surface;
}

/// The table row for `code`, if Deribit documents it.
pub fn lookup(code: i64) -> Option<&'static ErrorCode> {
    ERROR_CODES.iter().find(|e| e.code == code)
}

/// What to do about `code` (undocumented codes: surface).
pub fn action(code: i64) -> Action {
    lookup(code).map_or(Action::Surface, |e| e.action)
}

/// Whether an error from `public/auth` is a refusal (retrying cannot help).
pub fn is_auth_refusal(code: i64) -> bool {
    matches!(code, 13004 | -32602 | 13021 | 13403 | 13668)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_unique_and_complete_for_the_important_codes() {
        let mut codes: Vec<i64> = ERROR_CODES.iter().map(|e| e.code).collect();
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n, "duplicate codes");
        assert_eq!(
            lookup(13778).unwrap().message,
            "raw_subscriptions_not_available_for_unauthorized"
        );
        assert_eq!(action(11051), Action::Backoff);
        assert_eq!(action(11052), Action::Resync);
        assert_eq!(action(424242), Action::Surface);
        assert!(is_auth_refusal(13004) && !is_auth_refusal(10028));
    }
}
