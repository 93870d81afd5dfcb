//! Manifests (raw bytes kept), platforms, tags, catalog and referrers.

use http::StatusCode;
use rbuild_oci::oci_spec::image::ImageIndex;
use rbuild_oci::{Digest, Reference, media_type};

use crate::body::{MAX_DOCUMENT, read_limited};
use crate::client::{Attempt, Client};
use crate::error::{Error, Result};
use crate::operation::Ctx;
use crate::request::{self, Access};
use crate::response;

/// A manifest as the registry stores it: the exact bytes (the digest is over them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The raw JSON bytes.
    pub bytes: Vec<u8>,
    /// The media type (from `Content-Type`, else the document's `mediaType`).
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

/// What `HEAD` on a manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`.
    pub digest: Digest,
    /// `Content-Length`.
    pub size: u64,
    /// `Content-Type`.
    pub media_type: String,
}

pub use rbuild_oci::{Platform, PlatformError};

/// Why [`select_platform`] could not read an image index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectPlatformError {
    /// The bytes are not an image index (image-spec `image-index.md`).
    #[error("bad image index")]
    ParseIndex(#[source] serde_json::Error),
    /// The manifest chosen for the platform has a digest outside the spec's grammar.
    #[error("bad digest in the image index entry for {platform}")]
    Digest {
        /// The platform the entry is for.
        platform: String,
        /// The digest parser's error.
        #[source]
        source: rbuild_oci::DigestError,
    },
}

/// Picks the manifest for `platform` out of an index's bytes: `(digest, media type)`.
/// Entries without a platform (attestations, `unknown/unknown`) never match.
///
/// # Errors
///
/// [`SelectPlatformError`] when the bytes are not an image index or the matching entry's
/// digest is invalid.
pub fn select_platform(
    index: &[u8],
    platform: &Platform,
) -> Result<Option<(Digest, String)>, SelectPlatformError> {
    let index: ImageIndex =
        serde_json::from_slice(index).map_err(SelectPlatformError::ParseIndex)?;
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let arch = p.architecture().to_string();
        let os = p.os().to_string();
        if platform.matches(&os, &arch, p.variant().as_deref()) {
            let digest =
                Digest::try_from(m.digest()).map_err(|source| SelectPlatformError::Digest {
                    platform: platform.to_string(),
                    source,
                })?;
            return Ok(Some((digest, m.media_type().to_string())));
        }
    }
    Ok(None)
}

/// The platforms an index's entries name (`os/arch[/variant]`), in order; entries without
/// one (attestations) are left out. Unreadable bytes give an empty list.
pub fn index_platforms(index: &[u8]) -> Vec<String> {
    let Ok(index) = serde_json::from_slice::<ImageIndex>(index) else {
        return Vec::new();
    };
    index
        .manifests()
        .iter()
        .filter_map(|m| m.platform().as_ref())
        .filter(|p| p.os().to_string() != "unknown")
        .map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect()
}

/// Reads a JSON document of at most [`MAX_DOCUMENT`] bytes.
async fn read_document(ctx: &Ctx, resp: reqwest::Response) -> Result<Vec<u8>> {
    let (bytes, complete) = read_limited(resp, MAX_DOCUMENT)
        .await
        .map_err(|e| ctx.http(e))?;
    if complete {
        Ok(bytes)
    } else {
        Err(ctx.protocol("document larger than 4 MiB"))
    }
}

/// The media type a manifest document declares in its `mediaType` field.
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<M>(bytes).ok()?.media_type
}

impl Client {
    /// `HEAD` the manifest: `None` when the tag or digest does not exist.
    ///
    /// # Errors
    ///
    /// Auth, transport and status errors; a registry that answers without a valid
    /// `Docker-Content-Digest`.
    pub async fn head_manifest(&self, reference: &Reference) -> Result<Option<ManifestHead>> {
        self.head_manifest_as("inspect", reference).await
    }

    pub(crate) async fn head_manifest_as(
        &self,
        operation: &'static str,
        reference: &Reference,
    ) -> Result<Option<ManifestHead>> {
        let ctx = Ctx::new(operation, reference);
        let ep = self.endpoint(reference)?;
        let tag = reference.tag_or_digest();
        let resp = self
            .send(&ctx, Access::Pull, &[], true, &mut || {
                Ok(Attempt::bare(ep.head_manifest(&tag)))
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let h = resp.headers();
                let digest = response::content_digest(h)
                    .or_else(|| reference.digest().cloned())
                    .ok_or_else(|| ctx.protocol("manifest HEAD without Docker-Content-Digest"))?;
                Ok(Some(ManifestHead {
                    digest,
                    size: response::content_length(h).unwrap_or(0),
                    media_type: response::content_type(h).unwrap_or_default(),
                }))
            }
            _ => Err(ctx.status_error(resp, &format!("manifest {tag}")).await),
        }
    }

