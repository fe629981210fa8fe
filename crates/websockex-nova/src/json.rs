//! JSON without copies: [`RawJson`] points into a received text frame, [`ApiError`] is a
//! venue's error object, [`Secret`] keeps credentials out of logs.
//!
//! A message is classified from its envelope once; the parts a user needs (a response's
//! `result`, a notification's `data`) stay slices of the original frame until the user
//! decodes them, typed and borrowed.
//!
//! ```
//! use websockex_nova::json::RawJson;
//!
//! let raw = RawJson::from_string(r#"{"price": 97301.5}"#.to_owned()).unwrap();
//! #[derive(serde::Deserialize)]
//! struct Tick { price: f64 }
//! let tick: Tick = raw.decode().unwrap();
//! assert_eq!(tick.price, 97301.5);
//! ```

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::frame::Text;

/// A piece of a received text frame (a channel name, say), kept without copying.
#[derive(Clone, PartialEq, Eq)]
pub struct TextSlice {
    text: Text,
    range: Range<usize>,
}

impl TextSlice {
    /// The slice `sub` of `text`. `sub` must point into `text` (as serde's borrowed
    /// `&RawValue`/`&str` do when deserializing from it); otherwise it is copied.
    pub fn of(text: &Text, sub: &str) -> TextSlice {
        let base = text.as_str().as_ptr() as usize;
        let start = (sub.as_ptr() as usize).wrapping_sub(base);
        if start <= text.len() && start + sub.len() <= text.len() {
            TextSlice {
                text: text.clone(),
                range: start..start + sub.len(),
            }
        } else {
            TextSlice::owned(sub.to_owned())
        }
    }

    /// An owned string as a slice.
    pub fn owned(s: String) -> TextSlice {
        let len = s.len();
        TextSlice {
            text: Text::from(s),
            range: 0..len,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text.as_str()[self.range.clone()]
    }
}

impl fmt::Debug for TextSlice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TextSlice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON value kept as a slice of the text it arrived in (no copy, no parse until asked).
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(TextSlice);

impl RawJson {
    /// The JSON value `sub`, a slice of `text` (see [`TextSlice::of`]). The caller
    /// guarantees `sub` is valid JSON (it came out of a parse of `text`).
    pub fn slice_of(text: &Text, sub: &str) -> RawJson {
        RawJson(TextSlice::of(text, sub))
    }

    fn owned(s: String) -> RawJson {
        RawJson(TextSlice::owned(s))
    }

    /// Wraps a JSON document given as a string.
    ///
    /// # Errors
    ///
    /// A decode error if `json` is not valid JSON.
    pub fn from_string(json: String) -> Result<RawJson, Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(decode_error)?;
        Ok(RawJson::owned(json))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Decodes into `T`, borrowing from the frame where `T` borrows (`&str` fields).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the JSON does not fit `T`.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        serde_json::from_str(self.as_str()).map_err(decode_error)
    }

    /// Decodes into an owned `T`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the JSON does not fit `T`.
    pub fn decode_owned<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(self.as_str()).map_err(decode_error)
    }

    /// Decodes into a `serde_json::Value`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] for valid JSON a `Value` cannot hold: a number beyond `f64`
    /// (`1e400`) or nesting deeper than 128 levels.
    pub fn to_value(&self) -> Result<serde_json::Value, Error> {
        self.decode_owned()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn decode_error(e: serde_json::Error) -> Error {
    Error::new(ErrorKind::Decode).with_source(e)
}

/// An error object returned by the API (JSON-RPC `error`: code, message, data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// The venue's error code.
    pub code: i64,
    /// The venue's message.
    #[serde(default)]
    pub message: String,
    /// Extra data, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API error {}: {}", self.code, self.message)?;
        if let Some(data) = &self.data {
            write!(f, " ({data})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// A secret (API secret, password, token). Never shown by `Debug` or `Display`; read it
/// deliberately with [`Secret::expose`].
///
/// ```
/// use websockex_nova::json::Secret;
///
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for building the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_point_into_the_frame() {
        let text = Text::from(r#"{"result":{"a":1},"id":7}"#.to_owned());
        #[derive(Deserialize)]
        struct Env<'a> {
            #[serde(borrow)]
            result: &'a serde_json::value::RawValue,
        }
        let env: Env<'_> = serde_json::from_str(text.as_str()).unwrap();
        let raw = RawJson::slice_of(&text, env.result.get());
        assert_eq!(raw.as_str(), r#"{"a":1}"#);
        assert_eq!(raw.0.range, 10..17);
        let v: serde_json::Value = raw.decode().unwrap();
        assert_eq!(v["a"], 1);
        assert!(raw.decode::<Vec<u8>>().unwrap_err().is_decode());
    }

    #[test]
    fn foreign_slices_are_copied() {
        let text = Text::from("{}".to_owned());
        let raw = RawJson::slice_of(&text, "[1,2]");
        assert_eq!(raw.as_str(), "[1,2]");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("k3y");
        assert!(!format!("{s:?}{s}").contains("k3y"));
    }
}
