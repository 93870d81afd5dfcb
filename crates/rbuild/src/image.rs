//! Images in the store: loading a base image, writing a built one, making sure every layer has
//! its unpacked directory.

use oci_spec::image::{Descriptor, DescriptorBuilder, MediaType};
use rbuild_oci::{Digest, Reference, canonical_json, media_type, oci_spec};
use rbuild_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{ImageConfig, Platform};
use crate::error::{Error, Result};
use crate::view::LayerView;

/// A layer of an image: its blob and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Blob digest (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Blob size.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
}

/// What the step cache keeps for a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepRecord {
    pub(crate) created: String,
    pub(crate) layer: Option<LayerRecord>,
}

/// An image loaded from the store.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// Manifest digest.
    pub digest: Digest,
    /// The manifest as stored.
    pub manifest: serde_json::Value,
    /// The parsed config.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerRecord>,
}

/// Finds an image by reference: a tag in the store, or a manifest digest (`sha256:…` alone or
/// `name@sha256:…`).
///
/// # Errors
///
/// [`Error::ImageNotFound`] when nothing matches; an error naming the operation when the store fails.
pub fn resolve(store: &Store, reference: &str) -> Result<Descriptor> {
    if let Ok(digest) = reference.parse::<Digest>() {
        return descriptor_for_blob(store, &digest, reference);
    }
    let r: Reference =
        reference
            .parse()
            .map_err(|e: rbuild_oci::ReferenceError| Error::ImageNotFound {
                reference: reference.to_owned(),
                hint: Some(e.to_string()),
            })?;
    if let Some(d) = store
        .resolve(&r)
        .map_err(Error::op(format!("look up {r} in the store")))?
    {
        return Ok(d);
    }
    if let Some(d) = r.digest() {
        return descriptor_for_blob(store, d, reference);
    }
    Err(Error::ImageNotFound {
        reference: r.to_string(),
        hint: None,
    })
}

fn descriptor_for_blob(store: &Store, digest: &Digest, reference: &str) -> Result<Descriptor> {
    if !store.has_blob(digest) {
        return Err(Error::ImageNotFound {
            reference: reference.to_owned(),
            hint: None,
        });
    }
    let bytes = store
        .read_blob(digest)
        .map_err(Error::op(format!("read manifest {digest}")))?;
    let mt = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
        .unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned());
    Ok(descriptor(&mt, digest, bytes.len() as u64))
}

/// Builds an OCI descriptor.
pub fn descriptor(mt: &str, digest: &Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(MediaType::from(mt))
        .digest(oci_spec::image::Digest::from(digest))
        .size(size)
        .build()
        .unwrap_or_else(|_| unreachable!("descriptor with all required fields"))
}

