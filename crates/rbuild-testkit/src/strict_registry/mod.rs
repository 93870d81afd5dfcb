//! An in-process registry that follows the OCI distribution spec 1.1 to the letter, with
//! switches that break one behaviour at a time.
//!
//! The real registry (docker-registry 2.8, [`crate::registry`]) is the reference for "what
//! registries do"; this one is the reference for "what the spec says", for the behaviours 2.8
//! lacks (referrers API, `OCI-Subject`, sorted and paginated tags, 416 on out-of-order chunks,
//! manifests served without `Accept`) and for faults no real registry produces on demand. Each
//! [`Fault`] breaks exactly one behaviour, so a test can prove that a conformance check notices
//! it.
//!
//! Served (paths of the spec's endpoint table, end-1 … end-14): `GET /v2/`; blob `GET`/`HEAD`
//! (with `Range`) and `DELETE`; upload sessions (`POST` with `digest`, `mount`/`from`,
//! `PATCH` with `Content-Range`, `GET` status, `PUT` close, `DELETE` cancel) advertising
//! `OCI-Chunk-Min-Length`; manifests `GET`/`HEAD`/`PUT`/`DELETE` by tag or digest with
//! `OCI-Subject`; tags with `n`/`last` and `Link`; referrers with `artifactType` filtering.
//! No authentication.
//!
//! ```no_run
//! use rbuild_testkit::strict_registry::{Fault, StrictRegistry};
//!
//! let registry = StrictRegistry::start(&[Fault::UnsortedTags])?;
//! println!("registry at {}", registry.host());
//! assert_eq!(registry.manifest_count(), 0);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

mod handlers;

use handlers::handle;

/// The minimum chunk size the fixture advertises on upload sessions (`OCI-Chunk-Min-Length`).
pub const CHUNK_MIN_LENGTH: usize = 1024;

/// One behaviour to break; [`StrictRegistry::start`] takes any number of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// `Docker-Content-Digest` on blob and manifest answers names another digest.
    WrongContentDigest,
    /// Answers `202 Accepted` wherever `201 Created` is due (closed uploads, single-POST
    /// uploads, mounts, manifest pushes).
    AcceptedForCreated,
    /// `201 Created` answers carry no `Location` (upload sessions still do: without it no
    /// upload could proceed at all).
    NoLocation,
    /// The tag list comes in reverse lexical order (pagination still walks that order).
    UnsortedTags,
    /// `n` and `last` are ignored: every tag in one answer, no `Link`.
    UnpaginatedTags,
    /// `Content-Range` on chunk uploads is ignored: out-of-order and repeated chunks are
    /// appended instead of answered 416.
    AcceptOutOfOrderChunks,
    /// Chunk uploads (`PATCH`) and upload status (`GET`) answer without `Range`.
    NoChunkRange,
    /// No referrers API (404) and no `OCI-Subject`, as registries before spec 1.1.
    NoReferrers,
    /// Deleting manifests, tags and blobs is disabled (405 with `UNSUPPORTED`).
    DeletesDisabled,
}

#[derive(Default)]
struct Repo {
    blobs: HashSet<String>,
    /// Digest → (media type, bytes).
    manifests: HashMap<String, (String, Bytes)>,
    tags: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, Bytes>,
    repos: HashMap<String, Repo>,
    uploads: HashMap<String, (String, Vec<u8>)>,
    next_upload: u64,
    requests: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    faults: HashSet<Fault>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }
}

/// A running spec-strict registry on `127.0.0.1:<free port>`; stopped on drop.
pub struct StrictRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StrictRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrictRegistry")
            .field("addr", &self.addr)
            .field("faults", &self.shared.faults)
            .finish_non_exhaustive()
    }
}

impl StrictRegistry {
    /// Starts a registry with the given faults (none: the spec exactly). It runs on its own
    /// thread and runtime, so both plain and `#[tokio::test]` tests can use it.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound or the runtime cannot start.
    pub fn start(faults: &[Fault]) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            faults: faults.iter().copied().collect(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("strict-registry-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, thread_shared, stopped)))?;
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far as `METHOD /path?query STATUS`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.state().requests.clone()
    }

    /// Manifests stored, over all repositories.
    pub fn manifest_count(&self) -> usize {
        self.shared
            .state()
            .repos
            .values()
            .map(|r| r.manifests.len())
            .sum()
    }

    /// Tags, over all repositories.
    pub fn tag_count(&self) -> usize {
        self.shared
            .state()
            .repos
            .values()
            .map(|r| r.tags.len())
            .sum()
    }

    /// Blobs linked into repositories, over all repositories.
    pub fn blob_link_count(&self) -> usize {
        self.shared
            .state()
            .repos
            .values()
            .map(|r| r.blobs.len())
            .sum()
    }

    /// Upload sessions still open.
    pub fn open_uploads(&self) -> usize {
        self.shared.state().uploads.len()
    }
}

impl Drop for StrictRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let shared = Arc::clone(&shared);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                            let response = handle(&shared, &parts.method, &target, &parts.headers, body);
                            shared.state().requests.push(format!("{} {target} {}", parts.method, response.status().as_u16()));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}
