//! The step cache in a registry: `--cache-to REPO` pushes each step's result under its key,
//! `--cache-from REPO` looks every key of a stage up in one parallel batch before anything runs
//! and pulls a step's layer only when the build reaches that step.
//!
//! One cache entry is an OCI manifest tagged with the step key (64 hex characters, a valid
//! tag): its config is the step record (creation time and layer descriptor, media type
//! [`STEP_CONFIG_MEDIA_TYPE`]), its one layer the step's layer. A step that adds no layer gets
//! an empty layer list.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures::future::join_all;
use rbuild_oci::{Digest, Reference, canonical_json, media_type};
use rbuild_registry::{BlobRef, BlobSource, Client, Events, ImageToPush};
use rbuild_store::{CacheEntry, Store};
use serde_json::json;

use crate::error::{Error, Result};
use crate::image;
use crate::image::StepRecord;

/// Media type of a cache entry's config blob.
pub(crate) const STEP_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.step.v1+json";

/// A step found in a remote cache.
#[derive(Debug, Clone)]
pub(crate) struct RemoteHit {
    /// The repository it was found in.
    pub repo: Reference,
    /// The step's record.
    pub record: StepRecord,
}

/// Looks up all `keys` in every `--cache-from` repository at once (one manifest GET plus one
/// small config GET per key and repository, all in parallel). Unreachable registries and
/// absent keys are simply misses.
pub(crate) fn lookup(
    handle: &tokio::runtime::Handle,
    client: &Client,
    repos: &[Reference],
    keys: &[String],
) -> HashMap<String, RemoteHit> {
    let futures = repos.iter().flat_map(|repo| {
        keys.iter().map(move |key| async move {
            let r = repo.with_tag(key);
            let m = client.get_manifest(&r).await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(&m.bytes).ok()?;
            if v["config"]["mediaType"] != STEP_CONFIG_MEDIA_TYPE {
                return None;
            }
            let cfg: Digest = v["config"]["digest"].as_str()?.parse().ok()?;
            let cfg_size = v["config"]["size"].as_u64()?;
            let progress = AtomicU64::new(0);
            let (bytes, _) = client
                .fetch_blob_sized(repo, &cfg, cfg_size, Vec::new(), &progress)
                .await
                .ok()?;
            if Digest::sha256_of(&bytes) != cfg {
                return None;
            }
            let record: StepRecord = serde_json::from_slice(&bytes).ok()?;
            Some((
                key.clone(),
                RemoteHit {
                    repo: repo.clone(),
                    record,
                },
            ))
        })
    });
    let found = handle.block_on(join_all(futures));
    let mut hits = HashMap::new();
    for (k, hit) in found.into_iter().flatten() {
        hits.entry(k).or_insert(hit);
    }
    hits
}

/// Brings a remote hit into the local store: the layer blob (digest- and size-checked), its
/// unpacked directory (checked against the record's `diff_id`: a record from a shared cache
/// repository is input like any other, and may claim a popular base layer's `diff_id` for a
/// blob of its own), and a local cache entry under `key`.
///
/// # Errors
///
/// Registry or store failures; the caller then runs the step instead.
pub(crate) fn fetch(
    handle: &tokio::runtime::Handle,
    client: &Client,
    store: &Store,
    key: &str,
    hit: &RemoteHit,
) -> Result<()> {
    if let Some(layer) = &hit.record.layer {
        if !store.has_blob(&layer.digest) {
            let writer = store
                .blob_writer()
                .map_err(Error::op("write a cached layer"))?;
            let progress = AtomicU64::new(0);
            let (writer, _) = handle
                .block_on(client.fetch_blob_sized(
                    &hit.repo,
                    &layer.digest,
                    layer.size,
                    writer,
                    &progress,
                ))
                .map_err(Error::op(format!(
                    "pull cached layer {} from {}",
                    layer.digest,
                    hit.repo.name()
                )))?;
            writer
                .commit(Some(&layer.digest))
                .map_err(Error::op("store a cached layer"))?;
        }
        image::ensure_unpacked(store, std::slice::from_ref(layer))?;
    }
    let entry = CacheEntry {
        blobs: hit.record.layer.iter().map(|l| l.digest.clone()).collect(),
        layer_dirs: hit.record.layer.iter().map(|l| l.diff_id.clone()).collect(),
        payload: serde_json::to_value(&hit.record)
            .map_err(Error::op("record a step in the cache"))?,
    };
    store
        .cache_put(key, &entry)
        .map_err(Error::op("record a step in the cache"))
}

/// Pushes the given steps to `repo` under their keys (steps the registry already has cost one
/// manifest HEAD each).
///
/// # Errors
///
/// The first registry or store failure.
pub(crate) fn export(
    handle: &tokio::runtime::Handle,
    client: &Client,
    store: &Store,
    repo: &Reference,
    steps: &[(String, StepRecord)],
) -> Result<()> {
    let mut images = Vec::with_capacity(steps.len());
    for (key, record) in steps {
        let config = canonical_json(record).map_err(Error::op("serialise a cache entry"))?;
        let config_digest = store
            .put_blob(&config)
            .map_err(Error::op("store a cache entry"))?;
        let layers: Vec<BlobRef> = record
            .layer
            .iter()
            .map(|l| BlobRef {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {
                "mediaType": STEP_CONFIG_MEDIA_TYPE,
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest.to_string(),
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes =
            canonical_json(&manifest).map_err(Error::op("serialise a cache entry"))?;
        images.push((
            repo.with_tag(key),
            ImageToPush {
                manifest_bytes,
                manifest_media_type: media_type::OCI_MANIFEST.to_owned(),
                config: BlobRef {
                    digest: config_digest,
                    size: config.len() as u64,
                    media_type: STEP_CONFIG_MEDIA_TYPE.to_owned(),
                },
                layers,
                mount_from: Vec::new(),
            },
        ));
    }
    let source: Arc<dyn BlobSource> = Arc::new(crate::registry::StoreBlobs(store.clone()));
    handle.block_on(async {
        for (target, img) in images {
            client
                .push_image(&target, img, Arc::clone(&source), Events::none())
                .await
                .map_err(Error::op(format!(
                    "export the build cache to {}",
                    repo.name()
                )))?;
        }
        Ok(())
    })
}
