//! Codecs: the wire format of a connection's data frames.
//!
//! Everything past the socket speaks JSON text: the [`MessageHandler`](crate::MessageHandler)
//! classifies JSON envelopes and [`RawJson`](crate::RawJson) slices JSON. A venue that talks
//! MessagePack, CBOR or Protocol Buffers puts a [`CodecHandler`] in front of that: it turns
//! each received data frame into JSON text and each value sent into a frame of the wire
//! format, so envelopes, request ids and subscriptions work the same for every format.
//!
//! | codec | feature | binary frame received | text frame received | sends |
//! |---|---|---|---|---|
//! | [`JsonCodec`] | | UTF-8 JSON, handed on as text | validated, handed on | text |
//! | [`RawCodec`] | | handed on untouched | handed on untouched | strings only, as text |
//! | `MsgPackCodec` | `msgpack` | transcoded to JSON text | handed on untouched | binary |
//! | `CborCodec` | `cbor` | transcoded to JSON text | handed on untouched | binary |
//! | `ProtobufCodec<M>` | `protobuf` | decoded as `M`, written as JSON text | handed on untouched | binary |
//!
//! The binary codecs let text frames through unchecked because venues with a binary
//! protocol often send their control messages (errors, heartbeats) as JSON text.
//!
//! ```
//! use websockex_nova::codec::{CodecHandler, JsonCodec};
//! use websockex_nova::Frame;
//!
//! let codec = JsonCodec::new();
//! // JSON that arrives in a binary frame is handed on as text …
//! let decoded = codec.decode(&Frame::binary(&b"{\"price\":97301.5}"[..])).unwrap();
//! assert_eq!(decoded.unwrap().as_text(), Some(r#"{"price":97301.5}"#));
//! // … a text frame holding JSON is handed on as it is (no copy) …
//! assert!(codec.decode(&Frame::text("[1,2]")).unwrap().is_none());
//! // … and anything else is a decode error.
//! assert!(codec.decode(&Frame::text("pong")).unwrap_err().is_decode());
//!
//! let frame = codec.encode(&serde_json::json!({"method": "public/test"})).unwrap();
//! assert_eq!(frame.as_text(), Some(r#"{"method":"public/test"}"#));
//! ```
//!
//! ## Errors
//!
//! A frame that cannot be decoded is an [`ErrorKind::Decode`] error whose context names
//! the codec and says briefly what was wrong (never the payload). A value that cannot be
//! encoded is an [`ErrorKind::Encode`] error; [`RawCodec`] answers
//! [`ErrorKind::Unsupported`] for anything but a string.
//!
//! ## From binary formats to JSON
//!
//! MessagePack and CBOR can say things JSON cannot. The transcoding codecs write JSON as
//! they read the frame (no value tree in between); they map what JSON lacks as follows,
//! and fail with a decode error where no mapping is sensible:
//!
//! * byte strings (and MessagePack strings that are not UTF-8) become arrays of numbers
//!   0–255;
//! * NaN and ±infinity become `null` (as `serde_json` writes them);
//! * integer, boolean and float map keys become strings (`"1"`, `"true"`, `"1.5"`); keys
//!   that are arrays, maps, byte strings, `null` or non-finite floats are a decode error;
//! * a MessagePack extension becomes `[type, [bytes…]]`;
//! * CBOR bignums (tags 2 and 3) up to 128 bits become integers; other CBOR tags are
//!   dropped, keeping the item they tag (a tag 1 epoch time is its number); `undefined`
//!   becomes `null`; other simple values are a decode error;
//! * containers nested deeper than [`MAX_DEPTH`] are a decode error (so that a hostile
//!   frame cannot exhaust the stack, and so that the JSON written stays within what
//!   `serde_json` will parse back);
//! * bytes left over after the first value are a decode error.
//!
//! Numbers keep their type and value: integers stay integers (up to 64 bits, signed or
//! not), floats stay floats (`1.0` is written as `1.0`, never `1`, even when CBOR sent it
//! as a half-precision float), and finite floats are written in the shortest form that
//! parses back to the same `f64`. Two caveats: a MessagePack `f32` is written as the
//! shortest `f32` (`0.1`), but ciborium widens CBOR single floats to `f64` first (so an
//! `f32` 0.1 sent by the venue reads `0.10000000149011612`); and to read floats back bit
//! for bit, parse with `serde_json`'s `float_roundtrip` feature, as its default parser can
//! be one unit in the last place off for long mantissas.

use crate::error::{Error, ErrorKind};
use crate::frame::Frame;

mod json;
mod raw;
#[cfg(any(feature = "msgpack", feature = "cbor"))]
mod transcode;

#[cfg(feature = "cbor")]
mod cbor;
#[cfg(feature = "msgpack")]
mod msgpack;
#[cfg(feature = "protobuf")]
mod protobuf;

