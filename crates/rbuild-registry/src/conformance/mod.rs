//! Registry conformance: the four workflows of the OCI distribution spec 1.1 (pull, push,
//! content discovery, content management) as checks against any registry.
//!
//! Each [`Check`] names the spec section it enforces and ends `passed`, `failed` (with the
//! failing request and response lines, credentials never shown) or `skipped` (a step it
//! depends on failed, or the registry opted out of something the spec lets it lack). The
//! checks follow the spec text (`spec.md` of opencontainers/distribution-spec, sections named
//! in each check) and cover what the reference conformance suite covers, plus the chunk
//! `Range`/`Location` handling, range reads, `n=0` and `Link` walking, and the referrers
//! tag-schema fallback. Requests go through the crate's [`Client`] for authentication, but are
//! built raw: the runner sends what the normal client never would (a chunk out of order, a
//! manifest `GET` without `Accept`, a wrong digest).
//!
//! Everything a run pushes carries a fresh run ID (so no check sees an earlier run's content)
//! and is deleted at the end of each workflow unless [`ConformanceOptions::keep`] is set;
//! what the registry refuses to delete is listed in [`Report::leftovers`].
//!
//! ```no_run
//! use rbuild_registry::conformance::{self, ConformanceOptions, Workflow};
//! use rbuild_registry::{Client, ClientOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(ClientOptions::default())?;
//! let options = ConformanceOptions::default().workflows(&[Workflow::Pull, Workflow::Push]);
//! let report = conformance::run(&client, "127.0.0.1:5000", "conformance/test", &options).await?;
//! print!("{}", report.to_text());
//! std::process::exit(i32::from(report.has_failures()));
//! # }
//! ```
//!
//! # Expected failures of docker-registry 2.8
//!
//! The CNCF distribution 2.8 release predates spec 1.1. Run against it (storage with
//! `delete.enabled: true`), every check passes except these, each a known gap of 2.8:
//!
//! | check | spec | why 2.8 fails it |
//! |---|---|---|
//! | `GET manifest without Accept answers 200 with the manifest` | §Pulling manifests, end-3 | 2.8 negotiates on `Accept` and answers an OCI manifest requested without one with 404 `MANIFEST_UNKNOWN`; the spec makes `Accept` a client SHOULD and the manifest a registry MUST |
//! | `PATCH out-of-order chunk answers 416` | §Pushing a blob in chunks, end-5 | 2.8 does not compare `Content-Range` with the session's offset: it appends the chunk (202) |
//! | `PATCH repeating the previous chunk answers 416` | §Pushing a blob in chunks, end-5 | same: the repeated bytes are appended |
//! | `PUT manifest with subject answers OCI-Subject` | §Pushing Manifests with Subject | no referrers support, so no `OCI-Subject` header (clients then fall back to the tag schema, which passes) |
//! | `tag list is in lexical order` | §Listing Tags, end-8a | tags come in storage-listing order |
//! | `tag list with n returns the first n tags` | §Listing Tags, end-8b | `n` and `last` are ignored: every tag, no `Link` |
//! | `tag list with n and last returns the tags after last` | §Listing Tags, end-8b | same |
//! | `tag list pages walk every tag once, in order` | §Listing Tags, end-8b | same |
//! | `tag list with n=0 is empty, without Link` | §Listing Tags, end-8b | same |
//! | `GET referrers answers an image index of the referrers` | §Listing Referrers, end-12a | no referrers API: 404 |
//! | `GET referrers with artifactType filters them` | §Listing Referrers, end-12b | same |
//! | `GET referrers of an unreferenced digest answers an empty index` | §Listing Referrers, end-12a | same (the spec forbids 404 here) |
//!
//! Allowed by the spec and so passed, with a note: tag deletion answers 400 (§Deleting tags
//! lets a registry disable it; its follow-up check is skipped), single-`POST` uploads answer
//! 202 and a session (§Single POST), a mount without `from` answers 202 (§Mounting), and the
//! referrers tag-schema fallback works (the index pushed under `sha256-<hex>` is served back).
//! The tests `conformance_against_docker_registry_2_8` (library) and
//! `conformance_command_against_docker_registry_2_8_fails_only_its_known_gaps` (command) pin
//! this list.

