//! The endpoints: one function per route of the spec's endpoint table, each honouring the
//! registry's [`Fault`]s.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{CHUNK_MIN_LENGTH, Fault, Repo, Shared, State};

type Resp = Response<Full<Bytes>>;

fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    r
}

/// An error answer with the spec's JSON body (`errors[].code`, "Error Codes").
fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = json!({"errors": [{"code": code, "message": message}]}).to_string();
    respond(
        status,
        &[("Content-Type", "application/json".to_owned())],
        body,
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn query_map(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// The spec's `<name>` grammar ("Pulling manifests").
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|component| {
            let b = component.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && b.last()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
                })
        })
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

pub(super) fn handle(
    shared: &Shared,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Resp {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query_map(query);
    if path == "/v2/" || path == "/v2" {
        return respond(
            StatusCode::OK,
            &[("Content-Type", "application/json".to_owned())],
            "{}",
        );
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "not a registry path");
    };
    // The name may itself contain `blobs` or `manifests` components: the route is the last
    // marker in the path.
    let routes = [
        "/blobs/uploads/",
        "/blobs/",
        "/manifests/",
        "/tags/list",
        "/referrers/",
    ];
    let Some((name, route, tail)) = routes
        .iter()
        .filter_map(|r| rest.rfind(r).map(|i| (i, *r)))
        .max_by_key(|(i, r)| (*i, r.len()))
        .map(|(i, r)| (&rest[..i], r, &rest[i + r.len()..]))
    else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "unknown endpoint");
    };
    if !valid_name(name) {
        return error(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
        );
    }
    match (route, method.as_str()) {
        ("/blobs/uploads/", "POST") if tail.is_empty() => start_upload(shared, name, &query, body),
        ("/blobs/uploads/", _) => upload(shared, method, name, tail, &query, headers, body),
        ("/blobs/", "GET" | "HEAD") => get_blob(shared, method, name, tail, headers),
        ("/blobs/", "DELETE") => delete_blob(shared, name, tail),
        ("/manifests/", "GET" | "HEAD") => get_manifest(shared, method, name, tail),
        ("/manifests/", "PUT") => put_manifest(shared, name, tail, headers, body),
        ("/manifests/", "DELETE") => delete_manifest(shared, name, tail),
        ("/tags/list", "GET") if tail.is_empty() => tags(shared, name, &query),
        ("/referrers/", "GET") => referrers(shared, name, tail, &query),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "method not allowed",
        ),
    }
}

fn created(shared: &Shared, location: String, digest: &str) -> Resp {
    let status = if shared.has(Fault::AcceptedForCreated) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let mut headers = vec![("Docker-Content-Digest", content_digest(shared, digest))];
    if !shared.has(Fault::NoLocation) {
        headers.push(("Location", location));
    }
    respond(status, &headers, Bytes::new())
}

/// The `Docker-Content-Digest` value for `digest`, wrong under [`Fault::WrongContentDigest`].
fn content_digest(shared: &Shared, digest: &str) -> String {
    if shared.has(Fault::WrongContentDigest) {
        sha256(digest.as_bytes())
    } else {
        digest.to_owned()
    }
}

fn session(name: &str, id: &str, len: usize, shared: &Shared, status: StatusCode) -> Resp {
    let mut headers = vec![("Location", format!("/v2/{name}/blobs/uploads/{id}"))];
    if status != StatusCode::ACCEPTED || len > 0 {
        if !shared.has(Fault::NoChunkRange) {
            // `Range: 0-<end-of-range>`, inclusive. An empty session has no end to give: the
            // status answer then says `0-0`, as distribution does, and the POST none.
            headers.push(("Range", format!("0-{}", len.saturating_sub(1))));
        }
    } else {
        headers.push(("OCI-Chunk-Min-Length", CHUNK_MIN_LENGTH.to_string()));
    }
    headers.push(("Docker-Upload-UUID", id.to_owned()));
    respond(status, &headers, Bytes::new())
}

