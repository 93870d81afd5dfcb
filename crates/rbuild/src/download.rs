//! `ADD <url>`: the body streamed to a temp file in the store, with a size cap, no downgrade
//! from HTTPS to HTTP on redirects, the `--tls-verify` setting of the registry client, and
//! `--checksum` verified against the bytes as they arrive.
//!
//! Docker and BuildKit fetch ADD URLs with an ordinary HTTP client: plain `http://` URLs are
//! allowed (a Dockerfile names them explicitly), redirects are followed. What a Dockerfile
//! from a merge request must not be able to do is make the builder hold an endless body in
//! memory or let a redirect quietly drop TLS, so both are refused here with an error naming
//! the URL.

use std::io::{self, Read, Seek, Write};
use std::time::Duration;

use futures::StreamExt as _;
use rbuild_oci::Digest;
use rbuild_store::Store;
use sha2::Digest as _;

/// Default cap on an ADD URL body: 1 GiB.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// How ADD URLs are fetched. `Default`: at most 1 GiB, certificates verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOptions {
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
    /// Verify TLS certificates (the registry client's `--tls-verify`; `false` accepts any).
    pub tls_verify: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            tls_verify: true,
        }
    }
}

impl DownloadOptions {
    /// Sets the largest body accepted.
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Verifies TLS certificates, or (false) accepts any, as `--tls-verify=false` does for
    /// registries.
    #[must_use]
    pub fn tls_verify(mut self, verify: bool) -> Self {
        self.tls_verify = verify;
        self
    }
}

/// Why an ADD URL could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The build was started without a tokio runtime to download on.
    #[error(
        "downloading needs a tokio runtime (build with Builder::build, or give the builder one)"
    )]
    NoRuntime,
    /// The `--checksum` value is not a digest.
    #[error("--checksum={value} is not a valid digest")]
    InvalidChecksum {
        /// The value given.
        value: String,
        /// Why it does not parse.
        #[source]
        source: rbuild_oci::DigestError,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The request failed (connection, TLS, a refused redirect, a read error).
    #[error("download failed")]
    Request(#[source] reqwest::Error),
    /// The server answered with a non-success status.
    #[error("the server answered {status}")]
    Status {
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The body is larger than the cap.
    #[error(
        "the body is larger than the limit of {limit} bytes (raise it with the build's download size option)"
    )]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// The body does not hash to `--checksum`.
    #[error("checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        /// The `--checksum` digest.
        expected: Digest,
        /// What the body hashes to.
        actual: Digest,
    },
    /// The temp file in the store could not be created, written or read.
    #[error("cannot buffer the download in the store")]
    TempFile(#[source] io::Error),
}

/// Most redirects followed (reqwest's default, and curl's `--max-redirs` in spirit).
const MAX_REDIRECTS: usize = 10;

/// The redirect rule: at most [`MAX_REDIRECTS`], and never from `https` to `http`. Once a
/// chain has been on HTTPS, a plain-HTTP hop would let anyone on the path replace the body
/// that the Dockerfile author asked to get over TLS (curl and browsers refuse this downgrade
/// too, and the Fetch standard blocks mixed content).
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let was_tls = attempt.previous().iter().any(|u| u.scheme() == "https");
        if was_tls && attempt.url().scheme() != "https" {
            let to = attempt.url().to_string();
            return attempt.error(format!("refusing a redirect from https to {to}"));
        }
        attempt.follow()
    })
}

/// Fetches `url` into a temp file under the store's tmp area (removed on return), checking
/// the size cap while streaming and `checksum` (when given) at the end, and returns the body.
///
/// Must be called from a thread that may block (a tokio blocking-pool thread or a plain
/// thread) within a tokio runtime's context.
///
/// # Errors
///
/// See [`DownloadError`]; nothing is left in the store on any of them.
pub(crate) fn fetch(
    handle: &tokio::runtime::Handle,
    store: &Store,
    opts: &DownloadOptions,
    url: &str,
    checksum: Option<&str>,
) -> Result<Vec<u8>, DownloadError> {
    let want = checksum
        .map(|c| {
            c.parse::<Digest>()
                .map_err(|source| DownloadError::InvalidChecksum {
                    value: c.to_owned(),
                    source,
                })
        })
        .transpose()?;
    let mut file = store
        .temp_file("download")
        .map_err(|e| DownloadError::TempFile(io::Error::other(e)))?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!opts.tls_verify)
        .redirect(redirect_policy())
        .connect_timeout(Duration::from_secs(30))
        // Per read, not total: a large file may take minutes; a server silent this long is gone.
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(DownloadError::Client)?;
    let limit = opts.max_bytes;
    let digest = handle.block_on(async {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(DownloadError::Request)?;
        if !resp.status().is_success() {
            return Err(DownloadError::Status {
                status: resp.status(),
            });
        }
        // A declared length over the cap fails before any byte is read.
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(DownloadError::TooLarge { limit });
        }
        let mut hasher = sha2::Sha256::new();
        let mut got = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(DownloadError::Request)?;
            got += chunk.len() as u64;
            // Counted as it arrives: a missing or lying Content-Length is no way around it.
            if got > limit {
                return Err(DownloadError::TooLarge { limit });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(DownloadError::TempFile)?;
        }
        Ok(Digest::from_hasher(hasher))
    })?;
    if let Some(expected) = want
        && expected != digest
    {
        return Err(DownloadError::Checksum {
            expected,
            actual: digest,
        });
    }
    let f = file.as_file_mut();
    f.rewind().map_err(DownloadError::TempFile)?;
    let mut body = Vec::new();
    f.read_to_end(&mut body).map_err(DownloadError::TempFile)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cap_at_one_gib_and_verify_tls() {
        let o = DownloadOptions::default();
        assert_eq!(o.max_bytes, 1 << 30);
        assert!(o.tls_verify);
        let o = o.max_bytes(10).tls_verify(false);
        assert_eq!((o.max_bytes, o.tls_verify), (10, false));
    }
}

#[cfg(test)]
mod servers;
