//! Binary formats to JSON text in one pass, with no value tree in between.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::decode_error;
use crate::error::Error;
use crate::frame::Frame;

/// JSON text written while a binary format is being deserialized.
///
/// The transcoding happens inside `Deserialize::deserialize`, so it works with decoders that
/// only offer `from_reader::<T>()` (ciborium keeps its `Deserializer` private).
pub(super) struct JsonText(pub(super) Vec<u8>);

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        serde_transcode::transcode(deserializer, &mut serde_json::Serializer::new(&mut out))
            .map_err(D::Error::custom)?;
        Ok(JsonText(out))
    }
}

/// The text frame for transcoded `json`.
pub(super) fn text_frame(codec: &str, json: Vec<u8>) -> Result<Frame, Error> {
    // serde_json writes only UTF-8; the check is cheap next to the transcoding.
    String::from_utf8(json)
        .map(Frame::text)
        .map_err(|e| decode_error(codec, "transcoded JSON is not UTF-8").with_source(e))
}

/// The error for `rest.len()` bytes left after the first value.
pub(super) fn check_consumed(codec: &str, rest: &[u8]) -> Result<(), Error> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(decode_error(
            codec,
            format_args!("{} bytes left after the value", rest.len()),
        ))
    }
}