#[cfg(feature = "cbor")]
pub use cbor::CborCodec;
pub use json::JsonCodec;
#[cfg(feature = "msgpack")]
pub use msgpack::MsgPackCodec;
#[cfg(feature = "protobuf")]
pub use protobuf::ProtobufCodec;
pub use raw::RawCodec;

/// The `erased_serde` crate, whose [`Serialize`](erased_serde::Serialize) is what
/// [`CodecHandler::encode`] takes, for implementing codecs of your own.
pub use erased_serde;

/// The deepest nesting of arrays and maps the transcoding codecs (MessagePack, CBOR) accept
/// in a received frame. Below `serde_json`'s own limit of 127, so that the JSON they write
/// (where a byte string or extension adds a level or two) always parses back.
pub const MAX_DEPTH: usize = 100;

/// Turns received data frames into the messages the
/// [`MessageHandler`](crate::MessageHandler) classifies (JSON text), and values into the
/// frames that go out.
///
/// Runs on the connection task (decode) and on the caller's task (encode): keep it cheap,
/// no I/O. A codec holds no per-connection state, so one value can serve many connections.
///
/// Implementing it for a format of your own takes the same three methods:
///
/// ```
/// use websockex_nova::codec::{erased_serde, CodecHandler};
/// use websockex_nova::{Error, ErrorKind, Frame};
///
/// /// JSON text behind a `v1:` prefix (a made-up venue format).
/// struct Prefixed;
///
/// impl CodecHandler for Prefixed {
///     fn name(&self) -> &'static str {
///         "prefixed"
///     }
///
///     fn decode(&self, frame: &Frame) -> Result<Option<Frame>, Error> {
///         match frame.as_text() {
///             Some(text) => match text.strip_prefix("v1:") {
///                 Some(json) => Ok(Some(Frame::text(json.to_owned()))),
///                 None => Err(Error::new(ErrorKind::Decode).with_context("prefixed: no v1: prefix")),
///             },
///             None => Ok(None),
///         }
///     }
///
///     fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Frame, Error> {
///         let json = serde_json::to_string(value)
///             .map_err(|e| Error::new(ErrorKind::Encode).with_source(e))?;
///         Ok(Frame::text(format!("v1:{json}")))
///     }
/// }
///
/// let codec = Prefixed;
/// let out = codec.encode(&serde_json::json!([1])).unwrap();
/// assert_eq!(out.as_text(), Some("v1:[1]"));
/// assert_eq!(codec.decode(&out).unwrap().unwrap().as_text(), Some("[1]"));
/// ```
pub trait CodecHandler: Send + Sync + 'static {
    /// Stable name: `"json"`, `"msgpack"`, `"cbor"`, `"protobuf"`, `"raw"`; for logs and
    /// metrics.
    fn name(&self) -> &'static str;

    /// An inbound data frame (text or binary; never called for control frames, which the
    /// built-in codecs would hand on untouched).
    ///
    /// `Ok(None)`: hand the frame on as it is (no copy). `Ok(Some(f))`: hand on `f`
    /// instead (a JSON text frame transcoded from the wire format).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`], with a context naming the codec and saying briefly what was
    /// wrong (never the whole payload).
    fn decode(&self, frame: &Frame) -> Result<Option<Frame>, Error>;

    /// The frame that carries `value` (text for JSON, binary for the binary formats).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Encode`] when the value cannot be written in this format;
    /// [`ErrorKind::Unsupported`] when the codec cannot send values of this kind at all.
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Frame, Error>;
}

/// A decode error of codec `codec`: `what` says what was wrong, never quoting the payload.
fn decode_error(codec: &str, what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Decode).with_context(format!("{codec} codec: {what}"))
}

/// An encode error of codec `codec`.
fn encode_error(codec: &str, what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Encode).with_context(format!("{codec} codec: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn codecs_are_send_sync_and_object_safe() {
        assert_send_sync_static::<Box<dyn CodecHandler>>();
        let codecs: Vec<Box<dyn CodecHandler>> = vec![
            Box::new(JsonCodec::new()),
            Box::new(RawCodec::new()),
            #[cfg(feature = "msgpack")]
            Box::new(MsgPackCodec::new()),
            #[cfg(feature = "cbor")]
            Box::new(CborCodec::new()),
        ];
        for codec in &codecs {
            assert!(!codec.name().is_empty());
        }
    }

    #[test]
    fn control_frames_pass_through_every_codec() {
        let codecs: Vec<Box<dyn CodecHandler>> = vec![
            Box::new(JsonCodec::new()),
            Box::new(RawCodec::new()),
            #[cfg(feature = "msgpack")]
            Box::new(MsgPackCodec::new()),
            #[cfg(feature = "cbor")]
            Box::new(CborCodec::new()),
        ];
        let control = [
            Frame::Ping(bytes::Bytes::from_static(b"\x80")),
            Frame::Pong(bytes::Bytes::new()),
            Frame::close_normal(),
        ];
        for codec in &codecs {
            for frame in &control {
                assert_eq!(codec.decode(frame).unwrap(), None, "{}", codec.name());
            }
        }
    }
}