fn store_blob(state: &mut State, name: &str, digest: &str, bytes: Bytes) {
    state.blobs.insert(digest.to_owned(), bytes);
    state
        .repos
        .entry(name.to_owned())
        .or_default()
        .blobs
        .insert(digest.to_owned());
}

fn start_upload(shared: &Shared, name: &str, query: &HashMap<String, String>, body: Bytes) -> Resp {
    let mut state = shared.state();
    if let Some(digest) = query.get("mount") {
        if !valid_digest(digest) {
            return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
        }
        let from = query.get("from");
        let found = from.is_some_and(|from| {
            state
                .repos
                .get(from.as_str())
                .is_some_and(|r| r.blobs.contains(digest))
        });
        if found {
            let bytes = state.blobs[digest].clone();
            store_blob(&mut state, name, digest, bytes);
            drop(state);
            return created(shared, format!("/v2/{name}/blobs/{digest}"), digest);
        }
        // Not mountable: an ordinary upload session, as the spec asks (`202`).
    } else if let Some(digest) = query.get("digest") {
        if !valid_digest(digest) {
            return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
        }
        if sha256(&body) != *digest {
            return error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
            );
        }
        store_blob(&mut state, name, digest, body);
        drop(state);
        return created(shared, format!("/v2/{name}/blobs/{digest}"), digest);
    }
    state.next_upload += 1;
    let id = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        state.next_upload, state.next_upload
    );
    state
        .uploads
        .insert(id.clone(), (name.to_owned(), Vec::new()));
    drop(state);
    session(name, &id, 0, shared, StatusCode::ACCEPTED)
}

/// Applies a `Content-Range: <start>-<end>` chunk to an upload, or says why it cannot be.
fn append_chunk(
    shared: &Shared,
    data: &mut Vec<u8>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Box<Resp>> {
    if let Some(range) = header(headers, "content-range")
        && !shared.has(Fault::AcceptOutOfOrderChunks)
    {
        let parsed = range
            .trim()
            .trim_start_matches("bytes=")
            .split_once('-')
            .and_then(|(s, e)| Some((s.parse::<usize>().ok()?, e.parse::<usize>().ok()?)));
        let Some((start, end)) = parsed else {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "BLOB_UPLOAD_INVALID",
                "invalid Content-Range",
            )));
        };
        // "Chunks MUST be uploaded in order, with the first byte of a chunk being the last
        // chunk's <end-of-range> plus one" — else 416.
        if start != data.len() || end < start || end - start + 1 != body.len() {
            return Err(Box::new(error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                "chunk out of order",
            )));
        }
    }
    data.extend_from_slice(body);
    Ok(())
}

fn upload(
    shared: &Shared,
    method: &Method,
    name: &str,
    id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Resp {
    let mut state = shared.state();
    let Some((owner, mut data)) = state.uploads.remove(id) else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload unknown",
        );
    };
    if owner != name {
        state.uploads.insert(id.to_owned(), (owner, data));
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload unknown",
        );
    }
    match method.as_str() {
        "GET" => {
            let len = data.len();
            state.uploads.insert(id.to_owned(), (owner, data));
            drop(state);
            session(name, id, len, shared, StatusCode::NO_CONTENT)
        }
        "DELETE" => respond(StatusCode::NO_CONTENT, &[], Bytes::new()),
        "PATCH" => {
            let result = append_chunk(shared, &mut data, headers, &body);
            let len = data.len();
            state.uploads.insert(id.to_owned(), (owner, data));
            drop(state);
            match result {
                Ok(()) => session(name, id, len, shared, StatusCode::ACCEPTED),
                Err(r) => *r,
            }
        }
        "PUT" => {
            if !body.is_empty()
                && let Err(r) = append_chunk(shared, &mut data, headers, &body)
            {
                state.uploads.insert(id.to_owned(), (owner, data));
                return *r;
            }
            let Some(digest) = query.get("digest").filter(|d| valid_digest(d)) else {
                state.uploads.insert(id.to_owned(), (owner, data));
                return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "digest missing");
            };
            if sha256(&data) != *digest {
                // The session stays open: the client may fix its digest.
                state.uploads.insert(id.to_owned(), (owner, data));
                return error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                );
            }
            store_blob(&mut state, name, digest, Bytes::from(data));
            drop(state);
            created(shared, format!("/v2/{name}/blobs/{digest}"), digest)
        }
        _ => {
            state.uploads.insert(id.to_owned(), (owner, data));
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "method not allowed",
            )
        }
    }
}

