//! The content discovery workflow: the tag list (order, `n`/`last`, `Link`, `n=0`) and the
//! referrers API (`artifactType` filtering, empty answers) with the tag-schema fallback of
//! registries that lack it (spec §Content Discovery, §Backwards Compatibility, end-8, end-12).

use bytes::Bytes;
use http::Method;
use rbuild_oci::{Digest, media_type};
use serde_json::{Value, json};

use super::{
    Cx, EMPTY_JSON, EMPTY_TYPE, Exchange, LAYER_TYPE, body_is, config_blob, descriptor,
    error_answer, image_manifest, json_body, layer_blob, status,
};

/// The page size of the pagination checks.
const N: usize = 2;
/// The artifact types of the two referrers: one set in `artifactType`, one taken from the
/// config's media type (the spec's rule for manifests without `artifactType`).
const SBOM: &str = "application/vnd.rbuild.conformance.sbom.v1";
const SIGNATURE: &str = "application/vnd.rbuild.conformance.signature.v1";

const CHECKS: [(&str, &str); 11] = [
    (
        "GET tag list answers 200 with the name and every pushed tag",
        "§Listing Tags, end-8a",
    ),
    ("tag list is in lexical order", "§Listing Tags, end-8a"),
    (
        "tag list with n returns the first n tags",
        "§Listing Tags, end-8b",
    ),
    (
        "tag list with n and last returns the tags after last",
        "§Listing Tags, end-8b",
    ),
    (
        "tag list pages walk every tag once, in order",
        "§Listing Tags, end-8b",
    ),
    (
        "tag list with n=0 is empty, without Link",
        "§Listing Tags, end-8b",
    ),
    (
        "GET tag list of an unknown repository answers 404",
        "§Listing Tags, end-8a",
    ),
    (
        "GET referrers answers an image index of the referrers",
        "§Listing Referrers, end-12a",
    ),
    (
        "GET referrers with artifactType filters them",
        "§Listing Referrers, end-12b",
    ),
    (
        "GET referrers of an unreferenced digest answers an empty index",
        "§Listing Referrers, end-12a",
    ),
    (
        "referrers tag schema: the fallback index is pushed and served under sha256-<hex>",
        "§Unavailable Referrers API, §Referrers Tag Schema",
    ),
];

/// Runs the content discovery checks.
pub(crate) async fn run(cx: &mut Cx<'_>) {
    let ns = cx.ns().to_owned();
    let config = config_blob(cx, "discovery");
    let layer = layer_blob(cx, "discovery", 1000);
    let manifest = image_manifest(
        descriptor(media_type::OCI_CONFIG, &config),
        vec![descriptor(LAYER_TYPE, &layer)],
        None,
    );
    let subject = descriptor(media_type::OCI_MANIFEST, &manifest);
    let subject_digest = Digest::sha256_of(&manifest);
    let run = cx.s.run_id.clone();
    let referrers = [
        image_manifest(
            descriptor(EMPTY_TYPE, EMPTY_JSON),
            vec![descriptor(EMPTY_TYPE, EMPTY_JSON)],
            Some(json!({
                "artifactType": SBOM,
                "subject": subject,
                "annotations": {"org.rbuild.conformance.run": run, "org.example.kind": "sbom"},
            })),
        ),
        image_manifest(
            descriptor(SIGNATURE, EMPTY_JSON),
            vec![descriptor(EMPTY_TYPE, EMPTY_JSON)],
            Some(json!({
                "subject": subject,
                "annotations": {"org.rbuild.conformance.run": run, "org.example.kind": "signature"},
            })),
        ),
    ];
    // Pushed in an order that is not the lexical one; enough of them that a registry
    // listing in storage order (hash order on most filesystems) is all but certain to show it.
    let tags: Vec<String> = ["k", "c", "h", "a", "l", "e", "j", "b", "g", "d", "i", "f"]
        .iter()
        .map(|s| format!("disc-{run}-{s}"))
        .collect();
    let setup = async {
        cx.ensure_blob(&ns, &config).await?;
        cx.ensure_blob(&ns, &layer).await?;
        cx.ensure_blob(&ns, &Bytes::from_static(EMPTY_JSON)).await?;
        for tag in &tags {
            cx.ensure_manifest(&ns, tag, media_type::OCI_MANIFEST, &manifest)
                .await?;
        }
        let mut processed = true;
        for r in &referrers {
            let (_, x) = cx
                .ensure_manifest(
                    &ns,
                    &Digest::sha256_of(r).to_string(),
                    media_type::OCI_MANIFEST,
                    r,
                )
                .await?;
            processed &= x.header("oci-subject") == Some(subject_digest.to_string().as_str());
        }
        Ok::<_, String>(processed)
    }
    .await;
    let subject_processed = match setup {
        Ok(p) => p,
        Err(e) => {
            super::setup_failed(cx, e, &CHECKS);
            return;
        }
    };
    tag_checks(cx, &ns, &tags).await;
    referrer_checks(cx, &ns, &subject_digest, &referrers).await;
    fallback_check(cx, &ns, &subject_digest, &referrers, subject_processed).await;
}

