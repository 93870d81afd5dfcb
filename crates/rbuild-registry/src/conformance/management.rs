//! The content management workflow: deleting tags, manifests and blobs, and the 400/405 a
//! registry answers where deletion is disabled (spec §Content Management, end-9, end-10).

use http::Method;
use rbuild_oci::{Digest, media_type};

use super::{
    Cx, Exchange, LAYER_TYPE, config_blob, descriptor, error_answer, image_manifest, layer_blob,
    status,
};
use crate::request::MANIFEST_ACCEPT;

const CHECKS: [(&str, &str); 9] = [
    (
        "DELETE tag answers 202, or 400/405 where tag deletion is disabled",
        "§Deleting tags, end-9",
    ),
    ("GET deleted tag answers 404", "§Deleting tags, end-3"),
    (
        "DELETE manifest by digest answers 202, or 400/405 where deletion is disabled",
        "§Deleting Manifests, end-9",
    ),
    (
        "GET deleted manifest answers 404",
        "§Deleting Manifests, end-3",
    ),
    (
        "tags of a deleted manifest answer 404",
        "§Deleting Manifests, end-3",
    ),
    (
        "DELETE blob answers 202, or 400/405 where deletion is disabled",
        "§Deleting Blobs, end-10",
    ),
    ("GET deleted blob answers 404", "§Deleting Blobs, end-2"),
    (
        "DELETE unknown blob answers 404",
        "§Deleting Blobs, end-10, code-1",
    ),
    (
        "DELETE manifest in an unknown repository answers 404",
        "§Deleting Manifests, end-9",
    ),
];

/// How a delete went: done (202), refused because deletion is disabled (400/405), or failed.
enum Deleted {
    Yes,
    Disabled,
}

fn deleted(x: &Exchange) -> Result<Deleted, String> {
    match x.status.as_u16() {
        202 => Ok(Deleted::Yes),
        400 | 405 => {
            super::error_codes(x)?;
            Ok(Deleted::Disabled)
        }
        _ => Err(format!(
            "expected 202 (or 400/405 where deletion is disabled), got {}\n{}",
            x.status.as_u16(),
            x.transcript()
        )),
    }
}

/// Runs the content management checks.
pub(crate) async fn run(cx: &mut Cx<'_>) {
    let ns = cx.ns().to_owned();
    let config = config_blob(cx, "management");
    let layer = layer_blob(cx, "management", 1000);
    let manifest = image_manifest(
        descriptor(media_type::OCI_CONFIG, &config),
        vec![descriptor(LAYER_TYPE, &layer)],
        None,
    );
    let (tag_a, tag_b) = (cx.tag("mgmt-a"), cx.tag("mgmt-b"));
    let setup = async {
        cx.ensure_blob(&ns, &config).await?;
        let layer_digest = cx.ensure_blob(&ns, &layer).await?;
        let (digest, _) = cx
            .ensure_manifest(&ns, &tag_a, media_type::OCI_MANIFEST, &manifest)
            .await?;
        cx.ensure_manifest(&ns, &tag_b, media_type::OCI_MANIFEST, &manifest)
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
    let get = |cx: &Cx<'_>, reference: String| {
        cx.req(Method::GET, &ns, &format!("manifests/{reference}"))
            .header("accept", MANIFEST_ACCEPT)
    };

    let mut disabled = false;
    let mut tag_deleted = false;
    let o = async {
        let x = cx
            .send(cx.req(Method::DELETE, &ns, &format!("manifests/{tag_a}")))
            .await?;
        match deleted(&x)? {
            Deleted::Yes => tag_deleted = true,
            Deleted::Disabled => return Ok(format!("tag deletion disabled ({})", x.status)),
        }
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[0].0, CHECKS[0].1, o);
    if tag_deleted {
        let o = async {
            let x = cx.send(get(cx, tag_a.clone())).await?;
            error_answer(&x, &[404], Some("MANIFEST_UNKNOWN"))
        }
        .await;
        cx.record(CHECKS[1].0, CHECKS[1].1, o);
    } else {
        cx.skip(CHECKS[1].0, CHECKS[1].1, "the tag was not deleted");
    }

    let mut manifest_deleted = false;
    let o = async {
        let x = cx
            .send(cx.req(Method::DELETE, &ns, &format!("manifests/{digest}")))
            .await?;
        match deleted(&x)? {
            Deleted::Yes => manifest_deleted = true,
            Deleted::Disabled => {
                disabled = true;
                return Ok(format!("manifest deletion disabled ({})", x.status));
            }
        }
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[2].0, CHECKS[2].1, o);
    if manifest_deleted {
        let o = async {
            let x = cx.send(get(cx, digest.to_string())).await?;
            error_answer(&x, &[404], Some("MANIFEST_UNKNOWN"))
        }
        .await;
        cx.record(CHECKS[3].0, CHECKS[3].1, o);
        // "Once deleted, a GET to /v2/<name>/manifests/<digest> and any tag pointing to that
        // digest will return a 404."
        let o = async {
            let x = cx.send(get(cx, tag_b.clone())).await?;
            error_answer(&x, &[404], Some("MANIFEST_UNKNOWN"))
        }
        .await;
        cx.record(CHECKS[4].0, CHECKS[4].1, o);
    } else {
        cx.skip(CHECKS[3].0, CHECKS[3].1, "the manifest was not deleted");
        cx.skip(CHECKS[4].0, CHECKS[4].1, "the manifest was not deleted");
    }

    let mut blob_deleted = false;
    let o = async {
        let x = cx
            .send(cx.req(Method::DELETE, &ns, &format!("blobs/{layer_digest}")))
            .await?;
        match deleted(&x)? {
            Deleted::Yes => blob_deleted = true,
            Deleted::Disabled => {
                disabled = true;
                return Ok(format!("blob deletion disabled ({})", x.status));
            }
        }
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[5].0, CHECKS[5].1, o);
    if blob_deleted {
        let o = async {
            let x = cx
                .send(cx.req(Method::GET, &ns, &format!("blobs/{layer_digest}")))
                .await?;
            error_answer(&x, &[404], Some("BLOB_UNKNOWN"))
        }
        .await;
        cx.record(CHECKS[6].0, CHECKS[6].1, o);
    } else {
        cx.skip(CHECKS[6].0, CHECKS[6].1, "the blob was not deleted");
    }

    // Where deletion is disabled, "MUST respond with either a 400 Bad Request or a 405" holds
    // for unknown content too.
    let refused: &[u16] = if disabled { &[404, 400, 405] } else { &[404] };
    let unknown = Digest::sha256_of(format!("never-pushed-{}", cx.s.run_id).as_bytes());
    let o = async {
        let x = cx
            .send(cx.req(Method::DELETE, &ns, &format!("blobs/{unknown}")))
            .await?;
        // A refusal because deletes are disabled need not say BLOB_UNKNOWN.
        let code = (x.status.as_u16() == 404).then_some("BLOB_UNKNOWN");
        error_answer(&x, refused, code)
    }
    .await;
    cx.record(CHECKS[7].0, CHECKS[7].1, o);
    let missing = format!("{ns}-missing-{}", cx.s.run_id);
    let o = async {
        let x = cx
            .send(cx.req(Method::DELETE, &missing, &format!("manifests/{unknown}")))
            .await?;
        status(&x, refused)?;
        super::error_codes(&x)?;
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[8].0, CHECKS[8].1, o);
}
