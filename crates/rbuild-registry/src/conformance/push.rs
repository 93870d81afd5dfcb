//! The push workflow: monolithic (POST then PUT, single POST), chunked uploads with their
//! `Range`/`Location` bookkeeping and 416s, cancel, wrong digests, cross-repository mounts,
//! manifests by tag and digest, and `subject` (spec §Push, end-4 … end-7, end-11, end-13/14).

use bytes::Bytes;
use http::Method;
use rbuild_oci::{Digest, media_type};
use serde_json::json;
use url::Url;

use super::{
    Cx, Exchange, LAYER_TYPE, Outcome, body_is, config_blob, content_digest, descriptor,
    error_answer, image_manifest, layer_blob, need, status,
};
use crate::request::{Access, MANIFEST_ACCEPT};

const POST_PUT: &str = "§POST then PUT";
const CHUNKED: &str = "§Pushing a blob in chunks";
const MOUNT: &str = "§Mounting a blob from another repository";
const MANIFESTS: &str = "§Pushing Manifests";

/// The largest `OCI-Chunk-Min-Length` the run honours (a larger one fails the check).
const MAX_CHUNK: usize = 64 << 20;

/// Runs the push checks.
pub(crate) async fn run(cx: &mut Cx<'_>) {
    monolithic(cx).await;
    chunked(cx).await;
    rejections(cx).await;
    mounts(cx).await;
    manifests(cx).await;
}

fn with_digest(url: &Url, digest: &Digest) -> Url {
    let mut u = url.clone();
    u.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    u
}

/// Opens an upload session (not a check), returning its `Location`.
async fn open_session(cx: &Cx<'_>, repo: &str) -> Result<(Exchange, Url), String> {
    let x = cx
        .send(
            cx.req(Method::POST, repo, "blobs/uploads/")
                .header("content-length", "0"),
        )
        .await?;
    status(&x, &[202])?;
    let url = cx.location(&x)?;
    Ok((x, url))
}

/// Cancels a session, ignoring the answer (clients SHOULD ignore failures, §Cancel). A
/// `Location` that is not an upload URL (a 202 where 201 was due points at the blob) is left
/// alone: deleting it would delete the blob.
async fn cancel(cx: &Cx<'_>, repo: &str, url: &Url) {
    if !url.path().contains("/blobs/uploads/") {
        return;
    }
    let _ = cx.send(cx.req_url(Method::DELETE, repo, url.clone())).await;
}

/// `Range: 0-<end>` of a chunk or status answer must name `end` (inclusive).
fn range_is(x: &Exchange, end: usize) -> Result<(), String> {
    let got = need(x, "range")?;
    let want = format!("0-{end}");
    if got.trim().trim_start_matches("bytes=") != want {
        return Err(format!(
            "Range is `{got}`, expected `{want}`\n{}",
            x.transcript()
        ));
    }
    Ok(())
}