/// The tag list of one answer, and its `Link` target.
fn page(x: &Exchange) -> Result<(Vec<String>, Option<url::Url>), String> {
    status(x, &[200])?;
    let v = json_body(x)?;
    let tags = match &v["tags"] {
        // An empty list MAY come as `null` from older registries; both mean no tags.
        Value::Null => Vec::new(),
        Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("`tags` holds a non-string\n{}", x.transcript()))?,
        _ => return Err(format!("`tags` is not a list\n{}", x.transcript())),
    };
    let link = crate::response::next_link(&x.headers, &x.url);
    Ok((tags, link))
}

/// Whether `tags` is in lexical ("case-insensitive alphanumeric") or "ASCIIbetical" order.
fn sorted(tags: &[String]) -> bool {
    tags.windows(2).all(|w| w[0] <= w[1])
        || tags
            .windows(2)
            .all(|w| w[0].to_lowercase() <= w[1].to_lowercase())
}

/// A page of at most `n` answering `n`: the whole `expected` prefix, or (with a `Link`) a
/// shorter prefix ("MAY return fewer than <int> results, but only when the total number of
/// tags … is less than <int> or a Link header is provided").
fn page_matches(
    x: &Exchange,
    got: &[String],
    link: bool,
    expected: &[String],
) -> Result<(), String> {
    let full = &expected[..expected.len().min(N)];
    let ok = if link {
        !got.is_empty() && got.len() <= N && got == &expected[..got.len().min(expected.len())]
    } else {
        got == full
    };
    if ok {
        return Ok(());
    }
    Err(format!(
        "expected {full:?}{}, got {got:?}\n{}",
        if link {
            " (or a prefix, with Link)"
        } else {
            ""
        },
        x.transcript()
    ))
}

