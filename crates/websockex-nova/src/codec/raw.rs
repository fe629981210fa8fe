//! Frames as they are.

use serde_json::Value;

use super::{encode_error, CodecHandler};
use crate::error::{Error, ErrorKind};
use crate::frame::Frame;

/// No format at all: received frames reach the [`MessageHandler`](crate::MessageHandler)
/// untouched, text or binary, valid JSON or not.
///
/// Sending, only strings can be expressed: a value that serializes to a string becomes a
/// text frame of that string (not JSON-quoted). Anything else is
/// [`ErrorKind::Unsupported`]: send binary data with `send_binary`, or pick a codec.
///
/// ```
/// use websockex_nova::codec::{CodecHandler, RawCodec};
/// use websockex_nova::{ErrorKind, Frame};
///
/// let codec = RawCodec::new();
/// assert_eq!(codec.decode(&Frame::text("pong")).unwrap(), None);
/// assert_eq!(codec.encode(&"ping").unwrap().as_text(), Some("ping"));
/// let err = codec.encode(&serde_json::json!({"op": "ping"})).unwrap_err();
/// assert_eq!(err.kind(), &ErrorKind::Unsupported);
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct RawCodec;

impl RawCodec {
    /// The raw codec.
    pub const fn new() -> Self {
        RawCodec
    }
}

impl CodecHandler for RawCodec {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn decode(&self, _frame: &Frame) -> Result<Option<Frame>, Error> {
        Ok(None)
    }

    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Frame, Error> {
        match serde_json::to_value(value) {
            Ok(Value::String(s)) => Ok(Frame::text(s)),
            Ok(_) => Err(Error::new(ErrorKind::Unsupported)
                .with_context("raw codec: send bytes with send_binary")),
            Err(e) => Err(encode_error("raw", "value cannot be serialized").with_source(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_passes_through() {
        let codec = RawCodec::new();
        for frame in [
            Frame::text("not json"),
            Frame::binary(vec![0xff, 0x00]),
            Frame::binary(Vec::new()),
        ] {
            assert_eq!(codec.decode(&frame).unwrap(), None);
        }
    }

    #[test]
    fn strings_are_sent_as_they_are() {
        let codec = RawCodec::new();
        assert_eq!(
            codec.encode(&String::from("{\"op\":\"ping\"}")).unwrap(),
            Frame::text("{\"op\":\"ping\"}")
        );
        assert_eq!(codec.encode(&'x').unwrap(), Frame::text("x"));
    }

    #[test]
    fn anything_but_a_string_is_unsupported() {
        let codec = RawCodec::new();
        for err in [
            codec.encode(&1).unwrap_err(),
            codec.encode(&serde_json::json!(["a"])).unwrap_err(),
            codec.encode(&()).unwrap_err(),
        ] {
            assert_eq!(err.kind(), &ErrorKind::Unsupported);
            assert!(err
                .to_string()
                .contains("raw codec: send bytes with send_binary"));
        }
    }
}
