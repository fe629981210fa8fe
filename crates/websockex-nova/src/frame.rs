//! The frame model: what goes over the socket, in our own types.
//!
//! [`Frame`] is one complete WebSocket message or control frame. Text is kept as
//! [`Text`], a cheaply cloneable, already validated UTF-8 buffer: a text frame received
//! from the socket is never copied or validated twice. Close codes are checked against
//! RFC 6455 §7.4 when you build them.
//!
//! ```
//! use websockex_nova::{CloseCode, Frame};
//!
//! let hello = Frame::text("hello");
//! assert_eq!(hello.as_text(), Some("hello"));
//! let bye = Frame::close(CloseCode::NORMAL, "done");
//! assert!(bye.is_close());
//! assert!(CloseCode::new(1005).is_err(), "1005 may never be sent");
//! ```

use std::fmt;

use bytes::Bytes;
use tokio_websockets::Message;

use crate::error::Error;

/// A WebSocket close status code (RFC 6455 §7.4), valid to send on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, client exit).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: payload inconsistent with its type (e.g. invalid UTF-8 in a text message).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: message too big.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: unexpected condition on the server.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: service restart.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// A code that may be sent on the wire: 1000–1003, 1007–1014 or 3000–4999.
    ///
    /// # Errors
    ///
    /// A configuration error for codes RFC 6455 reserves (1004–1006, 1015), leaves
    /// unassigned (0–999, 1016–2999) or forbids (5000 and above).
    pub fn new(code: u16) -> Result<CloseCode, Error> {
        match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => Ok(CloseCode(code)),
            _ => Err(Error::config(format!(
                "close code {code} may not be sent (RFC 6455 §7.4)"
            ))),
        }
    }

    /// Any code that may appear in a received close frame, including 1015 and friends.
    pub(crate) fn received(code: u16) -> CloseCode {
        CloseCode(code)
    }

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The payload of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes of UTF-8 so the frame stays within 125 bytes.
    pub reason: String,
}

/// A UTF-8 text payload; cheap to clone, never copied on receive.
#[derive(Clone)]
pub struct Text(Message);

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Built only from validated received messages or from `String`/`&str`, so the
        // backend never has to re-check (and never panics).
        self.0.as_text().unwrap_or_default()
    }

    /// The raw bytes, for decoders that take `&[u8]`.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_payload()
    }

    /// The underlying shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_payload().into()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Message::text(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text(Message::text(s))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text {}

/// One WebSocket message or control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text message.
    Text(Text),
    /// A binary message.
    Binary(Bytes),
    /// A ping (at most 125 bytes).
    Ping(Bytes),
    /// A pong (at most 125 bytes).
    Pong(Bytes),
    /// A close frame, with or without a status.
    Close(Option<CloseFrame>),
}

/// The largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

impl Frame {
    /// A text frame.
    pub fn text(text: impl Into<Text>) -> Frame {
        Frame::Text(text.into())
    }

    /// A binary frame.
    pub fn binary(data: impl Into<Bytes>) -> Frame {
        Frame::Binary(data.into())
    }

    /// A close frame with a validated code (see [`CloseCode::new`]).
    pub fn close(code: CloseCode, reason: impl Into<String>) -> Frame {
        Frame::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    }

    /// A `1000 Normal Closure` frame.
    pub fn close_normal() -> Frame {
        Frame::close(CloseCode::NORMAL, "")
    }

    /// The text, if this is a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// Whether this is a close frame.
    pub fn is_close(&self) -> bool {
        matches!(self, Frame::Close(_))
    }

    /// Whether this is a text or binary message (as opposed to a control frame).
    pub fn is_data(&self) -> bool {
        matches!(self, Frame::Text(_) | Frame::Binary(_))
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => b.len(),
            Frame::Close(Some(c)) => 2 + c.reason.len(),
            Frame::Close(None) => 0,
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks what RFC 6455 requires of a frame we are about to send.
    pub(crate) fn validate_outgoing(&self) -> Result<(), Error> {
        match self {
            Frame::Ping(b) | Frame::Pong(b) if b.len() > MAX_CONTROL_PAYLOAD => Err(Error::config(
                format!("control frame payload of {} bytes exceeds 125", b.len()),
            )),
            Frame::Close(Some(c)) if c.reason.len() > MAX_CONTROL_PAYLOAD - 2 => {
                Err(Error::config(format!(
                    "close reason of {} bytes exceeds 123",
                    c.reason.len()
                )))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn into_message(self) -> Message {
        match self {
            Frame::Text(t) => t.0,
            Frame::Binary(b) => Message::binary(b),
            Frame::Ping(b) => Message::ping(b),
            Frame::Pong(b) => Message::pong(b),
            Frame::Close(None) => Message::close(None, ""),
            Frame::Close(Some(c)) => {
                // Our CloseCode admits only sendable codes, which the backend accepts too.
                let code = tokio_websockets::CloseCode::try_from(c.code.as_u16()).ok();
                Message::close(code, &c.reason)
            }
        }
    }

    pub(crate) fn from_message(msg: Message) -> Frame {
        if msg.is_text() {
            Frame::Text(Text(msg))
        } else if msg.is_binary() {
            Frame::Binary(msg.into_payload().into())
        } else if msg.is_ping() {
            Frame::Ping(msg.into_payload().into())
        } else if msg.is_pong() {
            Frame::Pong(msg.into_payload().into())
        } else {
            match msg.as_close() {
                Some((code, _)) if u16::from(code) == 1005 => Frame::Close(None),
                Some((code, reason)) => Frame::Close(Some(CloseFrame {
                    code: CloseCode::received(code.into()),
                    reason: reason.to_owned(),
                })),
                None => Frame::Close(None),
            }
        }
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Self {
        Frame::text(s)
    }
}

impl From<&'static str> for Frame {
    fn from(s: &'static str) -> Self {
        Frame::text(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_rfc6455() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4000, 4999] {
            assert_eq!(CloseCode::new(ok).unwrap().as_u16(), ok);
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(CloseCode::new(bad).unwrap_err().is_config(), "{bad}");
        }
    }

    #[test]
    fn frames_round_trip_through_the_backend() {
        let frames = [
            Frame::text("héllo"),
            Frame::binary(vec![0u8, 1, 2]),
            Frame::Ping(Bytes::from_static(b"p")),
            Frame::Pong(Bytes::from_static(b"q")),
            Frame::close(CloseCode::new(4000).unwrap(), "bye"),
            Frame::Close(None),
        ];
        for f in frames {
            assert_eq!(Frame::from_message(f.clone().into_message()), f);
        }
    }

    #[test]
    fn oversized_control_frames_are_rejected() {
        assert!(Frame::Ping(Bytes::from(vec![0; 126]))
            .validate_outgoing()
            .is_err());
        assert!(Frame::close(CloseCode::NORMAL, "x".repeat(124))
            .validate_outgoing()
            .is_err());
        assert!(Frame::close(CloseCode::NORMAL, "x".repeat(123))
            .validate_outgoing()
            .is_ok());
    }
}
