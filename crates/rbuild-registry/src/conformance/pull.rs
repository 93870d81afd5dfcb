//! The pull workflow: manifests and blobs by tag and digest, `HEAD` and `GET`, with and without
//! `Accept`, 404s for what does not exist, range reads (spec §Pull, end-1/2/3).

use http::Method;
use rbuild_oci::{Digest, media_type};

use super::{
    Cx, LAYER_TYPE, body_is, config_blob, content_digest, descriptor, error_answer, image_manifest,
    layer_blob, need, status,
};
use crate::request::MANIFEST_ACCEPT;

const CONTENT: &str = "§Checking if content exists in the registry";
const MANIFESTS: &str = "§Pulling manifests";
const BLOBS: &str = "§Pulling blobs";

/// Runs the pull checks.
pub(crate) async fn run(cx: &mut Cx<'_>) {
    let ns = cx.ns().to_owned();
    let x = cx.send(cx.req(Method::GET, "", "")).await;
    cx.record(
        "GET /v2/ answers 200",
        "§Determining Support, end-1",
        x.map_err(String::from)
            .and_then(|x| status(&x, &[200]).map(|()| String::new())),
    );

    // Setup: a config, a layer and a manifest tagged in the namespace.
    let config = config_blob(cx, "pull");
    let layer = layer_blob(cx, "pull", 3000);
    let manifest = image_manifest(
        descriptor(media_type::OCI_CONFIG, &config),
        vec![descriptor(LAYER_TYPE, &layer)],
        None,
    );
    let tag = cx.tag("pull");
    let setup = async {
        cx.ensure_blob(&ns, &config).await?;
        let layer_digest = cx.ensure_blob(&ns, &layer).await?;
        let (digest, _) = cx
            .ensure_manifest(&ns, &tag, media_type::OCI_MANIFEST, &manifest)
            .await?;
        Ok::<_, String>((digest, layer_digest))
    }
    .await;
    let (digest, layer_digest) = match setup {
        Ok(d) => d,
        Err(e) => {
            super::setup_failed(cx, e, &CHECKS);
            return;
        }
    };

    for (reference, name) in [
        (
            tag.clone(),
            "HEAD manifest by tag answers 200 with Docker-Content-Digest and Content-Length",
        ),
        (
            digest.to_string(),
            "HEAD manifest by digest answers 200 with Docker-Content-Digest and Content-Length",
        ),
    ] {
        let o = async {
            let x = cx
                .send(
                    cx.req(Method::HEAD, &ns, &format!("manifests/{reference}"))
                        .header("accept", MANIFEST_ACCEPT),
                )
                .await?;
            status(&x, &[200])?;
            content_digest(&x, &digest)?;
            length_is(&x, manifest.len())?;
            Ok(String::new())
        }
        .await;
        cx.record(name, &format!("{CONTENT}, end-3"), o);
    }

    for (reference, name) in [
        (
            tag.clone(),
            "GET manifest by tag answers 200 with the manifest, its Content-Type and Docker-Content-Digest",
        ),
        (
            digest.to_string(),
            "GET manifest by digest answers 200 with the manifest, its Content-Type and Docker-Content-Digest",
        ),
    ] {
        let o = async {
            let x = cx
                .send(
                    cx.req(Method::GET, &ns, &format!("manifests/{reference}"))
                        .header("accept", MANIFEST_ACCEPT),
                )
                .await?;
            status(&x, &[200])?;
            body_is(&x, &manifest)?;
            content_type_is(&x, media_type::OCI_MANIFEST)?;
            content_digest(&x, &digest)?;
            Ok(String::new())
        }
        .await;
        cx.record(name, &format!("{MANIFESTS}, end-3"), o);
    }

    // The client SHOULD send `Accept`; the registry MUST still provide the manifest.
    let o = async {
        let x = cx
            .send(cx.req(Method::GET, &ns, &format!("manifests/{digest}")))
            .await?;
        status(&x, &[200])?;
        body_is(&x, &manifest)?;
        Ok(String::new())
    }
    .await;
    cx.record(
        "GET manifest without Accept answers 200 with the manifest",
        &format!("{MANIFESTS}, end-3"),
        o,
    );

    let unknown_tag = cx.tag("pull-missing");
    let unknown_digest = Digest::sha256_of(format!("missing-{}", cx.s.run_id).as_bytes());
    let o = async {
        let x = cx
            .send(
                cx.req(Method::HEAD, &ns, &format!("manifests/{unknown_tag}"))
                    .header("accept", MANIFEST_ACCEPT),
            )
            .await?;
        status(&x, &[404]).map(|()| String::new())
    }
    .await;
    cx.record(
        "HEAD unknown manifest answers 404",
        &format!("{CONTENT}, end-3"),
        o,
    );
    let o = async {
        let x = cx
            .send(
                cx.req(Method::GET, &ns, &format!("manifests/{unknown_tag}"))
                    .header("accept", MANIFEST_ACCEPT),
            )
            .await?;
        error_answer(&x, &[404], Some("MANIFEST_UNKNOWN"))
    }
    .await;
    cx.record(
        "GET unknown tag answers 404 MANIFEST_UNKNOWN",
        &format!("{MANIFESTS}, end-3, code-7"),
        o,
    );
    let o = async {
        let x = cx
            .send(
                cx.req(Method::GET, &ns, &format!("manifests/{unknown_digest}"))
                    .header("accept", MANIFEST_ACCEPT),
            )
            .await?;
        error_answer(&x, &[404], Some("MANIFEST_UNKNOWN"))
    }
    .await;
    cx.record(
        "GET unknown manifest digest answers 404 MANIFEST_UNKNOWN",
        &format!("{MANIFESTS}, end-3, code-7"),
        o,
    );
    let missing_repo = format!("{ns}-missing-{}", cx.s.run_id);
    let o = async {
        let x = cx
            .send(
                cx.req(Method::GET, &missing_repo, &format!("manifests/{tag}"))
                    .header("accept", MANIFEST_ACCEPT),
            )
            .await?;
        error_answer(&x, &[404], None)
    }
    .await;
    cx.record(
        "GET manifest of an unknown repository answers 404",
        "§Pushing Manifests (pull of a nonexistent repository), end-3",
        o,
    );

    let o = async {
        let x = cx
            .send(cx.req(Method::HEAD, &ns, &format!("blobs/{layer_digest}")))
            .await?;
        status(&x, &[200])?;
        content_digest(&x, &layer_digest)?;
        length_is(&x, layer.len())?;
        Ok(String::new())
    }
    .await;
    cx.record(
        "HEAD blob answers 200 with Docker-Content-Digest and Content-Length",
        &format!("{CONTENT}, end-2"),
        o,
    );
    let o = async {
        let x = cx
            .send(cx.req(Method::GET, &ns, &format!("blobs/{layer_digest}")))
            .await?;
        status(&x, &[200])?;
        body_is(&x, &layer)?;
        content_digest(&x, &layer_digest)?;
        Ok(String::new())
    }
    .await;
    cx.record(
        "GET blob answers 200 with the blob and Docker-Content-Digest",
        &format!("{BLOBS}, end-2"),
        o,
    );
    let o = async {
        let x = cx
            .send(
                cx.req(Method::GET, &ns, &format!("blobs/{layer_digest}"))
                    .header("range", "bytes=100-1099"),
            )
            .await?;
        if x.status.as_u16() == 200 {
            return Err(format!(
                "Range ignored: 200 with the whole blob (the spec says registries SHOULD support Range)\n{}",
                x.transcript()
            ));
        }
        status(&x, &[206])?;
        body_is(&x, &layer.slice(100..1100))?;
        let range = need(&x, "content-range")?;
        let want = format!("bytes 100-1099/{}", layer.len());
        if range.trim() != want {
            return Err(format!(
                "Content-Range is `{range}`, expected `{want}`\n{}",
                x.transcript()
            ));
        }
        Ok(String::new())
    }
    .await;
    cx.record(
        "GET blob with Range answers 206 with those bytes",
        &format!("{BLOBS} (Range, RFC 9110 §14), end-2"),
        o,
    );
    let o = async {
        let x = cx
            .send(cx.req(Method::HEAD, &ns, &format!("blobs/{unknown_digest}")))
            .await?;
        status(&x, &[404]).map(|()| String::new())
    }
    .await;
    cx.record(
        "HEAD unknown blob answers 404",
        &format!("{CONTENT}, end-2"),
        o,
    );
    let o = async {
        let x = cx
            .send(cx.req(Method::GET, &ns, &format!("blobs/{unknown_digest}")))
            .await?;
        error_answer(&x, &[404], Some("BLOB_UNKNOWN"))
    }
    .await;
    cx.record(
        "GET unknown blob answers 404 BLOB_UNKNOWN",
        &format!("{BLOBS}, end-2, code-1"),
        o,
    );
    let o = async {
        let x = cx
            .send(cx.req(Method::GET, &ns, "blobs/sha256:not-a-digest"))
            .await?;
        error_answer(&x, &[400, 404], None)
    }
    .await;
    cx.record(
        "GET blob with an invalid digest answers 400 or 404 with a spec error body",
        "§Error Codes, end-2",
        o,
    );
}

