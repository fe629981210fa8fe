//! The frame model: `CloseCode::new` accepts exactly the codes RFC 6455 §7.4 lets a client
//! send, and the public `Frame` / `Text` constructors and accessors agree with each other.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use websockex_nova::{CloseCode, Frame, Text, MAX_CONTROL_PAYLOAD};

#[derive(Debug, Arbitrary)]
struct Input {
    codes: Vec<u16>,
    reason: String,
    text: String,
    binary: Vec<u8>,
}

fn sendable(code: u16) -> bool {
    // RFC 6455 §7.4.1/§7.4.2: 1004-1006 and 1015 are reserved, 1016-2999 unassigned,
    // 0-999 and 5000+ not used; 3000-4999 are for libraries and applications.
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fuzz_target!(|input: Input| {
    assert_eq!(MAX_CONTROL_PAYLOAD, 125);
    for &code in input.codes.iter().take(64) {
        match CloseCode::new(code) {
            Ok(c) => {
                assert!(sendable(code), "{code} accepted");
                assert_eq!(c.as_u16(), code);
                assert_eq!(c.to_string(), code.to_string());
                assert_eq!(format!("{c:?}"), format!("CloseCode({code})"));
                let f = Frame::close(c, input.reason.clone());
                assert!(f.is_close() && !f.is_data());
                assert_eq!(f.as_text(), None);
                assert_eq!(f.len(), 2 + input.reason.len());
                assert!(!f.is_empty());
                match &f {
                    Frame::Close(Some(cf)) => {
                        assert_eq!(cf.code, c);
                        assert_eq!(cf.reason, input.reason);
                    }
                    other => panic!("{other:?}"),
                }
            }
            Err(e) => {
                assert!(!sendable(code), "{code} refused");
                assert!(e.is_config(), "{e:?}");
                assert!(!e.is_transient());
            }
        }
    }
    let normal = Frame::close_normal();
    assert_eq!(normal, Frame::close(CloseCode::NORMAL, ""));
    assert_eq!(normal.len(), 2);

    let t = Frame::text(input.text.clone());
    assert_eq!(t.as_text(), Some(input.text.as_str()));
    assert_eq!(t.len(), input.text.len());
    assert_eq!(t.is_empty(), input.text.is_empty());
    assert!(t.is_data() && !t.is_close());
    assert_eq!(t, Frame::from(input.text.clone()));
    let text = Text::from(input.text.clone());
    assert_eq!(text.as_str(), input.text);
    assert_eq!(text.as_bytes(), input.text.as_bytes());
    assert_eq!(text.len(), input.text.len());
    assert_eq!(text.to_string(), input.text);
    assert_eq!(format!("{text:?}"), format!("{:?}", input.text));
    assert_eq!(&text.clone().into_bytes()[..], input.text.as_bytes());

    let b = Frame::binary(input.binary.clone());
    assert!(b.is_data() && b.as_text().is_none());
    assert_eq!(b.len(), input.binary.len());
    assert_ne!(b, t, "binary and text frames never compare equal");
    let p = Frame::Ping(input.binary.clone().into());
    assert!(!p.is_data() && !p.is_close());
    assert_eq!(p.len(), input.binary.len());
    assert_eq!(Frame::Close(None).len(), 0);
});
