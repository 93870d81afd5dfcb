//! Building distribution-spec requests, without sending them.
//!
//! Every function here is pure: it returns an [`http::Request<()>`] (method, URL, headers) that
//! the client turns into a `reqwest` request, adding the body and the `Authorization` header.
//! Endpoint paths follow the OCI distribution spec v1.1 ("Endpoints" table, end-1 … end-13).

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{Method, Request};
use rbuild_oci::{Digest, media_type};
use url::Url;

/// Every manifest media type we can read, in the order we prefer them. Registry 2.8 answers 404
/// to a manifest GET without a matching `Accept`, so it is always sent.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A registry base URL plus a repository: the prefix of every repository endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: Url,
    repository: String,
}

/// Which access a request needs, as a bearer token scope (`repository:NAME:ACTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// `pull`.
    Pull,
    /// `pull,push`.
    Push,
    /// `delete` (granted separately by some registries).
    Delete,
}

impl Access {
    /// The token scope for `repository` (docker `distribution/registry/client/auth` format).
    pub fn scope(self, repository: &str) -> String {
        let actions = match self {
            Self::Pull => "pull",
            Self::Push => "pull,push",
            Self::Delete => "delete",
        };
        format!("repository:{repository}:{actions}")
    }
}

impl Endpoint {
    /// `base` is `scheme://host[:port]` (any path is ignored); `repository` is e.g. `library/x`.
    pub fn new(base: Url, repository: &str) -> Self {
        Self {
            base,
            repository: repository.to_owned(),
        }
    }

    /// The registry base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The repository name.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    fn url(&self, tail: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(&format!("/v2/{}/{tail}", self.repository));
        u.set_query(None);
        u
    }

    /// `HEAD /v2/<name>/blobs/<digest>` (end-2).
    pub fn head_blob(&self, digest: &Digest) -> Request<()> {
        build(Method::HEAD, self.url(&format!("blobs/{digest}")))
    }

    /// `GET /v2/<name>/blobs/<digest>` (end-2), from byte `offset` on when it is not 0.
    pub fn get_blob(&self, digest: &Digest, offset: u64) -> Request<()> {
        let mut r = build(Method::GET, self.url(&format!("blobs/{digest}")));
        if offset > 0 {
            insert(&mut r, RANGE, &format!("bytes={offset}-"));
        }
        r
    }

    /// `POST /v2/<name>/blobs/uploads/` (end-4a): opens an upload session.
    pub fn start_upload(&self) -> Request<()> {
        let mut r = build(Method::POST, self.url("blobs/uploads/"));
        insert(&mut r, CONTENT_LENGTH, "0");
        r
    }

    /// `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>` (end-11). Without `from`
    /// the registry may find the blob anywhere it is allowed to (spec 1.1) or open a session.
    pub fn mount_blob(&self, digest: &Digest, from: Option<&str>) -> Request<()> {
        let mut u = self.url("blobs/uploads/");
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("mount", &digest.to_string());
            if let Some(from) = from {
                q.append_pair("from", from);
            }
        }
        let mut r = build(Method::POST, u);
        insert(&mut r, CONTENT_LENGTH, "0");
        r
    }

    /// `HEAD /v2/<name>/manifests/<reference>` (end-3).
    pub fn head_manifest(&self, reference: &str) -> Request<()> {
        let mut r = build(Method::HEAD, self.url(&format!("manifests/{reference}")));
        insert(&mut r, ACCEPT, MANIFEST_ACCEPT);
        r
    }

    /// `GET /v2/<name>/manifests/<reference>` (end-3).
    pub fn get_manifest(&self, reference: &str) -> Request<()> {
        let mut r = build(Method::GET, self.url(&format!("manifests/{reference}")));
        insert(&mut r, ACCEPT, MANIFEST_ACCEPT);
        r
    }

    /// `PUT /v2/<name>/manifests/<reference>` (end-7) with the manifest's own media type.
    pub fn put_manifest(&self, reference: &str, media_type: &str, len: usize) -> Request<()> {
        let mut r = build(Method::PUT, self.url(&format!("manifests/{reference}")));
        insert(&mut r, CONTENT_TYPE, media_type);
        insert(&mut r, CONTENT_LENGTH, &len.to_string());
        r
    }

    /// `DELETE /v2/<name>/manifests/<reference>` (end-9).
    pub fn delete_manifest(&self, reference: &str) -> Request<()> {
        build(Method::DELETE, self.url(&format!("manifests/{reference}")))
    }

    /// `DELETE /v2/<name>/blobs/<digest>` (end-10).
    pub fn delete_blob(&self, digest: &Digest) -> Request<()> {
        build(Method::DELETE, self.url(&format!("blobs/{digest}")))
    }

    /// `GET /v2/<name>/tags/list?n=<n>&last=<last>` (end-8a/8b).
    pub fn tags(&self, n: Option<usize>, last: Option<&str>) -> Request<()> {
        let mut u = self.url("tags/list");
        paginate(&mut u, n, last);
        build(Method::GET, u)
    }

    /// `GET /v2/<name>/referrers/<digest>[?artifactType=…]` (end-12a/12b).
    pub fn referrers(&self, digest: &Digest, artifact_type: Option<&str>) -> Request<()> {
        let mut u = self.url(&format!("referrers/{digest}"));
        if let Some(t) = artifact_type {
            u.query_pairs_mut().append_pair("artifactType", t);
        }
        let mut r = build(Method::GET, u);
        insert(&mut r, ACCEPT, media_type::OCI_INDEX);
        r
    }
}

