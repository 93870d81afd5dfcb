//! Registry glue: pulling images into the store and pushing them from it, through the
//! [`rbuild_registry`] client.
//!
//! The store is the client's [`BlobSource`] and [`BlobSink`] ([`StoreBlobs`]): pulled blobs are
//! streamed into the store's temp area and renamed into `blobs/` only after their digest was
//! verified, so an interrupted pull leaves no corrupt blob. After a pull every layer is unpacked
//! (safe apply from `rbuild-layer`, its uncompressed digest checked against the config's
//! `diff_id`) and the reference is tagged in the store.
//!
//! Where a blob came from (the repositories it was pulled from or pushed to) is recorded in the
//! store's state files, so that pushing an image built on a pulled base to the same registry
//! mounts the base's layers (`Mounted from <repo>`) instead of uploading them, as docker does
//! with its `v2metadata` service.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rbuild::registry::{self, Client, ClientOptions};
//! use rbuild::{Reference, Store};
//!
//! let store = Store::open("/var/lib/rbuild".as_ref())?;
//! let client = Client::new(ClientOptions::default())?;
//! let base: Reference = "127.0.0.1:5000/busybox:1.36".parse()?;
//! let events = registry::Events::new(|e: registry::PullEvent| {
//!     if let Some(line) = e.docker_line() {
//!         println!("{line}");
//!     }
//! });
//! // The future borrows nothing: it may run on a task of its own.
//! let digest = tokio::spawn(registry::pull(&store, &client, &base, None, events)).await??;
//! let dest: Reference = "127.0.0.1:5000/app:v1".parse()?;
//! let pushed =
//!     registry::push(&store, &client, &digest.to_string(), &dest, registry::Events::none())
//!         .await?;
//! println!("{}: digest: {} size: {}", dest.tag_or_digest(), pushed.digest, pushed.size);
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rbuild_oci::oci_spec::image::{Descriptor, ImageManifest};
use rbuild_oci::{Digest, Reference, media_type};
use rbuild_store::Store;

use crate::error::{Error, Result};
use crate::image;

/// The distribution client's error type (the cause inside this crate's an error naming the operation).
pub use rbuild_registry::Error as RegistryError;
pub use rbuild_registry::credentials;
pub use rbuild_registry::{
    BlobRef, BlobSink, BlobSource, BlobStatus, BlobWriter, Client, ClientOptions, Credentials,
    CredentialsEnv, Events, ImageToPush, Manifest, Platform, PullEvent, PushEvent, PushResult,
};

/// The store as the registry client's blob source (push) and sink (pull). Owns its (cheap)
/// store handle, so push and pull futures need not borrow one.
#[derive(Debug, Clone)]
pub struct StoreBlobs(pub Store);

impl BlobSource for StoreBlobs {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        match self.0.open_blob(digest) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) => {
                let kind = if e.is_not_found() {
                    io::ErrorKind::NotFound
                } else {
                    io::ErrorKind::Other
                };
                Err(io::Error::new(kind, e))
            }
        }
    }
}

impl BlobSink for StoreBlobs {
    fn has(&self, digest: &Digest) -> bool {
        self.0.has_blob(digest)
    }

    fn write(&self, digest: &Digest) -> io::Result<Box<dyn BlobWriter>> {
        let inner = self.0.blob_writer().map_err(io::Error::other)?;
        Ok(Box::new(StoreBlobWriter {
            inner,
            digest: digest.clone(),
        }))
    }
}

/// A store blob writer that commits only under the digest it was opened for.
struct StoreBlobWriter {
    inner: rbuild_store::BlobWriter,
    digest: Digest,
}

