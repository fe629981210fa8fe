//! MessagePack on the wire.

use super::transcode::{check_consumed, text_frame, to_json};
use super::{decode_error, encode_error, CodecHandler, MAX_DEPTH};
use crate::error::Error;
use crate::frame::Frame;

/// MessagePack in binary frames (feature `msgpack`, with `rmp-serde`).
///
/// Receiving, a binary frame holding one MessagePack value is transcoded straight to JSON
/// text (no value tree in between) and handed on as a text frame; values JSON cannot express
/// are mapped as the [module docs](super#from-binary-formats-to-json) say, or refused with a
/// decode error. Text frames are handed on untouched: venues with a binary protocol often
/// send their control messages as JSON text.
///
/// Sending, a value becomes a binary frame with `rmp_serde::to_vec_named`: structs are maps
/// that keep their field names (not positional arrays), so the venue sees named fields.
///
/// ```
/// use websockex_nova::codec::{CodecHandler, MsgPackCodec};
/// use websockex_nova::Frame;
///
/// let codec = MsgPackCodec::new();
/// let frame = codec.encode(&serde_json::json!({"price": 97301.5, "size": 3})).unwrap();
/// assert!(matches!(frame, Frame::Binary(_)));
/// let json = codec.decode(&frame).unwrap().unwrap();
/// assert_eq!(json.as_text(), Some(r#"{"price":97301.5,"size":3}"#));
///
/// assert_eq!(codec.decode(&Frame::text(r#"{"error":"bad"}"#)).unwrap(), None);
/// assert!(codec.decode(&Frame::binary(vec![0xc1])).unwrap_err().is_decode());
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MsgPackCodec;

impl MsgPackCodec {
    /// The MessagePack codec.
    pub const fn new() -> Self {
        MsgPackCodec
    }
}

impl CodecHandler for MsgPackCodec {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn decode(&self, frame: &Frame) -> Result<Option<Frame>, Error> {
        let Frame::Binary(bytes) = frame else {
            return Ok(None);
        };
        let mut rest: &[u8] = bytes;
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        // rmp-serde refuses a value once its depth counter reaches zero.
        de.set_max_depth(MAX_DEPTH + 1);
        let mut out = Vec::with_capacity(bytes.len().saturating_mul(2));
        to_json(&mut de, &mut out).map_err(|e| {
            decode_error("msgpack", "binary frame is not MessagePack JSON can hold").with_source(e)
        })?;
        check_consumed("msgpack", de.get_ref())?;
        text_frame("msgpack", out).map(Some)
    }

    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Frame, Error> {
        rmp_serde::to_vec_named(value)
            .map(Frame::binary)
            .map_err(|e| {
                encode_error("msgpack", "value cannot be written as MessagePack").with_source(e)
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::error::ErrorKind;

    fn decode(bytes: Vec<u8>) -> Result<String, Error> {
        let frame = MsgPackCodec::new().decode(&Frame::binary(bytes))?;
        Ok(frame
            .expect("binary frames are transcoded")
            .as_text()
            .unwrap()
            .to_owned())
    }

    #[test]
    fn binary_frames_become_json_text() {
        let value = json!({"a": [1, -2, 2.5, true, null, "é"], "b": {"c": u64::MAX}});
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        let text = decode(bytes).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn text_frames_pass_through_unchecked() {
        let codec = MsgPackCodec::new();
        assert_eq!(codec.decode(&Frame::text("not even json")).unwrap(), None);
    }

    #[test]
    fn structs_keep_their_field_names() {
        #[derive(serde::Serialize)]
        struct Order {
            instrument: &'static str,
            amount: u32,
        }
        let frame = MsgPackCodec::new()
            .encode(&Order {
                instrument: "BTC-PERPETUAL",
                amount: 10,
            })
            .unwrap();
        let Frame::Binary(bytes) = &frame else {
            panic!("{frame:?}")
        };
        assert_eq!(
            decode(bytes.to_vec()).unwrap(),
            r#"{"instrument":"BTC-PERPETUAL","amount":10}"#
        );
    }

    #[test]
    fn floats_stay_floats() {
        let bytes = rmp_serde::to_vec(&(1.0f64, 0.1f32, -0.0f64)).unwrap();
        assert_eq!(
            decode(bytes).unwrap(),
            "[1.0,0.1,-0.0]",
            "an f32 in its own shortest form"
        );
    }

    #[test]
    fn values_json_lacks_are_mapped() {
        // bin 8 [1, 2]  -> array of numbers
        assert_eq!(decode(vec![0xc4, 2, 1, 2]).unwrap(), "[1,2]");
        // str 2 with invalid UTF-8 -> array of numbers
        assert_eq!(decode(vec![0xa2, 0xff, 0xfe]).unwrap(), "[255,254]");
        // NaN, +inf -> null
        let bytes = rmp_serde::to_vec(&(f64::NAN, f64::INFINITY)).unwrap();
        assert_eq!(decode(bytes).unwrap(), "[null,null]");
        // {1: true, true: 2.5} -> string keys
        assert_eq!(
            decode(vec![
                0x82, 0x01, 0xc3, 0xc3, 0xcb, 0x40, 0x04, 0, 0, 0, 0, 0, 0
            ])
            .unwrap(),
            r#"{"1":true,"true":2.5}"#
        );
        // fixext 1, type 5, data [9] -> [type, [bytes]]
        assert_eq!(decode(vec![0xd4, 0x05, 0x09]).unwrap(), "[5,[9]]");
    }

    #[test]
    fn keys_json_cannot_express_are_a_decode_error() {
        // {[]: 1}, {nil: 1}, {bin: 1}
        for bytes in [
            vec![0x81, 0x90, 0x01],
            vec![0x81, 0xc0, 0x01],
            vec![0x81, 0xc4, 0x00, 0x01],
        ] {
            let err = decode(bytes.clone()).unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Decode, "{bytes:?}");
            assert!(err.to_string().contains("msgpack codec"), "{err}");
        }
    }

    #[test]
    fn malformed_frames_are_decode_errors() {
        for bytes in [
            vec![],                                   // nothing
            vec![0xc1],                               // the reserved marker
            vec![0x92, 0x01],                         // an array of 2 with 1 element
            vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a'], // a 4 GiB string of 1 byte
            vec![0x01, 0x02],                         // a value and a stray byte
        ] {
            let err = decode(bytes.clone()).unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Decode, "{bytes:?}");
        }
        assert!(decode(vec![0x01, 0x02])
            .unwrap_err()
            .to_string()
            .contains("1 bytes left after the value"));
    }

    #[test]
    fn nesting_is_limited() {
        let nested = |depth: usize| {
            let mut bytes = vec![0x91; depth - 1];
            bytes.push(0x90);
            bytes
        };
        let ok = decode(nested(MAX_DEPTH)).unwrap();
        assert!(
            serde_json::from_str::<Value>(&ok).is_ok(),
            "serde_json parses what we write"
        );
        assert!(decode(nested(MAX_DEPTH + 1)).unwrap_err().is_decode());
        // A hostile frame cannot exhaust the stack.
        assert!(decode(vec![0x91; 1_000_000]).unwrap_err().is_decode());
    }
}
