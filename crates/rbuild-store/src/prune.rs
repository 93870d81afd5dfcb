//! Garbage collection: mark everything reachable from `index.json`, sweep the rest.
//!
//! Reachability follows the image-spec graph: an index reaches its manifests, a manifest its
//! config and layers, and a config (through `rootfs.diff_ids`) the unpacked layer directories.
//! Cache entries do not keep content alive (as with `docker builder prune`, the cache is
//! disposable); they are deleted when something they name is gone.

use std::collections::HashSet;
use std::fs;

use rbuild_oci::Digest;
use rbuild_oci::oci_spec::image::Descriptor;

use crate::walk::{Edge, Visitor, walk};
use crate::{Error, Result, Store, atomic};

/// What [`Store::prune`] removes besides unreachable content.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneOptions {
    cache: bool,
    keep_storage: Option<u64>,
}

impl PruneOptions {
    /// Keeps the most recent cache entries, and the blobs and layer directories only they
    /// refer to, up to `bytes` of such content (docker's `builder prune --keep-storage`);
    /// older entries go. Implies pruning the cache.
    #[must_use]
    pub fn keep_storage(mut self, bytes: u64) -> Self {
        self.keep_storage = Some(bytes);
        self.cache = true;
        self
    }

    /// Also delete every cache entry, not only those naming deleted content.
    #[must_use]
    pub fn cache(mut self, all: bool) -> Self {
        self.cache = all;
        self
    }
}

/// What a prune removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: u64,
    /// Layer directories deleted.
    pub layer_dirs: u64,
    /// Cache entries deleted.
    pub cache_entries: u64,
    /// Stale temp entries deleted.
    pub temps: u64,
    /// Bytes of regular files freed (a hard-linked file counts once per link).
    pub bytes_freed: u64,
}

fn sha256_of(desc: &Descriptor) -> Option<Digest> {
    Digest::try_from(desc.digest()).ok()
}

#[derive(Default)]
struct Marks {
    blobs: HashSet<Digest>,
    layer_dirs: HashSet<Digest>,
}

impl Store {
    /// Deletes blobs and layer directories not reachable from `index.json`, the cache entries
    /// that named them (or all with [`PruneOptions::cache`]), unparsable cache entries and stale
    /// temp entries.
    ///
    /// Takes the exclusive root lock (waiting for running builds, which hold the shared one)
    /// and the index lock, so tags cannot change while marking. Do not call it while this
    /// process holds a [`crate::LockGuard`] on the same root. Reachable manifests that cannot be
    /// parsed abort the prune before anything is deleted; children that are simply absent (a
    /// single-platform pull of a multi-platform index) are skipped.
    ///
    /// # Errors
    ///
    /// Lock errors, errors reading `index.json` or reachable manifests/configs, and
    /// [`Error::Remove`] / [`Error::ListDir`] while sweeping.
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        let _root = self.lock_exclusive()?;
        let _index = self.lock_index()?;
        let mut marks = Marks::default();
        for desc in self.read_index()?.manifests() {
            let mut visitor = Mark {
                store: self,
                marks: &mut marks,
            };
            walk(self, desc, Edge::Root { tag: None }, &mut visitor)?;
        }

        // --keep-storage: newest cache entries first keep their content alive, up to the limit.
        let mut kept_entries = std::collections::BTreeSet::new();
        if let Some(limit) = opts.keep_storage {
            let mut entries: Vec<_> = self
                .cache_entries()?
                .into_iter()
                .filter_map(|(path, e)| {
                    let e = e?;
                    let mtime = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                    Some((mtime, path, e))
                })
                .collect();
            entries.sort_by_key(|e| std::cmp::Reverse(e.0));
            let mut used = 0u64;
            for (_, path, e) in entries {
                let extra: u64 = e
                    .blobs
                    .iter()
                    .filter(|d| !marks.blobs.contains(*d))
                    .map(|d| self.blob_size(d).unwrap_or(0))
                    .sum();
                if used + extra <= limit {
                    used += extra;
                    marks.blobs.extend(e.blobs.iter().cloned());
                    marks.layer_dirs.extend(e.layer_dirs.iter().cloned());
                    kept_entries.insert(path);
                }
            }
        }

