//! The methods: auth, heartbeats, subscriptions, market data, trading, cancel-on-disconnect.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::channel::{Channel, Interval};
use super::config::InstrumentKind;
use super::market::{round, Dir, Fill, Inst, NewOrder, Tif};
use super::sign;
use super::state::{ConnAuth, Outcome, Position, State, Sub, Token, POOL_ME, POOL_NON_ME};
use crate::rpc::RpcError;

fn required(param: &str) -> RpcError {
    RpcError::invalid_params(param, "value is required")
}

fn invalid(param: &str, reason: &str) -> RpcError {
    RpcError::invalid_params(param, reason)
}

fn get<'a>(params: &'a Value, name: &str) -> Option<&'a Value> {
    params.get(name).filter(|v| !v.is_null())
}

fn opt_str<'a>(params: &'a Value, name: &str) -> Result<Option<&'a str>, RpcError> {
    match get(params, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(name, "must be a string")),
    }
}

fn req_str<'a>(params: &'a Value, name: &str) -> Result<&'a str, RpcError> {
    opt_str(params, name)?.ok_or_else(|| required(name))
}

/// A number, or a string holding one (Deribit accepts both).
fn opt_num(params: &Value, name: &str) -> Result<Option<f64>, RpcError> {
    match get(params, name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(name, "invalid number")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| invalid(name, "must be a number")),
        Some(_) => Err(invalid(name, "must be a number")),
    }
}

fn opt_bool(params: &Value, name: &str) -> Result<Option<bool>, RpcError> {
    match get(params, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(invalid(name, "must be a boolean")),
    }
}

fn channels_param(params: &Value) -> Result<Vec<String>, RpcError> {
    let list = get(params, "channels").ok_or_else(|| required("channels"))?;
    let bad = || invalid("channels", "must be an array of strings");
    let list = list.as_array().ok_or_else(bad)?;
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for c in list {
        let c = c.as_str().ok_or_else(bad)?;
        if !out.iter().any(|o| o == c) {
            out.push(c.to_owned());
        }
    }
    Ok(out)
}

/// `"connection"` or `"session:NAME"`, `"mainaccount"`, the permissions asked for (narrowed),
/// `expires:N`, `ip:..`. Returns the scope string, the session name and the lifetime.
fn build_scope(requested: &str, grant: &str) -> (String, Option<String>, Option<u64>) {
    let mut head: Option<String> = None;
    let mut perms: Vec<String> = Vec::new();
    let mut expires = None;
    let mut extra = Vec::new();
    for item in requested.split_whitespace() {
        if item == "connection" {
            head.get_or_insert_with(|| item.to_owned());
        } else if item.strip_prefix("session:").is_some_and(|n| !n.is_empty()) {
            head = Some(item.to_owned());
        } else if let Some(n) = item.strip_prefix("expires:") {
            expires = n.parse::<u64>().ok().filter(|n| *n > 0);
        } else if item.starts_with("ip:") {
            extra.push(item.to_owned());
        } else if let Some((area, level)) = item.split_once(':') {
            let areas = [
                "account",
                "trade",
                "wallet",
                "block_trade",
                "block_rfq",
                "custody",
            ];
            if areas.contains(&area) && ["read", "read_write", "none"].contains(&level) {
                // The server narrows what it will not grant (reference §2.3).
                let level =
                    if area == "wallet" && level == "read_write" && grant == "client_credentials" {
                        "read"
                    } else {
                        level
                    };
                let prefix = format!("{area}:");
                perms.retain(|p| !p.starts_with(&prefix));
                perms.push(format!("{area}:{level}"));
            }
        }
    }
    let head = head.unwrap_or_else(|| "connection".to_owned());
    let session = head.strip_prefix("session:").map(str::to_owned);
    let mut parts = vec![head, "mainaccount".to_owned()];
    parts.extend(perms);
    if let Some(e) = expires {
        parts.push(format!("expires:{e}"));
    }
    parts.extend(extra);
    (parts.join(" "), session, expires)
}

/// Whether `scope` allows reading (or writing) `area`; no mention means allowed.
fn scope_allows(scope: &str, area: &str, write: bool) -> bool {
    for item in scope.split_whitespace() {
        if let Some(level) = item.strip_prefix(area).and_then(|r| r.strip_prefix(':')) {
            return match level {
                "read_write" => true,
                "read" => !write,
                _ => false,
            };
        }
    }
    true
}

/// P&L of closing `lots` (signed: long > 0) bought at `avg`, at `exit`.
fn pnl(inst: &Inst, lots: i64, avg: f64, exit: f64) -> f64 {
    let amount = lots as f64 * inst.spec.min_trade_amount;
    if inst.spec.kind == InstrumentKind::Future && !inst.spec.linear {
        if avg > 0.0 && exit > 0.0 {
            amount * (1.0 / avg - 1.0 / exit)
        } else {
            0.0
        }
    } else {
        amount * (exit - avg)
    }
}

/// Per account: orders changed, user trades `(instrument, order, trade)`, currencies touched.
#[derive(Default)]
pub(crate) struct AccUpdate {
    orders: BTreeSet<u64>,
    trades: Vec<(usize, u64, Value)>,
    currencies: BTreeSet<String>,
}

pub(crate) type Updates = BTreeMap<String, AccUpdate>;