    /// The digest `reference` points at now (a HEAD, no body): what a deployer pins.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the tag does not exist; auth, transport and status errors.
    pub async fn resolve_digest(&self, reference: &Reference) -> Result<Digest> {
        match self.head_manifest(reference).await? {
            Some(h) => Ok(h.digest),
            None => Err(Error::NotFound {
                operation: "inspect",
                target: reference.name(),
                what: format!("manifest {}", reference.tag_or_digest()),
            }),
        }
    }

    /// `GET` the manifest, keeping its bytes. When `reference` pins a digest, the bytes are
    /// checked against it.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::DigestMismatch`], auth, transport and status errors.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<Manifest> {
        let ctx = Ctx::new("pull", reference);
        let ep = self.endpoint(reference)?;
        let tag = reference.tag_or_digest();
        let resp = self
            .send(&ctx, Access::Pull, &[], true, &mut || {
                Ok(Attempt::bare(ep.get_manifest(&tag)))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(ctx.status_error(resp, &format!("manifest {tag}")).await);
        }
        let header_type = response::content_type(resp.headers());
        let bytes = read_document(&ctx, resp).await?;
        let digest = Digest::sha256_of(&bytes);
        if let Some(expected) = reference.digest()
            && expected != &digest
        {
            return Err(Error::DigestMismatch {
                operation: ctx.operation,
                target: ctx.target(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        let media_type = header_type
            .filter(|t| media_type::is_manifest(t) || media_type::is_index(t))
            .or_else(|| declared_media_type(&bytes))
            .ok_or_else(|| ctx.protocol("manifest without a media type"))?;
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// `PUT` the manifest bytes as they are under `reference`'s tag (or digest). Returns the
    /// digest (computed locally; the registry's `Docker-Content-Digest` must agree).
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] when the registry reports another digest; auth, transport and
    /// status errors (e.g. 400 `MANIFEST_BLOB_UNKNOWN`).
    pub async fn put_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let ctx = Ctx::new("push to", reference);
        let ep = self.endpoint(reference)?;
        let tag = reference.tag_or_digest();
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .send(&ctx, Access::Push, &[], true, &mut || {
                Ok(Attempt {
                    request: ep.put_manifest(&tag, media_type, body.len()),
                    body: Some(reqwest::Body::from(body.clone())),
                })
            })
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(ctx.status_error(resp, &format!("manifest {tag}")).await);
        }
        let digest = Digest::sha256_of(bytes);
        if let Some(theirs) = response::content_digest(resp.headers())
            && theirs != digest
        {
            return Err(Error::DigestMismatch {
                operation: ctx.operation,
                target: ctx.target(),
                expected: digest,
                actual: theirs,
            });
        }
        Ok(digest)
    }

    /// Deletes a manifest. Registries delete by digest only (distribution spec end-9), so a
    /// tag is first resolved with a HEAD.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], auth (deletion may need a `delete` scope), transport and status
    /// errors (405 when deletion is disabled).
    pub async fn delete_manifest(&self, reference: &Reference) -> Result<Digest> {
        let digest = match reference.digest() {
            Some(d) => d.clone(),
            None => self.resolve_digest(reference).await?,
        };
        let ctx = Ctx::new("delete", reference);
        let ep = self.endpoint(reference)?;
        let target = digest.to_string();
        let resp = self
            .send(
                &ctx,
                Access::Delete,
                &[Access::Push.scope(reference.repository())],
                true,
                &mut || Ok(Attempt::bare(ep.delete_manifest(&target))),
            )
            .await?;
        if resp.status().is_success() {
            Ok(digest)
        } else {
            Err(ctx.status_error(resp, &format!("manifest {target}")).await)
        }
    }

    /// All tags of `repo`'s repository, following `Link` pagination with pages of `page_size`
    /// (`n`) when given. Registry 2.8 ignores `n` on tags and returns everything unsorted.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown repository; auth, transport and status errors.
    pub async fn tags(&self, repo: &Reference, page_size: Option<usize>) -> Result<Vec<String>> {
        let ctx = Ctx::new("list tags of", repo);
        let ep = self.endpoint(repo)?;
        self.paginate(&ctx, ep.tags(page_size, None), "tags").await
    }

    /// One page of tags: `n` tags after `last` (spec end-8b), and whether a `Link` says there
    /// are more.
    ///
    /// # Errors
    ///
    /// As [`tags`](Self::tags).
    pub async fn tags_page(
        &self,
        repo: &Reference,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool)> {
        let ctx = Ctx::new("list tags of", repo);
        let ep = self.endpoint(repo)?;
        let req = ep.tags(n, last);
        let (items, next) = self.list_page(&ctx, req, "tags").await?;
        Ok((items, next.is_some()))
    }

    /// Repository names of the registry (`/v2/_catalog`, paginated).
    ///
    /// # Errors
    ///
    /// Auth (catalog needs `registry:catalog:*`), transport and status errors.
    pub async fn catalog(&self, registry: &str, page_size: Option<usize>) -> Result<Vec<String>> {
        let ctx = Ctx {
            operation: "list repositories of",
            registry: registry.to_owned(),
            repository: String::new(),
        };
        let base = self.base_url(registry)?;
        self.paginate(
            &ctx,
            request::catalog(&base, page_size, None),
            "repositories",
        )
        .await
    }

    async fn paginate(
        &self,
        ctx: &Ctx,
        first: http::Request<()>,
        field: &str,
    ) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(req) = next.take() {
            let (items, link) = self.list_page(ctx, req, field).await?;
            all.extend(items);
            pages += 1;
            // A registry that keeps answering the same Link would loop forever.
            if pages > 10_000 {
                return Err(ctx.protocol("more than 10000 pages"));
            }
            next = link.map(request::get);
        }
        Ok(all)
    }

    async fn list_page(
        &self,
        ctx: &Ctx,
        req: http::Request<()>,
        field: &str,
    ) -> Result<(Vec<String>, Option<url::Url>)> {
        let url =
            url::Url::parse(&req.uri().to_string()).map_err(|e| ctx.protocol(e.to_string()))?;
        let scope = if ctx.repository.is_empty() {
            vec!["registry:catalog:*".to_owned()]
        } else {
            Vec::new()
        };
        let resp = self
            .send(ctx, Access::Pull, &scope, true, &mut || {
                let mut r = http::Request::new(());
                *r.method_mut() = req.method().clone();
                *r.uri_mut() = req.uri().clone();
                *r.headers_mut() = req.headers().clone();
                Ok(Attempt::bare(r))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(ctx.status_error(resp, field).await);
        }
        let link = response::next_link(resp.headers(), &url);
        let body = read_document(ctx, resp).await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ctx.protocol(format!("bad {field} list: {e}")))?;
        let items = v
            .get(field)
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok((items, link))
    }

    /// Manifests that refer to `digest` (their `subject`), as an image index. Uses the
    /// referrers API, and falls back to the `sha256-<hex>` tag schema (distribution spec 1.1,
    /// "Referrers Tag Schema") when the registry does not implement it (404).
    ///
    /// # Errors
    ///
    /// Auth, transport and status errors.
    pub async fn referrers(
        &self,
        repo: &Reference,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ImageIndex> {
        let ctx = Ctx::new("list referrers of", repo);
        let ep = self.endpoint(repo)?;
        let resp = self
            .send(&ctx, Access::Pull, &[], true, &mut || {
                Ok(Attempt::bare(ep.referrers(digest, artifact_type)))
            })
            .await?;
        let parse = |bytes: &[u8]| -> Result<ImageIndex> {
            serde_json::from_slice(bytes)
                .map_err(|e| ctx.protocol(format!("bad referrers index: {e}")))
        };
        if resp.status().is_success() {
            let body = read_document(&ctx, resp).await?;
            return parse(&body);
        }
        if resp.status() != StatusCode::NOT_FOUND {
            return Err(ctx.status_error(resp, "referrers").await);
        }
        let fallback = repo.with_tag(&format!("sha256-{}", digest.hex()));
        match self.get_manifest(&fallback).await {
            Ok(m) => parse(&m.bytes),
            Err(e) if e.is_not_found() => parse(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_platforms() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!("linux/amd64".parse::<Platform>().unwrap().variant, None);
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//x".parse::<Platform>().is_err());
        assert!(p.matches("linux", "arm64", None));
        assert!(!p.matches("linux", "arm64", Some("v7")));
        assert!(!p.matches("windows", "arm64", None));
    }

    #[test]
    fn selects_platform_from_index_skipping_attestations() {
        let d1 = Digest::sha256_of(b"amd");
        let d2 = Digest::sha256_of(b"arm");
        let d3 = Digest::sha256_of(b"att");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d3}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d1}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{d2}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        let amd = select_platform(index.as_bytes(), &"linux/amd64".parse().unwrap()).unwrap();
        assert_eq!(amd, Some((d1, media_type::OCI_MANIFEST.to_owned())));
        let arm = select_platform(index.as_bytes(), &"linux/arm64".parse().unwrap()).unwrap();
        assert_eq!(arm, Some((d2, media_type::DOCKER_MANIFEST.to_owned())));
        assert_eq!(
            select_platform(index.as_bytes(), &"linux/s390x".parse().unwrap()).unwrap(),
            None
        );
        assert!(matches!(
            select_platform(b"{}", &Platform::host()),
            Err(SelectPlatformError::ParseIndex(_))
        ));
        let md5 = r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"md5:d41d8cd98f00b204e9800998ecf8427e","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let err = select_platform(md5.as_bytes(), &"linux/amd64".parse().unwrap()).unwrap_err();
        assert!(
            matches!(&err, SelectPlatformError::Digest { platform, .. } if platform == "linux/amd64"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "bad digest in the image index entry for linux/amd64"
        );
    }
}