/// `GET /v2/` (end-1): the API version check, and the way to learn the auth challenge.
pub fn ping(base: &Url) -> Request<()> {
    let mut u = base.clone();
    u.set_path("/v2/");
    u.set_query(None);
    build(Method::GET, u)
}

/// `GET /v2/_catalog?n=<n>&last=<last>`.
pub fn catalog(base: &Url, n: Option<usize>, last: Option<&str>) -> Request<()> {
    let mut u = base.clone();
    u.set_path("/v2/_catalog");
    u.set_query(None);
    paginate(&mut u, n, last);
    build(Method::GET, u)
}

/// `GET <url>`: follows a `Link` header or polls an upload session.
pub fn get(url: Url) -> Request<()> {
    build(Method::GET, url)
}

/// `PATCH <location>` with one chunk (end-5): `Content-Range: <start>-<end>` (inclusive end,
/// without the `bytes=` unit, as the spec writes it).
pub fn patch_chunk(location: &Url, start: u64, len: u64) -> Request<()> {
    let mut r = build(Method::PATCH, location.clone());
    insert(&mut r, CONTENT_TYPE, "application/octet-stream");
    insert(&mut r, CONTENT_LENGTH, &len.to_string());
    // A zero-length chunk has no valid range; callers never send one.
    let end = (start + len).saturating_sub(1);
    insert(&mut r, CONTENT_RANGE, &format!("{start}-{end}"));
    r
}

/// `PATCH <location>` with the whole blob as one streamed body ("streamed blob upload"),
/// without a length: reqwest sends it with chunked transfer encoding.
pub fn patch_stream(location: &Url) -> Request<()> {
    let mut r = build(Method::PATCH, location.clone());
    insert(&mut r, CONTENT_TYPE, "application/octet-stream");
    r
}

/// `PUT <location>&digest=<digest>` (end-6) closing an upload session with no more bytes.
pub fn finish_upload(location: &Url, digest: &Digest) -> Request<()> {
    let mut u = location.clone();
    u.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    let mut r = build(Method::PUT, u);
    insert(&mut r, CONTENT_LENGTH, "0");
    r
}

/// `DELETE <location>`: cancels an upload session.
pub fn cancel_upload(location: &Url) -> Request<()> {
    build(Method::DELETE, location.clone())
}

/// The token request of docker's token auth spec: `GET realm?service=…&scope=…&scope=…`.
pub fn token(realm: &Url, service: Option<&str>, scopes: &[String]) -> Request<()> {
    let mut u = realm.clone();
    {
        let mut q = u.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        for s in scopes {
            q.append_pair("scope", s);
        }
    }
    build(Method::GET, u)
}

/// The OAuth2 refresh-token request (docker `token-auth/oauth`): a form POST to the realm with
/// `grant_type=refresh_token`. Returns the request and its form body.
pub fn oauth_token(
    realm: &Url,
    service: Option<&str>,
    scopes: &[String],
    refresh_token: &str,
) -> (Request<()>, String) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token");
    form.append_pair("refresh_token", refresh_token);
    form.append_pair("client_id", "rbuild");
    if let Some(s) = service {
        form.append_pair("service", s);
    }
    if !scopes.is_empty() {
        form.append_pair("scope", &scopes.join(" "));
    }
    let body = form.finish();
    let mut r = build(Method::POST, realm.clone());
    insert(&mut r, CONTENT_TYPE, "application/x-www-form-urlencoded");
    (r, body)
}