mod discovery;
mod management;
mod pull;
mod push;
mod report;
mod wire;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use rbuild_oci::Digest;
use serde_json::{Value, json};

use crate::client::Client;
pub use report::{Check, CheckFailed, Report, Status, WorkflowReport};
pub use wire::ExchangeError;
use wire::{Exchange, Wire};

/// The four workflows of the spec's "Conformance" section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workflow {
    /// Pulling manifests and blobs.
    Pull,
    /// Pushing blobs (monolithic, chunked, mounted) and manifests.
    Push,
    /// Listing tags and referrers.
    ContentDiscovery,
    /// Deleting tags, manifests and blobs.
    ContentManagement,
}

impl Workflow {
    /// Every workflow, in run order.
    pub const ALL: [Self; 4] = [
        Self::Pull,
        Self::Push,
        Self::ContentDiscovery,
        Self::ContentManagement,
    ];

    /// `pull`, `push`, `content-discovery`, `content-management`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::ContentDiscovery => "content-discovery",
            Self::ContentManagement => "content-management",
        }
    }
}

impl fmt::Display for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A workflow name that is none of the four.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown workflow `{0}` (expected pull, push, content-discovery or content-management)")]
pub struct UnknownWorkflow(pub String);

impl FromStr for Workflow {
    type Err = UnknownWorkflow;

    /// Accepts the names of [`Workflow::name`], plus `discovery` and `management`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "pull" => Ok(Self::Pull),
            "push" => Ok(Self::Push),
            "content-discovery" | "discovery" => Ok(Self::ContentDiscovery),
            "content-management" | "management" => Ok(Self::ContentManagement),
            _ => Err(UnknownWorkflow(s.to_owned())),
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ConformanceOptions {
    workflows: BTreeSet<Workflow>,
    cross_mount: Option<String>,
    keep: bool,
}

impl ConformanceOptions {
    /// Runs only these workflows (default: all four).
    #[must_use]
    pub fn workflows(mut self, workflows: &[Workflow]) -> Self {
        self.workflows = workflows.iter().copied().collect();
        self
    }

    /// The repository blobs are mounted into for the cross-repository mount checks (the
    /// reference suite's `OCI_CROSSMOUNT_NAMESPACE`); default `<namespace>-crossmount`.
    #[must_use]
    pub fn cross_mount(mut self, namespace: Option<String>) -> Self {
        self.cross_mount = namespace.filter(|n| !n.is_empty());
        self
    }

    /// Leaves everything the run pushed in the registry.
    #[must_use]
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    fn selected(&self) -> Vec<Workflow> {
        if self.workflows.is_empty() {
            Workflow::ALL.to_vec()
        } else {
            self.workflows.iter().copied().collect()
        }
    }
}

/// Why a run could not start (once it starts, every problem is a failed check).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConformanceError {
    /// The namespace is not a repository name of the spec's grammar.
    #[error(
        "invalid namespace `{namespace}`: a repository name is lowercase components `[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*` separated by `/`"
    )]
    InvalidNamespace {
        /// The namespace as given.
        namespace: String,
    },
    /// The registry host cannot be part of a URL.
    #[error("conformance run against {registry}: invalid registry")]
    InvalidRegistry {
        /// The registry as given.
        registry: String,
        /// The cause.
        #[source]
        source: crate::Error,
    },
    /// `GET /v2/` failed: connection, TLS or a token endpoint.
    #[error("conformance run against {registry}: the registry does not answer /v2/\n{exchange}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// The request line and what went wrong (shown in the message).
        exchange: ExchangeError,
    },
    /// `GET /v2/` answered 401/403 even with the credentials we have (or without any).
    #[error(
        "conformance run against {registry}: unauthorized: the registry refuses our credentials (pass -u USER --password-stdin, or `rbuild login {registry}`)\n{detail}"
    )]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The request and response lines (never the credentials).
        detail: String,
    },
}