impl State {
    pub(crate) fn dispatch(
        &mut self,
        conn: usize,
        method: &str,
        params: &Value,
        now: Instant,
        out: &mut Outcome,
    ) -> Result<Value, RpcError> {
        let now_ms = self.clock.ms(now);
        match method {
            "public/auth" => self.auth(conn, params, now),
            "public/hello" => Ok(json!({ "version": self.cfg.version })),
            "public/get_time" => Ok(json!(now_ms)),
            "public/test" => match opt_str(params, "expected_result")? {
                // UNCERTAIN: the code Deribit uses for the forced exception.
                Some("exception") => Err(RpcError::new(11094, "internal_server_error")),
                _ => Ok(json!({ "version": self.cfg.version })),
            },
            "public/status" => {
                let locked: Vec<&str> = if self.faults.maintenance {
                    self.market
                        .indexes
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect()
                } else {
                    Vec::new()
                };
                let flag = if locked.is_empty() { "false" } else { "true" };
                Ok(json!({ "locked": flag, "locked_indices": locked }))
            }
            "public/set_heartbeat" => {
                let interval = opt_num(params, "interval")?.ok_or_else(|| required("interval"))?;
                let min = self.cfg.min_heartbeat_interval;
                let d = Duration::try_from_secs_f64(interval)
                    .ok()
                    .filter(|_| interval >= min)
                    .ok_or_else(|| invalid("interval", &format!("must be at least {min}")))?;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.heartbeat = Some(d);
                    c.pending_test = None;
                }
                out.heartbeat = Some(Some(d));
                Ok(json!("ok"))
            }
            "public/disable_heartbeat" => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.heartbeat = None;
                    c.pending_test = None;
                }
                out.heartbeat = Some(None);
                Ok(json!("ok"))
            }
            "public/subscribe" => self.subscribe(conn, params, false, now, out),
            "private/subscribe" => self.subscribe(conn, params, true, now, out),
            "public/unsubscribe" | "private/unsubscribe" => {
                let names = channels_param(params)?;
                let Some(c) = self.conns.get_mut(&conn) else {
                    return Ok(json!([]));
                };
                let gone: Vec<String> = names
                    .into_iter()
                    .filter(|n| {
                        c.pending.remove(n);
                        c.subs.remove(n).is_some()
                    })
                    .collect();
                Ok(json!(gone))
            }
            "public/unsubscribe_all" | "private/unsubscribe_all" => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.subs.clear();
                    c.pending.clear();
                }
                Ok(json!("ok"))
            }
            "public/get_instruments" => {
                let currency = self.currency_param(params, true)?;
                let kind = match opt_str(params, "kind")? {
                    None => None,
                    Some("future") => Some(Some(InstrumentKind::Future)),
                    Some("option") => Some(Some(InstrumentKind::Option)),
                    Some("spot" | "future_combo" | "option_combo") => Some(None),
                    Some(_) => return Err(invalid("kind", "invalid value")),
                };
                if opt_bool(params, "expired")?.unwrap_or(false) {
                    return Ok(json!([]));
                }
                let list: Vec<Value> = (0..self.market.insts.len())
                    .filter(|i| {
                        let s = &self.market.insts[*i].spec;
                        currency
                            .as_deref()
                            .is_none_or(|c| c == s.base_currency || c == s.settlement_currency)
                            && kind.is_none_or(|k| k == Some(s.kind))
                    })
                    .map(|i| self.market.instrument(i))
                    .collect();
                Ok(json!(list))
            }
            "public/get_instrument" => {
                let i = self.instrument_param(params)?;
                Ok(self.market.instrument(i))
            }
            "public/get_currencies" => {
                let mut seen = BTreeSet::new();
                let list: Vec<Value> = self
                    .market
                    .insts
                    .iter()
                    .filter(|i| seen.insert(i.spec.base_currency.clone()))
                    .map(|i| {
                        json!({
                            "currency": i.spec.base_currency,
                            "currency_long": i.spec.base_currency,
                            "coin_type": "CRYPTO",
                            "fee_precision": 4,
                            "min_confirmations": 1,
                            "min_withdrawal_fee": 0.0001,
                            "withdrawal_fee": 0.0001,
                            "withdrawal_priorities": [],
                        })
                    })
                    .collect();
                Ok(json!(list))
            }
            "public/ticker" => {
                let i = self.instrument_param(params)?;
                Ok(self.market.ticker(i, now_ms))
            }
            "public/get_order_book" => {
                let i = self.instrument_param(params)?;
                let depth = match opt_num(params, "depth")? {
                    None => usize::MAX,
                    Some(d) if d >= 1.0 && d.fract() == 0.0 => d as usize,
                    Some(_) => return Err(invalid("depth", "invalid value")),
                };
                Ok(self.market.order_book(i, depth, now_ms))
            }
            "public/get_index_price" => {
                let name = req_str(params, "index_name")?;
                let k = self
                    .market
                    .index_index(name)
                    .ok_or_else(|| invalid("index_name", "invalid value"))?;
                let p = round(self.market.indexes[k].price, 2);
                Ok(json!({ "index_price": p, "estimated_delivery_price": p }))
            }
            "public/get_last_trades_by_instrument" => {
                let i = self.instrument_param(params)?;
                let count = opt_num(params, "count")?.unwrap_or(10.0).clamp(1.0, 1000.0) as usize;
                Ok(self.market.last_trades(i, count))
            }
            "private/logout" => {
                if opt_bool(params, "invalidate_token")?.unwrap_or(true) {
                    self.invalidate_tokens_of(conn);
                }
                // UNCERTAIN whether Deribit answers before closing; the simulator does.
                out.close = Some((1000, "logout".to_owned()));
                out.no_cod = true;
                Ok(json!("ok"))
            }
            "private/get_account_summary" => {
                self.require_scope(conn, "account", false)?;
                let account = self.account(conn)?;
                let currency = self
                    .currency_param(params, false)?
                    .ok_or_else(|| required("currency"))?;
                let extended = opt_bool(params, "extended")?.unwrap_or(false);
                Ok(self.summary(&account, &currency, extended, now))
            }
            "private/get_positions" => {
                self.require_scope(conn, "trade", false)?;
                let account = self.account(conn)?;
                let currency = self.currency_param(params, true)?;
                let kind = self.kind_param(params)?;
                let list: Vec<Value> = (0..self.market.insts.len())
                    .filter(|i| {
                        let s = &self.market.insts[*i].spec;
                        currency
                            .as_deref()
                            .is_none_or(|c| c == s.settlement_currency)
                            && kind.is_none_or(|k| k == Some(s.kind))
                    })
                    .filter(|i| {
                        self.accounts[&account]
                            .positions
                            .get(i)
                            .is_some_and(|p| p.lots != 0)
                    })
                    .map(|i| self.position_json(&account, i))
                    .collect();
                Ok(json!(list))
            }
            "private/get_position" => {
                self.require_scope(conn, "trade", false)?;
                let account = self.account(conn)?;
                let i = self.instrument_param(params)?;
                Ok(self.position_json(&account, i))
            }
            "private/buy" => self.place(conn, params, Dir::Buy, now),
            "private/sell" => self.place(conn, params, Dir::Sell, now),
            "private/cancel" => {
                self.require_scope(conn, "trade", true)?;
                let account = self.account(conn)?;
                let id = req_str(params, "order_id")?;
                let seq = self
                    .market
                    .order_seq(id)
                    .filter(|s| self.market.orders[s].account == account)
                    .ok_or_else(|| RpcError::new(10004, "order_not_found"))?;
                if !self.market.orders[&seq].is_open() {
                    return Err(RpcError::new(11044, "not_open_order"));
                }
                self.cancel_orders(&[seq], "user_request", now);
                Ok(self.market.order_json(seq))
            }
            "private/cancel_all"
            | "private/cancel_all_by_currency"
            | "private/cancel_all_by_instrument"
            | "private/cancel_by_label" => {
                self.require_scope(conn, "trade", true)?;
                let account = self.account(conn)?;
                let ids = self.select_orders(&account, method, params)?;
                let detailed = opt_bool(params, "detailed")?.unwrap_or(false);
                let n = self.cancel_orders(&ids, "user_request", now);
                if detailed && method == "private/cancel_all" {
                    let list: Vec<Value> = ids.iter().map(|s| self.market.order_json(*s)).collect();
                    return Ok(json!(list));
                }
                Ok(json!(n))
            }
            "private/get_open_orders"
            | "private/get_open_orders_by_currency"
            | "private/get_open_orders_by_instrument" => {
                self.require_scope(conn, "trade", false)?;
                let account = self.account(conn)?;
                let ids = self.select_orders(&account, method, params)?;
                let list: Vec<Value> = ids.iter().map(|s| self.market.order_json(*s)).collect();
                Ok(json!(list))
            }
            "private/get_order_state" => {
                self.require_scope(conn, "trade", false)?;
                let account = self.account(conn)?;
                let id = req_str(params, "order_id")?;
                let seq = self
                    .market
                    .order_seq(id)
                    .filter(|s| self.market.orders[s].account == account)
                    .ok_or_else(|| RpcError::new(10004, "order_not_found"))?;
                Ok(self.market.order_json(seq))
            }
            "private/enable_cancel_on_disconnect"
            | "private/disable_cancel_on_disconnect"
            | "private/get_cancel_on_disconnect" => {
                let account = self.account(conn)?;
                let scope = opt_str(params, "scope")?.unwrap_or("connection");
                if scope != "connection" && scope != "account" {
                    return Err(invalid("scope", "invalid value"));
                }
                let enable = method == "private/enable_cancel_on_disconnect";
                if method == "private/get_cancel_on_disconnect" {
                    let account_cod = self.accounts.get(&account).is_some_and(|a| a.cod);
                    let enabled = if scope == "account" {
                        account_cod
                    } else {
                        self.conns
                            .get(&conn)
                            .and_then(|c| c.cod)
                            .unwrap_or(account_cod)
                    };
                    return Ok(json!({ "scope": scope, "enabled": enabled }));
                }
                if scope == "account" {
                    if let Some(a) = self.accounts.get_mut(&account) {
                        a.cod = enable;
                    }
                    for c in self.conns.values_mut() {
                        if c.auth.as_ref().is_some_and(|a| a.account == account) {
                            c.cod = None;
                        }
                    }
                } else if let Some(c) = self.conns.get_mut(&conn) {
                    c.cod = Some(enable);
                }
                Ok(json!("ok"))
            }
            _ => Err(RpcError::new(-32601, "Method not found")),
        }
    }

    fn account(&self, conn: usize) -> Result<String, RpcError> {
        self.account_of(conn)
            .map(str::to_owned)
            .ok_or_else(RpcError::unauthorized)
    }

    fn require_scope(&self, conn: usize, area: &str, write: bool) -> Result<(), RpcError> {
        let scope = self
            .conns
            .get(&conn)
            .and_then(|c| c.auth.as_ref())
            .and_then(|a| self.tokens.get(&a.access))
            .map_or("", |t| t.scope.as_str());
        if scope_allows(scope, area, write) {
            Ok(())
        } else {
            Err(RpcError::new(13403, "scope_exceeded"))
        }
    }

    fn instrument_param(&self, params: &Value) -> Result<usize, RpcError> {
        let name = req_str(params, "instrument_name")?;
        self.market
            .inst_index(name)
            .ok_or_else(|| invalid("instrument_name", "instrument not found"))
    }

    /// `currency`: `None` for `any` (when allowed); unknown currencies are `-32602`.
    fn currency_param(&self, params: &Value, allow_any: bool) -> Result<Option<String>, RpcError> {
        let c = req_str(params, "currency")?;
        if allow_any && c.eq_ignore_ascii_case("any") {
            return Ok(None);
        }
        let c = c.to_ascii_uppercase();
        let known = self.market.has_currency(&c)
            || self.market.is_settlement_currency(&c)
            || self.cfg.balances.iter().any(|(b, _)| *b == c)
            || ["USDC", "USDT", "EURR"].contains(&c.as_str());
        if known {
            Ok(Some(c))
        } else {
            Err(invalid("currency", "invalid currency"))
        }
    }

    /// `kind`: `None` = any; `Some(None)` = a kind the simulator has no instruments of.
    fn kind_param(&self, params: &Value) -> Result<Option<Option<InstrumentKind>>, RpcError> {
        match opt_str(params, "kind")? {
            None | Some("any") => Ok(None),
            Some("future") => Ok(Some(Some(InstrumentKind::Future))),
            Some("option") => Ok(Some(Some(InstrumentKind::Option))),
            Some("spot" | "future_combo" | "option_combo" | "combo") => Ok(Some(None)),
            Some(_) => Err(invalid("kind", "invalid value")),
        }
    }

    /// The open orders of `account` a cancel/get method selects.
    fn select_orders(
        &self,
        account: &str,
        method: &str,
        params: &Value,
    ) -> Result<Vec<u64>, RpcError> {
        let mut inst_filter: Option<usize> = None;
        let mut currency: Option<String> = None;
        let mut label: Option<&str> = None;
        let kind = self.kind_param(params)?;
        if method.ends_with("_by_instrument") {
            inst_filter = Some(self.instrument_param(params)?);
        } else if method.ends_with("_by_currency") {
            currency = self.currency_param(params, true)?;
        } else if method == "private/cancel_by_label" {
            label = Some(req_str(params, "label")?);
            if get(params, "currency").is_some() {
                currency = self.currency_param(params, true)?;
            }
        }
        // Only limit orders rest in the simulator: trigger types select nothing.
        let type_ok = matches!(opt_str(params, "type")?, None | Some("all" | "limit"));
        Ok(self
            .market
            .orders
            .iter()
            .filter(|(_, o)| o.is_open() && o.account == account && type_ok)
            .filter(|(_, o)| inst_filter.is_none_or(|i| i == o.inst))
            .filter(|(_, o)| {
                let s = &self.market.insts[o.inst].spec;
                currency.as_deref().is_none_or(|c| c == s.base_currency)
                    && kind.is_none_or(|k| k == Some(s.kind))
            })
            .filter(|(_, o)| label.is_none_or(|l| l == o.label))
            .map(|(id, _)| *id)
            .collect())
    }

    fn auth(&mut self, conn: usize, params: &Value, now: Instant) -> Result<Value, RpcError> {
        let grant = req_str(params, "grant_type").inspect_err(|_| self.rec.auth_failures += 1)?;
        *self.rec.auth_counts.entry(grant.to_owned()).or_default() += 1;
        let checked = self.check_grant(conn, grant, params, now);
        let (account, scope, session, ttl) = match checked {
            Ok(x) => x,
            Err(e) => {
                self.rec.auth_failures += 1;
                return Err(e);
            }
        };
        let now_ms = self.clock.ms(now);
        let token = |rng: &mut super::rng::Rng| {
            format!(
                "{now_ms}.{:08X}.{:016x}{:016x}",
                rng.next_u64() as u32,
                rng.next_u64(),
                rng.next_u64()
            )
        };
        let access = token(&mut self.rng);
        let refresh = token(&mut self.rng);
        let bound = session.is_none().then_some(conn);
        self.tokens.insert(
            access.clone(),
            Token {
                account: account.clone(),
                conn: bound,
                session: session.clone(),
                scope: scope.clone(),
                expires_at: Some(now + ttl),
                ttl,
                access: None,
            },
        );
        self.tokens.insert(
            refresh.clone(),
            Token {
                account: account.clone(),
                conn: bound,
                session,
                scope: scope.clone(),
                expires_at: None,
                ttl,
                access: Some(access.clone()),
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.auth = Some(ConnAuth {
                account,
                access: access.clone(),
            });
        }
        let mut result = json!({
            "access_token": access,
            "expires_in": ttl.as_secs_f64().ceil() as u64,
            "refresh_token": refresh,
            "scope": scope,
            "token_type": "bearer",
            "enabled_features": [],
        });
        if let Some(state) = get(params, "state") {
            result["state"] = state.clone();
        }
        Ok(result)
    }

    /// Check a grant: `(account, scope, session, lifetime)`.
    fn check_grant(
        &mut self,
        conn: usize,
        grant: &str,
        params: &Value,
        now: Instant,
    ) -> Result<(String, String, Option<String>, Duration), RpcError> {
        let requested = opt_str(params, "scope")?.unwrap_or("");
        let fresh = |scope: &str, grant: &str, ttl: Duration| {
            let (scope, session, expires) = build_scope(scope, grant);
            let ttl = expires.map_or(ttl, Duration::from_secs);
            (scope, session, ttl)
        };
        match grant {
            "client_credentials" => {
                let id = req_str(params, "client_id")?;
                let secret = req_str(params, "client_secret")?;
                if self.accounts.get(id).is_none_or(|a| a.secret != secret) {
                    return Err(RpcError::invalid_credentials());
                }
                let (scope, session, ttl) = fresh(requested, grant, self.cfg.token_ttl);
                Ok((id.to_owned(), scope, session, ttl))
            }
            "client_signature" => {
                let id = req_str(params, "client_id")?;
                let ts = opt_num(params, "timestamp")?.ok_or_else(|| required("timestamp"))?;
                let signature = req_str(params, "signature")?;
                let nonce = opt_str(params, "nonce")?.unwrap_or("");
                let data = opt_str(params, "data")?.unwrap_or("");
                if ts < 0.0 || ts.fract() != 0.0 {
                    return Err(invalid("timestamp", "invalid value"));
                }
                let ts = ts as u64;
                let now_ms = self.clock.ms(now);
                let skew = self.cfg.signature_skew.as_millis() as u64;
                let Some(acc) = self.accounts.get_mut(id) else {
                    return Err(RpcError::invalid_credentials());
                };
                // UNCERTAIN: the code for a stale timestamp or a reused nonce (13004 chosen).
                if ts.abs_diff(now_ms) > skew
                    || !sign::verify(&acc.secret, ts, nonce, data, signature)
                {
                    return Err(RpcError::invalid_credentials());
                }
                if !nonce.is_empty() {
                    acc.nonces.retain(|_, t| t.abs_diff(now_ms) <= 2 * skew);
                    if acc.nonces.insert(nonce.to_owned(), ts).is_some() {
                        return Err(RpcError::invalid_credentials());
                    }
                }
                let (scope, session, ttl) = fresh(requested, grant, self.cfg.token_ttl);
                Ok((id.to_owned(), scope, session, ttl))
            }
            "refresh_token" => {
                let rt = req_str(params, "refresh_token")?;
                // UNCERTAIN: the code for an unknown or used refresh token (13009 chosen).
                let valid = self
                    .tokens
                    .get(rt)
                    .is_some_and(|t| t.expires_at.is_none() && t.conn.is_none_or(|c| c == conn));
                if !valid {
                    return Err(RpcError::unauthorized());
                }
                let old = self.tokens.remove(rt).expect("checked");
                if old.session.is_none() {
                    // A connection-scoped refresh invalidates the previous access token.
                    if let Some(a) = &old.access {
                        self.tokens.remove(a);
                    }
                }
                Ok((old.account, old.scope, old.session, old.ttl))
            }
            _ => Err(invalid("grant_type", "invalid value")),
        }
    }

    /// `private/logout`: the connection's access token and the refresh tokens issued with it.
    fn invalidate_tokens_of(&mut self, conn: usize) {
        let Some(access) = self
            .conns
            .get(&conn)
            .and_then(|c| c.auth.as_ref())
            .map(|a| a.access.clone())
        else {
            return;
        };
        self.tokens
            .retain(|k, t| *k != access && t.access.as_deref() != Some(access.as_str()));
    }

    fn subscribe(
        &mut self,
        conn: usize,
        params: &Value,
        private: bool,
        now: Instant,
        out: &mut Outcome,
    ) -> Result<Value, RpcError> {
        let names = channels_param(params)?;
        let authed = self.authenticated(conn, now);
        let parsed: Vec<(String, Option<Channel>)> = names
            .into_iter()
            .map(|n| {
                let c = Channel::parse(&n, &self.market);
                (n, c)
            })
            .collect();
        if !authed
            && parsed
                .iter()
                .any(|(_, c)| c.as_ref().is_some_and(Channel::is_public_raw))
        {
            return Err(RpcError::new(
                13778,
                "raw_subscriptions_not_available_for_unauthorized",
            ));
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(json!([]));
        };
        let mut acked = Vec::new();
        for (name, ch) in parsed {
            // Unknown or invalid channels are dropped silently, and so are `user.*` channels
            // sent to `public/subscribe` (UNCERTAIN).
            let Some(ch) = ch else { continue };
            if ch.is_private() && !private {
                continue;
            }
            if !c.subs.contains_key(&name) {
                c.subs.insert(name.clone(), Sub { ch, active: false });
                out.activate.push(name.clone());
            }
            acked.push(name);
        }
        if self.cfg.reorder_acks {
            self.rng.shuffle(&mut acked);
        }
        Ok(json!(acked))
    }

    fn place(
        &mut self,
        conn: usize,
        params: &Value,
        dir: Dir,
        now: Instant,
    ) -> Result<Value, RpcError> {
        self.require_scope(conn, "trade", true)?;
        let account = self.account(conn)?;
        let i = self.instrument_param(params)?;
        let inst = &self.market.insts[i];
        let market = match opt_str(params, "type")?.unwrap_or("limit") {
            "limit" => false,
            "market" => true,
            _ => return Err(invalid("type", "order type not supported by the simulator")),
        };
        let cs = inst.spec.contract_size;
        let amount = match (opt_num(params, "amount")?, opt_num(params, "contracts")?) {
            (Some(a), Some(c)) if (a - c * cs).abs() > 1e-9 * a.abs().max(1.0) => {
                return Err(invalid("contracts", "must match amount"))
            }
            (Some(a), _) => a,
            (None, Some(c)) => c * cs,
            (None, None) => return Err(required("amount")),
        };
        let mut lots = inst
            .to_lots(amount)
            .filter(|l| *l > 0)
            .ok_or_else(|| invalid("amount", "must be a multiple of contract size"))?;
        let price = if market {
            0
        } else {
            let p = opt_num(params, "price")?.ok_or_else(|| required("price"))?;
            if p <= 0.0 {
                return Err(invalid("price", "must be positive"));
            }
            inst.to_ticks(p)
                .ok_or_else(|| RpcError::new(10043, "price_wrong_tick"))?
        };
        let label = opt_str(params, "label")?.unwrap_or("").to_owned();
        if label.len() > 64 {
            return Err(invalid("label", "too long"));
        }
        let tif = match opt_str(params, "time_in_force")? {
            None => Tif::Gtc,
            Some(s) => Tif::parse(s).ok_or_else(|| invalid("time_in_force", "invalid value"))?,
        };
        let post_only = opt_bool(params, "post_only")?.unwrap_or(false) && !market;
        let reject_post_only = opt_bool(params, "reject_post_only")?.unwrap_or(false);
        let reduce_only = opt_bool(params, "reduce_only")?.unwrap_or(false);
        if reduce_only {
            let pos = self.accounts[&account]
                .positions
                .get(&i)
                .map_or(0, |p| p.lots);
            let reducible = if pos * dir.sign() < 0 { pos.abs() } else { 0 };
            if reducible == 0 {
                // UNCERTAIN: Deribit's exact answer to a reduce-only order with nothing to reduce.
                return Err(RpcError::new(10001, "error").with_data(json!({
                    "reason": "reduce_only order would increase the position",
                    "param": "reduce_only",
                })));
            }
            lots = lots.min(reducible);
        }
        let now_ms = self.clock.ms(now);
        let (seq, fills) = self.market.place(
            NewOrder {
                account: account.clone(),
                conn,
                inst: i,
                dir,
                market,
                price,
                lots,
                label,
                tif,
                post_only,
                reject_post_only,
                reduce_only,
            },
            now_ms,
        )?;
        let mut ups = self.settle(&fills, now);
        let cur = self.market.insts[i].spec.settlement_currency.clone();
        let u = ups.entry(account.clone()).or_default();
        u.orders.insert(seq);
        u.currencies.insert(cur);
        let trades: Vec<Value> = u
            .trades
            .iter()
            .filter(|(_, s, _)| *s == seq)
            .map(|(_, _, t)| t.clone())
            .collect();
        let result = json!({ "order": self.market.order_json(seq), "trades": trades });
        self.emit_updates(ups);
        self.flush(Interval::Raw, &[i], now);
        Ok(result)
    }

    /// Apply fills to the accounts on both sides; returns what changed per account.
    pub(crate) fn settle(&mut self, fills: &[Fill], _now: Instant) -> Updates {
        let mut ups = Updates::new();
        for f in fills {
            for (seq, taker) in [(f.taker, true), (f.maker, false)] {
                let Some(seq) = seq else { continue };
                let (account, dir) = {
                    let o = &self.market.orders[&seq];
                    (o.account.clone(), o.dir)
                };
                let (fee, profit) = self.apply_fill(&account, f, dir, taker);
                let trade = self.user_trade(f, seq, taker, fee, profit);
                let cur = self.market.insts[f.inst].spec.settlement_currency.clone();
                let u = ups.entry(account).or_default();
                u.orders.insert(seq);
                u.trades.push((f.inst, seq, trade));
                u.currencies.insert(cur);
            }
        }
        ups
    }

    /// Position, fee and realized P&L of one side of a fill: `(fee, profit_loss)`.
    fn apply_fill(&mut self, account: &str, f: &Fill, dir: Dir, taker: bool) -> (f64, f64) {
        let inst = &self.market.insts[f.inst];
        let price = inst.px(f.price);
        let rate = match (inst.spec.kind, taker) {
            (InstrumentKind::Option, _) => 0.0003,
            (_, true) => 0.0005,
            (_, false) => 0.0,
        };
        let fee = round(inst.value_in_coin(f.lots, price) * rate, 8);
        let cur = inst.spec.settlement_currency.clone();
        let Some(acc) = self.accounts.get_mut(account) else {
            return (fee, 0.0);
        };
        let pos: &mut Position = acc.positions.entry(f.inst).or_default();
        let delta = f.lots * dir.sign();
        let mut profit = 0.0;
        if pos.lots == 0 || pos.lots.signum() == delta.signum() {
            let total = pos.lots.abs() + f.lots;
            pos.avg = (pos.avg * pos.lots.abs() as f64 + price * f.lots as f64) / total as f64;
        } else {
            let closed = f.lots.min(pos.lots.abs());
            profit = pnl(inst, closed * pos.lots.signum(), pos.avg, price);
            pos.rpl += profit;
            if f.lots > pos.lots.abs() {
                pos.avg = price;
            }
        }
        pos.lots += delta;
        if pos.lots == 0 {
            pos.avg = 0.0;
        }
        *acc.balances.entry(cur.clone()).or_default() += profit - fee;
        *acc.fees.entry(cur).or_default() += fee;
        (fee, round(profit, 8))
    }

    fn user_trade(&self, f: &Fill, seq: u64, taker: bool, fee: f64, profit: f64) -> Value {
        let o = self.market.order_json(seq);
        let inst = &self.market.insts[f.inst];
        let amount = inst.amt(f.lots);
        let mut t = json!({
            "trade_seq": f.trade_seq,
            "trade_id": f.trade_id,
            "timestamp": f.timestamp,
            "tick_direction": f.tick_direction,
            "state": o["order_state"],
            "reduce_only": o["reduce_only"],
            "post_only": o["post_only"],
            "order_type": o["order_type"],
            "order_id": o["order_id"],
            "matching_id": null,
            "price": inst.px(f.price),
            "mark_price": inst.mark(),
            "index_price": round(self.market.indexes[inst.index].price, 2),
            "liquidity": if taker { "T" } else { "M" },
            "instrument_name": inst.spec.name,
            "fee": fee,
            "fee_currency": inst.spec.settlement_currency,
            "direction": o["direction"],
            "amount": amount,
            "contracts": round(amount / inst.spec.contract_size, 6),
            "profit_loss": profit,
            "api": true,
            "self_trade": false,
            "mmp": false,
            "risk_reducing": false,
        });
        if o["label"].as_str().is_some_and(|l| !l.is_empty()) {
            t["label"] = o["label"].clone();
        }
        t
    }

    /// Send the notifications of `ups` (`user.orders`, `user.trades`, `user.portfolio`).
    pub(crate) fn emit_updates(&mut self, ups: Updates) {
        for (account, u) in ups {
            let orders: Vec<(usize, Value)> = u
                .orders
                .iter()
                .map(|s| (self.market.orders[s].inst, self.market.order_json(*s)))
                .collect();
            let trades: Vec<(usize, Value)> =
                u.trades.into_iter().map(|(i, _, t)| (i, t)).collect();
            self.emit_private(&account, &orders, &trades, &u.currencies);
        }
    }

    /// Cancel these orders (those still open); notifies and publishes. Returns how many.
    pub(crate) fn cancel_orders(
        &mut self,
        ids: &[u64],
        reason: &'static str,
        now: Instant,
    ) -> usize {
        let now_ms = self.clock.ms(now);
        let mut ups = Updates::new();
        let mut insts = BTreeSet::new();
        for id in ids {
            if self.market.cancel(*id, reason, now_ms) {
                let o = &self.market.orders[id];
                insts.insert(o.inst);
                let cur = self.market.insts[o.inst].spec.settlement_currency.clone();
                let u = ups.entry(o.account.clone()).or_default();
                u.orders.insert(*id);
                u.currencies.insert(cur);
            }
        }
        let n = ups.values().map(|u| u.orders.len()).sum();
        self.emit_updates(ups);
        let insts: Vec<usize> = insts.into_iter().collect();
        self.flush(Interval::Raw, &insts, now);
        n
    }

    pub(crate) fn position_json(&self, account: &str, i: usize) -> Value {
        let inst = &self.market.insts[i];
        let pos = self
            .accounts
            .get(account)
            .and_then(|a| a.positions.get(&i))
            .copied()
            .unwrap_or_default();
        let mark = inst.mark();
        let upl = if pos.lots == 0 {
            0.0
        } else {
            pnl(inst, pos.lots, pos.avg, mark)
        };
        let size = pos.lots as f64 * inst.spec.min_trade_amount;
        let size_currency = inst.value_in_coin(pos.lots, mark);
        let im = size_currency.abs() * 0.01;
        json!({
            "instrument_name": inst.spec.name,
            "kind": inst.spec.kind.as_str(),
            "size": inst.amt(pos.lots),
            "size_currency": round(size_currency, 8),
            "direction": if size > 0.0 { "buy" } else if size < 0.0 { "sell" } else { "zero" },
            "average_price": round(pos.avg, 4),
            "mark_price": mark,
            "index_price": round(self.market.indexes[inst.index].price, 2),
            "settlement_price": inst.spec.price,
            "floating_profit_loss": round(upl, 8),
            "realized_profit_loss": round(pos.rpl, 8),
            "total_profit_loss": round(upl + pos.rpl, 8),
            "initial_margin": round(im, 8),
            "maintenance_margin": round(im / 2.0, 8),
            "open_orders_margin": 0.0,
            "delta": round(size_currency, 8),
            "leverage": 50,
            "estimated_liquidation_price": null,
        })
    }

    /// `private/get_account_summary` and `user.portfolio.{currency}`.
    pub(crate) fn summary(
        &self,
        account: &str,
        currency: &str,
        extended: bool,
        now: Instant,
    ) -> Value {
        let Some(acc) = self.accounts.get(account) else {
            return json!({});
        };
        let balance = acc.balances.get(currency).copied().unwrap_or(0.0);
        let mut upl = 0.0;
        let mut rpl = 0.0;
        let mut im = 0.0;
        let mut delta = 0.0;
        let (mut futures_pl, mut options_pl, mut options_value) = (0.0, 0.0, 0.0);
        for (i, pos) in &acc.positions {
            let inst = &self.market.insts[*i];
            if inst.spec.settlement_currency != currency || pos.lots == 0 {
                continue;
            }
            let mark = inst.mark();
            let u = pnl(inst, pos.lots, pos.avg, mark);
            let value = inst.value_in_coin(pos.lots, mark);
            upl += u;
            rpl += pos.rpl;
            im += value.abs() * 0.01;
            delta += value;
            if inst.spec.kind == InstrumentKind::Option {
                options_pl += u + pos.rpl;
                options_value += value;
            } else {
                futures_pl += u + pos.rpl;
            }
        }
        let orders_im: f64 = self
            .market
            .orders
            .values()
            .filter(|o| o.is_open() && o.account == account)
            .filter(|o| self.market.insts[o.inst].spec.settlement_currency == currency)
            .map(|o| {
                let inst = &self.market.insts[o.inst];
                inst.value_in_coin(o.lots - o.filled, inst.px(o.price))
                    .abs()
                    * 0.01
            })
            .sum();
        let equity = balance + upl;
        let initial = im + orders_im;
        let r = |x: f64| round(x, 8);
        let pool = |p: super::config::CreditPool| {
            json!({
                "rate": p.refill_per_sec / p.cost.max(1),
                "burst": p.max / p.cost.max(1),
            })
        };
        let credits = &self.cfg.credits;
        let mut v = json!({
            "currency": currency,
            "balance": r(balance),
            "equity": r(equity),
            "margin_balance": r(equity),
            "available_funds": r(equity - initial),
            "available_withdrawal_funds": r((balance - initial).max(0.0)),
            "initial_margin": r(initial),
            "maintenance_margin": r(im / 2.0),
            "projected_initial_margin": r(initial),
            "projected_maintenance_margin": r(im / 2.0),
            "total_pl": r(upl + rpl),
            "session_rpl": r(rpl),
            "session_upl": r(upl),
            "futures_pl": r(futures_pl),
            "futures_session_rpl": 0.0,
            "futures_session_upl": 0.0,
            "options_pl": r(options_pl),
            "options_session_rpl": 0.0,
            "options_session_upl": 0.0,
            "options_value": r(options_value),
            "options_delta": 0.0,
            "options_gamma": 0.0,
            "options_vega": 0.0,
            "options_theta": 0.0,
            "delta_total": r(delta),
            "projected_delta_total": r(delta),
            "fee_balance": 0.0,
            "spot_reserve": 0.0,
            "additional_reserve": 0.0,
            "estimated_liquidation_ratio": 0.0,
            "margin_model": "segregated_sm",
            "portfolio_margining_enabled": false,
            "cross_collateral_enabled": false,
            "limits": {
                "limits_per_currency": false,
                "non_matching_engine": pool(credits.non_matching_engine),
                "matching_engine": {
                    "trading": { "total": pool(credits.matching_engine) },
                    "cancel_all": pool(credits.matching_engine),
                },
            },
        });
        if extended {
            v["id"] = json!(acc.user_id);
            v["username"] = json!(format!("sim_{account}"));
            v["email"] = json!(format!("{account}@simulator.invalid"));
            v["system_name"] = json!(format!("sim_{account}"));
            v["type"] = json!("main");
            v["security_keys_enabled"] = json!(false);
            v["mmp_enabled"] = json!(false);
            v["interuser_transfers_enabled"] = json!(false);
            v["self_trading_reject_mode"] = json!("reject_taker");
            v["self_trading_extended_to_subaccounts"] = json!(false);
            v["creation_timestamp"] = json!(self.clock.ms(now));
            v["fees"] = json!([]);
        }
        v
    }

    /// Credits left for `conn` in the non-matching-engine and matching-engine pools.
    pub(crate) fn credits_left(&self, conn: usize, now: Instant) -> Option<(u64, u64)> {
        Some((
            self.credits(conn, POOL_NON_ME, now)?,
            self.credits(conn, POOL_ME, now)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            build_scope("", "client_credentials").0,
            "connection mainaccount"
        );
        let (s, session, exp) = build_scope(
            "session:bot trade:read_write wallet:read_write expires:60 bogus mainaccount",
            "client_credentials",
        );
        assert_eq!(
            s,
            "session:bot mainaccount trade:read_write wallet:read expires:60"
        );
        assert_eq!(session.as_deref(), Some("bot"));
        assert_eq!(exp, Some(60));
        assert_eq!(
            build_scope("wallet:read_write", "client_signature").0,
            "connection mainaccount wallet:read_write"
        );
        assert!(scope_allows("connection mainaccount", "trade", true));
        assert!(scope_allows("trade:read", "trade", false));
        assert!(!scope_allows("trade:read", "trade", true));
        assert!(!scope_allows("trade:none", "trade", false));
    }
}