/// Every check's name and section, for skipping them all when setup fails.
const CHECKS: [(&str, &str); 15] = [
    (
        "HEAD manifest by tag answers 200 with Docker-Content-Digest and Content-Length",
        CONTENT,
    ),
    (
        "HEAD manifest by digest answers 200 with Docker-Content-Digest and Content-Length",
        CONTENT,
    ),
    (
        "GET manifest by tag answers 200 with the manifest, its Content-Type and Docker-Content-Digest",
        MANIFESTS,
    ),
    (
        "GET manifest by digest answers 200 with the manifest, its Content-Type and Docker-Content-Digest",
        MANIFESTS,
    ),
    (
        "GET manifest without Accept answers 200 with the manifest",
        MANIFESTS,
    ),
    ("HEAD unknown manifest answers 404", CONTENT),
    ("GET unknown tag answers 404 MANIFEST_UNKNOWN", MANIFESTS),
    (
        "GET unknown manifest digest answers 404 MANIFEST_UNKNOWN",
        MANIFESTS,
    ),
    (
        "GET manifest of an unknown repository answers 404",
        MANIFESTS,
    ),
    (
        "HEAD blob answers 200 with Docker-Content-Digest and Content-Length",
        CONTENT,
    ),
    (
        "GET blob answers 200 with the blob and Docker-Content-Digest",
        BLOBS,
    ),
    ("GET blob with Range answers 206 with those bytes", BLOBS),
    ("HEAD unknown blob answers 404", CONTENT),
    ("GET unknown blob answers 404 BLOB_UNKNOWN", BLOBS),
    (
        "GET blob with an invalid digest answers 400 or 404 with a spec error body",
        "§Error Codes",
    ),
];

/// Fails unless `Content-Length` is `len` ("A successful response MUST contain the size in
/// bytes of the uploaded blob or manifest in the header Content-Length").
fn length_is(x: &super::Exchange, len: usize) -> Result<(), String> {
    let got = need(x, "content-length")?;
    if got.trim() != len.to_string() {
        return Err(format!(
            "Content-Length is {got}, expected {len}\n{}",
            x.transcript()
        ));
    }
    Ok(())
}

/// Fails unless `Content-Type` (parameters ignored, as clients SHOULD) is `want`.
fn content_type_is(x: &super::Exchange, want: &str) -> Result<(), String> {
    let got = need(x, "content-type")?;
    let got = got.split(';').next().unwrap_or(got).trim();
    if got != want {
        return Err(format!(
            "Content-Type is {got}, expected {want} (what was pushed)\n{}",
            x.transcript()
        ));
    }
    Ok(())
}
