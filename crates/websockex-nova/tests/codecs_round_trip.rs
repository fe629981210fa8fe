//! Every codec carries JSON-representable values out and back unchanged, and a malformed
//! frame gives a decode error (or valid JSON), never a panic.
//!
//! The binary codecs run with their features (`msgpack`, `cbor`, `protobuf`); run all with
//! `cargo test -p websockex-nova --all-features --test codecs_round_trip`.

use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde_json::Value;
use websockex_nova::codec::{CodecHandler, JsonCodec, RawCodec};
use websockex_nova::{ErrorKind, Frame};

const CASES: u32 = 256;

/// Any finite `f64`, subnormals and both zeros included.
fn finite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::POSITIVE
        | prop::num::f64::NEGATIVE
        | prop::num::f64::NORMAL
        | prop::num::f64::SUBNORMAL
        | prop::num::f64::ZERO
}

/// JSON values: every number kind (negative, beyond `i64`, floats), unicode strings and
/// keys, nested arrays and objects of bounded depth and size.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Encodes `value`, decodes the frame and parses the JSON text handed on.
fn round_trip(codec: &dyn CodecHandler, value: &Value) -> Result<Value, TestCaseError> {
    let frame = codec
        .encode(value)
        .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let decoded = codec
        .decode(&frame)
        .map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    let frame = decoded.unwrap_or(frame);
    let text = frame
        .as_text()
        .ok_or_else(|| TestCaseError::fail("the decoded frame is not text"))?;
    serde_json::from_str(text).map_err(|e| TestCaseError::fail(format!("parse {text:?}: {e}")))
}

/// What a decoder may answer for a frame nobody vouches for: JSON text or a decode error.
/// `Ok(None)` (hand the frame on) is fine only where `pass_through` says so.
fn decodes_to_json_or_fails(
    codec: &dyn CodecHandler,
    frame: &Frame,
    pass_through: bool,
) -> Result<(), TestCaseError> {
    match codec.decode(frame) {
        Ok(Some(decoded)) => {
            let text = decoded
                .as_text()
                .ok_or_else(|| TestCaseError::fail("decoded to a non-text frame"))?;
            if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
                return Err(TestCaseError::fail(format!("invalid JSON {text:?}: {e}")));
            }
        }
        Ok(None) => prop_assert!(pass_through, "{} handed on {frame:?}", codec.name()),
        Err(e) => prop_assert_eq!(e.kind(), &ErrorKind::Decode, "{}", e),
    }
    Ok(())
}

/// A valid frame of `codec` with one byte changed or the tail cut, to reach deeper into the
/// decoder than random bytes do.
#[cfg(any(feature = "msgpack", feature = "cbor", feature = "protobuf"))]
fn corrupt(
    codec: &dyn CodecHandler,
    value: &Value,
    at: prop::sample::Index,
    byte: u8,
    cut: bool,
) -> Frame {
    let Ok(Frame::Binary(bytes)) = codec.encode(value) else {
        unreachable!("binary codecs encode to binary frames")
    };
    let mut bytes = bytes.to_vec();
    if !bytes.is_empty() {
        let i = at.index(bytes.len());
        if cut {
            bytes.truncate(i);
        } else {
            bytes[i] = byte;
        }
    }
    Frame::binary(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn json_round_trips_any_value(value in json_value()) {
        prop_assert_eq!(round_trip(&JsonCodec::new(), &value)?, value);
    }

    #[test]
    fn json_hands_on_binary_json_as_text(value in json_value()) {
        let text = serde_json::to_string(&value).unwrap();
        let decoded = JsonCodec::new().decode(&Frame::binary(text.clone().into_bytes())).unwrap();
        prop_assert_eq!(decoded, Some(Frame::text(text)));
    }

    #[test]
    fn json_refuses_what_is_not_json(bytes in prop::collection::vec(any::<u8>(), 0..64), text in any::<String>()) {
        let codec = JsonCodec::new();
        decodes_to_json_or_fails(&codec, &Frame::binary(bytes), false)?;
        // A text frame is handed on only when it is JSON.
        let valid = serde_json::from_str::<IgnoredAny>(&text).is_ok();
        decodes_to_json_or_fails(&codec, &Frame::text(text), valid)?;
    }

    #[test]
    fn raw_sends_strings_as_they_are(text in any::<String>()) {
        let codec = RawCodec::new();
        let frame = codec.encode(&text).unwrap();
        prop_assert_eq!(frame.as_text(), Some(text.as_str()));
        prop_assert_eq!(codec.decode(&frame).unwrap(), None);
    }

    #[test]
    fn raw_refuses_values_that_are_not_strings(value in json_value()) {
        prop_assume!(!value.is_string());
        let err = RawCodec::new().encode(&value).unwrap_err();
        prop_assert_eq!(err.kind(), &ErrorKind::Unsupported);
    }

    #[test]
    fn raw_hands_on_every_frame(bytes in prop::collection::vec(any::<u8>(), 0..64), text in any::<String>()) {
        let codec = RawCodec::new();
        prop_assert_eq!(codec.decode(&Frame::binary(bytes)).unwrap(), None);
        prop_assert_eq!(codec.decode(&Frame::text(text)).unwrap(), None);
    }
}

#[cfg(feature = "msgpack")]
mod msgpack {
    use websockex_nova::codec::MsgPackCodec;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn round_trips_any_value(value in json_value()) {
            prop_assert_eq!(round_trip(&MsgPackCodec::new(), &value)?, value);
        }

        #[test]
        fn arbitrary_bytes_decode_to_json_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            decodes_to_json_or_fails(&MsgPackCodec::new(), &Frame::binary(bytes), false)?;
        }

        #[test]
        fn corrupted_frames_decode_to_json_or_fail(
            value in json_value(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>(),
        ) {
            let codec = MsgPackCodec::new();
            decodes_to_json_or_fails(&codec, &corrupt(&codec, &value, at, byte, cut), false)?;
        }

        #[test]
        fn text_frames_are_handed_on(text in any::<String>()) {
            prop_assert_eq!(MsgPackCodec::new().decode(&Frame::text(text)).unwrap(), None);
        }
    }
}

