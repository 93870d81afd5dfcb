//! Faults and spec features registry 2.8.2 will not produce on demand, against small in-test
//! HTTP servers: 503/429 with `Retry-After`, a dropped connection mid-upload and mid-download,
//! a corrupted blob, a 416 on a chunk, a 202 answer to a mount, `Link` pagination, bearer
//! tokens with scopes, and no credentials across a redirect to another host.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake::{FakeServer, Req, Resp};
use common::{MemBlobs, make_image, quiet};
use rbuild_oci::{Digest, Reference};
use rbuild_registry::{BlobStatus, Client, ClientOptions, Credentials, CredentialsEnv, Error};

fn options() -> ClientOptions {
    ClientOptions::default()
        .credentials_env(CredentialsEnv::default())
        .retry_base(Duration::from_millis(10))
}

fn reference(host: &str, repo_tag: &str) -> Reference {
    format!("{host}/{repo_tag}").parse().unwrap()
}

/// Knobs of the mini registry.
#[derive(Default)]
struct Knobs {
    /// Drop the connection on the first blob PATCH.
    drop_first_patch: AtomicBool,
    /// Answer 416 to the second chunk once (as if the registry lost it).
    lose_second_chunk: AtomicBool,
    /// Answer 202 (open a session) to every mount.
    mount_202: bool,
    /// Announce `OCI-Chunk-Min-Length` on new sessions.
    min_chunk: Option<usize>,
}

/// A minimal spec-following registry: blobs, upload sessions (streamed and chunked with
/// `Content-Range` checks), mounts, manifests.
#[derive(Default)]
struct Mini {
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    uploads: Mutex<HashMap<String, Vec<u8>>>,
    manifests: Mutex<HashMap<String, (Vec<u8>, String)>>,
    next: AtomicUsize,
    patches: AtomicUsize,
    knobs: Knobs,
}

impl Mini {
    fn handle(&self, r: &Req) -> Resp {
        let path = r.path().to_owned();
        if path == "/v2/" {
            return Resp::new(200).body("{}");
        }
        if let Some((name, rest)) = path
            .strip_prefix("/v2/")
            .and_then(|p| p.split_once("/blobs/uploads/"))
        {
            return self.upload(r, name, rest);
        }
        if let Some((_, d)) = path.split_once("/blobs/") {
            return match self.blobs.lock().unwrap().get(d) {
                Some(b) => Resp::new(200)
                    .header("Docker-Content-Digest", d)
                    .body(b.clone()),
                None => Resp::new(404),
            };
        }
        if let Some((_, reference)) = path.split_once("/manifests/") {
            let mut m = self.manifests.lock().unwrap();
            return match r.method.as_str() {
                "PUT" => {
                    let d = Digest::sha256_of(&r.body).to_string();
                    let ct = r.header("content-type").unwrap_or_default().to_owned();
                    m.insert(reference.to_owned(), (r.body.clone(), ct.clone()));
                    m.insert(d.clone(), (r.body.clone(), ct));
                    Resp::new(201).header("Docker-Content-Digest", &d)
                }
                _ => match m.get(reference) {
                    Some((b, ct)) => Resp::new(200)
                        .header("Content-Type", ct)
                        .header("Docker-Content-Digest", &Digest::sha256_of(b).to_string())
                        .body(b.clone()),
                    None => Resp::new(404),
                },
            };
        }
        Resp::new(404)
    }

