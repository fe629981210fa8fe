//! `client_signature` auth: `lowercase_hex(HMAC-SHA256(secret, timestamp + "\n" + nonce + "\n" + data))`.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The signature a Deribit client sends with `grant_type: "client_signature"` over WebSocket:
/// lowercase hex of HMAC-SHA256 keyed with the client secret over
/// `timestamp + "\n" + nonce + "\n" + data` (`data` is `""` when the request has none).
///
/// ```
/// use websockex_nova_testkit::deribit::client_signature;
/// assert_eq!(
///     client_signature("AMANDASECRECT", 1576074319000, "1iqt2wls", ""),
///     "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1",
/// );
/// ```
pub fn client_signature(secret: &str, timestamp: u64, nonce: &str, data: &str) -> String {
    let bytes = mac(secret, timestamp, nonce, data).finalize().into_bytes();
    let mut out = String::with_capacity(64);
    for b in bytes.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0F)]));
    }
    out
}

/// Whether `signature` (hex, either case) is right; compared in constant time.
pub(crate) fn verify(
    secret: &str,
    timestamp: u64,
    nonce: &str,
    data: &str,
    signature: &str,
) -> bool {
    let Some(bytes) = decode_hex(signature) else {
        return false;
    };
    mac(secret, timestamp, nonce, data)
        .verify_slice(&bytes)
        .is_ok()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn mac(secret: &str, timestamp: u64, nonce: &str, data: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(nonce.as_bytes());
    mac.update(b"\n");
    mac.update(data.as_bytes());
    mac
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three vectors of the reference (§2.1).
    #[test]
    fn reference_vectors() {
        let vectors = [
            (
                "AMANDASECRECT",
                1_576_074_319_000,
                "1iqt2wls",
                "",
                "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1",
            ),
            (
                "AMANDASECRECT",
                1_576_074_319_000,
                "1iqt2wls",
                "hello",
                "29d2254b36d17c4d8677069dd9fec51685bc53a277a4fb799dd6e660d0bcc719",
            ),
            (
                "sim-secret",
                1_700_000_000_000,
                "abcd1234",
                "",
                "46810e37ad438dc9c2719cceeb981b338b6a3790fec0473835cafb6baf3f9dc5",
            ),
        ];
        for (secret, ts, nonce, data, want) in vectors {
            assert_eq!(client_signature(secret, ts, nonce, data), want);
            assert!(verify(secret, ts, nonce, data, want));
            assert!(verify(secret, ts, nonce, data, &want.to_uppercase()));
            assert!(!verify(secret, ts + 1, nonce, data, want));
            assert!(!verify("other", ts, nonce, data, want));
            assert!(!verify(secret, ts, nonce, data, &want[..62]));
            assert!(!verify(secret, ts, nonce, data, "zz"));
        }
    }
}