fn paginate(u: &mut Url, n: Option<usize>, last: Option<&str>) {
    if n.is_none() && last.is_none() {
        return;
    }
    let mut q = u.query_pairs_mut();
    if let Some(n) = n {
        q.append_pair("n", &n.to_string());
    }
    if let Some(l) = last {
        q.append_pair("last", l);
    }
}

fn build(method: Method, url: Url) -> Request<()> {
    let mut r = Request::new(());
    *r.method_mut() = method;
    // A `Url` is always a valid URI; the fallback keeps this function total.
    *r.uri_mut() = url.as_str().parse().unwrap_or_default();
    r
}

fn insert(r: &mut Request<()>, name: http::header::HeaderName, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        Endpoint::new(Url::parse("http://127.0.0.1:5000").unwrap(), "a/b")
    }

    #[test]
    fn blob_and_manifest_urls() {
        let d = Digest::sha256_of(b"x");
        let r = ep().head_blob(&d);
        assert_eq!(r.method(), Method::HEAD);
        assert_eq!(
            r.uri().to_string(),
            format!("http://127.0.0.1:5000/v2/a/b/blobs/{d}")
        );
        let r = ep().get_blob(&d, 10);
        assert_eq!(r.headers()[RANGE], "bytes=10-");
        assert!(ep().get_blob(&d, 0).headers().get(RANGE).is_none());
        let r = ep().get_manifest("v1");
        assert_eq!(r.uri().path(), "/v2/a/b/manifests/v1");
        assert!(
            r.headers()[ACCEPT]
                .to_str()
                .unwrap()
                .contains(media_type::DOCKER_MANIFEST)
        );
        let r = ep().put_manifest("v1", media_type::OCI_MANIFEST, 42);
        assert_eq!(r.headers()[CONTENT_TYPE], media_type::OCI_MANIFEST);
        assert_eq!(r.headers()[CONTENT_LENGTH], "42");
    }

    #[test]
    fn mount_and_pagination_queries() {
        let d = Digest::sha256_of(b"x");
        let r = ep().mount_blob(&d, Some("other/repo"));
        assert_eq!(r.method(), Method::POST);
        assert_eq!(
            r.uri().query().unwrap(),
            format!("mount=sha256%3A{}&from=other%2Frepo", d.hex())
        );
        let r = ep().tags(Some(2), Some("v1"));
        assert_eq!(
            r.uri().path_and_query().unwrap(),
            "/v2/a/b/tags/list?n=2&last=v1"
        );
        assert_eq!(ep().tags(None, None).uri().query(), None);
        let base = Url::parse("https://r.example").unwrap();
        assert_eq!(
            catalog(&base, Some(5), None).uri().to_string(),
            "https://r.example/v2/_catalog?n=5"
        );
        assert_eq!(ping(&base).uri().to_string(), "https://r.example/v2/");
    }

    #[test]
    fn upload_session_requests() {
        let loc = Url::parse("http://h/v2/a/blobs/uploads/uuid?_state=abc").unwrap();
        let r = patch_chunk(&loc, 100, 50);
        assert_eq!(r.headers()[CONTENT_RANGE], "100-149");
        assert_eq!(r.headers()[CONTENT_LENGTH], "50");
        let d = Digest::sha256_of(b"x");
        let r = finish_upload(&loc, &d);
        assert_eq!(
            r.uri().query().unwrap(),
            format!("_state=abc&digest=sha256%3A{}", d.hex())
        );
        assert_eq!(cancel_upload(&loc).method(), Method::DELETE);
    }

    #[test]
    fn token_requests() {
        let realm = Url::parse("https://auth.example/token").unwrap();
        let scopes = vec![Access::Pull.scope("a"), Access::Push.scope("b")];
        let r = token(&realm, Some("reg"), &scopes);
        assert_eq!(
            r.uri().query().unwrap(),
            "service=reg&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull%2Cpush"
        );
        let (r, body) = oauth_token(&realm, Some("reg"), &scopes, "tok");
        assert_eq!(r.method(), Method::POST);
        assert!(body.starts_with("grant_type=refresh_token&refresh_token=tok"));
        assert!(body.contains("scope=repository%3Aa%3Apull+repository%3Ab%3Apull%2Cpush"));
    }
}
