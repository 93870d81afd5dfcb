//! The client: sends the requests [`crate::request`] builds, with auth and retries.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::StatusCode;
use rbuild_oci::Reference;
use url::Url;

use crate::credentials::{Credentials, CredentialsEnv};
use crate::error::{Error, Result};
use crate::request::{self, Access, Endpoint};
use crate::response::{self, Challenge};

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

/// What a request is for: names the operation and target in errors, and the token scope.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub operation: &'static str,
    pub registry: String,
    pub repository: String,
}

impl Ctx {
    pub fn new(operation: &'static str, reference: &Reference) -> Self {
        Self {
            operation,
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
        }
    }

    pub fn target(&self) -> String {
        if self.repository.is_empty() {
            self.registry.clone()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    pub fn protocol(&self, reason: impl Into<String>) -> Error {
        Error::Protocol {
            operation: self.operation,
            target: self.target(),
            reason: reason.into(),
        }
    }

    pub fn http(&self, source: reqwest::Error) -> Error {
        Error::Http {
            operation: self.operation,
            target: self.target(),
            source,
        }
    }

    /// Maps a non-success response to an error, reading (a bounded part of) its body.
    pub async fn status_error(&self, resp: reqwest::Response, what: &str) -> Error {
        let status = resp.status();
        // Only the start of an error body is shown; never buffer an unbounded one.
        let body = read_limited(resp, 64 * 1024)
            .await
            .map(|(b, _)| b)
            .unwrap_or_default();
        self.status_error_with(status, &body, what)
    }

    pub fn status_error_with(&self, status: StatusCode, body: &[u8], what: &str) -> Error {
        let target = self.target();
        match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized {
                operation: self.operation,
                target,
                registry: self.registry.clone(),
            },
            StatusCode::FORBIDDEN => Error::Denied {
                operation: self.operation,
                target,
            },
            StatusCode::NOT_FOUND => Error::NotFound {
                operation: self.operation,
                target,
                what: what.to_owned(),
            },
            _ => Error::Status {
                operation: self.operation,
                target,
                status,
                body: response::error_summary(body),
            },
        }
    }
}

/// A request the client can build again for each attempt.
pub(crate) struct Attempt {
    pub request: http::Request<()>,
    pub body: Option<reqwest::Body>,
}

impl Attempt {
    pub fn bare(request: http::Request<()>) -> Self {
        Self {
            request,
            body: None,
        }
    }
}

#[derive(Debug, Default)]
struct RegistryAuth {
    scheme: Scheme,
    /// Resolved credentials: `None` until looked up.
    credentials: Option<Option<Credentials>>,
    token: Option<Token>,
}

#[derive(Debug, Default, Clone)]
enum Scheme {
    #[default]
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Clone)]
struct Token {
    value: String,
    scopes: BTreeSet<String>,
    expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// An OCI distribution client. Cheap to clone; clones share auth state.
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) options: Arc<ClientOptions>,
    auth: Arc<Mutex<HashMap<String, RegistryAuth>>>,
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
        Ok(Self {
            http,
            options: Arc::new(options),
            auth: Arc::default(),
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
            let authorization = self.authorization(ctx, &scopes).await?;
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
                if self.learn_challenge(ctx, &challenges, &mut scopes).await? {
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

    async fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(c) = self.options.credentials.get(registry) {
            return Ok(Some(c.clone()));
        }
        if let Some(known) = self.with_auth(registry, |a| a.credentials.clone()) {
            return Ok(known);
        }
        let env = self.options.credentials_env.clone();
        let reg = registry.to_owned();
        // Credential helpers are processes: keep them off the async threads.
        let found = tokio::task::spawn_blocking(move || env.resolve(&reg))
            .await
            .map_err(|e| Error::Credentials {
                registry: registry.to_owned(),
                source: crate::credentials::CredentialsError::Interrupted(e.to_string()),
            })?
            .map_err(|source| Error::Credentials {
                registry: registry.to_owned(),
                source,
            })?;
        self.with_auth(registry, |a| a.credentials = Some(found.clone()));
        Ok(found)
    }

    fn with_auth<T>(&self, registry: &str, f: impl FnOnce(&mut RegistryAuth) -> T) -> T {
        let mut map = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(registry.to_owned()).or_default())
    }

    /// The `Authorization` value for a request needing `scopes`, fetching a token when the
    /// cached one does not cover them or has expired.
    async fn authorization(&self, ctx: &Ctx, scopes: &[String]) -> Result<Option<String>> {
        let scheme = self.with_auth(&ctx.registry, |a| a.scheme.clone());
        match scheme {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self
                .credentials(&ctx.registry)
                .await?
                .and_then(|c| match c {
                    Credentials::Password { username, password } => {
                        Some(basic(&username, &password))
                    }
                    Credentials::IdentityToken(_) => None,
                })),
            Scheme::Bearer { realm, service } => {
                let now = Instant::now();
                let cached = self.with_auth(&ctx.registry, |a| a.token.clone());
                if let Some(t) = &cached
                    && t.expires > now
                    && scopes.iter().all(|s| t.scopes.contains(s))
                {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                // Ask for the union, so that one token serves pull of the base and push of
                // the target (docker `tokenHandler.additionalScopes`).
                let mut want: BTreeSet<String> = scopes.iter().cloned().collect();
                if let Some(t) = cached.filter(|t| t.expires > now) {
                    want.extend(t.scopes);
                }
                let token = self
                    .fetch_token(ctx, &realm, service.as_deref(), want)
                    .await?;
                let value = format!("Bearer {}", token.value);
                self.with_auth(&ctx.registry, |a| a.token = Some(token));
                Ok(Some(value))
            }
        }
    }

    /// Records what a 401 asked for. Returns whether a retry can succeed.
    async fn learn_challenge(
        &self,
        ctx: &Ctx,
        challenges: &[Challenge],
        scopes: &mut Vec<String>,
    ) -> Result<bool> {
        let previous = self.with_auth(&ctx.registry, |a| a.scheme.clone());
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer {
                realm,
                service,
                scopes,
            } => Some((realm.clone(), service.clone(), scopes.clone())),
            Challenge::Basic => None,
        });
        if let Some((realm, service, asked)) = bearer {
            for s in asked {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
            self.with_auth(&ctx.registry, |a| {
                a.scheme = Scheme::Bearer { realm, service };
                a.token = None;
            });
            return Ok(true);
        }
        if challenges.contains(&Challenge::Basic) {
            if matches!(previous, Scheme::Basic) {
                // We already sent our credentials: they are wrong.
                return Ok(false);
            }
            self.with_auth(&ctx.registry, |a| a.scheme = Scheme::Basic);
            return Ok(self.credentials(&ctx.registry).await?.is_some());
        }
        Ok(false)
    }

    async fn fetch_token(
        &self,
        ctx: &Ctx,
        realm: &str,
        service: Option<&str>,
        scopes: BTreeSet<String>,
    ) -> Result<Token> {
        let fail = |reason: String| Error::Token {
            operation: ctx.operation,
            target: ctx.target(),
            realm: realm.to_owned(),
            reason,
        };
        let realm_url = Url::parse(realm).map_err(|e| fail(format!("invalid realm: {e}")))?;
        let scope_list: Vec<String> = scopes.iter().cloned().collect();
        let creds = self.credentials(&ctx.registry).await?;
        let rb = match &creds {
            Some(Credentials::IdentityToken(refresh)) => {
                let (req, form) = request::oauth_token(&realm_url, service, &scope_list, refresh);
                self.http
                    .post(realm_url.clone())
                    .headers(req.headers().clone())
                    .body(form)
            }
            Some(Credentials::Password { username, password }) => {
                let req = request::token(&realm_url, service, &scope_list);
                self.http
                    .get(req.uri().to_string())
                    .header(http::header::AUTHORIZATION, basic(username, password))
            }
            None => {
                let req = request::token(&realm_url, service, &scope_list);
                self.http.get(req.uri().to_string())
            }
        };
        let resp = rb.send().await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                operation: ctx.operation,
                target: ctx.target(),
                registry: ctx.registry.clone(),
            });
        }
        if !status.is_success() {
            return Err(fail(format!("status {status}")));
        }
        let (body, complete) = read_limited(resp, MAX_DOCUMENT)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !complete {
            return Err(fail("token answer larger than 4 MiB".into()));
        }
        let parsed = parse_token(&body).ok_or_else(|| fail("no token in the answer".into()))?;
        Ok(Token {
            value: parsed.0,
            scopes,
            // Renew a little early so that a token does not expire mid-request.
            expires: Instant::now() + parsed.1.saturating_sub(Duration::from_secs(5)),
        })
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

