//! Reference and digest parsing: no input panics, and whatever parses is stable under
//! Display → parse (the normalised form is a fixed point, as docker's `ParseNormalizedNamed`).
//!
//! Run: `cd fuzz && cargo +nightly fuzz run reference_digest -- -max_total_time=60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_oci::{Digest, Reference};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<Reference>() {
        let text = r.to_string();
        let again: Reference = text
            .parse()
            .unwrap_or_else(|e| panic!("normalised reference `{text}` rejected: {e}"));
        assert_eq!(again, r, "reference changed after a round trip");
        assert_eq!(again.to_string(), text);
        assert!(!r.repository().is_empty());
    }
    if let Ok(d) = s.parse::<Digest>() {
        let text = d.to_string();
        assert_eq!(text.parse::<Digest>().ok(), Some(d.clone()));
        assert_eq!(d.hex().len(), 64);
        assert_eq!(Digest::from_hex(d.hex()).ok(), Some(d));
    }
    let _ = Digest::from_hex(s);
});
