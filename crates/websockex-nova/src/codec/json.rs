//! JSON text on the wire.

use serde::de::IgnoredAny;

use super::{decode_error, encode_error, CodecHandler};
use crate::error::Error;
use crate::frame::Frame;

/// JSON text, the format the rest of the framework speaks.
///
/// Receiving, a text frame is checked to be one JSON value and handed on as it is (no
/// copy); a binary frame holding UTF-8 JSON is handed on as a text frame (one copy), for
/// venues that send JSON in binary frames. Anything else is a decode error, the line and
/// column of the fault in its context. Checking builds no value and does not recurse, so
/// it is cheap and any nesting depth is safe (parsing the JSON later, `serde_json` refuses
/// more than 127 levels).
///
/// Sending, a value becomes a text frame of its compact JSON.
///
/// ```
/// use websockex_nova::codec::{CodecHandler, JsonCodec};
/// use websockex_nova::Frame;
///
/// let codec = JsonCodec::new();
/// assert_eq!(codec.name(), "json");
/// let frame = codec.encode(&serde_json::json!({"jsonrpc": "2.0", "id": 1})).unwrap();
/// assert_eq!(frame.as_text(), Some(r#"{"id":1,"jsonrpc":"2.0"}"#));
/// assert_eq!(codec.decode(&frame).unwrap(), None, "valid JSON text is handed on as it is");
///
/// let err = codec.decode(&Frame::text("{\"id\": 1,")).unwrap_err();
/// assert!(err.is_decode());
/// assert!(err.to_string().contains("line 1, column 9"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct JsonCodec;

impl JsonCodec {
    /// The JSON codec.
    pub const fn new() -> Self {
        JsonCodec
    }
}

/// Checks that `json` is exactly one JSON value, without building it.
fn check(json: &[u8], kind: &str) -> Result<(), Error> {
    serde_json::from_slice::<IgnoredAny>(json).map_err(|e| {
        decode_error(
            "json",
            format_args!(
                "{kind} frame is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
        .with_source(e)
    })?;
    Ok(())
}

impl CodecHandler for JsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    fn decode(&self, frame: &Frame) -> Result<Option<Frame>, Error> {
        match frame {
            Frame::Text(text) => check(text.as_bytes(), "text").map(|()| None),
            Frame::Binary(bytes) => {
                // `from_slice` does not check UTF-8 inside strings it skips, so check first.
                let text = std::str::from_utf8(bytes).map_err(|e| {
                    decode_error(
                        "json",
                        format_args!("binary frame is not UTF-8 (at byte {})", e.valid_up_to()),
                    )
                    .with_source(e)
                })?;
                check(text.as_bytes(), "binary")?;
                // One copy: `Text` has no constructor from checked `Bytes` yet.
                Ok(Some(Frame::text(text.to_owned())))
            }
            _ => Ok(None),
        }
    }

    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Frame, Error> {
        serde_json::to_string(value)
            .map(Frame::text)
            .map_err(|e| encode_error("json", "value cannot be written as JSON").with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn valid_json_text_passes_through_without_a_copy() {
        let codec = JsonCodec::new();
        for json in [r#"{"a":[1,2.5,"é"]}"#, "null", " 1 ", r#""\u00e9""#] {
            assert_eq!(codec.decode(&Frame::text(json)).unwrap(), None, "{json}");
        }
    }

    #[test]
    fn binary_json_becomes_a_text_frame() {
        let codec = JsonCodec::new();
        let decoded = codec
            .decode(&Frame::binary("{\"p\":\"€\"}".as_bytes().to_vec()))
            .unwrap();
        assert_eq!(decoded, Some(Frame::text("{\"p\":\"€\"}")));
    }

    #[test]
    fn invalid_text_is_a_decode_error_with_its_position() {
        let codec = JsonCodec::new();
        for (json, at) in [
            ("pong", "line 1, column 1"),
            ("{\"a\":1}\n{", "line 2, column 1"),
            ("[1,", "line 1, column 3"),
            ("", "line 1, column 0"),
        ] {
            let err = codec.decode(&Frame::text(json)).unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Decode);
            let msg = err.to_string();
            assert!(msg.contains("json codec: text frame is not JSON"), "{msg}");
            assert!(msg.contains(at), "{json:?}: {msg}");
        }
    }

    #[test]
    fn invalid_binary_is_a_decode_error() {
        let codec = JsonCodec::new();
        let err = codec
            .decode(&Frame::binary(b"[\"\xff\"]".to_vec()))
            .unwrap_err();
        assert!(err.is_decode());
        assert!(err.to_string().contains("not UTF-8 (at byte 2)"), "{err}");
        let err = codec.decode(&Frame::binary(b"{]".to_vec())).unwrap_err();
        assert!(err.is_decode());
        assert!(
            err.to_string().contains("binary frame is not JSON"),
            "{err}"
        );
    }

    #[test]
    fn the_error_never_quotes_the_payload() {
        let secret = "{\"api_key\": \"s3cr3t\" oops}";
        let err = JsonCodec::new().decode(&Frame::text(secret)).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cr3t"));
    }

    #[test]
    fn deep_json_is_checked_without_recursion() {
        let depth = 100_000;
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(JsonCodec::new().decode(&Frame::text(deep)).unwrap(), None);
        let open = "[".repeat(depth);
        assert!(JsonCodec::new()
            .decode(&Frame::text(open))
            .unwrap_err()
            .is_decode());
    }

    #[test]
    fn encode_writes_compact_json_text() {
        let codec = JsonCodec::new();
        let frame = codec.encode(&vec![1.0, 2.5]).unwrap();
        assert_eq!(frame.as_text(), Some("[1.0,2.5]"));
        let frame = codec.encode(&"plain").unwrap();
        assert_eq!(frame.as_text(), Some("\"plain\""));
    }

    #[test]
    fn a_value_json_cannot_hold_is_an_encode_error() {
        let mut map = BTreeMap::new();
        map.insert(vec![1u8], 1);
        let err = JsonCodec::new().encode(&map).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Encode);
        assert!(err.to_string().contains("json codec"), "{err}");
    }
}