/// The largest JSON document (manifest, tag list, token) read into memory. The distribution
/// spec lets registries reject manifests over 4 MiB; clients may do the same.
pub(crate) const MAX_DOCUMENT: usize = 4 << 20;

/// Reads at most `limit` bytes of the body; the flag says whether the body was complete.
pub(crate) async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<(Vec<u8>, bool), reqwest::Error> {
    use futures::StreamExt as _;
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            let room = limit - out.len();
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, false));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, true))
}

fn basic(user: &str, password: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {enc}")
}

fn retryable(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// `{"token": …}` or `{"access_token": …}`, with `expires_in` (default 60 s, docker token
/// spec).
fn parse_token(body: &[u8]) -> Option<(String, Duration)> {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let t: T = serde_json::from_slice(body).ok()?;
    let value = t.token.filter(|s| !s.is_empty()).or(t.access_token)?;
    Some((
        value,
        Duration::from_secs(t.expires_in.unwrap_or(60).max(1)),
    ))
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
    fn parses_tokens_and_backs_off() {
        let (t, d) = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.as_str(), d), ("abc", Duration::from_secs(300)));
        let (t, d) = parse_token(br#"{"access_token":"x"}"#).unwrap();
        assert_eq!((t.as_str(), d), ("x", Duration::from_secs(60)));
        assert!(parse_token(b"{}").is_none());
        let c =
            Client::new(ClientOptions::default().retry_base(Duration::from_millis(100))).unwrap();
        assert_eq!(c.backoff(0, None), Duration::from_millis(100));
        assert_eq!(c.backoff(3, None), Duration::from_millis(800));
        assert_eq!(c.backoff(20, None), Duration::from_secs(10));
        assert_eq!(
            c.backoff(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Client::new(
            ClientOptions::default().credentials("r", Credentials::password("u", "hunter2")),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", c.options).contains("hunter2"));
    }
}