/// A single `bytes=<first>-[<last>]` range (RFC 9110 §14.1.2), clamped to `len`.
fn parse_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let (first, last) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let first: usize = first.parse().ok()?;
    let last = if last.is_empty() {
        len.checked_sub(1)?
    } else {
        last.parse::<usize>().ok()?.min(len.checked_sub(1)?)
    };
    (first <= last).then_some((first, last))
}

fn get_blob(
    shared: &Shared,
    method: &Method,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
) -> Resp {
    if !valid_digest(digest) {
        return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
    }
    let state = shared.state();
    let Some(repo) = state.repos.get(name) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
    };
    let Some(bytes) = repo
        .blobs
        .contains(digest)
        .then(|| state.blobs.get(digest))
        .flatten()
        .cloned()
    else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        );
    };
    drop(state);
    let dcd = content_digest(shared, digest);
    let mut hdrs = vec![
        ("Docker-Content-Digest", dcd),
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Accept-Ranges", "bytes".to_owned()),
    ];
    let (status, body) = match header(headers, "range") {
        Some(range) if *method == Method::GET => match parse_range(range, bytes.len()) {
            Some((first, last)) => {
                hdrs.push((
                    "Content-Range",
                    format!("bytes {first}-{last}/{}", bytes.len()),
                ));
                (StatusCode::PARTIAL_CONTENT, bytes.slice(first..=last))
            }
            None => {
                return respond(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    &[("Content-Range", format!("bytes */{}", bytes.len()))],
                    Bytes::new(),
                );
            }
        },
        _ => (StatusCode::OK, bytes),
    };
    if *method == Method::HEAD {
        hdrs.push(("Content-Length", body.len().to_string()));
        return respond(status, &hdrs, Bytes::new());
    }
    respond(status, &hdrs, body)
}

fn deletes_disabled() -> Resp {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "deletes are disabled",
    )
}

fn delete_blob(shared: &Shared, name: &str, digest: &str) -> Resp {
    if shared.has(Fault::DeletesDisabled) {
        return deletes_disabled();
    }
    if !valid_digest(digest) {
        return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
    }
    let mut state = shared.state();
    let Some(repo) = state.repos.get_mut(name) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
    };
    if repo.blobs.remove(digest) {
        respond(StatusCode::ACCEPTED, &[], Bytes::new())
    } else {
        error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        )
    }
}

fn resolve(repo: &Repo, reference: &str) -> Option<String> {
    if valid_digest(reference) {
        repo.manifests
            .contains_key(reference)
            .then(|| reference.to_owned())
    } else {
        repo.tags.get(reference).cloned()
    }
}

fn get_manifest(shared: &Shared, method: &Method, name: &str, reference: &str) -> Resp {
    if !valid_digest(reference) && !valid_tag(reference) {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "invalid reference",
        );
    }
    let state = shared.state();
    let Some(repo) = state.repos.get(name) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
    };
    let Some((digest, (media_type, bytes))) =
        resolve(repo, reference).and_then(|d| repo.manifests.get(&d).cloned().map(|m| (d, m)))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        );
    };
    drop(state);
    // Served whatever the `Accept` header says: the spec's client SHOULD send one, but the
    // registry MUST provide the manifest ("Pulling manifests").
    let headers = [
        ("Docker-Content-Digest", content_digest(shared, &digest)),
        ("Content-Type", media_type),
        ("Content-Length", bytes.len().to_string()),
    ];
    if *method == Method::HEAD {
        return respond(StatusCode::OK, &headers, Bytes::new());
    }
    respond(StatusCode::OK, &headers[..2], bytes)
}

