//! Errors of the distribution client.
//!
//! Every variant names the operation that failed and the registry/repository it was about, so
//! that the CLI can print `push to 127.0.0.1:5000/app: ...` followed by the cause chain.

use rbuild_oci::Digest;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry refused our credentials (or we had none).
    #[error(
        "{operation} {target}: unauthorized: authentication required (wrong username or password? try `rbuild login {registry}`)"
    )]
    Unauthorized {
        /// What we were doing, e.g. `push to`.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// The registry host, for the login hint.
        registry: String,
    },
    /// Authenticated, but not allowed to do this (HTTP 403).
    #[error("{operation} {target}: denied: requested access to the resource is denied")]
    Denied {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
    },
    /// The manifest, blob or repository does not exist (HTTP 404).
    #[error("{operation} {target}: not found: {what}")]
    NotFound {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// What was missing, e.g. `manifest 1.0` or `blob sha256:…`.
        what: String,
    },
    /// Any other non-success status.
    #[error("{operation} {target}: registry answered {status}{}", fmt_body(.body))]
    Status {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// The status code.
        status: http::StatusCode,
        /// The error body (registry error JSON), truncated.
        body: String,
    },
    /// The connection failed (after retries).
    #[error("{operation} {target}: request failed")]
    Http {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// Reading a blob from the local source, or writing to the sink, failed.
    #[error("{operation} {target}: blob {digest}: local io failed")]
    Io {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// The blob.
        digest: Digest,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// Downloaded or uploaded bytes do not hash to the expected digest.
    #[error("{operation} {target}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// The digest we asked for.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The registry sent more bytes than the blob's descriptor gives; reading stopped there.
    #[error(
        "{operation} {target}: blob {digest}: registry sent more than the descriptor's size of {size} bytes"
    )]
    BlobTooLarge {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// The blob.
        digest: Digest,
        /// The size in the descriptor.
        size: u64,
    },
    /// The registry answered something this client cannot use (bad header, bad JSON, …).
    #[error("{operation} {target}: invalid registry response: {reason}")]
    Protocol {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// What was wrong.
        reason: String,
    },
    /// An image index has no manifest for the requested platform.
    #[error("pull {reference}: the image index has no manifest for {platform} (it has: {})", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    NoPlatform {
        /// The image.
        reference: String,
        /// The requested platform.
        platform: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// The token endpoint failed.
    #[error("{operation} {target}: fetching a token from {realm} failed: {reason}")]
    Token {
        /// What we were doing.
        operation: &'static str,
        /// `registry/repository`.
        target: String,
        /// The realm URL.
        realm: String,
        /// Why.
        reason: String,
    },
    /// Reading credentials (config file or helper) failed.
    #[error("reading credentials for {registry}")]
    Credentials {
        /// The registry.
        registry: String,
        /// The cause.
        #[source]
        source: crate::credentials::CredentialsError,
    },
    /// A registry name that cannot be part of a URL.
    #[error("invalid registry host `{registry}`")]
    InvalidRegistry {
        /// The registry as given.
        registry: String,
    },
    /// The HTTP client could not be built (TLS backend).
    #[error("building the HTTP client")]
    ClientBuild(#[source] reqwest::Error),
}

fn fmt_body(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl Error {
    /// Whether the error is an authentication failure (401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
    }

    /// Whether the error is a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_target_and_hint() {
        let e = Error::Unauthorized {
            operation: "push to",
            target: "127.0.0.1:5000/app".into(),
            registry: "127.0.0.1:5000".into(),
        };
        let m = e.to_string();
        assert!(
            m.starts_with("push to 127.0.0.1:5000/app: unauthorized"),
            "{m}"
        );
        assert!(m.contains("wrong username or password?"));
        let e = Error::Status {
            operation: "pull",
            target: "r/a".into(),
            status: http::StatusCode::BAD_GATEWAY,
            body: String::new(),
        };
        assert_eq!(e.to_string(), "pull r/a: registry answered 502 Bad Gateway");
    }
}