impl Write for StoreBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter for StoreBlobWriter {
    fn commit(self: Box<Self>) -> io::Result<()> {
        // The client verified the digest while streaming; the store checks again before the
        // rename, so a blob path never holds bytes of another digest.
        let this = *self;
        match this.inner.commit(Some(&this.digest)) {
            Ok(_) => Ok(()),
            Err(e @ rbuild_store::Error::DigestMismatch { .. }) => {
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// Pulls `reference` into `store`: fetches the manifest (an index is resolved to `platform`,
/// default the host's), the config and the layers the store lacks, each verified against its
/// digest; unpacks every layer (checking its `diff_id`); tags the reference (when it has a
/// tag) and records the repository as where the blobs came from. Returns the digest of the
/// image manifest now in the store, which [`image::load`] reads (OCI or Docker v2s2).
///
/// When the reference names an image index, the index is stored and tagged (as docker and
/// containerd keep it) along with the chosen platform's manifest; pulling the same reference
/// for another platform adds that platform's manifest under the same tag. Builds, `run` and
/// `inspect` pick their platform's manifest out of the index ([`image::select`]).
///
/// The future is `Send + 'static`: it works on clones of the (cheap) store and client handles.
///
/// # Errors
///
/// an error naming the operation naming the pull, with the [`RegistryError`] (not found, unauthorized,
/// digest mismatch, …) or the store/unpack failure as its source.
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: Option<&Platform>,
    events: Events<PullEvent>,
) -> impl Future<Output = Result<Digest>> + Send + 'static {
    let store = store.clone();
    let client = client.clone();
    let reference = reference.clone();
    let platform = platform.cloned();
    async move { pull_owned(store, client, reference, platform, events).await }
}

async fn pull_owned(
    store: Store,
    client: Client,
    reference: Reference,
    platform: Option<Platform>,
    events: Events<PullEvent>,
) -> Result<Digest> {
    let op = || format!("pull {reference}");
    // Blobs and layer dirs are written: keep a concurrent prune away (crate docs of the store).
    let lock = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.lock_shared())
            .await
            .map_err(Error::op(op()))?
            .map_err(Error::op(op()))?
    };
    let pulled = client
        .pull_image(
            &reference,
            platform.as_ref(),
            Arc::new(StoreBlobs(store.clone())),
            events,
        )
        .await
        .map_err(|e| match e {
            RegistryError::NoPlatform {
                reference,
                platform,
                available,
            } => Error::NoPlatform {
                reference,
                platform,
                available,
            },
            e => Error::op(op())(e),
        })?;
    let tagged = reference.clone();
    let digest = tokio::task::spawn_blocking(move || {
        let _lock = lock;
        finish_pull(&store, &tagged, &pulled)
    })
    .await
    .map_err(Error::op(op()))??;
    Ok(digest)
}

/// The blocking half of a pull: manifest blobs, unpacking, tag, origins.
fn finish_pull(
    store: &Store,
    reference: &Reference,
    pulled: &rbuild_registry::PulledImage,
) -> Result<Digest> {
    let op = |what: &str| format!("pull {reference}: {what}");
    if let Some(index) = &pulled.index {
        // Kept so that `rbuild inspect` by the index digest and a later push can find it.
        store
            .put_blob(&index.bytes)
            .map_err(Error::op(op("store the image index")))?;
    }
    let manifest = &pulled.manifest;
    let digest = store
        .put_blob(&manifest.bytes)
        .map_err(Error::op(op("store the manifest")))?;
    let img = image::load(store, &digest)?;
    // Unpacks the missing layer dirs, each checked against its diff_id.
    image::ensure_unpacked(store, &img.layers)?;
    if reference.tag().is_some() {
        let desc = match &pulled.index {
            Some(index) => image::descriptor(
                &index.media_type,
                &Digest::sha256_of(&index.bytes),
                index.bytes.len() as u64,
            ),
            None => image::descriptor(&manifest.media_type, &digest, manifest.bytes.len() as u64),
        };
        store
            .tag(reference, desc)
            .map_err(Error::op(op("tag the image")))?;
    }
    let mut blobs: Vec<&Digest> = vec![&digest, &pulled.config.digest];
    blobs.extend(pulled.layers.iter().map(|l| &l.digest));
    record_origin(store, &blobs, reference);
    Ok(digest)
}

/// Pushes the image `src` (a reference in the store or a manifest digest, as
/// [`image::resolve`] takes it) to `dest`. Blobs the registry has are skipped, blobs recorded
/// as pulled from or pushed to another repository of the same registry are mounted, the rest
/// uploaded; the manifest bytes are pushed exactly as stored, so the digest does not change.
///
/// # Errors
///
/// [`Error::ImageNotFound`] when `src` is not in the store; an error naming the operation naming the
/// push, with the [`RegistryError`] or store failure as its source.
pub fn push(
    store: &Store,
    client: &Client,
    src: &str,
    dest: &Reference,
    events: Events<PushEvent>,
) -> impl Future<Output = Result<PushResult>> + Send + 'static {
    let store = store.clone();
    let client = client.clone();
    let src = src.to_owned();
    let dest = dest.clone();
    async move { push_owned(&store, &client, &src, &dest, events).await }
}