#[cfg(feature = "cbor")]
mod cbor {
    use websockex_nova::codec::CborCodec;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn round_trips_any_value(value in json_value()) {
            prop_assert_eq!(round_trip(&CborCodec::new(), &value)?, value);
        }

        #[test]
        fn arbitrary_bytes_decode_to_json_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            decodes_to_json_or_fails(&CborCodec::new(), &Frame::binary(bytes), false)?;
        }

        #[test]
        fn corrupted_frames_decode_to_json_or_fail(
            value in json_value(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>(),
        ) {
            let codec = CborCodec::new();
            decodes_to_json_or_fails(&codec, &corrupt(&codec, &value, at, byte, cut), false)?;
        }

        #[test]
        fn text_frames_are_handed_on(text in any::<String>()) {
            prop_assert_eq!(CborCodec::new().decode(&Frame::text(text)).unwrap(), None);
        }
    }
}

#[cfg(feature = "protobuf")]
mod protobuf {
    use websockex_nova::codec::ProtobufCodec;

    use super::*;

    /// `message Level` of `tests/proto/ticker.proto`.
    #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
    pub struct Level {
        #[prost(double, tag = "1")]
        pub price: f64,
        #[prost(double, tag = "2")]
        pub amount: f64,
    }

    /// `message Ticker` of `tests/proto/ticker.proto`.
    #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
    pub struct Ticker {
        #[prost(string, tag = "1")]
        pub instrument_name: String,
        #[prost(double, tag = "2")]
        pub mark_price: f64,
        #[prost(uint64, tag = "3")]
        pub timestamp: u64,
        #[prost(message, repeated, tag = "4")]
        pub bids: Vec<Level>,
    }

    fn ticker() -> impl Strategy<Value = Ticker> {
        let level =
            (finite_f64(), finite_f64()).prop_map(|(price, amount)| Level { price, amount });
        (
            any::<String>(),
            finite_f64(),
            any::<u64>(),
            prop::collection::vec(level, 0..8),
        )
            .prop_map(|(instrument_name, mark_price, timestamp, bids)| Ticker {
                instrument_name,
                mark_price,
                timestamp,
                bids,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn round_trips_any_message(ticker in ticker()) {
            let codec = ProtobufCodec::<Ticker>::new();
            let expected = serde_json::to_value(&ticker).unwrap();
            prop_assert_eq!(round_trip(&codec, &expected)?, expected.clone());
            // The message itself encodes as its JSON form does, and decodes back to itself.
            let frame = codec.encode(&ticker).unwrap();
            prop_assert_eq!(&frame, &codec.encode(&expected).unwrap());
            let text = codec.decode(&frame).unwrap().unwrap();
            prop_assert_eq!(serde_json::from_str::<Ticker>(text.as_text().unwrap()).unwrap(), ticker);
        }

        #[test]
        fn arbitrary_bytes_decode_to_json_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            decodes_to_json_or_fails(&ProtobufCodec::<Ticker>::new(), &Frame::binary(bytes), false)?;
        }

        #[test]
        fn corrupted_frames_decode_to_json_or_fail(
            ticker in ticker(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>(),
        ) {
            let codec = ProtobufCodec::<Ticker>::new();
            let value = serde_json::to_value(&ticker).unwrap();
            decodes_to_json_or_fails(&codec, &corrupt(&codec, &value, at, byte, cut), false)?;
        }

        #[test]
        fn text_frames_are_handed_on(text in any::<String>()) {
            prop_assert_eq!(ProtobufCodec::<Ticker>::new().decode(&Frame::text(text)).unwrap(), None);
        }
    }
}