async fn tag_checks(cx: &mut Cx<'_>, ns: &str, tags: &[String]) {
    let mut all = None;
    let o = async {
        let x = cx.send(cx.req(Method::GET, ns, "tags/list")).await?;
        let v = json_body(&x)?;
        let (list, _) = page(&x)?;
        if v["name"].as_str() != Some(ns) {
            return Err(format!(
                "`name` is {}, expected {ns:?}\n{}",
                v["name"],
                x.transcript()
            ));
        }
        let missing: Vec<&String> = tags.iter().filter(|t| !list.contains(t)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "pushed tags missing: {missing:?}\n{}",
                x.transcript()
            ));
        }
        all = Some((list, x));
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[0].0, CHECKS[0].1, o);
    let Some((all, listing)) = all else {
        for (name, spec) in &CHECKS[1..6] {
            cx.skip(name, spec, "no tag list");
        }
        unknown_repo(cx, ns).await;
        return;
    };
    let o = if sorted(&all) {
        Ok(String::new())
    } else {
        Err(format!(
            "tags out of order: {all:?}\n{}",
            listing.transcript()
        ))
    };
    cx.record(CHECKS[1].0, CHECKS[1].1, o);

    let o = async {
        let x = cx
            .send(cx.req(Method::GET, ns, &format!("tags/list?n={N}")))
            .await?;
        let (got, link) = page(&x)?;
        page_matches(&x, &got, link.is_some(), &all)?;
        if link.is_none() && all.len() > N {
            return Ok("no Link header (it MAY be left out)".to_owned());
        }
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[2].0, CHECKS[2].1, o);

    let o = async {
        let last = &all[N - 1];
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("n", &N.to_string()).append_pair("last", last);
        let x = cx
            .send(cx.req(Method::GET, ns, &format!("tags/list?{}", q.finish())))
            .await?;
        let (got, link) = page(&x)?;
        if got.contains(last) {
            return Err(format!(
                "the page includes `last` ({last})\n{}",
                x.transcript()
            ));
        }
        page_matches(&x, &got, link.is_some(), &all[N..])?;
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[3].0, CHECKS[3].1, o);

    let o = async {
        let mut walked: Vec<String> = Vec::new();
        let mut next = Some(cx.s.wire.url(ns, &format!("tags/list?n={N}")));
        let mut pages = 0;
        let mut last_page = None;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > all.len() + 2 {
                return Err(format!(
                    "pagination does not end after {pages} pages\nlast page:\n{}",
                    last_page.unwrap_or_default()
                ));
            }
            let x = cx.send(cx.req_url(Method::GET, ns, url)).await?;
            let (got, link) = page(&x)?;
            if got.len() > N {
                return Err(format!(
                    "a page of n={N} holds {} tags\n{}",
                    got.len(),
                    x.transcript()
                ));
            }
            walked.extend(got.iter().cloned());
            last_page = Some(x.transcript());
            next = match link {
                Some(l) => Some(l),
                // Without `Link`, a full page means "ask again after the last tag".
                None if got.len() == N => got.last().map(|last| {
                    let mut q = url::form_urlencoded::Serializer::new(String::new());
                    q.append_pair("n", &N.to_string()).append_pair("last", last);
                    cx.s.wire.url(ns, &format!("tags/list?{}", q.finish()))
                }),
                None => None,
            };
        }
        if walked != all {
            return Err(format!(
                "the pages give {walked:?}, the whole list is {all:?}\nlast page:\n{}",
                last_page.unwrap_or_default()
            ));
        }
        Ok(format!("{pages} pages"))
    }
    .await;
    cx.record(CHECKS[4].0, CHECKS[4].1, o);

    let o = async {
        let x = cx.send(cx.req(Method::GET, ns, "tags/list?n=0")).await?;
        let (got, link) = page(&x)?;
        if !got.is_empty() || link.is_some() {
            return Err(format!(
                "\"When n is zero, this endpoint MUST return an empty list, and MUST NOT include a Link header\"\n{}",
                x.transcript()
            ));
        }
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[5].0, CHECKS[5].1, o);
    unknown_repo(cx, ns).await;
}

async fn unknown_repo(cx: &mut Cx<'_>, ns: &str) {
    let missing = format!("{ns}-missing-{}", cx.s.run_id);
    let o = async {
        let x = cx.send(cx.req(Method::GET, &missing, "tags/list")).await?;
        error_answer(&x, &[404], Some("NAME_UNKNOWN"))
    }
    .await;
    cx.record(CHECKS[6].0, CHECKS[6].1, o);
}

/// Checks an answer of the referrers API and returns its descriptors.
fn referrer_index(x: &Exchange) -> Result<Vec<Value>, String> {
    status(x, &[200])?;
    let ct = super::need(x, "content-type")?;
    if ct.split(';').next().unwrap_or(ct).trim() != media_type::OCI_INDEX {
        return Err(format!(
            "Content-Type is {ct}, expected {}\n{}",
            media_type::OCI_INDEX,
            x.transcript()
        ));
    }
    let v = json_body(x)?;
    v["manifests"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("not an image index (no `manifests`)\n{}", x.transcript()))
}

/// Finds the descriptor of `manifest` and verifies its `artifactType` and annotations.
fn find_referrer(
    x: &Exchange,
    descriptors: &[Value],
    manifest: &Bytes,
    artifact_type: &str,
) -> Result<(), String> {
    let digest = Digest::sha256_of(manifest).to_string();
    let d = descriptors
        .iter()
        .find(|d| d["digest"] == digest.as_str())
        .ok_or_else(|| format!("referrer {digest} is not listed\n{}", x.transcript()))?;
    let pushed: Value = serde_json::from_slice(manifest).unwrap_or_default();
    let problems = [
        (d["mediaType"] != media_type::OCI_MANIFEST, "mediaType"),
        (d["size"] != manifest.len(), "size"),
        (d["artifactType"] != artifact_type, "artifactType"),
        (d["annotations"] != pushed["annotations"], "annotations"),
    ];
    let wrong: Vec<&str> = problems
        .iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, f)| *f)
        .collect();
    if wrong.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the descriptor of {digest} has a wrong {} (expected artifactType {artifact_type} and the manifest's annotations): {d}\n{}",
        wrong.join(", "),
        x.transcript()
    ))
}

