//! JSON-RPC 2.0 wire format: parsing requests and writing responses and notifications.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::RpcError;

/// A request (or notification) as parsed from a client message.
#[derive(Debug)]
pub(crate) struct Request {
    /// The `id` exactly as the client wrote it, to echo it unchanged; `None` for a notification.
    pub(crate) id_raw: Option<String>,
    /// The `id` as a value (for the record).
    pub(crate) id: Option<Value>,
    pub(crate) method: String,
    /// `Value::Null` when absent.
    pub(crate) params: Value,
}

/// Parse one text message. `Err` carries the error response to send (`-32700` or `-32600`).
pub(crate) fn parse(text: &str) -> Result<Request, String> {
    let members: HashMap<String, Box<RawValue>> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(_) => {
            let err = if serde_json::from_str::<Value>(text).is_ok() {
                // Valid JSON, but not an object (batches are not supported).
                RpcError::invalid_request("not a JSON-RPC request object")
            } else {
                RpcError::parse_error()
            };
            return Err(response("null", &Err(err)));
        }
    };
    let id_raw = members.get("id").map(|r| r.get().to_owned());
    let id: Option<Value> = match &id_raw {
        None => None,
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(v @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(v),
            _ => {
                let err = RpcError::invalid_request("id must be a string, a number or null");
                return Err(response("null", &Err(err)));
            }
        },
    };
    let reply_id = id_raw.as_deref().unwrap_or("null");
    let field = |name: &str| -> Option<Value> {
        members
            .get(name)
            .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
    };
    if field("jsonrpc").as_ref().and_then(Value::as_str) != Some("2.0") {
        let err = RpcError::invalid_request(r#"jsonrpc must be "2.0""#);
        return Err(response(reply_id, &Err(err)));
    }
    let Some(Value::String(method)) = field("method") else {
        let err = RpcError::invalid_request("method must be a string");
        return Err(response(reply_id, &Err(err)));
    };
    let params = match field("params") {
        None => Value::Null,
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => {
            let err = RpcError::invalid_request("params must be an object or an array");
            return Err(response(reply_id, &Err(err)));
        }
    };
    Ok(Request {
        id_raw,
        id,
        method,
        params,
    })
}

/// `{"jsonrpc":"2.0","id":ID,"result":...}` or `{"jsonrpc":"2.0","id":ID,"error":{...}}`, with
/// `id_raw` written as it is.
pub(crate) fn response(id_raw: &str, result: &Result<Value, RpcError>) -> String {
    match result {
        Ok(v) => format!(r#"{{"jsonrpc":"2.0","id":{id_raw},"result":{v}}}"#),
        Err(e) => format!(
            r#"{{"jsonrpc":"2.0","id":{id_raw},"error":{}}}"#,
            e.to_json()
        ),
    }
}

/// `{"jsonrpc":"2.0","method":METHOD,"params":{"channel":CHANNEL,"data":DATA}}`.
pub(crate) fn notification(method: &str, channel: &str, data: &Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": {"channel": channel, "data": data}})
        .to_string()
}

/// The server's heartbeat request that wants an answer.
pub(crate) const TEST_REQUEST: &str =
    r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_echoed_exactly() {
        for id in [
            "1",
            "-7",
            "1.50",
            "1e3",
            "123456789012345678901234567890",
            r#""abc""#,
            r#""a\"b""#,
            "null",
        ] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#);
            let req = parse(&text).unwrap();
            assert_eq!(req.id_raw.as_deref(), Some(id));
            let resp = response(req.id_raw.as_deref().unwrap(), &Ok(json!(true)));
            assert_eq!(
                resp,
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":true}}"#)
            );
        }
    }

    #[test]
    fn notifications_have_no_id() {
        let req = parse(r#"{"jsonrpc":"2.0","method":"m","params":[1]}"#).unwrap();
        assert!(req.id_raw.is_none() && req.id.is_none());
        assert_eq!(req.params, json!([1]));
    }

    #[test]
    fn invalid_messages_get_error_responses() {
        let code = |text: &str| {
            let resp: Value = serde_json::from_str(&parse(text).unwrap_err()).unwrap();
            (resp["id"].clone(), resp["error"]["code"].as_i64().unwrap())
        };
        assert_eq!(code("{nope"), (Value::Null, -32700));
        assert_eq!(code("[1,2]"), (Value::Null, -32600));
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#),
            (Value::Null, -32600)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":3,"method":"m"}"#),
            (json!(3), -32600)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":"x","method":5}"#),
            (json!("x"), -32600)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":4,"method":"m","params":3}"#),
            (json!(4), -32600)
        );
    }
}
