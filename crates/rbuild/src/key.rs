//! Step cache keys (docs/ARCHITECTURE.md, "Cache keys").
//!
//! A step's key is the SHA-256 of the canonical JSON of a [`StepKey`]: every input that can
//! change what the step produces, written with stable names. The JSON field names and the
//! `kind` tags of [`Input`] are spelled out with `serde(rename)`, so renaming a Rust item cannot
//! change a key; the schema version changes whenever the meaning of a field does, so caches made
//! by an older rbuild (local or in a registry) miss cleanly instead of matching by accident.

use rbuild_layer::Compression;
use rbuild_oci::{Digest, Platform};
use serde::Serialize;

/// The version of the step-key format; part of every key.
pub(crate) const SCHEMA: &str = "rbuild-step-key/v4";

/// Everything a step's result depends on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepKey<'a> {
    /// [`SCHEMA`].
    #[serde(rename = "schema")]
    pub schema: &'static str,
    /// The key of the step this one runs on (the base image's digest for the first).
    #[serde(rename = "parent")]
    pub parent: &'a str,
    /// The instruction after expansion, as the image history records it.
    #[serde(rename = "instruction")]
    pub instruction: &'a str,
    /// The build args the step can observe, `NAME=value`, sorted.
    #[serde(rename = "args")]
    pub args: &'a [String],
    /// Content the step reads besides its parent.
    #[serde(rename = "inputs")]
    pub inputs: &'a [Input],
    /// The platform the step runs for.
    #[serde(rename = "platform", serialize_with = "platform_name")]
    pub platform: &'a Platform,
    /// How the step's layer is compressed (a different blob, so a different entry).
    #[serde(rename = "compression", serialize_with = "compression_name")]
    pub compression: Compression,
    /// The compression level in effect (`--compression-level` or the default of
    /// `compression`; 0 for none): a different level makes a different blob.
    #[serde(rename = "compression_level")]
    pub compression_level: i32,
    /// `--source-date-epoch` (timestamps in the layer and history).
    #[serde(rename = "source_date_epoch")]
    pub source_date_epoch: Option<i64>,
}

/// An input of a step other than its parent and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub(crate) enum Input {
    /// The digest of a COPY/ADD plan: every source file's content, mode, owner and place.
    #[serde(rename = "copy")]
    Copy {
        /// `copy/vN` digest of the plan.
        #[serde(rename = "digest")]
        digest: String,
    },
    /// A RUN heredoc's script after expansion.
    #[serde(rename = "heredoc")]
    Heredoc {
        /// The script.
        #[serde(rename = "script")]
        script: String,
    },
    /// A `RUN --mount`: the option string after expansion (secret values are not in it, only
    /// their ids) and, for a bind mount, the content it binds.
    #[serde(rename = "mount")]
    Mount {
        /// The `--mount` value as written, expanded.
        #[serde(rename = "spec")]
        spec: String,
        /// Content digest of a bind mount's source (context files or a stage's key).
        #[serde(rename = "source")]
        source: Option<String>,
    },
    /// `RUN --network=none`.
    #[serde(rename = "network-none")]
    NetworkNone,
    /// `RUN --security=insecure`.
    #[serde(rename = "security-insecure")]
    Insecure,
}

impl StepKey<'_> {
    /// The key: SHA-256 of the canonical JSON.
    pub(crate) fn digest(&self) -> Digest {
        // Serialising plain strings, numbers and options cannot fail.
        let bytes = rbuild_oci::canonical_json(self).unwrap_or_default();
        Digest::sha256_of(&bytes)
    }
}

/// The key of a `FROM scratch` stage's (empty) base.
pub(crate) fn scratch(platform: &Platform) -> Digest {
    #[derive(Serialize)]
    struct Scratch<'a> {
        #[serde(rename = "schema")]
        schema: &'static str,
        #[serde(rename = "scratch", serialize_with = "platform_name")]
        platform: &'a Platform,
    }
    let bytes = rbuild_oci::canonical_json(&Scratch {
        schema: SCHEMA,
        platform,
    })
    .unwrap_or_default();
    Digest::sha256_of(&bytes)
}

fn platform_name<S: serde::Serializer>(p: &&Platform, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string())
}

fn compression_name<S: serde::Serializer>(c: &Compression, s: S) -> Result<S::Ok, S::Error> {
    // Stable names, independent of the enum's Rust spelling.
    s.serialize_str(match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(inputs: &'a [Input], args: &'a [String], platform: &'a Platform) -> StepKey<'a> {
        StepKey {
            schema: SCHEMA,
            parent: "sha256:parent",
            instruction: "RUN make",
            args,
            inputs,
            platform,
            compression: Compression::Gzip,
            compression_level: 6,
            source_date_epoch: None,
        }
    }

    #[test]
    fn the_canonical_form_is_stable() {
        // This exact text is what every cache (local and remote) is keyed by: if this test has
        // to change, SCHEMA must change with it.
        let p = Platform::host();
        let inputs = [Input::Copy { digest: "d".into() }, Input::NetworkNone];
        let args = ["A=1".to_owned()];
        let k = key(&inputs, &args, &p);
        let json = String::from_utf8(rbuild_oci::canonical_json(&k).unwrap()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"args":["A=1"],"compression":"gzip","compression_level":6,"inputs":[{{"digest":"d","kind":"copy"}},{{"kind":"network-none"}}],"instruction":"RUN make","parent":"sha256:parent","platform":"{p}","schema":"rbuild-step-key/v4","source_date_epoch":null}}"#
            )
        );
        assert_eq!(k.digest(), Digest::sha256_of(json.as_bytes()));
    }

    #[test]
    fn every_field_changes_the_key() {
        let p = Platform::host();
        let other: Platform = "linux/arm64".parse().unwrap();
        let args = ["A=1".to_owned()];
        let inputs = [Input::Insecure];
        let base = key(&[], &args, &p).digest();
        let variants = [
            StepKey {
                parent: "sha256:other",
                ..key(&[], &args, &p)
            },
            StepKey {
                instruction: "RUN make all",
                ..key(&[], &args, &p)
            },
            key(&[], &[], &p),
            key(&inputs, &args, &p),
            key(&[], &args, &other),
            StepKey {
                compression: Compression::Zstd,
                ..key(&[], &args, &p)
            },
            StepKey {
                compression_level: 9,
                ..key(&[], &args, &p)
            },
            StepKey {
                source_date_epoch: Some(0),
                ..key(&[], &args, &p)
            },
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(base);
        for v in &variants {
            assert!(seen.insert(v.digest()), "{v:?} collides");
        }
    }

    #[test]
    fn scratch_keys_differ_per_platform() {
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_ne!(scratch(&Platform::host()), scratch(&arm));
        assert_eq!(scratch(&arm), scratch(&arm));
    }
}