async fn push_owned(
    store: &Store,
    client: &Client,
    src: &str,
    dest: &Reference,
    events: Events<PushEvent>,
) -> Result<PushResult> {
    let op = || format!("push {src} to {dest}");
    let (lock, what) = {
        let store = store.clone();
        let src = src.to_owned();
        tokio::task::spawn_blocking(move || {
            let lock = store.lock_shared().map_err(Error::op("lock the store"))?;
            let desc = image::resolve(&store, &src)?;
            let what = if media_type::is_index(desc.media_type().as_ref()) {
                ToPush::Index(index_to_push(&store, &src, &desc)?)
            } else {
                ToPush::Image(image_to_push(&store, &desc)?)
            };
            Ok::<_, Error>((lock, what))
        })
        .await
        .map_err(Error::op(op()))??
    };
    let image = match what {
        ToPush::Image(image) => image,
        ToPush::Index(index) => {
            let _ = client.ping(dest.registry()).await;
            let result = push_index(client, store, dest, index, events)
                .await
                .map_err(Error::op(op()))?;
            drop(lock);
            return Ok(result);
        }
    };
    // Learn the registry's auth scheme with one request before the blob requests go out in
    // parallel (docker pings `/v2/` first too): otherwise several first requests meet the 401
    // at once and all but one are taken for refused credentials. Best effort: a failure here
    // shows again, with the push's own context, on the next request.
    let _ = client.ping(dest.registry()).await;
    let result = client
        .push_image(
            dest,
            image.clone(),
            Arc::new(StoreBlobs(store.clone())),
            events,
        )
        .await
        .map_err(Error::op(op()))?;
    drop(lock);
    let mut blobs: Vec<&Digest> = vec![&result.digest, &image.config.digest];
    blobs.extend(image.layers.iter().map(|l| &l.digest));
    record_origin(store, &blobs, dest);
    Ok(result)
}

/// What a push source resolves to.
enum ToPush {
    Image(ImageToPush),
    Index(IndexToPush),
}

/// An image index to push: its bytes and each manifest it lists.
struct IndexToPush {
    bytes: Vec<u8>,
    media_type: String,
    manifests: Vec<ImageToPush>,
}

/// Reads an index and every manifest it lists. Each must be in the store: an index kept from
/// a single-platform pull lacks the other platforms', and pushing it would leave the registry
/// with an index that names manifests it does not have.
fn index_to_push(store: &Store, src: &str, desc: &Descriptor) -> Result<IndexToPush> {
    let digest = Digest::try_from(desc.digest()).map_err(Error::op("read the index digest"))?;
    let bytes = store
        .read_blob(&digest)
        .map_err(Error::op(format!("read image index {digest}")))?;
    let parsed = store
        .read_index_blob(&digest)
        .map_err(Error::op(format!("read image index {digest}")))?;
    let mut manifests = Vec::new();
    for m in parsed.manifests() {
        let child = Digest::try_from(m.digest()).map_err(Error::op("read an index entry"))?;
        if !store.has_blob(&child) {
            let platform = m
                .platform()
                .as_ref()
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .unwrap_or_else(|| "no platform".to_owned());
            return Err(Error::invalid(
                format!("push {src}"),
                format!(
                    "the image index lists manifest {child} ({platform}), which is not in the store (pull {src} --platform {platform} first)"
                ),
            ));
        }
        if media_type::is_index(m.media_type().as_ref()) {
            return Err(Error::invalid(
                format!("push {src}"),
                "nested image indexes are not supported",
            ));
        }
        manifests.push(image_to_push(store, m)?);
    }
    Ok(IndexToPush {
        bytes,
        media_type: desc.media_type().to_string(),
        manifests,
    })
}

/// Pushes every manifest of an index by digest (blobs the registry has skipped, as for one
/// image), then the index under `dest`'s tag when the tag points elsewhere.
async fn push_index(
    client: &Client,
    store: &Store,
    dest: &Reference,
    index: IndexToPush,
    events: Events<PushEvent>,
) -> std::result::Result<PushResult, RegistryError> {
    let mut blobs = Vec::new();
    for image in index.manifests {
        let digest = Digest::sha256_of(&image.manifest_bytes);
        let by_digest = Reference::new(dest.registry(), dest.repository(), None, Some(digest));
        let pushed = client
            .push_image(
                &by_digest,
                image.clone(),
                Arc::new(StoreBlobs(store.clone())),
                events.clone(),
            )
            .await?;
        let mut recorded: Vec<&Digest> = vec![&pushed.digest, &image.config.digest];
        recorded.extend(image.layers.iter().map(|l| &l.digest));
        record_origin(store, &recorded, dest);
        blobs.extend(pushed.blobs);
    }
    let digest = Digest::sha256_of(&index.bytes);
    let size = index.bytes.len() as u64;
    let existing = client.head_manifest(dest).await?;
    let pushed = existing.is_none_or(|h| h.digest != digest);
    if pushed {
        client
            .put_manifest(dest, &index.bytes, &index.media_type)
            .await?;
    }
    events.emit(PushEvent::Manifest {
        digest: digest.clone(),
        pushed,
    });
    events.emit(PushEvent::Done {
        tag: dest.tag_or_digest(),
        digest: digest.clone(),
        size,
    });
    Ok(PushResult {
        digest,
        size,
        manifest_pushed: pushed,
        blobs,
    })
}