async fn monolithic(cx: &mut Cx<'_>) {
    let ns = cx.ns().to_owned();
    let blob = layer_blob(cx, "push-monolithic", 2048);
    let digest = Digest::sha256_of(&blob);
    let mut session = None;
    let o = async {
        let (_, url) = open_session(cx, &ns).await?;
        session = Some(url);
        Ok(String::new())
    }
    .await;
    cx.record(
        "POST upload session answers 202 with Location",
        &format!("{POST_PUT}, end-4a"),
        o,
    );
    let mut blob_location = None;
    match session {
        Some(url) => {
            let o = async {
                let x = cx
                    .send(
                        cx.req_url(Method::PUT, &ns, with_digest(&url, &digest))
                            .header("content-type", "application/octet-stream")
                            .body(blob.clone()),
                    )
                    .await?;
                status(&x, &[201])?;
                blob_location = Some(cx.location(&x)?);
                Ok(String::new())
            }
            .await;
            cx.pushed_blob(&ns, &digest);
            cx.record(
                "PUT upload with digest answers 201 with Location",
                &format!("{POST_PUT}, end-6"),
                o,
            );
        }
        None => cx.skip(
            "PUT upload with digest answers 201 with Location",
            &format!("{POST_PUT}, end-6"),
            "no upload session",
        ),
    }
    match blob_location {
        Some(url) => {
            let o = async {
                let x = cx.send(cx.req_url(Method::GET, &ns, url)).await?;
                status(&x, &[200])?;
                body_is(&x, &blob)?;
                Ok(String::new())
            }
            .await;
            cx.record("uploaded blob is served at its Location", POST_PUT, o);
        }
        None => cx.skip(
            "uploaded blob is served at its Location",
            POST_PUT,
            "no blob Location to follow",
        ),
    }

    let blob = layer_blob(cx, "push-single-post", 2100);
    let digest = Digest::sha256_of(&blob);
    let o = async {
        let x = cx
            .send(
                cx.req(
                    Method::POST,
                    &ns,
                    &format!("blobs/uploads/?digest={digest}"),
                )
                .header("content-type", "application/octet-stream")
                .body(blob.clone()),
            )
            .await?;
        status(&x, &[201, 202])?;
        let url = cx.location(&x)?;
        if x.status.as_u16() == 201 {
            return Ok(String::new());
        }
        // "Registries that do not support single request monolithic uploads SHOULD return a
        // 202 Accepted status code and Location header": the client then PUTs.
        let put = cx
            .send(
                cx.req_url(Method::PUT, &ns, with_digest(&url, &digest))
                    .header("content-type", "application/octet-stream")
                    .body(blob.clone()),
            )
            .await?;
        status(&put, &[201])?;
        cx.location(&put)?;
        Ok("single POST not supported: 202 and a session, completed with PUT".to_owned())
    }
    .await;
    cx.pushed_blob(&ns, &digest);
    cx.record(
        "POST with digest (single request) answers 201 with Location, or 202 with a session",
        "§Single POST, end-4b",
        o,
    );
}