/// Loads the manifest, config and layer list of an image.
///
/// # Errors
///
/// an error naming the operation when a blob is missing or malformed.
pub fn load(store: &Store, manifest_digest: &Digest) -> Result<LoadedImage> {
    let bytes = store
        .read_blob(manifest_digest)
        .map_err(Error::op(format!("read manifest {manifest_digest}")))?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(Error::op(format!("parse manifest {manifest_digest}")))?;
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(Error::op(format!(
            "read the config digest of manifest {manifest_digest}"
        )))?;
    let config_bytes = store
        .read_blob(&config_digest)
        .map_err(Error::op(format!("read image config {config_digest}")))?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(Error::op(format!("parse image config {config_digest}")))?;
    let blobs = manifest["layers"].as_array().cloned().unwrap_or_default();
    if blobs.len() != config.rootfs.diff_ids.len() {
        return Err(Error::invalid(
            format!("load image {manifest_digest}"),
            format!(
                "manifest has {} layers but the config lists {} diff_ids",
                blobs.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(blobs.len());
    for (b, diff_id) in blobs.iter().zip(&config.rootfs.diff_ids) {
        layers.push(LayerRecord {
            digest: b["digest"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(Error::op(format!(
                    "read layer digests of {manifest_digest}"
                )))?,
            diff_id: diff_id
                .parse()
                .map_err(Error::op(format!("read diff_ids of {manifest_digest}")))?,
            size: b["size"].as_u64().unwrap_or(0),
            media_type: b["mediaType"]
                .as_str()
                .unwrap_or(media_type::OCI_LAYER_GZIP)
                .to_owned(),
        });
    }
    Ok(LoadedImage {
        digest: manifest_digest.clone(),
        manifest,
        config,
        layers,
    })
}

/// Makes sure every layer has its unpacked directory (unpacking blobs where needed) and returns
/// those directories, top-most first (the lower directories of an overlay mount).
///
/// Every unpack checks the uncompressed stream against the layer's `diff_id`.
///
/// # Errors
///
/// When a blob cannot be read or unpacked, or does not hash to its `diff_id`.
pub fn unpacked_dirs(store: &Store, layers: &[LayerRecord]) -> Result<Vec<std::path::PathBuf>> {
    claim_layer_format(store)?;
    Ok(ensure_unpacked(store, layers)?.dirs().to_vec())
}

/// Checks (and records, for a new store) that the store's layer directories use this process's
/// opaque-directory marker: called where layer directories are made or used — a build's start,
/// `run`, `unpacked_dirs`, each unpack — not for every layer of a stack.
pub(crate) fn claim_layer_format(store: &Store) -> Result<()> {
    store
        .claim_layer_format(rbuild_layer::overlay_opaque_xattr())
        .map_err(Error::op("open the store's layer directories"))
}

/// Makes sure every layer has its unpacked directory (unpacking blobs where needed) and returns
/// the view over them, top-most first.
///
/// Every unpack checks the uncompressed stream against the layer's `diff_id` (see [`unpack`]),
/// whichever way the blob came: a pull, a `--cache-from` record, an image saved before its
/// layer directories were pruned.
///
/// # Errors
///
/// an error naming the operation when a blob cannot be read or unpacked, or does not hash to its
/// `diff_id`.
pub(crate) fn ensure_unpacked(store: &Store, layers: &[LayerRecord]) -> Result<LayerView> {
    let mut dirs = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        if !store.has_layer_dir(&layer.diff_id) {
            unpack(store, layer)?;
        }
        dirs.push(store.layer_dir(&layer.diff_id));
    }
    Ok(LayerView::new(dirs))
}

/// Unpacks `layer`'s blob into a staging directory, hashing the uncompressed stream on the
/// way, and makes it the layer directory of `layer.diff_id` only when the hash matches.
///
/// Layer directories are shared by every image and cache entry naming that `diff_id`, so the
/// `diff_id` must be proven, not believed: a config or a `--cache-from` record claiming a
/// popular base layer's `diff_id` for its own blob would otherwise plant its files under that
/// name for every later build. On a mismatch the staging directory is removed (dropped) and
/// nothing appears under `layers/`.
///
/// # Errors
///
/// an error naming the operation naming the layer's blob, with the expected and actual `diff_id`.
pub fn unpack(store: &Store, layer: &LayerRecord) -> Result<()> {
    claim_layer_format(store)?;
    let op = || format!("unpack layer {}", layer.digest);
    let blob = store.open_blob(&layer.digest).map_err(Error::op(op()))?;
    let staging = store.staging().map_err(Error::op(op()))?;
    let stats = rbuild_layer::unpack_layer(std::io::BufReader::new(blob), &staging.upper())
        .map_err(Error::op(op()))?;
    if stats.diff_id != layer.diff_id {
        // `staging` is dropped on return, which removes the extracted tree.
        return Err(Error::invalid(
            op(),
            format!(
                "its uncompressed content hashes to {}, but the image claims diff_id {}; \
                 the layer was not stored",
                stats.diff_id, layer.diff_id
            ),
        ));
    }
    store
        .commit_layer_dir(staging, &layer.diff_id)
        .map_err(Error::op(op()))?;
    Ok(())
}

/// Writes `config` and a manifest over `layers` into the store; returns the manifest descriptor.
///
/// # Errors
///
/// an error naming the operation when the store fails.
pub fn write(
    store: &Store,
    config: &ImageConfig,
    layers: &[LayerRecord],
    annotations: &std::collections::BTreeMap<String, String>,
    format: crate::options::ImageFormat,
) -> Result<Descriptor> {
    let docker = format == crate::options::ImageFormat::Docker;
    let (manifest_mt, config_mt) = if docker {
        (media_type::DOCKER_MANIFEST, media_type::DOCKER_CONFIG)
    } else {
        (media_type::OCI_MANIFEST, media_type::OCI_CONFIG)
    };
    let layer_mt = |mt: &str| -> Result<String> {
        if !docker || mt == media_type::DOCKER_LAYER_GZIP {
            return Ok(mt.to_owned());
        }
        if media_type::is_gzip_layer(mt) {
            Ok(media_type::DOCKER_LAYER_GZIP.to_owned())
        } else {
            Err(Error::invalid(
                "write a Docker-format manifest",
                format!("layer media type {mt} has no Docker equivalent (use gzip compression)"),
            ))
        }
    };
    let config_bytes = canonical_json(config).map_err(Error::op("serialise the image config"))?;
    let config_digest = store
        .put_blob(&config_bytes)
        .map_err(Error::op("write the image config"))?;
    let mut layer_json = Vec::with_capacity(layers.len());
    for l in layers {
        layer_json.push(json!({
            "mediaType": layer_mt(&l.media_type)?,
            "digest": l.digest.to_string(),
            "size": l.size,
        }));
    }
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_mt,
        "config": {
            "mediaType": config_mt,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layer_json,
    });
    if !annotations.is_empty() {
        manifest["annotations"] = json!(annotations);
    }
    let bytes = canonical_json(&manifest).map_err(Error::op("serialise the manifest"))?;
    let digest = store
        .put_blob(&bytes)
        .map_err(Error::op("write the manifest"))?;
    Ok(descriptor(manifest_mt, &digest, bytes.len() as u64))
}

/// Writes an image index over `manifests` (descriptor, platform), each entry carrying its
/// `platform` (image-spec `image-index.md`); returns the index descriptor. The bytes depend only
/// on the manifests and their order, so the same inputs give the same index digest.
///
/// # Errors
///
/// an error naming the operation when the store fails.
pub fn write_index(
    store: &Store,
    manifests: &[(Descriptor, Platform)],
    annotations: &std::collections::BTreeMap<String, String>,
    format: crate::options::ImageFormat,
) -> Result<Descriptor> {
    let mt = if format == crate::options::ImageFormat::Docker {
        media_type::DOCKER_MANIFEST_LIST
    } else {
        media_type::OCI_INDEX
    };
    let entries: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(d, p)| {
            let mut platform = json!({"architecture": p.architecture, "os": p.os});
            if let Some(v) = &p.variant {
                platform["variant"] = json!(v);
            }
            json!({
                "mediaType": d.media_type().to_string(),
                "digest": d.digest().to_string(),
                "size": d.size(),
                "platform": platform,
            })
        })
        .collect();
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "manifests": entries,
    });
    if !annotations.is_empty() && mt == media_type::OCI_INDEX {
        index["annotations"] = json!(annotations);
    }
    let bytes = canonical_json(&index).map_err(Error::op("serialise the image index"))?;
    let digest = store
        .put_blob(&bytes)
        .map_err(Error::op("write the image index"))?;
    Ok(descriptor(mt, &digest, bytes.len() as u64))
}