/// Reads what a push needs from the store: manifest bytes, blob list, mount candidates.
fn image_to_push(store: &Store, desc: &Descriptor) -> Result<ImageToPush> {
    let digest = Digest::try_from(desc.digest()).map_err(Error::op("read the image digest"))?;
    let mt = desc.media_type().to_string();
    let bytes = store
        .read_blob(&digest)
        .map_err(Error::op(format!("read manifest {digest}")))?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(Error::op(format!("parse manifest {digest}")))?;
    let blob_ref = |d: &Descriptor| -> Result<BlobRef> {
        Ok(BlobRef {
            digest: Digest::try_from(d.digest())
                .map_err(Error::op(format!("read the blob digests of {digest}")))?,
            size: d.size(),
            media_type: d.media_type().to_string(),
        })
    };
    let config = blob_ref(manifest.config())?;
    let layers = manifest
        .layers()
        .iter()
        .map(blob_ref)
        .collect::<Result<Vec<_>>>()?;
    let mut mount_from = BTreeSet::new();
    for b in std::iter::once(&config).chain(&layers) {
        mount_from.extend(origins(store, &b.digest));
    }
    Ok(ImageToPush {
        manifest_bytes: bytes,
        manifest_media_type: mt,
        config,
        layers,
        mount_from: mount_from
            .into_iter()
            .filter_map(|name| format!("{name}:latest").parse().ok())
            .collect(),
    })
}

/// Pulls `reference` from a blocking thread (the engine's build runs on tokio's blocking
/// pool), driving the future on `handle`. The engine calls it when a `FROM` image is not in
/// the store.
///
/// # Panics
///
/// When called from inside an async task (tokio's `Handle::block_on` rule): call it from
/// `spawn_blocking` or a plain thread.
///
/// # Errors
///
/// As [`pull`].
pub fn pull_blocking(
    handle: &tokio::runtime::Handle,
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: Option<&Platform>,
) -> Result<Digest> {
    handle.block_on(pull(store, client, reference, platform, Events::none()))
}

/// The most repositories remembered per blob: enough for mounting, bounded in size.
const MAX_ORIGINS: usize = 8;

/// Name of the state file holding where blob `d` was seen.
fn origin_state(d: &Digest) -> String {
    format!("origin-{}", d.hex())
}