async fn chunked(cx: &mut Cx<'_>) {
    let ns = cx.ns().to_owned();
    let names = [
        (
            "POST chunked upload session answers 202 with Location and a usable OCI-Chunk-Min-Length",
            "end-4a",
        ),
        (
            "PATCH first chunk answers 202 with Location and Range 0-<end>",
            "end-5",
        ),
        (
            "GET upload session answers 204 with Location and Range 0-<end>",
            "end-13",
        ),
        (
            "PATCH next chunk answers 202 with Location and Range 0-<end>",
            "end-5",
        ),
        (
            "PUT with the final chunk answers 201 with Location, and the blob is whole",
            "end-6",
        ),
    ];
    let mut chunk = 1024usize;
    let mut session = None;
    let o = async {
        let (x, url) = open_session(cx, &ns).await?;
        if let Some(v) = x.header("oci-chunk-min-length") {
            let min: usize = v.trim().parse().map_err(|_| {
                format!(
                    "OCI-Chunk-Min-Length `{v}` is not a byte count\n{}",
                    x.transcript()
                )
            })?;
            if min > MAX_CHUNK {
                return Err(format!(
                    "OCI-Chunk-Min-Length {min} is above the {MAX_CHUNK} bytes this run sends\n{}",
                    x.transcript()
                ));
            }
            chunk = chunk.max(min);
        }
        session = Some(url);
        Ok(String::new())
    }
    .await;
    cx.record(names[0].0, &format!("{CHUNKED}, {}", names[0].1), o);
    let Some(mut url) = session else {
        for (name, id) in &names[1..] {
            cx.skip(name, &format!("{CHUNKED}, {id}"), "no upload session");
        }
        return;
    };
    // Two chunks of at least the minimum, the rest (shorter, as the final chunk may be) in
    // the closing PUT.
    let blob = layer_blob(cx, "push-chunked", 2 * chunk + 300);
    let digest = Digest::sha256_of(&blob);
    let mut steps_ok = true;
    for (i, (name, id)) in [names[1], names[3]].into_iter().enumerate() {
        let start = i * chunk;
        let end = start + chunk - 1;
        let o = async {
            let x = cx
                .send(
                    cx.req_url(Method::PATCH, &ns, url.clone())
                        .header("content-type", "application/octet-stream")
                        .header("content-range", format!("{start}-{end}"))
                        .body(blob.slice(start..=end)),
                )
                .await?;
            status(&x, &[202])?;
            // "Each consecutive chunk upload SHOULD use the <blob-push-location> provided in
            // the response to the previous chunk upload."
            let next = cx.location(&x);
            if let Ok(next) = &next {
                url = next.clone();
            }
            range_is(&x, end)?;
            next?;
            Ok(String::new())
        }
        .await;
        steps_ok &= o.is_ok();
        cx.record(name, &format!("{CHUNKED}, {id}"), o);
        if i == 0 {
            let o = async {
                let x = cx.send(cx.req_url(Method::GET, &ns, url.clone())).await?;
                status(&x, &[204])?;
                cx.location(&x)?;
                range_is(&x, end)?;
                Ok(String::new())
            }
            .await;
            cx.record(names[2].0, &format!("{CHUNKED}, {}", names[2].1), o);
        }
    }
    let start = 2 * chunk;
    let o = async {
        let x = cx
            .send(
                cx.req_url(Method::PUT, &ns, with_digest(&url, &digest))
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{start}-{}", blob.len() - 1))
                    .body(blob.slice(start..)),
            )
            .await?;
        status(&x, &[201])?;
        cx.location(&x)?;
        let got = cx
            .send(cx.req(Method::GET, &ns, &format!("blobs/{digest}")))
            .await?;
        status(&got, &[200])?;
        body_is(&got, &blob)?;
        Ok(String::new())
    }
    .await;
    cx.pushed_blob(&ns, &digest);
    let o = match o {
        Err(e) if !steps_ok => Err(format!("(after a failed chunk step)\n{e}")),
        o => o,
    };
    cx.record(names[4].0, &format!("{CHUNKED}, {}", names[4].1), o);
}

