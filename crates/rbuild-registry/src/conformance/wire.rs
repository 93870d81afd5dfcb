//! Raw exchanges: requests the normal client would never send (chunks out of order, no
//! `Accept`, wrong digests), sent through the client's authentication but without retries, and
//! recorded so that a failing check can show the request and response lines.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use url::Url;

use crate::body::read_limited;
use crate::client::{Attempt, Client};
use crate::operation::Ctx;
use crate::request::Access;

/// The most of a response body kept for checks (manifests, tag lists, error bodies).
const BODY_LIMIT: usize = 4 << 20;

/// A conformance request that got no usable answer. Its text is the transcript a failed check
/// shows: the request line (signed URLs redacted), then what went wrong with its causes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// No answer: connection, TLS or the token endpoint failed.
    #[error("> {request}\n! {}", chain(.cause))]
    Send {
        /// The registry.
        registry: String,
        /// The repository the request was about (empty for `/v2/`).
        repository: String,
        /// `METHOD url`, credentials and signatures redacted.
        request: String,
        /// What failed (shown in the message, with its causes).
        cause: crate::Error,
    },
    /// An answer came, but its body could not be read.
    #[error("> {request}\n< {status}\n! reading the body: {cause}")]
    ReadBody {
        /// The registry.
        registry: String,
        /// The repository the request was about.
        repository: String,
        /// `METHOD url`, credentials and signatures redacted.
        request: String,
        /// The status that came.
        status: StatusCode,
        /// What failed while reading.
        cause: reqwest::Error,
    },
}

impl ExchangeError {
    /// The registry the request went to.
    pub fn registry(&self) -> &str {
        match self {
            Self::Send { registry, .. } | Self::ReadBody { registry, .. } => registry,
        }
    }

    /// The repository the request was about (empty for registry-level requests).
    pub fn repository(&self) -> &str {
        match self {
            Self::Send { repository, .. } | Self::ReadBody { repository, .. } => repository,
        }
    }
}

/// A check's detail is text: the transcript of the exchange that failed.
impl From<ExchangeError> for String {
    fn from(e: ExchangeError) -> Self {
        e.to_string()
    }
}

/// `error: cause: cause…`, the way a failed check's detail shows an error.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub method: Method,
    pub url: Url,
    /// The headers we set (never `Authorization`, which the client adds when sending).
    pub request_headers: Vec<(String, String)>,
    pub request_len: usize,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Exchange {
    /// A response header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request and response lines, for a check's detail: `> PATCH /v2/…`, our headers,
    /// `< 202 Accepted`, the answer's headers, and the start of an error body.
    pub(crate) fn transcript(&self) -> String {
        let mut out = format!("> {} {}", self.method, redact(&self.url));
        for (k, v) in &self.request_headers {
            out.push_str(&format!("\n> {k}: {v}"));
        }
        if self.request_len > 0 {
            out.push_str(&format!("\n> ({} body bytes)", self.request_len));
        }
        out.push_str(&format!("\n< {}", self.status));
        let mut names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            if matches!(name, "date" | "x-content-type-options" | "set-cookie") {
                continue;
            }
            for v in self.headers.get_all(name) {
                let v = v.to_str().unwrap_or("<binary>");
                let v = if name == "location" || name == "link" {
                    redact_text(v)
                } else {
                    v.to_owned()
                };
                out.push_str(&format!("\n< {name}: {v}"));
            }
        }
        if !self.status.is_success() && !self.body.is_empty() {
            let text = String::from_utf8_lossy(&self.body);
            let text: String = text.trim().chars().take(300).collect();
            out.push_str(&format!("\n< {text}"));
        }
        out
    }
}

/// Query parameters that may carry credentials in a redirect or upload URL (signed storage
/// URLs): their values are never printed.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "sig",
        "token",
        "credential",
        "key",
        "auth",
        "secret",
        "password",
    ]
    .iter()
    .any(|s| k.contains(s))
}

fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    if !u.username().is_empty() {
        let _ = u.set_username("REDACTED");
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_key(&k) {
                    "REDACTED".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let path = &u[url::Position::BeforePath..];
    if u.host_str() == url.host_str() && u.port() == url.port() {
        path.to_owned()
    } else {
        u.to_string()
    }
}

fn redact_text(value: &str) -> String {
    let Ok(base) = Url::parse("http://registry.invalid/") else {
        return value.to_owned();
    };
    // `<url>; rel="next"` or a bare URL.
    let (prefix, inner, suffix) = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => (&value[..=a], &value[a + 1..b], &value[b..]),
        _ => ("", value, ""),
    };
    match base.join(inner) {
        Ok(u)
            if u.query().is_some_and(|q| {
                q.split('&')
                    .any(|p| secret_key(p.split('=').next().unwrap_or("")))
            }) =>
        {
            format!("{prefix}{}{suffix}", redact(&u))
        }
        _ => value.to_owned(),
    }
}