async fn referrer_checks(cx: &mut Cx<'_>, ns: &str, subject: &Digest, referrers: &[Bytes; 2]) {
    let o = async {
        let x = cx
            .send(cx.req(Method::GET, ns, &format!("referrers/{subject}")))
            .await?;
        let list = referrer_index(&x)?;
        find_referrer(&x, &list, &referrers[0], SBOM)?;
        find_referrer(&x, &list, &referrers[1], SIGNATURE)?;
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[7].0, CHECKS[7].1, o);
    let o = async {
        let x = cx
            .send(cx.req(
                Method::GET,
                ns,
                &format!("referrers/{subject}?artifactType={SBOM}"),
            ))
            .await?;
        let list = referrer_index(&x)?;
        find_referrer(&x, &list, &referrers[0], SBOM)?;
        let applied = x
            .header("oci-filters-applied")
            .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
        if !applied {
            // Filtering is a SHOULD; without the header the client filters.
            return Ok("not filtered (no OCI-Filters-Applied; filtering is a SHOULD)".to_owned());
        }
        if let Some(other) = list.iter().find(|d| d["artifactType"] != SBOM) {
            return Err(format!(
                "OCI-Filters-Applied: artifactType, but {other} is listed\n{}",
                x.transcript()
            ));
        }
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[8].0, CHECKS[8].1, o);
    let o = async {
        let unreferenced = Digest::sha256_of(format!("unreferenced-{}", cx.s.run_id).as_bytes());
        let x = cx
            .send(cx.req(Method::GET, ns, &format!("referrers/{unreferenced}")))
            .await?;
        let list = referrer_index(&x)?;
        if !list.is_empty() {
            return Err(format!("expected no referrers\n{}", x.transcript()));
        }
        Ok(String::new())
    }
    .await;
    cx.record(CHECKS[9].0, CHECKS[9].1, o);
}

/// The referrers tag (`<alg>-<hex>`, §Referrers Tag Schema) of a sha256 digest.
fn referrers_tag(d: &Digest) -> String {
    format!("{}-{}", d.algorithm(), d.hex())
}

/// What a client MUST do when a `subject` push gets no `OCI-Subject`: maintain an index of
/// the referrers under the referrers tag. The registry must take and serve it as any index.
async fn fallback_check(
    cx: &mut Cx<'_>,
    ns: &str,
    subject: &Digest,
    referrers: &[Bytes; 2],
    processed: bool,
) {
    let (name, spec) = CHECKS[10];
    if processed {
        cx.skip(
            name,
            spec,
            "the registry processed `subject` (OCI-Subject): clients need no fallback",
        );
        return;
    }
    let manifests: Vec<Value> = referrers
        .iter()
        .zip([SBOM, SIGNATURE])
        .map(|(r, t)| {
            let pushed: Value = serde_json::from_slice(r).unwrap_or_default();
            let mut d = descriptor(media_type::OCI_MANIFEST, r);
            d["artifactType"] = json!(t);
            d["annotations"] = pushed["annotations"].clone();
            d
        })
        .collect();
    let index = Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": manifests,
        })
        .to_string(),
    );
    let tag = referrers_tag(subject);
    let digest = Digest::sha256_of(&index);
    let o = async {
        let put = cx
            .send(
                cx.req(Method::PUT, ns, &format!("manifests/{tag}"))
                    .header("content-type", media_type::OCI_INDEX)
                    .body(index.clone()),
            )
            .await?;
        status(&put, &[201])?;
        let x = cx
            .send(
                cx.req(Method::GET, ns, &format!("manifests/{tag}"))
                    .header("accept", media_type::OCI_INDEX),
            )
            .await?;
        status(&x, &[200])?;
        body_is(&x, &index)?;
        Ok("no OCI-Subject: the client-maintained index works".to_owned())
    }
    .await;
    cx.pushed_manifest(ns, &digest);
    cx.record(name, spec, o);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_tag_follows_the_schema() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(referrers_tag(&d), format!("sha256-{}", d.hex()));
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(sorted(&s(&["A", "b", "C"])));
        assert!(sorted(&s(&["C", "a"])));
        assert!(!sorted(&s(&["b", "a"])));
    }
}
