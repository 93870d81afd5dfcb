//! Authentication state per registry: the scheme a registry asked for (basic or bearer), the
//! credentials found for it, and the current bearer token with the scopes it covers.
//!
//! Follows docker's token auth spec (`distribution/docs/spec/auth/token.md`): on a 401 the
//! `WWW-Authenticate` challenge names the realm, service and scope; the token is asked for
//! the union of the scopes needed so far and reused until it expires.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::StatusCode;
use url::Url;

use crate::body::{MAX_DOCUMENT, read_limited};
use crate::credentials::{Credentials, CredentialsEnv};
use crate::error::{Error, Result};
use crate::operation::Ctx;
use crate::request;
use crate::response::Challenge;

/// Authentication for every registry a client talks to: where credentials come from and what
/// each registry asked for. Knows nothing of the client that sends requests; it only fetches
/// tokens with the same HTTP stack.
#[derive(Debug)]
pub(crate) struct Auth {
    http: reqwest::Client,
    credentials_env: CredentialsEnv,
    /// Credentials given to the client directly (`login -u`), before any config file.
    fixed: HashMap<String, Credentials>,
    state: Mutex<HashMap<String, RegistryAuth>>,
}

/// What the client knows about one registry's authentication.
#[derive(Debug, Default)]
pub(crate) struct RegistryAuth {
    scheme: Scheme,
    /// Resolved credentials: `None` until looked up.
    credentials: Option<Option<Credentials>>,
    token: Option<Token>,
}

/// The scheme the registry's last challenge asked for (`Unknown` until a 401 is seen, so
/// anonymous registries never get an `Authorization` header).
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

impl Auth {
    pub(crate) fn new(
        http: reqwest::Client,
        credentials_env: CredentialsEnv,
        fixed: HashMap<String, Credentials>,
    ) -> Self {
        Self {
            http,
            credentials_env,
            fixed,
            state: Mutex::default(),
        }
    }

    pub(crate) async fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(c) = self.fixed.get(registry) {
            return Ok(Some(c.clone()));
        }
        if let Some(known) = self.with_auth(registry, |a| a.credentials.clone()) {
            return Ok(known);
        }
        let env = self.credentials_env.clone();
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
        let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(registry.to_owned()).or_default())
    }

    /// The `Authorization` value for a request needing `scopes`, fetching a token when the
    /// cached one does not cover them or has expired.
    pub(crate) async fn authorization(
        &self,
        ctx: &Ctx,
        scopes: &[String],
    ) -> Result<Option<String>> {
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
    pub(crate) async fn learn_challenge(
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
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {enc}")
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
    fn parses_tokens() {
        let (t, d) = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.as_str(), d), ("abc", Duration::from_secs(300)));
        let (t, d) = parse_token(br#"{"access_token":"x"}"#).unwrap();
        assert_eq!((t.as_str(), d), ("x", Duration::from_secs(60)));
        assert!(parse_token(b"{}").is_none());
        assert_eq!(basic("u", "p"), "Basic dTpw");
    }

    #[test]
    fn token_debug_hides_the_value() {
        let t = Token {
            value: "secret-token".into(),
            scopes: BTreeSet::new(),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("secret-token"));
    }
}