/// The digests a manifest or index points at that must already be in the repository
/// (everything but `subject`, which may come later).
fn references(manifest: &Value) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    if let Some(d) = manifest["config"]["digest"].as_str() {
        out.push((d.to_owned(), false));
    }
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        if let Some(d) = layer["digest"].as_str() {
            out.push((d.to_owned(), false));
        }
    }
    for m in manifest["manifests"].as_array().into_iter().flatten() {
        if let Some(d) = m["digest"].as_str() {
            out.push((d.to_owned(), true));
        }
    }
    out
}

fn put_manifest(
    shared: &Shared,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Resp {
    let by_digest = valid_digest(reference);
    if !by_digest && !valid_tag(reference) {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "invalid reference",
        );
    }
    if body.len() > 4 << 20 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MANIFEST_INVALID",
            "manifest too large",
        );
    }
    let Ok(manifest) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "manifest is not JSON",
        );
    };
    let content_type = header(headers, "content-type")
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
        .filter(|v| !v.is_empty());
    let Some(media_type) =
        content_type.or_else(|| manifest["mediaType"].as_str().map(String::from))
    else {
        return error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", "no media type");
    };
    if manifest["mediaType"]
        .as_str()
        .is_some_and(|m| m != media_type)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "Content-Type does not match mediaType",
        );
    }
    let digest = sha256(&body);
    if by_digest && reference != digest {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "provided digest did not match uploaded content",
        );
    }
    let mut state = shared.state();
    let repo = state.repos.entry(name.to_owned()).or_default();
    let missing: Vec<String> = references(&manifest)
        .into_iter()
        .filter(|(d, is_manifest)| {
            if *is_manifest {
                !repo.manifests.contains_key(d)
            } else {
                !repo.blobs.contains(d)
            }
        })
        .map(|(d, _)| d)
        .collect();
    if !missing.is_empty() {
        let errors: Vec<Value> = missing
            .iter()
            .map(|d| json!({"code": "MANIFEST_BLOB_UNKNOWN", "message": "manifest references a manifest or blob unknown to registry", "detail": d}))
            .collect();
        return respond(
            StatusCode::BAD_REQUEST,
            &[("Content-Type", "application/json".to_owned())],
            json!({ "errors": errors }).to_string(),
        );
    }
    repo.manifests.insert(digest.clone(), (media_type, body));
    if !by_digest {
        repo.tags.insert(reference.to_owned(), digest.clone());
    }
    drop(state);
    let mut response = created(shared, format!("/v2/{name}/manifests/{digest}"), &digest);
    if let Some(subject) = manifest["subject"]["digest"].as_str()
        && !shared.has(Fault::NoReferrers)
        && let Ok(v) = http::HeaderValue::from_str(subject)
    {
        response.headers_mut().insert("oci-subject", v);
    }
    response
}

fn delete_manifest(shared: &Shared, name: &str, reference: &str) -> Resp {
    if shared.has(Fault::DeletesDisabled) {
        return deletes_disabled();
    }
    let mut state = shared.state();
    let Some(repo) = state.repos.get_mut(name) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
    };
    if valid_digest(reference) {
        if repo.manifests.remove(reference).is_none() {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        }
        // "Once deleted, a GET to … any tag pointing to that digest will return a 404."
        repo.tags.retain(|_, d| d != reference);
    } else if repo.tags.remove(reference).is_none() {
        return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "tag unknown");
    }
    respond(StatusCode::ACCEPTED, &[], Bytes::new())
}

