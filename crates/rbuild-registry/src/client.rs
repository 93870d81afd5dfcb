//! The client: sends the requests [`crate::request`] builds, with auth and retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rbuild_oci::Reference;
use url::Url;

use crate::auth::Auth;
use crate::credentials::{Credentials, CredentialsEnv};
use crate::error::{Error, Result};
use crate::operation::Ctx;
use crate::request::{self, Access, Endpoint};
use crate::response;

/// How the client talks to registries. `Default` is what docker does: HTTPS with verification,
/// plain HTTP for loopback registries, credentials from the process environment.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) insecure_registries: Vec<String>,
    pub(crate) tls_verify: bool,
    pub(crate) credentials_env: CredentialsEnv,
    pub(crate) credentials: HashMap<String, Credentials>,
    pub(crate) max_retries: u32,
    pub(crate) retry_base: Duration,
    pub(crate) chunk_size: Option<u64>,
    pub(crate) parallel: usize,
    pub(crate) user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            tls_verify: true,
            credentials_env: CredentialsEnv::from_process_env(),
            credentials: HashMap::new(),
            max_retries: 4,
            retry_base: Duration::from_millis(250),
            chunk_size: None,
            parallel: 3,
            user_agent: concat!("rbuild/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl ClientOptions {
    /// Speaks plain HTTP to `host[:port]` (docker's `--insecure-registry`).
    #[must_use]
    pub fn insecure_registry(mut self, host: &str) -> Self {
        self.insecure_registries.push(host.to_owned());
        self
    }

    /// Whether to verify TLS certificates (`--tls-verify=false` turns it off).
    #[must_use]
    pub fn tls_verify(mut self, verify: bool) -> Self {
        self.tls_verify = verify;
        self
    }

    /// Where to find config files and credential helpers.
    #[must_use]
    pub fn credentials_env(mut self, env: CredentialsEnv) -> Self {
        self.credentials_env = env;
        self
    }

    /// Uses these credentials for `registry`, before any config file (e.g. `login -u`).
    #[must_use]
    pub fn credentials(mut self, registry: &str, credentials: Credentials) -> Self {
        self.credentials.insert(registry.to_owned(), credentials);
        self
    }

    /// Retries after connection errors, 408, 429 and 5xx (default 4).
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// First backoff delay, doubled at each retry up to 10 s (default 250 ms).
    #[must_use]
    pub fn retry_base(mut self, d: Duration) -> Self {
        self.retry_base = d;
        self
    }

    /// Upload blobs in chunks of this size (`Content-Range` PATCHes) instead of one streamed
    /// PATCH. The registry's `OCI-Chunk-Min-Length` raises it when larger.
    #[must_use]
    pub fn chunk_size(mut self, size: Option<u64>) -> Self {
        self.chunk_size = size.filter(|s| *s > 0);
        self
    }

    /// How many blobs are pushed or pulled at once (default 3, docker's
    /// `max-concurrent-uploads` default is 5; 3 suits small machines).
    #[must_use]
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }
}

/// A request the client can build again for each attempt.
pub(crate) struct Attempt {
    pub request: http::Request<()>,
    pub body: Option<reqwest::Body>,
}

impl Attempt {
    pub(crate) fn bare(request: http::Request<()>) -> Self {
        Self {
            request,
            body: None,
        }
    }
}