        let mut report = PruneReport::default();
        for (digest, path) in self.digest_entries(&self.blob_dir())? {
            if !marks.blobs.contains(&digest) {
                let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        report.blobs += 1;
                        report.bytes_freed += size;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(Error::Remove { path, source }),
                }
            }
        }
        for (diff_id, _) in self.digest_entries(&self.layers_dir())? {
            if !marks.layer_dirs.contains(&diff_id) {
                report.bytes_freed += self.remove_layer_dir(&diff_id)?;
                report.layer_dirs += 1;
            }
        }
        for (path, entry) in self.cache_entries()? {
            let dangling = match &entry {
                None => true,
                Some(e) => {
                    !e.blobs.iter().all(|d| self.has_blob(d))
                        || !e.layer_dirs.iter().all(|d| self.has_layer_dir(d))
                }
            };
            if (opts.cache && !kept_entries.contains(&path)) || dangling {
                report.bytes_freed += crate::tree::remove_tree(&path)?;
                report.cache_entries += 1;
            }
        }
        let (temps, bytes) = atomic::clean_stale_temps(&self.tmp_dir())?;
        report.temps = temps;
        report.bytes_freed += bytes;
        Ok(report)
    }

    /// `rootfs.diff_ids` of an image config. Parsed leniently on purpose: oci-spec's
    /// `ImageConfiguration` requires `architecture` and `os`, and GC must not stop at a config
    /// another tool wrote sparsely.
    fn read_diff_ids(&self, config: &Digest) -> Result<Vec<String>> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct RootFs {
            diff_ids: Vec<String>,
        }
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(default)]
            rootfs: RootFs,
        }
        let bytes = self.read_blob(config)?;
        let parsed: Config = serde_json::from_slice(&bytes).map_err(|source| Error::ParseBlob {
            what: "config",
            digest: config.clone(),
            source,
        })?;
        Ok(parsed.rootfs.diff_ids)
    }
}

/// Marks what the walk reaches: every blob named, and the layer directories the image configs
/// name.
struct Mark<'a> {
    store: &'a Store,
    marks: &'a mut Marks,
}