/// The spec's `<name>` grammar ("Pulling manifests").
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|component| {
            // Separators `.`, `_`, `__` or runs of `-` between alphanumeric runs.
            let b = component.as_bytes();
            let mut i = 0;
            let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            let run = |i: &mut usize| {
                let start = *i;
                while *i < b.len() && alnum(b[*i]) {
                    *i += 1;
                }
                *i > start
            };
            if !run(&mut i) {
                return false;
            }
            while i < b.len() {
                match b[i] {
                    b'.' => i += 1,
                    b'_' if b.get(i + 1) == Some(&b'_') => i += 2,
                    b'_' => i += 1,
                    b'-' => {
                        while i < b.len() && b[i] == b'-' {
                            i += 1;
                        }
                    }
                    _ => return false,
                }
                if !run(&mut i) {
                    return false;
                }
            }
            true
        })
}

/// Runs the selected workflows against `registry` (`host[:port]`), in repository `namespace`.
///
/// # Errors
///
/// [`ConformanceError::InvalidNamespace`] for a namespace (or cross-mount namespace) outside
/// the spec's grammar, [`ConformanceError::InvalidRegistry`] for a host that cannot be part of
/// a URL; [`ConformanceError::Unreachable`] when `GET /v2/` fails (connection, TLS) and
/// [`ConformanceError::Unauthorized`] when it answers 401/403. Everything after that is
/// reported as checks.
pub async fn run(
    client: &Client,
    registry: &str,
    namespace: &str,
    options: &ConformanceOptions,
) -> Result<Report, ConformanceError> {
    let started = Instant::now();
    let cross = options
        .cross_mount
        .clone()
        .unwrap_or_else(|| format!("{namespace}-crossmount"));
    for n in [namespace, cross.as_str()] {
        if !valid_name(n) {
            return Err(ConformanceError::InvalidNamespace {
                namespace: n.to_owned(),
            });
        }
    }
    let base = client
        .base_url(registry)
        .map_err(|source| ConformanceError::InvalidRegistry {
            registry: registry.to_owned(),
            source,
        })?;
    let wire = Wire {
        client: client.clone(),
        registry: registry.to_owned(),
        base,
    };
    // Before any check: a registry we cannot reach or log in to gives one clear error, not
    // sixty failed checks. Other answers are the first check's business.
    let probe = wire.url("", "");
    let x = wire
        .send(wire.raw(Method::GET, "", probe))
        .await
        .map_err(|exchange| ConformanceError::Unreachable {
            registry: registry.to_owned(),
            exchange,
        })?;
    if matches!(x.status.as_u16(), 401 | 403) {
        return Err(ConformanceError::Unauthorized {
            registry: registry.to_owned(),
            detail: x.transcript(),
        });
    }
    let session = Session {
        wire,
        namespace: namespace.to_owned(),
        cross,
        run_id: run_id(),
        keep: options.keep,
    };
    let mut workflows = Vec::new();
    let mut leftovers = Vec::new();
    for workflow in options.selected() {
        let mut cx = Cx::new(&session);
        match workflow {
            Workflow::Pull => pull::run(&mut cx).await,
            Workflow::Push => push::run(&mut cx).await,
            Workflow::ContentDiscovery => discovery::run(&mut cx).await,
            Workflow::ContentManagement => management::run(&mut cx).await,
        }
        leftovers.extend(cx.cleanup().await);
        workflows.push(WorkflowReport {
            workflow,
            checks: cx.checks,
        });
    }
    Ok(Report {
        target: format!("{registry}/{namespace}"),
        run_id: session.run_id.clone(),
        workflows,
        leftovers,
        elapsed: started.elapsed(),
    })
}

/// A short ID unique to this run (time and process), so that each run pushes new digests and
/// tags.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let d = Digest::sha256_of(format!("{nanos}-{}", std::process::id()).as_bytes());
    d.hex()[..10].to_owned()
}

/// What every workflow shares.
pub(crate) struct Session {
    pub wire: Wire,
    pub namespace: String,
    pub cross: String,
    pub run_id: String,
    pub keep: bool,
}

/// What a check returns: `Ok(note)` passes, `Err(detail)` fails.
pub(crate) type Outcome = Result<String, String>;