/// An OCI distribution client. Cheap to clone; clones share auth state.
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) options: Arc<ClientOptions>,
    pub(crate) auth: Arc<Auth>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("insecure_registries", &self.options.insecure_registries)
            .field("tls_verify", &self.options.tls_verify)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client.
    ///
    /// # Errors
    ///
    /// [`Error::ClientBuild`] when the TLS backend cannot be initialised.
    pub fn new(options: ClientOptions) -> Result<Self> {
        // reqwest follows redirects and drops `Authorization` when the host or port changes
        // (`redirect::remove_sensitive_headers`), so credentials never reach a blob CDN.
        let http = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .danger_accept_invalid_certs(!options.tls_verify)
            .redirect(reqwest::redirect::Policy::limited(10))
            .connect_timeout(Duration::from_secs(30))
            // An inactivity limit per read, not a total: a 1 GiB layer may take minutes, a
            // registry that stops sending for this long is gone (retried like a reset).
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(Error::ClientBuild)?;
        let auth = Auth::new(
            http.clone(),
            options.credentials_env.clone(),
            options.credentials.clone(),
        );
        Ok(Self {
            http,
            options: Arc::new(options),
            auth: Arc::new(auth),
        })
    }

    /// The base URL for `registry`: plain HTTP for loopback and insecure registries (as
    /// docker), `registry-1.docker.io` for Docker Hub.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRegistry`] when `registry` is not a valid `host[:port]`.
    pub fn base_url(&self, registry: &str) -> Result<Url> {
        let probe = Reference::new(registry, "x", Some("latest"), None);
        let plain = probe.is_loopback_registry()
            || self
                .options
                .insecure_registries
                .iter()
                .any(|h| h == registry);
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if plain { "http" } else { "https" };
        let invalid = || Error::InvalidRegistry {
            registry: registry.to_owned(),
        };
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(invalid());
        }
        Url::parse(&format!("{scheme}://{host}/")).map_err(|_| invalid())
    }

    pub(crate) fn endpoint(&self, reference: &Reference) -> Result<Endpoint> {
        Ok(Endpoint::new(
            self.base_url(reference.registry())?,
            reference.repository(),
        ))
    }

    /// Sends the request `make` builds, authenticating and retrying. Returns any response that
    /// is not 401 or retryable; the caller maps other statuses.
    pub(crate) async fn send(
        &self,
        ctx: &Ctx,
        access: Access,
        extra_scopes: &[String],
        retry: bool,
        make: &mut (dyn FnMut() -> Result<Attempt> + Send),
    ) -> Result<reqwest::Response> {
        // Registry-level requests (`/v2/`, catalog) have no repository scope of their own.
        let own = (!ctx.repository.is_empty()).then(|| access.scope(&ctx.repository));
        let mut scopes: Vec<String> = own
            .into_iter()
            .chain(extra_scopes.iter().cloned())
            .collect();
        let mut attempt = 0u32;
        let mut reauthed = false;
        loop {
            let authorization = self.auth.authorization(ctx, &scopes).await?;
            let Attempt { request, body } = make()?;
            let (parts, ()) = request.into_parts();
            let url =
                Url::parse(&parts.uri.to_string()).map_err(|e| ctx.protocol(e.to_string()))?;
            let mut rb = self.http.request(parts.method, url).headers(parts.headers);
            if let Some(a) = authorization {
                rb = rb.header(http::header::AUTHORIZATION, a);
            }
            if let Some(b) = body {
                rb = rb.body(b);
            }
            let result = rb.send().await;
            let resp = match result {
                Ok(r) => r,
                Err(e) if retry && attempt < self.options.max_retries && retryable(&e) => {
                    tracing::debug!(target = %ctx.target(), error = %e, "retrying after transport error");
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(ctx.http(e)),
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !reauthed {
                let challenges = response::challenges(resp.headers());
                if self
                    .auth
                    .learn_challenge(ctx, &challenges, &mut scopes)
                    .await?
                {
                    reauthed = true;
                    continue;
                }
                return Err(ctx.status_error(resp, "").await);
            }
            let retry_status = status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error();
            if retry_status && retry && attempt < self.options.max_retries {
                let wait = self.backoff(attempt, response::retry_after(resp.headers()));
                tracing::debug!(target = %ctx.target(), %status, ?wait, "retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .options
            .retry_base
            .saturating_mul(1u32 << attempt.min(10))
            .min(Duration::from_secs(10));
        // Honour the registry's Retry-After but never sleep more than a minute per attempt.
        retry_after.map_or(exp, |r| r.min(Duration::from_secs(60)))
    }

    /// Verifies `credentials` against `registry` (what `rbuild login` does before writing
    /// them with [`CredentialsEnv::store`]). The client's own credentials are not changed.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] for a wrong username or password; transport and status errors.
    pub async fn login(&self, registry: &str, credentials: Credentials) -> Result<()> {
        let mut options = (*self.options).clone();
        options.credentials.insert(registry.to_owned(), credentials);
        Client::new(options)?.ping(registry).await
    }

    /// `GET /v2/`: checks that the registry speaks the distribution API and that our
    /// credentials are accepted (what `login` verifies).
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] with wrong or missing credentials; transport and status errors.
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let ctx = Ctx {
            operation: "login to",
            registry: registry.to_owned(),
            repository: String::new(),
        };
        let base = self.base_url(registry)?;
        let resp = self
            .send(&ctx, Access::Pull, &[], true, &mut || {
                Ok(Attempt::bare(request::ping(&base)))
            })
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ctx.status_error(resp, "/v2/").await)
        }
    }
}

fn retryable(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_follow_docker_defaults() {
        let bad = Client::new(ClientOptions::default()).unwrap();
        assert!(matches!(
            bad.base_url("a b"),
            Err(Error::InvalidRegistry { .. })
        ));
        assert!(matches!(
            bad.base_url("h/x"),
            Err(Error::InvalidRegistry { .. })
        ));
        let c = Client::new(ClientOptions::default().insecure_registry("reg.lan:5000")).unwrap();
        assert_eq!(
            c.base_url("127.0.0.1:5000").unwrap().as_str(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(
            c.base_url("localhost").unwrap().as_str(),
            "http://localhost/"
        );
        assert_eq!(
            c.base_url("reg.lan:5000").unwrap().as_str(),
            "http://reg.lan:5000/"
        );
        assert_eq!(c.base_url("quay.io").unwrap().as_str(), "https://quay.io/");
        assert_eq!(
            c.base_url("docker.io").unwrap().as_str(),
            "https://registry-1.docker.io/"
        );
    }

    #[test]
    fn backs_off() {
        let c = Client::new(
            ClientOptions::default().credentials("r", Credentials::password("u", "hunter2")),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", c.options).contains("hunter2"));
    }
}