/// The entries of an image index in the store: (manifest descriptor, its platform), entries
/// without a platform (attestations) left out.
///
/// # Errors
///
/// an error naming the operation when the index cannot be read or parsed.
pub fn index_entries(store: &Store, index: &Digest) -> Result<Vec<(Descriptor, Platform)>> {
    let parsed = store
        .read_index_blob(index)
        .map_err(Error::op(format!("read image index {index}")))?;
    Ok(parsed
        .manifests()
        .iter()
        .filter_map(|m| {
            let p = m.platform().as_ref()?;
            let platform = Platform {
                os: p.os().to_string(),
                architecture: p.architecture().to_string(),
                variant: p.variant().clone(),
            };
            (platform.os != "unknown").then(|| (m.clone(), platform))
        })
        .collect())
}

/// Finds an image as [`resolve`] does and, when the reference names an image index, picks the
/// manifest for `platform` (default: this machine's) out of it.
///
/// # Errors
///
/// As [`resolve`]; [`Error::NoPlatform`] when the index has no such platform;
/// [`Error::ImageNotFound`] with a hint when its manifest was not pulled.
pub fn resolve_for(
    store: &Store,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<Descriptor> {
    let desc = resolve(store, reference)?;
    let platform = platform.cloned().unwrap_or_else(Platform::host);
    select(store, reference, &desc, &platform)?.ok_or_else(|| Error::ImageNotFound {
        reference: format!("{reference} for {platform}"),
        hint: Some(format!(
            "its index lists {platform}, but that manifest was not pulled: `rbuild pull --platform {platform} {reference}`"
        )),
    })
}

/// Resolves `desc` (a tag's descriptor) to the manifest for `platform`: a manifest stays as
/// it is; from an index, the entry that matches (containerd's rules, see
/// [`Platform::matches`]). `Ok(None)` when the index has a matching entry whose manifest is
/// not in the store (a single-platform pull of another platform).
///
/// # Errors
///
/// [`Error::NoPlatform`] naming the platforms the index has, when none matches.
pub fn select(
    store: &Store,
    reference: &str,
    desc: &Descriptor,
    platform: &Platform,
) -> Result<Option<Descriptor>> {
    if !media_type::is_index(desc.media_type().as_ref()) {
        return Ok(Some(desc.clone()));
    }
    let digest = Digest::try_from(desc.digest()).map_err(Error::op("read an index digest"))?;
    let entries = index_entries(store, &digest)?;
    let Some((m, _)) = entries
        .iter()
        .find(|(_, p)| platform.matches(&p.os, &p.architecture, p.variant.as_deref()))
    else {
        return Err(Error::NoPlatform {
            reference: reference.to_owned(),
            platform: platform.to_string(),
            available: entries.iter().map(|(_, p)| p.to_string()).collect(),
        });
    };
    let child = Digest::try_from(m.digest()).map_err(Error::op("read an index entry's digest"))?;
    Ok(store.has_blob(&child).then(|| m.clone()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, content.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn record(store: &Store, blob: &[u8], diff_id: Digest) -> LayerRecord {
        LayerRecord {
            digest: store.put_blob(blob).unwrap(),
            diff_id,
            size: blob.len() as u64,
            media_type: media_type::OCI_LAYER_GZIP.to_owned(),
        }
    }

    fn entries(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    /// A cache record or config claiming a popular layer's diff_id for a blob of its own must
    /// not plant that blob's files under the popular layer's directory.
    #[test]
    fn a_blob_whose_diff_id_lies_is_not_unpacked() {
        if !crate::test_support::is_root("a_blob_whose_diff_id_lies_is_not_unpacked") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let honest = tar_of(&[("etc/os-release", "honest base\n")]);
        let evil = tar_of(&[
            ("etc/os-release", "EVIL-MARKER\n"),
            ("usr/bin/backdoor", "EVIL-MARKER\n"),
        ]);
        let claimed = Digest::sha256_of(&honest);
        let lying = record(&store, &gzip(&evil), claimed.clone());

        let err = ensure_unpacked(&store, std::slice::from_ref(&lying)).unwrap_err();
        let mut msg = err.to_string();
        let mut src = std::error::Error::source(&err);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        assert!(msg.contains(&lying.digest.to_string()), "{msg}");
        assert!(msg.contains(&claimed.to_string()), "{msg}");
        assert!(msg.contains(&Digest::sha256_of(&evil).to_string()), "{msg}");
        assert!(!store.has_layer_dir(&claimed));
        assert!(entries(&store.root().join("layers")).is_empty());
        assert!(entries(&store.root().join("tmp")).is_empty());

        // The honest blob under the same diff_id unpacks; afterwards the lying record only
        // ever sees the honest directory.
        let good = record(&store, &gzip(&honest), claimed.clone());
        let view = ensure_unpacked(&store, std::slice::from_ref(&good)).unwrap();
        let layer = &view.dirs()[0];
        assert_eq!(
            std::fs::read_to_string(layer.join("etc/os-release")).unwrap(),
            "honest base\n"
        );
        ensure_unpacked(&store, std::slice::from_ref(&lying)).unwrap();
        assert!(!layer.join("usr").exists());
    }
}