/// One workflow's context: the session, the checks so far and what to clean up.
pub(crate) struct Cx<'a> {
    pub s: &'a Session,
    pub checks: Vec<Check>,
    /// `(repository, digest)` of manifests and blobs pushed, deleted in reverse order.
    pushed_manifests: Vec<(String, Digest)>,
    pushed_blobs: Vec<(String, Digest)>,
}

impl<'a> Cx<'a> {
    fn new(s: &'a Session) -> Self {
        Self {
            s,
            checks: Vec::new(),
            pushed_manifests: Vec::new(),
            pushed_blobs: Vec::new(),
        }
    }

    /// Records a check.
    pub(crate) fn record(&mut self, name: &str, spec: &str, outcome: Outcome) {
        let (status, detail) = match outcome {
            Ok(note) => (Status::Passed, note),
            Err(detail) => (Status::Failed, detail),
        };
        self.checks.push(Check {
            name: name.to_owned(),
            spec: spec.to_owned(),
            status,
            detail,
        });
    }

    /// Records a skipped check.
    pub(crate) fn skip(&mut self, name: &str, spec: &str, reason: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            spec: spec.to_owned(),
            status: Status::Skipped,
            detail: reason.into(),
        });
    }

    /// The namespace repository.
    pub(crate) fn ns(&self) -> &str {
        &self.s.namespace
    }

    /// A tag unique to this run and workflow: `<prefix>-<run id>`.
    pub(crate) fn tag(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.s.run_id)
    }

    /// Sends a raw request.
    pub(crate) async fn send(&self, raw: wire::Raw) -> Result<Exchange, ExchangeError> {
        self.s.wire.send(raw).await
    }

    /// A raw request to `/v2/<repo>/<tail>`.
    pub(crate) fn req(&self, method: Method, repo: &str, tail: &str) -> wire::Raw {
        let url = self.s.wire.url(repo, tail);
        self.s.wire.raw(method, repo, url)
    }

    /// A raw request to an absolute URL (a `Location`).
    pub(crate) fn req_url(&self, method: Method, repo: &str, url: url::Url) -> wire::Raw {
        self.s.wire.raw(method, repo, url)
    }

    /// Resolves a `Location` header against the registry.
    pub(crate) fn location(&self, x: &Exchange) -> Result<url::Url, String> {
        let loc = x
            .header("location")
            .ok_or_else(|| format!("no Location header\n{}", x.transcript()))?;
        x.url
            .join(loc)
            .map_err(|e| format!("invalid Location `{loc}`: {e}\n{}", x.transcript()))
    }

    /// Notes a manifest for deletion at the end.
    pub(crate) fn pushed_manifest(&mut self, repo: &str, digest: &Digest) {
        self.pushed_manifests
            .push((repo.to_owned(), digest.clone()));
    }

    /// Notes a blob for deletion at the end.
    pub(crate) fn pushed_blob(&mut self, repo: &str, digest: &Digest) {
        self.pushed_blobs.push((repo.to_owned(), digest.clone()));
    }

    /// Setup step, not a check: makes sure `bytes` is a blob in `repo` (POST then PUT, the one
    /// upload every registry supports), accepting any 2xx.
    pub(crate) async fn ensure_blob(
        &mut self,
        repo: &str,
        bytes: &Bytes,
    ) -> Result<Digest, String> {
        let digest = Digest::sha256_of(bytes);
        let post = self
            .send(
                self.req(Method::POST, repo, "blobs/uploads/")
                    .header("content-length", "0"),
            )
            .await?;
        if !post.status.is_success() {
            return Err(format!("setup: upload refused\n{}", post.transcript()));
        }
        let mut url = self.location(&post)?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let put = self
            .send(
                self.req_url(Method::PUT, repo, url)
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone()),
            )
            .await?;
        if !put.status.is_success() {
            return Err(format!("setup: blob upload failed\n{}", put.transcript()));
        }
        self.pushed_blob(repo, &digest);
        Ok(digest)
    }

    /// Setup step, not a check: pushes a manifest under `reference` (tag or digest),
    /// accepting any 2xx.
    pub(crate) async fn ensure_manifest(
        &mut self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &Bytes,
    ) -> Result<(Digest, Exchange), String> {
        let digest = Digest::sha256_of(bytes);
        let put = self
            .send(
                self.req(Method::PUT, repo, &format!("manifests/{reference}"))
                    .header("content-type", media_type)
                    .body(bytes.clone()),
            )
            .await?;
        if !put.status.is_success() {
            return Err(format!("setup: manifest push failed\n{}", put.transcript()));
        }
        self.pushed_manifest(repo, &digest);
        Ok((digest, put))
    }

    /// Deletes what this workflow pushed (unless `keep`); returns what could not be deleted.
    async fn cleanup(&mut self) -> Vec<String> {
        if self.s.keep {
            return Vec::new();
        }
        let mut left = Vec::new();
        let manifests = std::mem::take(&mut self.pushed_manifests);
        let blobs = std::mem::take(&mut self.pushed_blobs);
        let mut seen = BTreeSet::new();
        // Referrers before their subject, then blobs: the reverse of the push order.
        for (kind, (repo, digest)) in manifests
            .into_iter()
            .rev()
            .map(|m| ("manifests", m))
            .chain(blobs.into_iter().rev().map(|b| ("blobs", b)))
        {
            if !seen.insert((kind, repo.clone(), digest.clone())) {
                continue;
            }
            let x = self
                .send(self.req(Method::DELETE, &repo, &format!("{kind}/{digest}")))
                .await;
            match x {
                // 404: already gone (a check deleted it, or deleting the manifest did).
                Ok(x) if x.status.is_success() || x.status == StatusCode::NOT_FOUND => {}
                Ok(x) => left.push(format!(
                    "{}/{repo}/{kind}/{digest} (DELETE answered {})",
                    self.s.wire.registry, x.status
                )),
                Err(e) => left.push(format!(
                    "{}/{repo}/{kind}/{digest} ({})",
                    self.s.wire.registry,
                    e.to_string().lines().last().unwrap_or("")
                )),
            }
        }
        left
    }
}

