//! Binary formats to JSON text in one pass, with no value tree in between.
//!
//! A visitor writes JSON while the format's deserializer walks the value. Errors travel up
//! as the deserializer's own error, unchanged. (A serializer-driven transcoder such as
//! `serde_transcode` converts the error at every level it crosses, and ciborium displays
//! its errors with `Debug`, so the message doubles in size per level: a malformed frame a
//! few dozen levels deep would exhaust memory.)

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};
#[cfg(feature = "cbor")]
use serde::Deserialize;
use serde::Serialize;

use super::decode_error;
use crate::error::Error;
use crate::frame::Frame;

/// Writes the value `deserializer` yields into `out` as JSON text.
pub(super) fn to_json<'de, D: Deserializer<'de>>(
    deserializer: D,
    out: &mut Vec<u8>,
) -> Result<(), D::Error> {
    deserializer.deserialize_any(ValueVisitor(out))
}

/// JSON text written while a binary format is deserialized, for decoders that only offer
/// `from_reader::<T>()` (ciborium keeps its `Deserializer` private).
#[cfg(feature = "cbor")]
pub(super) struct JsonText(pub(super) Vec<u8>);

#[cfg(feature = "cbor")]
impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        to_json(deserializer, &mut out)?;
        Ok(JsonText(out))
    }
}

/// The text frame for transcoded `json`.
pub(super) fn text_frame(codec: &str, json: Vec<u8>) -> Result<Frame, Error> {
    // Only `serde_json` writes strings, and it writes UTF-8; the check is cheap next to
    // the transcoding.
    String::from_utf8(json)
        .map(Frame::text)
        .map_err(|e| decode_error(codec, "transcoded JSON is not UTF-8").with_source(e))
}

/// The error for the bytes in `rest`, left after the first value.
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

/// Writes a scalar or a string the way `serde_json` does (NaN and infinities as `null`).
fn write<T: Serialize + ?Sized, E: de::Error>(out: &mut Vec<u8>, value: &T) -> Result<(), E> {
    // Writing into a `Vec` cannot fail.
    serde_json::to_writer(out, value).map_err(E::custom)
}

/// Writes `value` in quotes: a number or boolean as an object key.
fn write_quoted<T: Serialize, E: de::Error>(out: &mut Vec<u8>, value: &T) -> Result<(), E> {
    out.push(b'"');
    write(out, value)?;
    out.push(b'"');
    Ok(())
}

/// Writes one value.
struct ValueVisitor<'a>(&'a mut Vec<u8>);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value JSON can hold")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0
            .extend_from_slice(if v { &b"true"[..] } else { &b"false"[..] });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        write(self.0, &v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        write(self.0, &v)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        write(self.0, &v)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        write(self.0, &v)
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<(), E> {
        // As an `f32`, so that 0.1f32 reads 0.1 rather than 0.10000000149011612.
        write(self.0, &v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        write(self.0, &v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write(self.0, v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        // An array of numbers, as `serde_json` writes `&[u8]`.
        write(self.0, v)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut comma = false;
        while seq
            .next_element_seed(Element {
                out: &mut *self.0,
                comma,
            })?
            .is_some()
        {
            comma = true;
        }
        self.0.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.push(b'{');
        let mut comma = false;
        while map
            .next_key_seed(Key {
                out: &mut *self.0,
                comma,
            })?
            .is_some()
        {
            self.0.push(b':');
            map.next_value_seed(Element {
                out: &mut *self.0,
                comma: false,
            })?;
            comma = true;
        }
        self.0.push(b'}');
        Ok(())
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A CBOR tag (bignums aside): the tagged item stands for itself, the tag is dropped.
        let (IgnoredAny, item) = data.variant()?;
        item.newtype_variant_seed(Element {
            out: self.0,
            comma: false,
        })
    }
}

/// An array element or object value, after a comma unless it is the first.
struct Element<'a> {
    out: &'a mut Vec<u8>,
    comma: bool,
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.comma {
            self.out.push(b',');
        }
        deserializer.deserialize_any(ValueVisitor(self.out))
    }
}

/// An object key, after a comma unless it is the first.
struct Key<'a> {
    out: &'a mut Vec<u8>,
    comma: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.comma {
            self.out.push(b',');
        }
        deserializer.deserialize_any(KeyVisitor(self.out))
    }
}

/// Writes an object key: strings as they are, numbers and booleans quoted (as
/// `serde_json` writes such keys); anything else is an error.
struct KeyVisitor<'a>(&'a mut Vec<u8>);

impl<'de> Visitor<'de> for KeyVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key JSON can hold (a string, a number or a boolean)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v {
            &b"\"true\""[..]
        } else {
            &b"\"false\""[..]
        });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        write_quoted(self.0, &v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        write_quoted(self.0, &v)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        write_quoted(self.0, &v)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        write_quoted(self.0, &v)
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<(), E> {
        if v.is_finite() {
            write_quoted(self.0, &v)
        } else {
            Err(E::invalid_value(Unexpected::Float(v.into()), &self))
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            write_quoted(self.0, &v)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write(self.0, v)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (IgnoredAny, item) = data.variant()?;
        item.newtype_variant_seed(Key {
            out: self.0,
            comma: false,
        })
    }
}