/// Out-of-order and repeated chunks, cancel, a wrong digest: each in a session of its own, so
/// that a registry accepting a bad chunk spoils no other check.
async fn rejections(cx: &mut Cx<'_>) {
    let ns = cx.ns().to_owned();
    let blob = layer_blob(cx, "push-rejected", 2048);
    let mut cancel_url = None;
    let o = async {
        let (_, url) = open_session(cx, &ns).await.map_err(setup)?;
        cancel_url = Some(url.clone());
        // "The first chunk's range MUST begin with 0": a chunk from byte 1024 on is out of order.
        let x = cx
            .send(
                cx.req_url(Method::PATCH, &ns, url)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", "1024-2047")
                    .body(blob.slice(1024..)),
            )
            .await?;
        // A registry that took the chunk moved the session: cancel it where it now is
        // ("the URL obtained from the preceding POST or PATCH request").
        if x.status.is_success()
            && let Ok(next) = cx.location(&x)
        {
            cancel_url = Some(next);
        }
        status(&x, &[416]).map(|()| String::new())
    }
    .await;
    cx.record(
        "PATCH out-of-order chunk answers 416",
        &format!("{CHUNKED}, end-5"),
        o,
    );
    match cancel_url {
        Some(url) => {
            let o = async {
                let x = cx
                    .send(
                        cx.req_url(Method::DELETE, &ns, url)
                            .header("content-length", "0"),
                    )
                    .await?;
                status(&x, &[204]).map(|()| String::new())
            }
            .await;
            cx.record(
                "DELETE upload session answers 204",
                "§Cancel a blob upload, end-14",
                o,
            );
        }
        None => cx.skip(
            "DELETE upload session answers 204",
            "§Cancel a blob upload, end-14",
            "no upload session",
        ),
    }

    let o = async {
        let (_, url) = open_session(cx, &ns).await.map_err(setup)?;
        let first = cx
            .send(
                cx.req_url(Method::PATCH, &ns, url.clone())
                    .header("content-type", "application/octet-stream")
                    .header("content-range", "0-1023")
                    .body(blob.slice(..1024)),
            )
            .await?;
        status(&first, &[202]).map_err(|e| format!("the first chunk was refused: {e}"))?;
        let url = cx.location(&first).unwrap_or(url);
        let again = cx
            .send(
                cx.req_url(Method::PATCH, &ns, url.clone())
                    .header("content-type", "application/octet-stream")
                    .header("content-range", "0-1023")
                    .body(blob.slice(..1024)),
            )
            .await;
        cancel(cx, &ns, &url).await;
        status(&again?, &[416]).map(|()| String::new())
    }
    .await;
    cx.record(
        "PATCH repeating the previous chunk answers 416",
        &format!("{CHUNKED}, end-5"),
        o,
    );

    let o = async {
        let (_, url) = open_session(cx, &ns).await.map_err(setup)?;
        let wrong = Digest::sha256_of(b"not the uploaded bytes");
        let x = cx
            .send(
                cx.req_url(Method::PUT, &ns, with_digest(&url, &wrong))
                    .header("content-type", "application/octet-stream")
                    .body(blob.clone()),
            )
            .await;
        cancel(cx, &ns, &url).await;
        error_answer(&x?, &[400], Some("DIGEST_INVALID"))
    }
    .await;
    cx.record(
        "PUT upload with a wrong digest answers 400 DIGEST_INVALID",
        "§Pushing blobs, end-6, code-4",
        o,
    );
}

fn setup(e: String) -> String {
    format!("setup: no upload session: {e}")
}

async fn mounts(cx: &mut Cx<'_>) {
    let ns = cx.ns().to_owned();
    let cross = cx.s.cross.clone();
    let blob = layer_blob(cx, "push-mount", 1500);
    let other = layer_blob(cx, "push-mount-nofrom", 1500);
    let names = [
        "mount from another repository answers 201 with Location",
        "mounted blob is served in the target repository",
        "mount of an unknown blob answers 202 with an upload session",
        "mount without from answers 201, or 202 with an upload session",
    ];
    let setup = async {
        let d = cx.ensure_blob(&ns, &blob).await?;
        let o = cx.ensure_blob(&ns, &other).await?;
        Ok::<_, String>((d, o))
    }
    .await;
    let (digest, other_digest) = match setup {
        Ok(d) => d,
        Err(e) => {
            super::setup_failed(cx, e, &names.map(|n| (n, MOUNT)));
            return;
        }
    };
    let o = async {
        let x = cx
            .send(
                cx.req(
                    Method::POST,
                    &cross,
                    &format!("blobs/uploads/?mount={digest}&from={ns}"),
                )
                .header("content-length", "0")
                .scope(Access::Pull.scope(&ns)),
            )
            .await?;
        if x.status.as_u16() == 202
            && let Ok(url) = cx.location(&x)
        {
            cancel(cx, &cross, &url).await;
        }
        status(&x, &[201])?;
        cx.location(&x)?;
        Ok(String::new())
    }
    .await;
    cx.pushed_blob(&cross, &digest);
    cx.record(names[0], &format!("{MOUNT}, end-11"), o);
    let o = async {
        let x = cx
            .send(cx.req(Method::GET, &cross, &format!("blobs/{digest}")))
            .await?;
        status(&x, &[200])?;
        body_is(&x, &blob)?;
        Ok(String::new())
    }
    .await;
    cx.record(names[1], MOUNT, o);

    let unknown = Digest::sha256_of(format!("unmountable-{}", cx.s.run_id).as_bytes());
    let o = async {
        let x = cx
            .send(
                cx.req(
                    Method::POST,
                    &cross,
                    &format!("blobs/uploads/?mount={unknown}&from={ns}"),
                )
                .header("content-length", "0")
                .scope(Access::Pull.scope(&ns)),
            )
            .await?;
        status(&x, &[202])?;
        let url = cx.location(&x)?;
        cancel(cx, &cross, &url).await;
        Ok(String::new())
    }
    .await;
    cx.record(names[2], &format!("{MOUNT}, end-11"), o);

    let o = async {
        let x = cx
            .send(
                cx.req(
                    Method::POST,
                    &cross,
                    &format!("blobs/uploads/?mount={other_digest}"),
                )
                .header("content-length", "0"),
            )
            .await?;
        status(&x, &[201, 202])?;
        let url = cx.location(&x)?;
        if x.status.as_u16() == 202 {
            cancel(cx, &cross, &url).await;
            return Ok("202: the registry does not mount without `from` (it MAY)".to_owned());
        }
        Ok("201: mounted without `from`".to_owned())
    }
    .await;
    cx.pushed_blob(&cross, &other_digest);
    cx.record(names[3], MOUNT, o);
}