/// Repositories (`registry/repository`) blob `d` was pulled from or pushed to, newest first.
fn origins(store: &Store, d: &Digest) -> Vec<String> {
    match store.state_get(&origin_state(d)) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Remembers that `blobs` are in `reference`'s repository. Best effort: a lost record only
/// costs an upload that a mount would have saved, so failures are logged, not returned.
/// Concurrent pushes of the same blob may lose one of their records for the same reason.
fn record_origin(store: &Store, blobs: &[&Digest], reference: &Reference) {
    let name = reference.name();
    for d in blobs {
        let mut list = origins(store, d);
        list.retain(|n| n != &name);
        list.insert(0, name.clone());
        list.truncate(MAX_ORIGINS);
        let mut bytes = list.join("\n");
        bytes.push('\n');
        let _ = store.state_put(&origin_state(d), bytes.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn sink_commits_only_the_expected_digest() {
        let (_dir, store) = store();
        let sink = StoreBlobs(store.clone());
        let good = Digest::sha256_of(b"hello");
        let mut w = sink.write(&good).unwrap();
        w.write_all(b"hello").unwrap();
        w.commit().unwrap();
        assert!(sink.has(&good));

        let claimed = Digest::sha256_of(b"other");
        let mut w = sink.write(&claimed).unwrap();
        w.write_all(b"hello").unwrap();
        let err = w.commit().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(!store.has_blob(&claimed));

        // A writer dropped without commit leaves nothing behind (interrupted pull).
        let third = Digest::sha256_of(b"third");
        let mut w = sink.write(&third).unwrap();
        w.write_all(b"thi").unwrap();
        drop(w);
        assert!(!store.has_blob(&third));
        assert_eq!(
            std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn source_reads_blobs_and_reports_missing_ones() {
        let (_dir, store) = store();
        let d = store.put_blob(b"layer bytes").unwrap();
        let mut s = String::new();
        StoreBlobs(store.clone())
            .open(&d)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "layer bytes");
        let missing = Digest::sha256_of(b"nope");
        let err = match StoreBlobs(store.clone()).open(&missing) {
            Err(e) => e,
            Ok(_) => panic!("a missing blob opened"),
        };
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn origins_are_recorded_newest_first_and_bounded() {
        let (_dir, store) = store();
        let d = Digest::sha256_of(b"x");
        for i in 0..10 {
            let r: Reference = format!("127.0.0.1:5000/repo{i}:v1").parse().unwrap();
            record_origin(&store, &[&d], &r);
        }
        let r: Reference = "127.0.0.1:5000/repo3:v2".parse().unwrap();
        record_origin(&store, &[&d], &r);
        let o = origins(&store, &d);
        assert_eq!(o.len(), MAX_ORIGINS);
        assert_eq!(o[0], "127.0.0.1:5000/repo3");
        assert_eq!(o[1], "127.0.0.1:5000/repo9");
        assert_eq!(o.iter().filter(|n| *n == "127.0.0.1:5000/repo3").count(), 1);
    }

    /// Docker's media type of an uncompressed layer (image-spec `media-types.md` compat list).
    const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

    /// A Docker v2s2 manifest (as `skopeo copy` or docker push store it) with one layer.
    fn docker_image(store: &Store) -> (Digest, Digest) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "hello.txt", &b"hi\n"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let diff_id = Digest::sha256_of(&tar);
        let layer = store.put_blob(&tar).unwrap();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "container_config": {"Hostname": "x"},
            "docker_version": "20.10.0",
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = store.put_blob(&config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::DOCKER_MANIFEST,
            "config": {"mediaType": media_type::DOCKER_CONFIG, "size": config.len(),
                       "digest": config_digest.to_string()},
            "layers": [{"mediaType": DOCKER_LAYER_TAR, "size": tar.len(),
                        "digest": layer.to_string()}],
        });
        let manifest = store
            .put_blob(&serde_json::to_vec_pretty(&manifest).unwrap())
            .unwrap();
        (manifest, layer)
    }

    #[test]
    fn docker_v2s2_manifests_load_and_push_as_stored() {
        let (_dir, store) = store();
        let (manifest, layer) = docker_image(&store);
        let img = image::load(&store, &manifest).unwrap();
        assert_eq!(img.layers.len(), 1);
        assert_eq!(img.layers[0].digest, layer);
        assert_eq!(img.layers[0].media_type, DOCKER_LAYER_TAR);
        assert_eq!(
            img.config.config.cmd.as_deref(),
            Some(&["/bin/sh".to_owned()][..])
        );

        let from: Reference = "127.0.0.1:5000/base:1".parse().unwrap();
        record_origin(&store, &[&layer], &from);
        let desc = image::resolve(&store, &manifest.to_string()).unwrap();
        let push = image_to_push(&store, &desc).unwrap();
        assert_eq!(push.manifest_media_type, media_type::DOCKER_MANIFEST);
        assert_eq!(Digest::sha256_of(&push.manifest_bytes), manifest);
        assert_eq!(push.layers[0].digest, layer);
        assert_eq!(push.mount_from.len(), 1);
        assert_eq!(push.mount_from[0].repository(), "base");
        assert_eq!(push.mount_from[0].registry(), "127.0.0.1:5000");
    }

    #[test]
    fn unpack_refuses_a_layer_whose_diff_id_lies() {
        if !crate::test_support::is_root("unpack_refuses_a_layer_whose_diff_id_lies") {
            return;
        }
        let (_dir, store) = store();
        let (manifest, _layer) = docker_image(&store);
        let mut img = image::load(&store, &manifest).unwrap();
        let lie = Digest::sha256_of(b"another layer");
        img.layers[0].diff_id = lie.clone();
        let err = image::ensure_unpacked(&store, &img.layers).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("the image claims diff_id {lie}")),
            "{err}"
        );
        assert!(!store.has_layer_dir(&lie));
    }

    #[test]
    fn pull_blocking_runs_from_a_blocking_thread() {
        // No registry: the point is that block_on from spawn_blocking does not panic and the
        // error names the pull.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (_dir, store) = store();
        let client = Client::new(ClientOptions::default().max_retries(0)).unwrap();
        let handle = rt.handle().clone();
        let r: Reference = "127.0.0.1:1/nothing:here".parse().unwrap();
        let err = rt
            .block_on(rt.spawn_blocking(move || pull_blocking(&handle, &store, &client, &r, None)))
            .unwrap()
            .unwrap_err();
        assert!(
            err.to_string().contains("pull 127.0.0.1:1/nothing:here"),
            "{err}"
        );
    }
}
