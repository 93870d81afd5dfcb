//! Parsing what a registry answers: auth challenges, `Link`, `Location`, `Range`,
//! `Docker-Content-Digest`, `Retry-After`, `OCI-Chunk-Min-Length`. Pure, no IO.

use std::time::Duration;

use http::HeaderMap;
use rbuild_oci::Digest;
use url::Url;

/// The digest header of the distribution spec (a docker name kept by the OCI spec).
pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// The minimum chunk size a registry accepts for chunked uploads (distribution spec 1.1).
pub const OCI_CHUNK_MIN_LENGTH: &str = "oci-chunk-min-length";

/// An authentication challenge from `WWW-Authenticate` (RFC 7235 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"` (docker token auth spec).
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to send back.
        service: Option<String>,
        /// Scopes the registry says the request needs (space-separated in the header).
        scopes: Vec<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value. Unknown schemes give `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut realm = None;
        let mut service = None;
        let mut scopes = Vec::new();
        for (k, v) in auth_params(params) {
            match k.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(String::from)),
                _ => {}
            }
        }
        Some(Self::Bearer {
            realm: realm?,
            service,
            scopes,
        })
    }
}

/// Splits `k1="v1", k2=v2` into pairs, honouring quoted strings with `\` escapes (RFC 7230
/// §3.2.6), so that a scope like `repository:a:pull,push` is not cut at its comma.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_owned();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        while chars.next_if(|c| *c == ' ').is_some() {}
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.push((key, value));
    }
    out
}

/// The challenges of a 401 answer, in header order.
pub fn challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(Challenge::parse)
        .collect()
}

/// The `rel="next"` target of a `Link` header (RFC 8288), resolved against `base`.
/// The distribution spec uses it for tag and catalog pagination.
pub fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
    for value in headers.get_all(http::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in value.split(",") {
            let (target, params) = link.split_once(';').unwrap_or((link, ""));
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            if is_next {
                return base.join(target).ok();
            }
        }
    }
    None
}

/// The `Location` header resolved against `base` (registries answer relative paths).
pub fn location(headers: &HeaderMap, base: &Url) -> Option<Url> {
    let v = headers.get(http::header::LOCATION)?.to_str().ok()?;
    base.join(v).ok()
}

/// The byte count an upload session holds, from `Range: 0-<last>` (inclusive end). A session
/// with no bytes answers `0-0` on some registries and no header on others; both mean 0 unless
/// the end is above 0. `bytes=` prefixes are accepted.
pub fn uploaded_len(headers: &HeaderMap) -> u64 {
    let Some(v) = headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return 0;
    };
    let v = v.trim().trim_start_matches("bytes=");
    match v
        .split_once('-')
        .and_then(|(_, end)| end.parse::<u64>().ok())
    {
        Some(0) | None => 0,
        Some(end) => end + 1,
    }
}

/// The first byte of a `Content-Range: bytes <first>-<last>/<complete>` answer.
pub fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(http::header::CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// `Docker-Content-Digest`, when present and valid.
pub fn content_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DOCKER_CONTENT_DIGEST)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Content-Length`, when present.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `Content-Type` without parameters.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or(v).trim().to_owned())
}

/// `Retry-After` in delta-seconds (RFC 9110 §10.2.3). The HTTP-date form is ignored: the
/// caller's own backoff applies then.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `OCI-Chunk-Min-Length`, when the registry sets it on the upload session.
pub fn chunk_min_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(OCI_CHUNK_MIN_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The `errors[0].code` and message of a registry error body, shortened for messages.
pub fn error_summary(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body)
        && let Some(first) = e.errors.first()
    {
        return format!("{}: {}", first.code, first.message).to_lowercase();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_bearer_challenge_with_comma_in_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull,push repository:y:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scopes: vec![
                    "repository:library/x:pull,push".into(),
                    "repository:y:pull".into()
                ],
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        let c = Challenge::parse(r#"bearer realm=http://a/t, service = "s\"q""#).unwrap();
        assert!(
            matches!(c, Challenge::Bearer { realm, service: Some(s), .. } if realm == "http://a/t" && s == "s\"q")
        );
    }

    #[test]
    fn parses_link_location_range() {
        let base = Url::parse("http://127.0.0.1:5000/v2/a/tags/list?n=2").unwrap();
        let h = headers(&[("link", r#"</v2/a/tags/list?last=b&n=2>; rel="next""#)]);
        assert_eq!(
            next_link(&h, &base).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/tags/list?last=b&n=2"
        );
        assert_eq!(next_link(&headers(&[]), &base), None);
        let h = headers(&[("link", r#"<http://o/x>; rel="prev""#)]);
        assert_eq!(next_link(&h, &base), None);

        let h = headers(&[("location", "/v2/a/blobs/uploads/u1?_state=s")]);
        assert_eq!(
            location(&h, &base).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=s"
        );
        let h = headers(&[("location", "https://cdn.example/x")]);
        assert_eq!(location(&h, &base).unwrap().host_str(), Some("cdn.example"));

        assert_eq!(uploaded_len(&headers(&[("range", "0-99")])), 100);
        assert_eq!(uploaded_len(&headers(&[("range", "bytes=0-9")])), 10);
        assert_eq!(uploaded_len(&headers(&[("range", "0-0")])), 0);
        assert_eq!(uploaded_len(&headers(&[])), 0);
        assert_eq!(
            content_range_start(&headers(&[("content-range", "bytes 100-199/200")])),
            Some(100)
        );
        assert_eq!(
            content_range_start(&headers(&[("content-range", "100-199")])),
            None
        );
    }

    #[test]
    fn parses_digest_retry_after_and_errors() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(
            content_digest(&headers(&[("docker-content-digest", &d.to_string())])),
            Some(d)
        );
        assert_eq!(
            content_digest(&headers(&[("docker-content-digest", "md5:x")])),
            None
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            None
        );
        assert_eq!(
            chunk_min_length(&headers(&[("oci-chunk-min-length", "1024")])),
            Some(1024)
        );
        assert_eq!(
            content_type(&headers(&[(
                "content-type",
                "application/json; charset=utf-8"
            )])),
            Some("application/json".into())
        );
        assert_eq!(
            error_summary(
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
            ),
            "blob_unknown: blob unknown to registry"
        );
        assert_eq!(error_summary(b"  plain  "), "plain");
    }
}