/// Records a failed setup (the registry refused what every workflow needs: a plain upload or
/// manifest push) and skips the workflow's checks.
pub(crate) fn setup_failed(cx: &mut Cx<'_>, detail: String, checks: &[(&str, &str)]) {
    cx.record(
        "setup: push the workflow's test content",
        "§Pushing a blob monolithically, §Pushing Manifests",
        Err(detail),
    );
    for (name, spec) in checks {
        cx.skip(name, spec, "setup failed");
    }
}

// ---- content -------------------------------------------------------------------------------

/// The media type of test layers (registries do not look inside blobs).
pub(crate) const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The OCI empty descriptor's media type and content (image-spec "Guidance for an Empty
/// Descriptor").
pub(crate) const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub(crate) const EMPTY_JSON: &[u8] = b"{}";

/// A config blob unique to `label` of this run.
pub(crate) fn config_blob(cx: &Cx<'_>, label: &str) -> Bytes {
    let v = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"org.rbuild.conformance": format!("{}-{label}", cx.s.run_id)}},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    Bytes::from(v.to_string())
}

/// Incompressible bytes unique to `label` of this run, `len` long.
pub(crate) fn layer_blob(cx: &Cx<'_>, label: &str, len: usize) -> Bytes {
    let seed = Digest::sha256_of(format!("{}-{label}", cx.s.run_id).as_bytes());
    let mut x = u64::from_str_radix(&seed.hex()[..16], 16).unwrap_or(1) | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            // xorshift64: cheap, and enough to make every run's blobs distinct.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    Bytes::from(bytes)
}

/// A descriptor as JSON.
pub(crate) fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::sha256_of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// An OCI image manifest.
pub(crate) fn image_manifest(config: Value, layers: Vec<Value>, extra: Option<Value>) -> Bytes {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": rbuild_oci::media_type::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    if let (Some(Value::Object(extra)), Some(obj)) = (extra, m.as_object_mut()) {
        obj.extend(extra);
    }
    Bytes::from(m.to_string())
}

// ---- expectations --------------------------------------------------------------------------

