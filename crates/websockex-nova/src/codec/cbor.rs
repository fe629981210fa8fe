//! CBOR on the wire.

use super::transcode::{check_consumed, text_frame, JsonText};
use super::{decode_error, encode_error, CodecHandler, MAX_DEPTH};
use crate::error::Error;
use crate::frame::Frame;

/// CBOR (RFC 8949) in binary frames (feature `cbor`, with `ciborium`).
///
/// Receiving, a binary frame holding one CBOR data item is transcoded straight to JSON text
/// (no value tree in between) and handed on as a text frame; values JSON cannot express are
/// mapped as the [module docs](super#from-binary-formats-to-json) say, or refused with a
/// decode error. Text frames are handed on untouched: venues with a binary protocol often
/// send their control messages as JSON text.
///
/// Sending, a value becomes a binary frame with `ciborium`, which writes each float in the
/// shortest of half, single or double precision that keeps its value exactly.
///
/// ```
/// use websockex_nova::codec::{CborCodec, CodecHandler};
/// use websockex_nova::Frame;
///
/// let codec = CborCodec::new();
/// let frame = codec.encode(&serde_json::json!({"price": 97301.5, "size": 3})).unwrap();
/// assert!(matches!(frame, Frame::Binary(_)));
/// let json = codec.decode(&frame).unwrap().unwrap();
/// assert_eq!(json.as_text(), Some(r#"{"price":97301.5,"size":3}"#));
///
/// assert_eq!(codec.decode(&Frame::text(r#"{"error":"bad"}"#)).unwrap(), None);
/// assert!(codec.decode(&Frame::binary(vec![0xff])).unwrap_err().is_decode());
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct CborCodec;

impl CborCodec {
    /// The CBOR codec.
    pub const fn new() -> Self {
        CborCodec
    }
}

