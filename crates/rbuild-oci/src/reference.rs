use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// The registry that names without a host part refer to.
pub(crate) const DEFAULT_REGISTRY: &str = "docker.io";

/// An image reference, normalised the way docker normalises it.
///
/// Grammar (distribution `reference/reference.go`):
///
/// ```text
/// reference       := name [ ":" tag ] [ "@" digest ]
/// name            := [domain '/'] remote-name
/// domain          := host [':' port-number]
/// tag             := /[\w][\w.-]{0,127}/
/// path-component  := alpha-numeric [separator alpha-numeric]*
/// alpha-numeric   := /[a-z0-9]+/
/// separator       := /[_.]|__|[-]*/
/// ```
///
/// The first component is a registry host when it contains `.` or `:` or is `localhost`;
/// otherwise the registry is `docker.io`, and a one-component name gets `library/`. A reference
/// without tag or digest gets the tag `latest`. So `busybox` is
/// `docker.io/library/busybox:latest`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Empty input.
    #[error("empty image reference")]
    Empty,
    /// Upper-case letters in the repository.
    #[error("invalid reference `{0}`: repository name must be lowercase")]
    Uppercase(String),
    /// A bad path component.
    #[error("invalid reference `{reference}`: bad repository component `{component}`")]
    BadComponent {
        /// The whole input.
        reference: String,
        /// The offending component.
        component: String,
    },
    /// A bad tag.
    #[error(
        "invalid reference `{reference}`: bad tag `{tag}` (allowed: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
    )]
    BadTag {
        /// The whole input.
        reference: String,
        /// The offending tag.
        tag: String,
    },
    /// A bad digest.
    #[error("invalid reference `{reference}`: {source}")]
    BadDigest {
        /// The whole input.
        reference: String,
        /// Why the digest is wrong.
        #[source]
        source: crate::DigestError,
    },
}

fn valid_component(c: &str) -> bool {
    // alpha-numeric (separator alpha-numeric)*, separators: `.`, `_`, `__`, one or more `-`.
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    d.parse::<Digest>()
                        .map_err(|source| ReferenceError::BadDigest {
                            reference: s.to_owned(),
                            source,
                        })?,
                ),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(ReferenceError::BadTag {
                reference: s.to_owned(),
                tag: t.to_owned(),
            });
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), remainder.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_owned()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(s.to_owned()));
        }
        for component in repository.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::BadComponent {
                    reference: s.to_owned(),
                    component: component.to_owned(),
                });
            }
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// Builds a reference from parts (already valid).
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Self {
        Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        }
    }

    /// The registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when the input had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same name with another tag and no digest.
    #[must_use]
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same name and tag, pinned to `digest`.
    #[must_use]
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The tag if there is one, else the digest string: what a registry manifest URL takes.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// Whether the registry is a loopback address (`localhost`, `127.0.0.0/8`, `::1`), which is
    /// spoken to over plain HTTP by default, as docker does.
    pub fn is_loopback_registry(&self) -> bool {
        let host = host_of(&self.registry);
        host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The short form docker prints: `busybox:latest` for `docker.io/library/busybox:latest`.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("user/app"), "docker.io/user/app:latest");
        assert_eq!(n("index.docker.io/library/x"), "docker.io/library/x:latest");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(n("eu.gcr.io/p/app/app:abc"), "eu.gcr.io/p/app/app:abc");
        let d = Digest::sha256_of(b"x");
        assert_eq!(
            n(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            n(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
    }

    #[test]
    fn rejects_bad_references() {
        assert!(matches!(
            "".parse::<Reference>(),
            Err(ReferenceError::Empty)
        ));
        assert!(matches!(
            "Busybox".parse::<Reference>(),
            Err(ReferenceError::Uppercase(_))
        ));
        assert!(matches!(
            "a/-b".parse::<Reference>(),
            Err(ReferenceError::BadComponent { .. })
        ));
        assert!(matches!(
            "a:".parse::<Reference>(),
            Err(ReferenceError::BadTag { .. })
        ));
        assert!(matches!(
            "a@sha256:xx".parse::<Reference>(),
            Err(ReferenceError::BadDigest { .. })
        ));
    }

    #[test]
    fn loopback_and_familiar() {
        let r: Reference = "127.0.0.1:5000/a:1".parse().unwrap();
        assert!(r.is_loopback_registry());
        assert!(
            !"quay.io/a"
                .parse::<Reference>()
                .unwrap()
                .is_loopback_registry()
        );
        assert!(
            "localhost:5000/a"
                .parse::<Reference>()
                .unwrap()
                .is_loopback_registry()
        );
        assert_eq!(
            "busybox".parse::<Reference>().unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(r.familiar(), "127.0.0.1:5000/a:1");
    }
}
