//! The binary decoders (JSON, MessagePack, CBOR) on any bytes, as binary and as text frames:
//! either valid JSON text comes out (or the frame as it is) or a `Decode` error, never a
//! panic, never unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websockex_nova::codec::{CborCodec, CodecHandler, JsonCodec, MsgPackCodec};
use websockex_nova::{ErrorKind, Frame};

fn check(codec: &dyn CodecHandler, frame: &Frame) {
    match codec.decode(frame) {
        Ok(None) => {}
        Ok(Some(Frame::Text(t))) => {
            serde_json::from_str::<serde::de::IgnoredAny>(t.as_str())
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", codec.name(), t.as_str()));
        }
        Ok(Some(other)) => panic!("{}: decoded to a non-text frame {other:?}", codec.name()),
        Err(e) => assert_eq!(*e.kind(), ErrorKind::Decode, "{}: {e}", codec.name()),
    }
}

fuzz_target!(|data: &[u8]| {
    let binary = Frame::binary(data.to_vec());
    let codecs: [&dyn CodecHandler; 3] = [&JsonCodec::new(), &MsgPackCodec::new(), &CborCodec::new()];
    for codec in codecs {
        check(codec, &binary);
        if let Ok(text) = std::str::from_utf8(data) {
            check(codec, &Frame::text(text.to_owned()));
        }
    }
});