/// The spec's error codes ("Error Codes", code-1 … code-14).
pub(crate) const ERROR_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// Fails unless the status is one of `want`.
pub(crate) fn status(x: &Exchange, want: &[u16]) -> Result<(), String> {
    if want.contains(&x.status.as_u16()) {
        return Ok(());
    }
    let want: Vec<String> = want.iter().map(u16::to_string).collect();
    Err(format!(
        "expected {}, got {}\n{}",
        want.join(" or "),
        x.status.as_u16(),
        x.transcript()
    ))
}

/// A required response header.
pub(crate) fn need<'x>(x: &'x Exchange, name: &str) -> Result<&'x str, String> {
    x.header(name)
        .ok_or_else(|| format!("no {name} header\n{}", x.transcript()))
}

/// Fails unless `Docker-Content-Digest` is present and names `digest`.
pub(crate) fn content_digest(x: &Exchange, digest: &Digest) -> Result<(), String> {
    let got = need(x, "docker-content-digest")?;
    if got.trim() != digest.to_string() {
        return Err(format!(
            "Docker-Content-Digest is {got}, expected {digest}\n{}",
            x.transcript()
        ));
    }
    Ok(())
}

/// Fails unless the body is `want`.
pub(crate) fn body_is(x: &Exchange, want: &[u8]) -> Result<(), String> {
    if x.body.as_ref() == want {
        return Ok(());
    }
    Err(format!(
        "body differs from what was pushed ({} bytes, sha256 {}; expected {} bytes, {})\n{}",
        x.body.len(),
        Digest::sha256_of(&x.body),
        want.len(),
        Digest::sha256_of(want),
        x.transcript()
    ))
}

/// The error codes of a 4xx JSON body. A body that is not JSON is allowed ("A 4XX response
/// code from the registry MAY return a body in any format"); a JSON body MUST have the
/// `errors` shape with codes from the table.
pub(crate) fn error_codes(x: &Exchange) -> Result<Vec<String>, String> {
    let is_json = x.header("content-type").is_some_and(|t| t.contains("json"))
        || x.body.first() == Some(&b'{');
    if x.body.is_empty() || !is_json {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(&x.body)
        .map_err(|e| format!("error body is not valid JSON: {e}\n{}", x.transcript()))?;
    let errors = v["errors"].as_array().ok_or_else(|| {
        format!(
            "JSON error body without an `errors` array (§Error Codes)\n{}",
            x.transcript()
        )
    })?;
    let mut codes = Vec::new();
    for e in errors {
        let code = e["code"].as_str().unwrap_or("");
        if !ERROR_CODES.contains(&code) {
            return Err(format!(
                "error code `{code}` is not one of the spec's codes (§Error Codes)\n{}",
                x.transcript()
            ));
        }
        codes.push(code.to_owned());
    }
    Ok(codes)
}

/// Fails unless the status is one of `want` and a JSON body (if any) is spec-shaped and, when
/// `code` is given, carries that code.
pub(crate) fn error_answer(x: &Exchange, want: &[u16], code: Option<&str>) -> Outcome {
    status(x, want)?;
    let codes = error_codes(x)?;
    if let Some(code) = code
        && !codes.is_empty()
        && !codes.iter().any(|c| c == code)
    {
        return Err(format!(
            "error codes {codes:?} do not include {code}\n{}",
            x.transcript()
        ));
    }
    Ok(String::new())
}

/// Parses a JSON body.
pub(crate) fn json_body(x: &Exchange) -> Result<Value, String> {
    serde_json::from_slice(&x.body)
        .map_err(|e| format!("body is not JSON: {e}\n{}", x.transcript()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_the_name_grammar() {
        for ok in ["a", "a/b", "conformance/test-1", "a__b", "a---b.c_d/e0"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a_", "a___b", "-a", "a/.b", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn workflows_parse_by_name() {
        assert_eq!("pull".parse::<Workflow>().unwrap(), Workflow::Pull);
        assert_eq!(
            "content_discovery".parse::<Workflow>().unwrap(),
            Workflow::ContentDiscovery
        );
        assert_eq!(
            "management".parse::<Workflow>().unwrap(),
            Workflow::ContentManagement
        );
        assert!("pulls".parse::<Workflow>().is_err());
        for w in Workflow::ALL {
            assert_eq!(w.name().parse::<Workflow>().unwrap(), w);
        }
    }
}
