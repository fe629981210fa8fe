//! Raw frame encoding and synthetic payloads.

use std::fmt::Write as _;

/// The header of an unmasked (server-to-client) frame carrying `len` payload bytes.
pub(crate) fn frame_header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    if len < 126 {
        // Fits in 7 bits.
        out.push(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out
}

/// Encode one unmasked server frame: `FIN|opcode`, the 7/16/64-bit length, then the payload.
///
/// Only the low four bits of `opcode` are used; the RSV bits are zero. No validation is done, so
/// this also builds invalid frames (reserved opcodes, fragmented or oversized control frames) for
/// [`Step::SendRaw`](crate::Step::SendRaw).
///
/// ```
/// use websockex_nova_testkit::raw_frame;
/// assert_eq!(raw_frame(true, 0x1, b"hi"), vec![0x81, 2, b'h', b'i']);
/// assert_eq!(&raw_frame(false, 0x2, &[0; 300])[..4], &[0x02, 126, 0x01, 0x2C]);
/// ```
pub fn raw_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_header(fin, opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A Deribit-shaped JSON-RPC `subscription` notification on `ticker.BTC-PERPETUAL.raw`, whose
/// values vary deterministically with `i`, padded with JSON whitespace (before the final `}}}`)
/// to exactly `size` bytes.
///
/// If `size` is smaller than the natural length of the message (about 330 bytes), the message is
/// returned unpadded, so it is never truncated.
///
/// ```
/// use websockex_nova_testkit::ticker_notification;
/// let a = ticker_notification(7, 512);
/// assert_eq!(a.len(), 512);
/// assert_eq!(a, ticker_notification(7, 512));
/// assert_ne!(a, ticker_notification(8, 512));
/// assert!(a.starts_with(r#"{"jsonrpc":"2.0","method":"subscription""#));
/// ```
pub fn ticker_notification(i: u64, size: usize) -> String {
    let timestamp = 1_732_600_000_000u64.wrapping_add(i);
    // Prices in half-dollar ticks around 97301.5, wandering deterministically.
    let wobble = (i.wrapping_mul(7_919).wrapping_add(1_000) % 2_001) as i64 - 1_000;
    let bid_halves = 194_603i64 + wobble;
    let ask_halves = bid_halves + 1;
    let mark_cents = bid_halves * 50 + 28;
    let open_interest = 1_184_594_489u64 + (i % 1_000_000);
    let volume_units = 147_284_243u64 + (i % 10_000_000);
    let change_cents = -226i64 + (i % 451) as i64;

    let mut s = String::with_capacity(size.max(384));
    s.push_str(
        r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.BTC-PERPETUAL.raw","data":{"timestamp":"#,
    );
    let _ = write!(s, "{timestamp}");
    s.push_str(r#","instrument_name":"BTC-PERPETUAL","best_bid_price":"#);
    push_halves(&mut s, bid_halves);
    s.push_str(r#","best_ask_price":"#);
    push_halves(&mut s, ask_halves);
    s.push_str(r#","mark_price":"#);
    push_fixed(&mut s, mark_cents, 100, 2);
    let _ = write!(s, r#","open_interest":{open_interest}"#);
    s.push_str(r#","stats":{"volume":"#);
    push_fixed(&mut s, volume_units as i64, 10_000, 4);
    s.push_str(r#","price_change":"#);
    push_fixed(&mut s, change_cents, 100, 2);
    s.push_str(r#","low":95523.8,"high":98345.0}"#);
    let tail = "}}}";
    let natural = s.len() + tail.len();
    if size > natural {
        s.extend(std::iter::repeat_n(' ', size - natural));
    }
    s.push_str(tail);
    s
}

fn push_halves(s: &mut String, halves: i64) {
    let _ = write!(s, "{}.{}", halves / 2, if halves % 2 == 0 { 0 } else { 5 });
}

/// Write `value / scale` with exactly `digits` decimals (integer arithmetic, no float noise).
fn push_fixed(s: &mut String, value: i64, scale: i64, digits: usize) {
    let sign = if value < 0 { "-" } else { "" };
    let v = value.unsigned_abs();
    let scale = scale.unsigned_abs();
    let _ = write!(s, "{sign}{}.{:0digits$}", v / scale, v % scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        assert_eq!(frame_header(true, 0x1, 125), vec![0x81, 125]);
        assert_eq!(frame_header(true, 0x2, 126), vec![0x82, 126, 0, 126]);
        assert_eq!(frame_header(true, 0x2, 65_535), vec![0x82, 126, 0xFF, 0xFF]);
        assert_eq!(
            frame_header(false, 0x0, 65_536),
            vec![0x00, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(frame_header(true, 0x13, 0), vec![0x83, 0]);
    }

    #[test]
    fn ticker_is_padded_and_well_formed() {
        for i in [0u64, 1, 2, 999, 123_456_789] {
            let small = ticker_notification(i, 0);
            assert!(small.len() > 250 && small.len() < 400, "{}", small.len());
            let big = ticker_notification(i, 1024);
            assert_eq!(big.len(), 1024);
            assert!(big.ends_with(" }}}"));
            assert!(big.contains(r#""instrument_name":"BTC-PERPETUAL""#));
            // Balanced braces, no stray characters.
            let opens = big.matches('{').count();
            assert_eq!(opens, big.matches('}').count());
        }
        let t = ticker_notification(0, 0);
        assert!(
            t.contains(r#""best_bid_price":97301.5,"best_ask_price":97302.0"#),
            "{t}"
        );
        assert!(t.contains(r#""mark_price":97301.78"#), "{t}");
        assert!(t.contains(r#""price_change":-2.26"#), "{t}");
        assert!(t.contains(r#""volume":14728.4243"#), "{t}");
    }
}