    fn upload(&self, r: &Req, name: &str, id: &str) -> Resp {
        let location = |id: &str| format!("/v2/{name}/blobs/uploads/{id}");
        let mut uploads = self.uploads.lock().unwrap();
        match r.method.as_str() {
            "POST" => {
                if let Some(d) = r.query("mount")
                    && !self.knobs.mount_202
                    && self.blobs.lock().unwrap().contains_key(&d)
                {
                    return Resp::new(201);
                }
                let id = self.next.fetch_add(1, Ordering::SeqCst).to_string();
                uploads.insert(id.clone(), Vec::new());
                let mut resp = Resp::new(202)
                    .header("Location", &location(&id))
                    .header("Range", "0-0");
                if let Some(min) = self.knobs.min_chunk {
                    resp = resp.header("OCI-Chunk-Min-Length", &min.to_string());
                }
                resp
            }
            "PATCH" => {
                let n = self.patches.fetch_add(1, Ordering::SeqCst);
                if n == 0 && self.knobs.drop_first_patch.load(Ordering::SeqCst) {
                    return Resp::new(0);
                }
                let Some(buf) = uploads.get_mut(id) else {
                    return Resp::new(404);
                };
                if let Some(range) = r.header("content-range") {
                    let start: usize = range.split('-').next().unwrap().parse().unwrap();
                    let second =
                        start > 0 && self.knobs.lose_second_chunk.swap(false, Ordering::SeqCst);
                    if second {
                        // Forget the first chunk: the client must ask and resend it.
                        buf.clear();
                    }
                    if start != buf.len() {
                        return Resp::new(416)
                            .header("Location", &location(id))
                            .header("Range", &format!("0-{}", buf.len().saturating_sub(1)));
                    }
                }
                buf.extend_from_slice(&r.body);
                Resp::new(202)
                    .header("Location", &location(id))
                    .header("Range", &format!("0-{}", buf.len().saturating_sub(1)))
            }
            "GET" => match uploads.get(id) {
                Some(buf) => Resp::new(204)
                    .header("Location", &location(id))
                    .header("Range", &format!("0-{}", buf.len().saturating_sub(1))),
                None => Resp::new(404),
            },
            "PUT" => {
                let Some(mut buf) = uploads.remove(id) else {
                    return Resp::new(404);
                };
                buf.extend_from_slice(&r.body);
                let want = r.query("digest").unwrap_or_default();
                if Digest::sha256_of(&buf).to_string() != want {
                    return Resp::new(400).body(r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#);
                }
                self.blobs.lock().unwrap().insert(want.clone(), buf);
                Resp::new(201).header("Docker-Content-Digest", &want)
            }
            "DELETE" => {
                uploads.remove(id);
                Resp::new(204)
            }
            _ => Resp::new(405),
        }
    }
}

fn mini(knobs: Knobs) -> (Arc<Mini>, FakeServer) {
    let m = Arc::new(Mini {
        knobs,
        ..Mini::default()
    });
    let h = Arc::clone(&m);
    let server = FakeServer::start(move |r| h.handle(r));
    (m, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_503_and_429_honouring_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let server = FakeServer::start(move |_| match c.fetch_add(1, Ordering::SeqCst) {
        0 => Resp::new(503).header("Retry-After", "1"),
        1 => Resp::new(429).header("Retry-After", "0"),
        _ => Resp::new(200).header("Content-Length", "7"),
    });
    let client = Client::new(options()).unwrap();
    let start = Instant::now();
    let size = client
        .blob_exists(&reference(&server.host(), "a:1"), &Digest::sha256_of(b"x"))
        .await
        .unwrap();
    assert_eq!(size, Some(7));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 not honoured"
    );

    // Always failing: a clear status error after the retries.
    let server = FakeServer::start(|_| Resp::new(500).body("boom"));
    let client = Client::new(options().max_retries(2)).unwrap();
    let err = client
        .blob_exists(&reference(&server.host(), "a:1"), &Digest::sha256_of(b"x"))
        .await
        .unwrap_err();
    assert_eq!(server.requests().len(), 3);
    assert!(err.to_string().contains("registry answered 500"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_restarts_after_a_dropped_connection() {
    let (m, server) = mini(Knobs {
        drop_first_patch: AtomicBool::new(true),
        ..Knobs::default()
    });
    let (image, blobs) = make_image(10, 1, 40_000);
    let client = Client::new(options().parallel(1)).unwrap();
    let target = reference(&server.host(), "app:1");
    let result = client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();
    assert!(result.manifest_pushed);
    for b in std::iter::once(&image.config).chain(&image.layers) {
        assert_eq!(
            m.blobs.lock().unwrap().get(&b.digest.to_string()),
            blobs.get(&b.digest).as_ref()
        );
    }
    let reqs = server.requests();
    let posts = reqs.iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 3, "one session per blob plus the restarted one");
    assert!(
        reqs.iter().any(|r| r.method == "DELETE"),
        "the broken session is cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_recovers_from_416() {
    let (m, server) = mini(Knobs {
        lose_second_chunk: AtomicBool::new(true),
        ..Knobs::default()
    });
    let (image, blobs) = make_image(11, 1, 100_000);
    let client = Client::new(options().chunk_size(Some(16 * 1024))).unwrap();
    let target = reference(&server.host(), "app:1");
    client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();
    let layer = &image.layers[0].digest;
    assert_eq!(
        m.blobs.lock().unwrap().get(&layer.to_string()),
        blobs.get(layer).as_ref()
    );
    let reqs = server.requests();
    assert!(
        reqs.iter()
            .any(|r| r.method == "GET" && r.path().contains("/uploads/")),
        "status asked after 416"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_answered_202_continues_on_that_session() {
    let (m, server) = mini(Knobs {
        mount_202: true,
        ..Knobs::default()
    });
    let (mut image, blobs) = make_image(12, 1, 1000);
    image.mount_from = vec![reference(&server.host(), "base:1")];
    let client = Client::new(options()).unwrap();
    let result = client
        .push_image(
            &reference(&server.host(), "app:1"),
            image.clone(),
            Arc::new(blobs.clone()),
            quiet(),
        )
        .await
        .unwrap();
    assert!(result.blobs.iter().all(|(_, s)| *s == BlobStatus::Pushed));
    let posts: Vec<Req> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(
        posts.iter().all(|r| r.query("mount").is_some()),
        "no second session opened"
    );
    assert_eq!(m.blobs.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_bytes_not_matching_the_digest_fail_clearly() {
    let (_m, server) = mini(Knobs::default());
    let (image, blobs) = make_image(13, 1, 1000);
    // Corrupt the layer in the source, keeping its digest key.
    let layer = image.layers[0].digest.clone();
    blobs
        .blobs
        .lock()
        .unwrap()
        .insert(layer.clone(), b"not the layer".to_vec());
    let client = Client::new(options()).unwrap();
    let err = client
        .push_image(
            &reference(&server.host(), "app:1"),
            image.clone(),
            Arc::new(blobs.clone()),
            quiet(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DigestMismatch { expected, .. } if *expected == layer),
        "{err}"
    );
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.path().contains("/manifests/") && r.method == "PUT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_on_pull_is_rejected_and_not_committed() {
    let (m, server) = mini(Knobs::default());
    let (image, blobs) = make_image(14, 2, 5000);
    let client = Client::new(options()).unwrap();
    let target = reference(&server.host(), "app:1");
    client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();
    let bad = image.layers[1].digest.clone();
    m.blobs
        .lock()
        .unwrap()
        .insert(bad.to_string(), vec![b'x'; 5000]);
    let sink = MemBlobs::default();
    let err = client
        .pull_image(&target, None, Arc::new(sink.clone()), quiet())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DigestMismatch { expected, .. } if *expected == bad),
        "{err}"
    );
    assert!(sink.get(&bad).is_none(), "a corrupt blob reached the sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_download_resumes_with_range() {
    let data = common::noise(15, 100_000);
    let digest = Digest::sha256_of(&data);
    let d = data.clone();
    let server = FakeServer::start(move |r| match r.header("range") {
        None => Resp::new(200).body(d.clone()).cut_after(30_000),
        Some(range) => {
            let start: usize = range
                .trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap();
            Resp::new(206)
                .header(
                    "Content-Range",
                    &format!("bytes {start}-{}/{}", d.len() - 1, d.len()),
                )
                .body(d[start..].to_vec())
        }
    });
    let client = Client::new(options()).unwrap();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let (out, n) = client
        .fetch_blob(
            &reference(&server.host(), "a:1"),
            &digest,
            Vec::new(),
            &progress,
        )
        .await
        .unwrap();
    assert_eq!(n, 100_000);
    assert_eq!(out, data);
    let ranges: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.header("range").map(String::from))
        .collect();
    assert_eq!(ranges.len(), 1);
    let resumed_at: u64 = ranges[0]
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(resumed_at > 0 && resumed_at <= 30_000, "{ranges:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_that_keeps_breaking_fails_and_commits_nothing() {
    let (image, blobs) = make_image(17, 1, 50_000);
    let layer = image.layers[0].digest.clone();
    let layer_bytes = blobs.get(&layer).unwrap();
    let manifest = image.manifest_bytes.clone();
    let config = blobs.get(&image.config.digest).unwrap();
    let config_path = format!("/v2/app/blobs/{}", image.config.digest);
    let server = FakeServer::start(move |r| {
        if r.path().contains("/manifests/") {
            Resp::new(200)
                .header("Content-Type", rbuild_oci::media_type::OCI_MANIFEST)
                .body(manifest.clone())
        } else if r.path() == config_path {
            Resp::new(200).body(config.clone())
        } else {
            // Every answer for the layer is cut short, ranged or not.
            Resp::new(200).body(layer_bytes.clone()).cut_after(1000)
        }
    });
    let client = Client::new(options().max_retries(2)).unwrap();
    let sink = MemBlobs::default();
    let err = client
        .pull_image(
            &reference(&server.host(), "app:1"),
            None,
            Arc::new(sink.clone()),
            quiet(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err}");
    assert!(
        sink.get(&layer).is_none(),
        "a partial blob reached the sink"
    );
    let layer_gets = server
        .requests()
        .iter()
        .filter(|r| r.path().ends_with(&layer.to_string()))
        .count();
    assert_eq!(layer_gets, 3, "first try plus two resumes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_follow_link_pagination() {
    let all = ["a", "b", "c", "d", "e"];
    let server = FakeServer::start(move |r| {
        let n: usize = r.query("n").and_then(|n| n.parse().ok()).unwrap_or(100);
        let last = r.query("last");
        let start = last.map_or(0, |l| all.iter().position(|t| *t == l).unwrap() + 1);
        let page: Vec<&str> = all[start..].iter().take(n).copied().collect();
        let mut resp = Resp::new(200)
            .header("Content-Type", "application/json")
            .body(serde_json::json!({"name": "app", "tags": page}).to_string());
        if start + n < all.len() {
            let next = format!(
                "</v2/app/tags/list?n={n}&last={}>; rel=\"next\"",
                page[page.len() - 1]
            );
            resp = resp.header("Link", &next);
        }
        resp
    });
    let client = Client::new(options()).unwrap();
    let repo = reference(&server.host(), "app:1");
    assert_eq!(client.tags(&repo, Some(2)).await.unwrap(), all);
    assert_eq!(server.requests().len(), 3);
    let (page, more) = client.tags_page(&repo, Some(2), Some("b")).await.unwrap();
    assert_eq!((page, more), (vec!["c".to_owned(), "d".to_owned()], true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_grow_scopes_and_are_reused() {
    let token_server = FakeServer::start(|r| {
        let scopes: Vec<String> =
            url::form_urlencoded::parse(r.target.split_once('?').map_or("", |q| q.1).as_bytes())
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
                .collect();
        let ok = r.header("authorization") == Some("Basic dTpw"); // u:p
        if !ok {
            return Resp::new(401);
        }
        Resp::new(200)
            .body(serde_json::json!({"token": scopes.join("|"), "expires_in": 300}).to_string())
    });
    let realm = format!("http://{}/token", token_server.host());
    let server = FakeServer::start(move |r| {
        let repo = r
            .path()
            .trim_start_matches("/v2/")
            .split("/blobs/")
            .next()
            .unwrap_or("")
            .to_owned();
        let needed = format!("repository:{repo}:pull");
        let granted = r
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        if granted.split('|').any(|s| s == needed) {
            Resp::new(404)
        } else {
            Resp::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="fake",scope="{needed}""#),
            )
        }
    });
    let client =
        Client::new(options().credentials(&server.host(), Credentials::password("u", "p")))
            .unwrap();
    let d = Digest::sha256_of(b"x");
    assert_eq!(
        client
            .blob_exists(&reference(&server.host(), "one:1"), &d)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        client
            .blob_exists(&reference(&server.host(), "one:1"), &d)
            .await
            .unwrap(),
        None
    );
    assert_eq!(token_server.requests().len(), 1, "the token is reused");
    assert_eq!(
        client
            .blob_exists(&reference(&server.host(), "two:1"), &d)
            .await
            .unwrap(),
        None
    );
    let last = token_server.requests().pop().unwrap();
    let scopes: Vec<String> =
        url::form_urlencoded::parse(last.target.split_once('?').unwrap().1.as_bytes())
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.into_owned())
            .collect();
    assert!(
        scopes.contains(&"repository:one:pull".to_owned()),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&"repository:two:pull".to_owned()),
        "{scopes:?}"
    );
    assert!(last.target.contains("service=fake"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_not_forwarded_on_redirect_to_another_host() {
    let data = b"blob bytes".to_vec();
    let digest = Digest::sha256_of(&data);
    let cdn = FakeServer::start(move |_| Resp::new(200).body(data.clone()));
    let cdn_url = format!("http://{}/blob", cdn.host());
    let server = FakeServer::start(move |r| {
        if r.header("authorization").is_none() {
            Resp::new(401).header("WWW-Authenticate", r#"Basic realm="x""#)
        } else {
            Resp::new(307).header("Location", &cdn_url)
        }
    });
    let client =
        Client::new(options().credentials(&server.host(), Credentials::password("u", "secret")))
            .unwrap();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let (out, _) = client
        .fetch_blob(
            &reference(&server.host(), "a:1"),
            &digest,
            Vec::new(),
            &progress,
        )
        .await
        .unwrap();
    assert_eq!(out, b"blob bytes");
    let at_cdn = cdn.requests();
    assert_eq!(at_cdn.len(), 1);
    assert!(
        at_cdn[0].header("authorization").is_none(),
        "credentials leaked to the redirect target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_honour_oci_chunk_min_length() {
    let (m, server) = mini(Knobs {
        min_chunk: Some(50_000),
        ..Knobs::default()
    });
    let (image, blobs) = make_image(16, 1, 120_000);
    let client = Client::new(options().chunk_size(Some(4096))).unwrap();
    let target = reference(&server.host(), "app:1");
    client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();
    let layer = &image.layers[0].digest;
    assert_eq!(
        m.blobs.lock().unwrap().get(&layer.to_string()),
        blobs.get(layer).as_ref()
    );
    let sizes: Vec<usize> = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.body.len())
        .collect();
    // The config is one small chunk; the layer's chunks are 50 000 bytes but the last.
    assert!(
        sizes.iter().filter(|s| **s == 50_000).count() >= 2,
        "{sizes:?}"
    );
    assert!(
        sizes
            .iter()
            .all(|s| *s >= 4096 || *s == image.config.size as usize),
        "{sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_api_and_tag_schema_fallback() {
    let subject = Digest::sha256_of(b"subject");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": Digest::sha256_of(b"sig").to_string(),
            "size": 3,
            "artifactType": "application/vnd.example.sig"
        }]
    })
    .to_string();
    let with_api = {
        let index = index.clone();
        FakeServer::start(move |r| {
            if r.path().contains("/referrers/") {
                Resp::new(200)
                    .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                    .body(index.clone())
            } else {
                Resp::new(404)
            }
        })
    };
    let tag = format!("/v2/app/manifests/sha256-{}", subject.hex());
    let without_api = FakeServer::start(move |r| {
        if r.path() == tag {
            Resp::new(200)
                .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                .body(index.clone())
        } else {
            Resp::new(404)
        }
    });
    let client = Client::new(options()).unwrap();
    for server in [&with_api, &without_api] {
        let found = client
            .referrers(&reference(&server.host(), "app:1"), &subject, None)
            .await
            .unwrap();
        assert_eq!(found.manifests().len(), 1);
    }
    assert!(
        without_api
            .requests()
            .iter()
            .any(|r| r.path().contains("/referrers/"))
    );
    // Neither API nor fallback tag: an empty index, not an error.
    let empty = FakeServer::start(|_| Resp::new(404));
    let found = client
        .referrers(&reference(&empty.host(), "app:1"), &subject, None)
        .await
        .unwrap();
    assert!(found.manifests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_tokens_use_the_oauth2_refresh_grant() {
    let token_server = FakeServer::start(|r| {
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&r.body).into_owned().collect();
        if r.method == "POST"
            && form.get("grant_type").map(String::as_str) == Some("refresh_token")
            && form.get("refresh_token").map(String::as_str) == Some("refresh-me")
        {
            Resp::new(200).body(r#"{"access_token":"granted","expires_in":60}"#)
        } else {
            Resp::new(401)
        }
    });
    let realm = format!("http://{}/token", token_server.host());
    let server = FakeServer::start(move |r| {
        if r.header("authorization") == Some("Bearer granted") {
            Resp::new(200).header("Content-Length", "5")
        } else {
            Resp::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="s""#),
            )
        }
    });
    let client = Client::new(options().credentials(
        &server.host(),
        Credentials::IdentityToken("refresh-me".into()),
    ))
    .unwrap();
    let size = client
        .blob_exists(
            &reference(&server.host(), "app:1"),
            &Digest::sha256_of(b"x"),
        )
        .await
        .unwrap();
    assert_eq!(size, Some(5));
    let form = String::from_utf8(token_server.requests()[0].body.clone()).unwrap();
    assert!(form.contains("scope=repository%3Aapp%3Apull"), "{form}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_manifest_is_refused_not_buffered() {
    let server = FakeServer::start(|_| {
        Resp::new(200)
            .header("Content-Type", rbuild_oci::media_type::OCI_MANIFEST)
            .body(vec![b' '; 5 << 20])
    });
    let client = Client::new(options()).unwrap();
    let err = client
        .get_manifest(&reference(&server.host(), "app:1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
}

/// A sink that only counts what reaches it, shared with the test.
#[derive(Debug)]
struct CountingSink(Arc<std::sync::atomic::AtomicU64>);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::SeqCst);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_blob_body_stops_one_byte_past_the_descriptor_size() {
    use std::io::{BufRead, Write};
    // A registry that answers a blob GET with no Content-Length and a close-delimited body far
    // longer than the descriptor (RFC 9112 §6.3: the body then ends when the connection does).
    // It counts what it managed to send before the client hung up.
    const ENDLESS: u64 = 256 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let server = {
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut out = stream;
            out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .unwrap();
            let chunk = vec![0u8; 64 * 1024];
            while sent.load(Ordering::SeqCst) < ENDLESS {
                if out.write_all(&chunk).is_err() {
                    return;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        })
    };
    let size = 1000u64;
    let digest = Digest::sha256_of(&vec![0u8; size as usize]);
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client = Client::new(options()).unwrap();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let err = client
        .fetch_blob_sized(
            &reference(&host, "app:1"),
            &digest,
            size,
            CountingSink(Arc::clone(&written)),
            &progress,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BlobTooLarge { size: 1000, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("registry sent more than the descriptor's size of 1000 bytes"),
        "{err}"
    );
    assert!(
        written.load(Ordering::SeqCst) <= size,
        "bytes past the size reached the sink"
    );
    server.join().unwrap();
    // The client hung up: the server could not push the whole body (socket buffers hold a
    // few MiB at most).
    let n = sent.load(Ordering::SeqCst);
    assert!(n < 64 << 20, "the client kept reading: {n} bytes sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_announced_longer_than_its_descriptor_is_refused_before_reading() {
    let server = FakeServer::start(|_| Resp::new(200).body(vec![b'x'; 10_000]));
    let digest = Digest::sha256_of(&[b'x'; 1000]);
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client = Client::new(options()).unwrap();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let err = client
        .fetch_blob_sized(
            &reference(&server.host(), "app:1"),
            &digest,
            1000,
            CountingSink(Arc::clone(&written)),
            &progress,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BlobTooLarge { size: 1000, .. }),
        "{err}"
    );
    assert_eq!(written.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_of_a_layer_longer_than_its_manifest_says_fails_and_commits_nothing() {
    let (m, server) = mini(Knobs::default());
    let (image, blobs) = make_image(21, 1, 5000);
    let client = Client::new(options()).unwrap();
    let target = reference(&server.host(), "app:1");
    client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();
    // The layer's bytes grow behind the manifest's back.
    let layer = image.layers[0].digest.clone();
    m.blobs
        .lock()
        .unwrap()
        .get_mut(&layer.to_string())
        .unwrap()
        .extend_from_slice(&[0u8; 100_000]);
    let sink = MemBlobs::default();
    let err = client
        .pull_image(&target, None, Arc::new(sink.clone()), quiet())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BlobTooLarge { digest, .. } if *digest == layer),
        "{err}"
    );
    assert!(
        sink.get(&layer).is_none(),
        "an oversized blob reached the sink"
    );
}