async fn manifests(cx: &mut Cx<'_>) {
    let ns = cx.ns().to_owned();
    let names = [
        (
            "PUT manifest by tag answers 201 with Location and Docker-Content-Digest",
            "§Pushing Manifests, end-7a",
        ),
        ("pushed manifest is stored byte for byte", MANIFESTS),
        (
            "PUT manifest by digest, without layers, answers 201 with Location and Docker-Content-Digest",
            "§Pushing Manifests, end-7a",
        ),
        (
            "PUT manifest with an unknown blob answers 400 MANIFEST_BLOB_UNKNOWN, or is accepted",
            "§Push, code-5",
        ),
        (
            "PUT manifest whose subject does not exist answers 201",
            "§Push",
        ),
        (
            "PUT manifest with subject answers OCI-Subject",
            "§Pushing Manifests with Subject",
        ),
    ];
    let config = config_blob(cx, "push");
    let empty_config = config_blob(cx, "push-empty");
    let layer = layer_blob(cx, "push-layer", 1200);
    let setup = async {
        cx.ensure_blob(&ns, &config).await?;
        cx.ensure_blob(&ns, &empty_config).await?;
        cx.ensure_blob(&ns, &layer).await?;
        Ok::<_, String>(())
    }
    .await;
    if let Err(e) = setup {
        super::setup_failed(cx, e, &names);
        return;
    }
    let manifest = image_manifest(
        descriptor(media_type::OCI_CONFIG, &config),
        vec![descriptor(LAYER_TYPE, &layer)],
        None,
    );
    let digest = Digest::sha256_of(&manifest);
    let tag = cx.tag("push");
    let o = put_manifest(cx, &ns, &tag, &manifest).await;
    cx.pushed_manifest(&ns, &digest);
    cx.record(names[0].0, names[0].1, o);
    let o = async {
        let x = cx
            .send(
                cx.req(Method::GET, &ns, &format!("manifests/{digest}"))
                    .header("accept", MANIFEST_ACCEPT),
            )
            .await?;
        status(&x, &[200])?;
        body_is(&x, &manifest)?;
        Ok(String::new())
    }
    .await;
    cx.record(names[1].0, names[1].1, o);

    let no_layers = image_manifest(
        descriptor(media_type::OCI_CONFIG, &empty_config),
        vec![],
        None,
    );
    let no_layers_digest = Digest::sha256_of(&no_layers);
    let o = put_manifest(cx, &ns, &no_layers_digest.to_string(), &no_layers).await;
    cx.pushed_manifest(&ns, &no_layers_digest);
    cx.record(names[2].0, names[2].1, o);

    let missing = layer_blob(cx, "push-never-uploaded", 100);
    let dangling = image_manifest(
        descriptor(media_type::OCI_CONFIG, &config),
        vec![descriptor(LAYER_TYPE, &missing)],
        None,
    );
    let dangling_digest = Digest::sha256_of(&dangling);
    let o = async {
        let x = cx
            .send(
                cx.req(Method::PUT, &ns, &format!("manifests/{dangling_digest}"))
                    .header("content-type", media_type::OCI_MANIFEST)
                    .body(dangling.clone()),
            )
            .await?;
        if x.status.as_u16() == 201 {
            return Ok(
                "accepted: the registry does not check references (it MAY reject)".to_owned(),
            );
        }
        // "When a manifest is rejected for this reason, it MUST result in one or more
        // MANIFEST_BLOB_UNKNOWN errors."
        error_answer(&x, &[400], Some("MANIFEST_BLOB_UNKNOWN"))?;
        if super::error_codes(&x)?.is_empty() {
            return Err(format!(
                "rejected without a MANIFEST_BLOB_UNKNOWN error body\n{}",
                x.transcript()
            ));
        }
        Ok(String::new())
    }
    .await;
    cx.pushed_manifest(&ns, &dangling_digest);
    cx.record(names[3].0, names[3].1, o);

    let absent = image_manifest(
        descriptor(media_type::OCI_CONFIG, &config),
        vec![],
        Some(json!({"annotations": {"org.rbuild.conformance": "absent subject"}})),
    );
    let subject = descriptor(media_type::OCI_MANIFEST, &absent);
    let referrer = image_manifest(
        descriptor(media_type::OCI_CONFIG, &config),
        vec![descriptor(LAYER_TYPE, &layer)],
        Some(json!({
            "artifactType": "application/vnd.rbuild.conformance.test.v1",
            "subject": subject,
        })),
    );
    let referrer_digest = Digest::sha256_of(&referrer);
    let mut answer = None;
    let o = async {
        let x = cx
            .send(
                cx.req(Method::PUT, &ns, &format!("manifests/{referrer_digest}"))
                    .header("content-type", media_type::OCI_MANIFEST)
                    .body(referrer.clone()),
            )
            .await?;
        answer = Some(x.clone());
        status(&x, &[201]).map(|()| String::new())
    }
    .await;
    cx.pushed_manifest(&ns, &referrer_digest);
    cx.record(names[4].0, names[4].1, o);
    match answer.filter(|x| x.status.is_success()) {
        Some(x) => {
            let want = Digest::sha256_of(&absent).to_string();
            let o = match x.header("oci-subject") {
                Some(got) if got.trim() == want => Ok(String::new()),
                Some(got) => Err(format!(
                    "OCI-Subject is {got}, expected {want}\n{}",
                    x.transcript()
                )),
                None => Err(format!(
                    "no OCI-Subject header: the registry did not process `subject` (clients must fall back to the referrers tag schema)\n{}",
                    x.transcript()
                )),
            };
            cx.record(names[5].0, names[5].1, o);
        }
        None => cx.skip(
            names[5].0,
            names[5].1,
            "the manifest with subject was refused",
        ),
    }
}

/// `PUT` a manifest; 201 with `Location` and `Docker-Content-Digest` equal to its digest
/// ("MUST be equal to the client provided digest").
async fn put_manifest(cx: &Cx<'_>, repo: &str, reference: &str, bytes: &Bytes) -> Outcome {
    let x = cx
        .send(
            cx.req(Method::PUT, repo, &format!("manifests/{reference}"))
                .header("content-type", media_type::OCI_MANIFEST)
                .body(bytes.clone()),
        )
        .await?;
    status(&x, &[201])?;
    cx.location(&x)?;
    content_digest(&x, &Digest::sha256_of(bytes))?;
    Ok(String::new())
}