impl CodecHandler for CborCodec {
    fn name(&self) -> &'static str {
        "cbor"
    }

    fn decode(&self, frame: &Frame) -> Result<Option<Frame>, Error> {
        let Frame::Binary(bytes) = frame else {
            return Ok(None);
        };
        let mut rest: &[u8] = bytes;
        let JsonText(out) = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
            .map_err(|e| {
                decode_error("cbor", "binary frame is not CBOR JSON can hold").with_source(e)
            })?;
        check_consumed("cbor", rest)?;
        text_frame("cbor", out).map(Some)
    }

    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Frame, Error> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out)
            .map_err(|e| encode_error("cbor", "value cannot be written as CBOR").with_source(e))?;
        Ok(Frame::binary(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::error::ErrorKind;

    fn decode(bytes: Vec<u8>) -> Result<String, Error> {
        let frame = CborCodec::new().decode(&Frame::binary(bytes))?;
        Ok(frame
            .expect("binary frames are transcoded")
            .as_text()
            .unwrap()
            .to_owned())
    }

    fn cbor(value: &impl serde::Serialize) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn binary_frames_become_json_text() {
        let value =
            json!({"a": [1, -2, 2.5, true, null, "é"], "b": {"c": u64::MAX, "d": i64::MIN}});
        let text = decode(cbor(&value)).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn text_frames_pass_through_unchecked() {
        let codec = CborCodec::new();
        assert_eq!(codec.decode(&Frame::text("not even json")).unwrap(), None);
    }

    #[test]
    fn floats_stay_floats_whatever_their_width() {
        // 1.0 is sent as a half-precision float and still arrives as a float.
        let bytes = CborCodec::new().encode(&(1.0f64, 0.1f64, -0.0f64)).unwrap();
        let Frame::Binary(bytes) = bytes else {
            unreachable!()
        };
        assert_eq!(
            &bytes[..4],
            &[0x83, 0xf9, 0x3c, 0x00],
            "1.0 as a half float"
        );
        assert_eq!(decode(bytes.to_vec()).unwrap(), "[1.0,0.1,-0.0]");
        // ciborium widens a single float to f64 before we see it.
        let single = CborCodec::new().encode(&0.1f32).unwrap();
        let Frame::Binary(single) = single else {
            unreachable!()
        };
        assert_eq!(single[0], 0xfa, "0.1f32 as a single float");
        assert_eq!(decode(single.to_vec()).unwrap(), "0.10000000149011612");
    }

    #[test]
    fn values_json_lacks_are_mapped() {
        // h'0102' -> array of numbers; indefinite-length bytes too
        assert_eq!(decode(vec![0x42, 1, 2]).unwrap(), "[1,2]");
        assert_eq!(decode(vec![0x5f, 0x41, 1, 0x41, 2, 0xff]).unwrap(), "[1,2]");
        // undefined -> null; NaN, -inf (half floats) -> null
        assert_eq!(
            decode(vec![0x83, 0xf7, 0xf9, 0x7e, 0x00, 0xf9, 0xfc, 0x00]).unwrap(),
            "[null,null,null]"
        );
        // {1: true, true: 1.5, 1.5: 0} -> string keys
        assert_eq!(
            decode(vec![
                0xa3, 0x01, 0xf5, 0xf5, 0xf9, 0x3e, 0x00, 0xf9, 0x3e, 0x00, 0x00
            ])
            .unwrap(),
            r#"{"1":true,"true":1.5,"1.5":0}"#
        );
        // bignum 2^64 (tag 2, h'010000000000000000') -> integer
        let mut big = vec![0xc2, 0x49, 0x01];
        big.extend_from_slice(&[0; 8]);
        assert_eq!(decode(big).unwrap(), "18446744073709551616");
        // tag 1 (epoch time) 1700000000 -> the number; a tagged key -> the key
        assert_eq!(
            decode(vec![0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00]).unwrap(),
            "1700000000"
        );
        assert_eq!(
            decode(vec![0xa1, 0xd8, 0x20, 0x61, b'k', 0x01]).unwrap(),
            r#"{"k":1}"#
        );
        // -2^64 - 1 as a negative bignum
        let mut neg = vec![0xc3, 0x49, 0x01];
        neg.extend_from_slice(&[0; 8]);
        assert_eq!(decode(neg).unwrap(), "-18446744073709551617");
    }

    #[test]
    fn what_json_cannot_express_is_a_decode_error() {
        for bytes in [
            vec![0xa1, 0x80, 0x01], // {[]: 1}
            vec![0xa1, 0xf6, 0x01], // {null: 1}
            vec![0xa1, 0x40, 0x01], // {h'': 1}
            vec![0xf0],             // simple value 16
        ] {
            let err = decode(bytes.clone()).unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Decode, "{bytes:?}");
            assert!(err.to_string().contains("cbor codec"), "{err}");
        }
    }

    #[test]
    fn malformed_frames_are_decode_errors() {
        for bytes in [
            vec![],                                                           // nothing
            vec![0xff],                                                       // a lone break
            vec![0x82, 0x01], // an array of 2 with 1 element
            vec![0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'a'], // a huge string
            vec![0x62, 0xff, 0xfe], // a text string that is not UTF-8
            vec![0x01, 0x02], // a value and a stray byte
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
    fn a_deep_malformed_frame_costs_little() {
        // Truncated at depth 99: the error crosses 99 levels without growing.
        let err = decode(vec![0x82; 99]).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn nesting_is_limited() {
        let nested = |depth: usize| {
            let mut bytes = vec![0x81; depth - 1];
            bytes.push(0x80);
            bytes
        };
        let ok = decode(nested(MAX_DEPTH)).unwrap();
        assert!(
            serde_json::from_str::<Value>(&ok).is_ok(),
            "serde_json parses what we write"
        );
        assert!(decode(nested(MAX_DEPTH + 1)).unwrap_err().is_decode());
        // A hostile frame cannot exhaust the stack.
        assert!(decode(vec![0x81; 1_000_000]).unwrap_err().is_decode());
    }
}
