//! Manifest, index and config JSON as they come from a registry: no input panics the parsers,
//! and whatever parses serialises to canonical JSON that parses back to the same value with
//! the same bytes (the digest we push is the digest of those bytes).
//!
//! Run: `cd fuzz && cargo +nightly fuzz run manifest_json -- -max_total_time=60`

#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_oci::canonical_json;
use rbuild_oci::oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(v) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let bytes = canonical_json(&v).expect("a parsed value serialises");
    let again: T = serde_json::from_slice(&bytes).expect("canonical JSON parses");
    assert_eq!(again, v, "value changed after a round trip");
    assert_eq!(
        canonical_json(&again).expect("serialises"),
        bytes,
        "canonical bytes unstable"
    );
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ImageManifest>(data);
    round_trip::<ImageIndex>(data);
    round_trip::<ImageConfiguration>(data);
});