/// Sends raw requests to one registry.
#[derive(Clone)]
pub(crate) struct Wire {
    pub client: Client,
    pub registry: String,
    pub base: Url,
}

/// A request to send: method, absolute URL, headers, optional body.
pub(crate) struct Raw {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// The repository whose token scope the request needs.
    pub repository: String,
    pub access: Access,
    /// More scopes (the source repository of a mount).
    pub extra_scopes: Vec<String>,
}

impl Raw {
    /// Adds a request header.
    #[must_use]
    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the body (and `Content-Length`, which reqwest adds for a sized body).
    #[must_use]
    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Also asks for `pull` on `repository` (a mount's source).
    #[must_use]
    pub(crate) fn scope(mut self, scope: String) -> Self {
        self.extra_scopes.push(scope);
        self
    }
}

impl Wire {
    /// `/v2/<repository>/<tail>` on this registry, `tail` holding any query.
    pub(crate) fn url(&self, repository: &str, tail: &str) -> Url {
        let path = if repository.is_empty() {
            format!("/v2/{tail}")
        } else {
            format!("/v2/{repository}/{tail}")
        };
        self.base.join(&path).unwrap_or_else(|_| self.base.clone())
    }

    /// A request for `repository`, with the access its method implies.
    pub(crate) fn raw(&self, method: Method, repository: &str, url: Url) -> Raw {
        let access = match method {
            Method::GET | Method::HEAD => Access::Pull,
            Method::DELETE => Access::Delete,
            _ => Access::Push,
        };
        Raw {
            method,
            url,
            headers: Vec::new(),
            body: None,
            repository: repository.to_owned(),
            access,
            extra_scopes: Vec::new(),
        }
    }

    /// Sends `raw` once (authenticating, never retrying: a retry would hide what the registry
    /// answered).
    ///
    /// # Errors
    ///
    /// [`ExchangeError`] when no usable answer came; its text is a failed check's detail.
    pub(crate) async fn send(&self, raw: Raw) -> Result<Exchange, ExchangeError> {
        let ctx = Ctx {
            operation: "conformance check on",
            registry: self.registry.clone(),
            repository: raw.repository.clone(),
        };
        let access = if raw.access == Access::Delete {
            // Registries that grant `delete` separately still need the repository's pull/push
            // scope to find the object.
            Access::Push
        } else {
            raw.access
        };
        let mut scopes = raw.extra_scopes.clone();
        if raw.access == Access::Delete {
            scopes.push(Access::Delete.scope(&raw.repository));
        }
        let resp = self
            .client
            .send(&ctx, access, &scopes, false, &mut || {
                let mut request = http::Request::new(());
                *request.method_mut() = raw.method.clone();
                *request.uri_mut() = raw
                    .url
                    .as_str()
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| ctx.protocol(e.to_string()))?;
                for (k, v) in &raw.headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| ctx.protocol(e.to_string()))?;
                    let value =
                        http::HeaderValue::from_str(v).map_err(|e| ctx.protocol(e.to_string()))?;
                    request.headers_mut().append(name, value);
                }
                Ok(Attempt {
                    request,
                    body: raw.body.clone().map(reqwest::Body::from),
                })
            })
            .await;
        let request = format!("{} {}", raw.method, redact(&raw.url));
        let resp = match resp {
            Ok(r) => r,
            Err(cause) => {
                return Err(ExchangeError::Send {
                    registry: self.registry.clone(),
                    repository: raw.repository,
                    request,
                    cause,
                });
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let url = resp.url().clone();
        let body = if raw.method == Method::HEAD {
            Bytes::new()
        } else {
            match read_limited(resp, BODY_LIMIT).await {
                Ok((b, _)) => Bytes::from(b),
                Err(cause) => {
                    return Err(ExchangeError::ReadBody {
                        registry: self.registry.clone(),
                        repository: raw.repository,
                        request,
                        status,
                        cause,
                    });
                }
            }
        };
        Ok(Exchange {
            method: raw.method,
            url: if url.host_str() == raw.url.host_str() {
                raw.url
            } else {
                url
            },
            request_headers: raw.headers,
            request_len: raw.body.map_or(0, |b| b.len()),
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_are_redacted() {
        let u = Url::parse("https://cdn.example/b?X-Amz-Signature=abc&X-Amz-Credential=k&part=1")
            .unwrap();
        let r = redact(&u);
        assert!(!r.contains("abc"), "{r}");
        assert!(r.contains("part=1"), "{r}");
        let u = Url::parse("http://user:pw@h/v2/a/blobs/uploads/1?_state=s").unwrap();
        let r = redact(&u);
        assert!(!r.contains("pw") && !r.contains("user"), "{r}");
        assert_eq!(
            redact_text("</v2/a/tags/list?n=2&last=b>; rel=\"next\""),
            "</v2/a/tags/list?n=2&last=b>; rel=\"next\""
        );
        assert!(!redact_text("https://s3.example/x?Signature=zzz").contains("zzz"));
    }
}