impl Visitor for Mark<'_> {
    fn reach(&mut self, desc: &Descriptor, edge: Edge<'_>) -> Result<Option<Digest>> {
        // Only sha256 blobs are swept (blobs/sha256), so content under another algorithm needs
        // no mark and is never deleted.
        let Some(digest) = sha256_of(desc) else {
            return Ok(None);
        };
        Ok(match edge {
            // Layers are marked, never read.
            Edge::Layer { .. } => {
                self.marks.blobs.insert(digest);
                None
            }
            // A config is read for its diff ids whenever it is there, even when another
            // manifest marked it first.
            Edge::Config { .. } => {
                self.marks.blobs.insert(digest.clone());
                self.store.has_blob(&digest).then_some(digest)
            }
            // An index or manifest marked before was walked before.
            Edge::Root { .. } | Edge::Child { .. } => {
                let new = self.marks.blobs.insert(digest.clone());
                (new && self.store.has_blob(&digest)).then_some(digest)
            }
        })
    }

    fn unreadable(&mut self, _: Digest, _: &'static str, error: Error) -> Result<()> {
        // Marking from a graph that cannot be read would delete what it reaches.
        Err(error)
    }

    fn image_config(&mut self, _: &Digest, config: Digest, _: &[Option<Digest>]) -> Result<()> {
        for id in self.store.read_diff_ids(&config)? {
            // A diff id we cannot parse names no layer directory we could have made.
            if let Ok(d) = id.parse::<Digest>() {
                self.marks.layer_dirs.insert(d);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rbuild_oci::media_type;
    use rbuild_oci::oci_spec::image::MediaType;
    use rbuild_oci::{Reference, canonical_json};
    use serde_json::json;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn put_json(store: &Store, v: &serde_json::Value) -> (Digest, u64) {
        let bytes = canonical_json(v).unwrap();
        (store.put_blob(&bytes).unwrap(), bytes.len() as u64)
    }

    #[test]
    fn docker_manifest_lists_are_followed() {
        let (_d, store) = store();
        let layer = store.put_blob(b"gzip bytes").unwrap();
        let diff_id = Digest::sha256_of(b"tar bytes");
        let (config, config_size) = put_json(
            &store,
            &json!({"rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}}),
        );
        let (manifest, manifest_size) = put_json(
            &store,
            &json!({
                "schemaVersion": 2,
                "mediaType": media_type::DOCKER_MANIFEST,
                "config": {"mediaType": media_type::DOCKER_CONFIG, "digest": config.to_string(), "size": config_size},
                "layers": [{"mediaType": media_type::DOCKER_LAYER_GZIP, "digest": layer.to_string(), "size": 10}],
            }),
        );
        let (list, list_size) = put_json(
            &store,
            &json!({
                "schemaVersion": 2,
                "mediaType": media_type::DOCKER_MANIFEST_LIST,
                "manifests": [{"mediaType": media_type::DOCKER_MANIFEST, "digest": manifest.to_string(), "size": manifest_size}],
            }),
        );
        let staging = store.staging().unwrap();
        store.commit_layer_dir(staging, &diff_id).unwrap();
        let r: Reference = "docker-style".parse().unwrap();
        let desc = Descriptor::new(
            MediaType::from(media_type::DOCKER_MANIFEST_LIST),
            list_size,
            &list,
        );
        store.tag(&r, desc).unwrap();

        let report = store.prune(PruneOptions::default()).unwrap();
        assert_eq!(report, PruneReport::default());
        for d in [&layer, &config, &manifest, &list] {
            assert!(store.has_blob(d));
        }
        assert!(store.has_layer_dir(&diff_id));

        // Untagged, all of it goes.
        store.untag(&r).unwrap();
        let report = store.prune(PruneOptions::default()).unwrap();
        assert_eq!((report.blobs, report.layer_dirs), (4, 1));
    }

    #[test]
    fn artifact_with_empty_config_is_kept_without_parsing_the_config() {
        let (_d, store) = store();
        let empty = store.put_blob(b"{}").unwrap();
        let payload = store.put_blob(b"sbom").unwrap();
        let (manifest, size) = put_json(
            &store,
            &json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_MANIFEST,
                "artifactType": "application/spdx+json",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
                "layers": [{"mediaType": "application/spdx+json", "digest": payload.to_string(), "size": 4}],
            }),
        );
        let r: Reference = "sbom:1".parse().unwrap();
        store
            .tag(
                &r,
                Descriptor::new(MediaType::ImageManifest, size, &manifest),
            )
            .unwrap();
        assert_eq!(
            store.prune(PruneOptions::default()).unwrap(),
            PruneReport::default()
        );
        assert!(store.has_blob(&empty) && store.has_blob(&payload));
    }

    #[test]
    fn unparsable_reachable_manifest_aborts_before_deleting() {
        let (_d, store) = store();
        let orphan = store.put_blob(b"orphan").unwrap();
        let bogus = store.put_blob(b"not a manifest").unwrap();
        let r: Reference = "broken".parse().unwrap();
        store
            .tag(&r, Descriptor::new(MediaType::ImageManifest, 14, &bogus))
            .unwrap();
        let err = store.prune(PruneOptions::default()).unwrap_err();
        assert!(
            matches!(err, Error::ParseBlob { what: "manifest", ref digest, .. } if *digest == bogus),
            "{err:?}"
        );
        assert!(store.has_blob(&orphan));
    }

    #[test]
    fn foreign_files_in_store_dirs_are_left_alone() {
        let (_d, store) = store();
        let foreign = store.blob_dir().join("README");
        fs::write(&foreign, b"not ours").unwrap();
        fs::create_dir(store.layers_dir().join("notes")).unwrap();
        let report = store.prune(PruneOptions::default()).unwrap();
        assert_eq!(report, PruneReport::default());
        assert!(foreign.exists());
        assert!(store.layers_dir().join("notes").exists());
    }
}
