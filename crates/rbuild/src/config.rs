//! The image configuration as docker, buildah and BuildKit write it.
//!
//! oci-spec's `ImageConfiguration` drops every field the OCI spec does not name, but real images
//! carry Docker's extra fields (`Healthcheck`, `OnBuild`, `Shell`, `ArgsEscaped`, …) that a base
//! image must pass on to the images built on it. So the engine keeps its own serde types with a
//! flattened map of unknown fields; the bytes are still written through
//! [`rbuild_oci::canonical_json`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `PATH` that BuildKit gives images built `FROM scratch` (dockerfile2llb `system.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image config blob (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// GOARCH value.
    pub architecture: String,
    /// GOOS value.
    pub os: String,
    /// CPU variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Execution parameters.
    #[serde(default)]
    pub config: RuntimeConfig,
    /// Layer diff ids.
    pub rootfs: RootFs,
    /// One entry per Dockerfile step, layer or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields this type does not name, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The `config` object of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE`, as a Go `map[string]struct{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    /// `ENV`, `KEY=value` in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`, as a Go `map[string]struct{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker-only fields (`Shell`, `Healthcheck`, `OnBuild`, …), kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".to_owned(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    /// RFC 3339 time of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction as docker shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step added no layer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

// Serde's skip_serializing_if passes a reference.
fn is_false(b: &bool) -> bool {
    !*b
}

impl RuntimeConfig {
    /// The value of `key` in `Env`.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.as_ref()?.iter().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key=value` in `Env`, replacing an earlier value in place (docker keeps the position).
    pub fn env_set(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
}

impl ImageConfig {
    /// The config of an image built `FROM scratch` on this platform.
    pub fn scratch(platform: &Platform) -> Self {
        let mut c = Self {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            ..Self::default()
        };
        c.config.env = Some(vec![DEFAULT_PATH.to_owned()]);
        c
    }
}

pub use rbuild_oci::Platform;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_docker_fields() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Healthcheck":{"Test":["NONE"]},"OnBuild":["RUN x"]},"rootfs":{"type":"layers","diff_ids":[]},"docker_version":"24"}"#;
        let c: ImageConfig = serde_json::from_str(raw).unwrap();
        assert!(c.config.extra.contains_key("Healthcheck"));
        assert!(c.extra.contains_key("docker_version"));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["config"]["OnBuild"][0], "RUN x");
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut c = RuntimeConfig::default();
        c.env_set("PATH", "/bin");
        c.env_set("A", "1");
        c.env_set("PATH", "/usr/bin");
        assert_eq!(c.env.as_deref().unwrap(), ["PATH=/usr/bin", "A=1"]);
        assert_eq!(c.env_get("A"), Some("1"));
    }
}
