//! Garbage collection: mark everything reachable from `index.json`, sweep the rest.
//!
//! Reachability follows the image-spec graph: an index reaches its manifests, a manifest its
//! config and layers, and a config (through `rootfs.diff_ids`) the unpacked layer directories.
//! Cache entries do not keep content alive (as with `docker builder prune`, the cache is
//! disposable); they are deleted when something they name is gone.

use std::collections::HashSet;
use std::fs;

use rbuild_oci::Digest;
use rbuild_oci::media_type;
use rbuild_oci::oci_spec::image::Descriptor;

use crate::index::digest_of;
use crate::{Error, Result, Store, atomic};

/// What [`Store::prune`] removes besides unreachable content.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneOptions {
    cache: bool,
}

impl PruneOptions {
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
            self.mark(desc, &mut marks)?;
        }

        let mut report = PruneReport::default();
        for (digest, path) in self.list_digests(&self.blob_dir())? {
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
        for (diff_id, _) in self.list_digests(&self.layers_dir())? {
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
            if opts.cache || dangling {
                report.bytes_freed += crate::layer::remove_tree(&path)?;
                report.cache_entries += 1;
            }
        }
        let (temps, bytes) = atomic::clean_stale_temps(&self.tmp_dir())?;
        report.temps = temps;
        report.bytes_freed += bytes;
        Ok(report)
    }

    fn mark(&self, desc: &Descriptor, marks: &mut Marks) -> Result<()> {
        let digest = digest_of(desc, desc.media_type().as_ref())?;
        if !marks.blobs.insert(digest.clone()) || !self.has_blob(&digest) {
            return Ok(());
        }
        let mt = desc.media_type().as_ref();
        if media_type::is_index(mt) {
            let index = self.read_index_blob(&digest)?;
            for child in index.manifests() {
                self.mark(child, marks)?;
            }
        } else if media_type::is_manifest(mt) {
            let manifest = self.read_manifest(&digest)?;
            let config = digest_of(manifest.config(), &digest.to_string())?;
            for layer in manifest.layers() {
                marks.blobs.insert(digest_of(layer, &digest.to_string())?);
            }
            marks.blobs.insert(config.clone());
            if self.has_blob(&config) {
                let cfg = self.read_config(&config)?;
                for id in cfg.rootfs().diff_ids() {
                    // A diff id we cannot parse names no layer directory we could have made.
                    if let Ok(d) = id.parse::<Digest>() {
                        marks.layer_dirs.insert(d);
                    }
                }
            }
        }
        Ok(())
    }

    /// The entries of `dir` whose names are sha256 hex digests. Other names are left alone:
    /// the store never creates them, so they are not ours to delete.
    fn list_digests(&self, dir: &std::path::Path) -> Result<Vec<(Digest, std::path::PathBuf)>> {
        let list_err = |source| Error::ListDir {
            path: dir.to_owned(),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            if let Ok(d) = Digest::from_hex(&entry.file_name().to_string_lossy()) {
                out.push((d, entry.path()));
            }
        }
        Ok(out)
    }
}
