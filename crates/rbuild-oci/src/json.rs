//! Canonical JSON: the exact bytes we hash and push.
//!
//! oci-spec's types contain `HashMap`s, which serde serialises in random order. A manifest or
//! config must hash to the same digest every time, so we go through `serde_json::Value` (whose
//! maps are `BTreeMap`s, sorted by key) and print it compactly.

use serde::Serialize;

/// Serialises `value` to compact JSON with object keys sorted.
///
/// # Errors
///
/// Whatever `serde_json` reports for a value that cannot be represented in JSON.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&to_canonical_value(value)?)
}

/// Converts `value` to a `serde_json::Value` whose maps are sorted.
///
/// # Errors
///
/// Whatever `serde_json` reports for a value that cannot be represented in JSON.
pub fn to_canonical_value<T: Serialize + ?Sized>(
    value: &T,
) -> serde_json::Result<serde_json::Value> {
    serde_json::to_value(value)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_are_sorted_whatever_the_map_order() {
        let mut m = HashMap::new();
        for k in ["zeta", "alpha", "mid", "beta", "omega", "gamma"] {
            m.insert(k.to_owned(), 1);
        }
        let bytes = canonical_json(&m).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"alpha":1,"beta":1,"gamma":1,"mid":1,"omega":1,"zeta":1}"#
        );
    }
}