fn tags(shared: &Shared, name: &str, query: &HashMap<String, String>) -> Resp {
    let state = shared.state();
    let Some(repo) = state.repos.get(name) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
    };
    let mut all: Vec<String> = repo.tags.keys().cloned().collect();
    drop(state);
    if shared.has(Fault::UnsortedTags) {
        all.reverse();
    }
    let json_headers = [("Content-Type", "application/json".to_owned())];
    if shared.has(Fault::UnpaginatedTags) {
        return respond(
            StatusCode::OK,
            &json_headers,
            json!({"name": name, "tags": all}).to_string(),
        );
    }
    let n = match query.get("n").map(|n| n.parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "invalid n"),
    };
    let start = match query.get("last") {
        Some(last) => all.iter().position(|t| t == last).map_or_else(
            // A `last` that is not a tag: start after where it would sort.
            || {
                all.iter()
                    .take_while(|t| t.as_str() <= last.as_str())
                    .count()
            },
            |i| i + 1,
        ),
        None => 0,
    };
    let rest = &all[start.min(all.len())..];
    let page: Vec<String> = rest.iter().take(n.unwrap_or(usize::MAX)).cloned().collect();
    let mut headers = json_headers.to_vec();
    if let Some(n) = n
        && n > 0
        && rest.len() > n
        && let Some(last) = page.last()
    {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        next.append_pair("n", &n.to_string())
            .append_pair("last", last);
        headers.push((
            "Link",
            format!("</v2/{name}/tags/list?{}>; rel=\"next\"", next.finish()),
        ));
    }
    respond(
        StatusCode::OK,
        &headers,
        json!({"name": name, "tags": page}).to_string(),
    )
}

fn referrers(shared: &Shared, name: &str, digest: &str, query: &HashMap<String, String>) -> Resp {
    if shared.has(Fault::NoReferrers) {
        return error(StatusCode::NOT_FOUND, "UNSUPPORTED", "no referrers API");
    }
    if !valid_digest(digest) {
        return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
    }
    let filter = query.get("artifactType");
    let state = shared.state();
    let mut manifests = Vec::new();
    if let Some(repo) = state.repos.get(name) {
        let mut stored: Vec<_> = repo.manifests.iter().collect();
        stored.sort_by(|a, b| a.0.cmp(b.0));
        for (d, (media_type, bytes)) in stored {
            let Ok(m) = serde_json::from_slice::<Value>(bytes) else {
                continue;
            };
            if m["subject"]["digest"].as_str() != Some(digest) {
                continue;
            }
            let artifact_type = m["artifactType"]
                .as_str()
                .filter(|s| !s.is_empty())
                .or_else(|| m["config"]["mediaType"].as_str());
            if filter.is_some_and(|f| Some(f.as_str()) != artifact_type) {
                continue;
            }
            let mut desc = json!({"mediaType": media_type, "size": bytes.len(), "digest": d});
            if let Some(t) = artifact_type {
                desc["artifactType"] = json!(t);
            }
            if let Some(a) = m.get("annotations") {
                desc["annotations"] = a.clone();
            }
            manifests.push(desc);
        }
    }
    drop(state);
    let mut headers = vec![(
        "Content-Type",
        "application/vnd.oci.image.index.v1+json".to_owned(),
    )];
    if filter.is_some() {
        headers.push(("OCI-Filters-Applied", "artifactType".to_owned()));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    respond(StatusCode::OK, &headers, index.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn names_tags_and_ranges_follow_the_grammar() {
        assert!(valid_name("a/b-c/d.e_f"));
        assert!(!valid_name("A/b"));
        assert!(!valid_name("a//b"));
        assert!(!valid_name("-a"));
        assert!(valid_tag("v1.0_rc-1"));
        assert!(!valid_tag(".v1"));
        assert!(!valid_tag(&"a".repeat(129)));
        assert_eq!(parse_range("bytes=2-5", 10), Some((2, 5)));
        assert_eq!(parse_range("bytes=8-", 10), Some((8, 9)));
        assert_eq!(parse_range("bytes=8-100", 10), Some((8, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("items=1-2", 10), None);
    }

    #[test]
    fn routes_use_the_last_marker() {
        let shared = Shared {
            state: Mutex::default(),
            faults: HashSet::new(),
        };
        let headers = HeaderMap::new();
        let d = sha256(b"x");
        let r = handle(
            &shared,
            &Method::POST,
            &format!("/v2/a/blobs/b/blobs/uploads/?digest={d}"),
            &headers,
            Bytes::from_static(b"x"),
        );
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(shared.state().repos["a/blobs/b"].blobs.contains(&d));
    }
}
