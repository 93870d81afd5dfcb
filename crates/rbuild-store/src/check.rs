//! Store consistency check (`rbuild check`): an fsck for the OCI layout and rbuild's additions.
//!
//! What is checked, and why it can go wrong although every write is atomic:
//!
//! - every blob under `blobs/sha256` hashes to its name (disk corruption, outside tampering;
//!   image-spec `image-layout.md`: "the blob's content MUST match its digest");
//! - `index.json` parses, and every descriptor reachable from it (index → manifests → config
//!   and layers) names a blob that is present, has the descriptor's size and, for manifests,
//!   indexes and configs, parses (image-spec `descriptor.md`: size and digest MUST match);
//! - every cache entry parses and names only blobs and layer directories that exist;
//! - unpacked layer directories match their diff ids, through a caller-supplied verifier: the
//!   store cannot tar a directory itself (the layer crate sits above it), so the engine passes
//!   one in (`rbuild::check`).
//!
//! With [`CheckOptions::repair`], what is broken is dropped so that the next build or pull
//! recreates it: corrupt blobs and mismatching layer directories are deleted, tags whose image
//! graph is incomplete are removed, broken cache entries are deleted, and stale temp entries
//! are cleaned. Nothing that is intact is ever removed.
//!
//! Blobs and layer directories that nothing refers to are not damage: a build killed between
//! writing a blob and tagging its manifest leaves exactly that, and [`Store::prune`] collects it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use rbuild_oci::oci_spec::image::Descriptor;
use rbuild_oci::{Digest, Reference, Sha256Writer};

use crate::walk::{Edge, Visitor, walk};
use crate::{Error, LockGuard, Result, Store, atomic};

/// Options of [`Store::check`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    repair: bool,
}

impl CheckOptions {
    /// Drop what is broken (see the module docs) instead of only reporting it.
    #[must_use]
    pub fn repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }

    /// Whether repair is on.
    pub fn get_repair(&self) -> bool {
        self.repair
    }
}

/// One piece of damage found by [`Store::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// `index.json` cannot be read or parsed; nothing reachable can be checked.
    BrokenIndex {
        /// What went wrong.
        reason: String,
    },
    /// A blob's content does not hash to its name.
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// A descriptor names a blob that is not in the store.
    MissingBlob {
        /// The missing blob.
        digest: Digest,
        /// Who refers to it (`tag x`, `manifest sha256:…`).
        referrer: String,
    },
    /// A descriptor's size differs from the blob's.
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The size the descriptor declares.
        declared: u64,
        /// The blob's size on disk.
        actual: u64,
    },
    /// A manifest, index or config blob does not parse.
    UnparsableBlob {
        /// The blob.
        digest: Digest,
        /// `manifest`, `index` or `config`.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A descriptor's digest is not a valid sha256 digest.
    InvalidDigest {
        /// The digest as written.
        digest: String,
        /// Who refers to it.
        referrer: String,
    },
    /// A cache entry cannot be parsed or names content that is gone.
    BrokenCacheEntry {
        /// The entry file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An unpacked layer directory does not match its diff id.
    LayerDir {
        /// The layer's diff id (its directory name).
        diff_id: Digest,
        /// What the verifier found.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BrokenIndex { reason } => write!(f, "index.json: {reason}"),
            Problem::CorruptBlob { digest, actual } => {
                write!(f, "blob {digest}: content hashes to {actual}")
            }
            Problem::MissingBlob { digest, referrer } => {
                write!(f, "blob {digest}: missing (referred to by {referrer})")
            }
            Problem::SizeMismatch {
                digest,
                declared,
                actual,
            } => write!(
                f,
                "blob {digest}: descriptor says {declared} bytes, blob has {actual}"
            ),
            Problem::UnparsableBlob {
                digest,
                what,
                reason,
            } => write!(f, "{what} {digest}: {reason}"),
            Problem::InvalidDigest { digest, referrer } => {
                write!(f, "invalid digest `{digest}` in {referrer}")
            }
            Problem::BrokenCacheEntry { path, reason } => {
                write!(f, "cache entry {}: {reason}", path.display())
            }
            Problem::LayerDir { diff_id, reason } => {
                write!(f, "layer directory {diff_id}: {reason}")
            }
        }
    }
}

/// A layer directory together with the blob it was unpacked from (or written as), handed to the
/// verifier of [`Store::check_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPair {
    /// The diff id: the directory's name and the sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The directory.
    pub dir: PathBuf,
    /// The layer blob (compression is the verifier's to detect).
    pub blob: Digest,
}

/// What [`Store::check`] looked at and found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Damage found (before repair).
    pub problems: Vec<Problem>,
    /// Blobs whose digest was verified.
    pub blobs: u64,
    /// Tags whose image graph was walked.
    pub tags: u64,
    /// Cache entries read.
    pub cache_entries: u64,
    /// Layer directories verified against a blob.
    pub layer_dirs_verified: u64,
    /// Layer directories with no known blob (nothing refers to them): not verifiable, not damage.
    pub layer_dirs_unverified: u64,
    /// With repair: human-readable actions taken (`removed blob …`, `untagged …`).
    pub repairs: Vec<String>,
}

impl CheckReport {
    /// Whether no damage was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Why a layer directory does not match the blob it is paired with, as a [`LayerVerifier`]
/// found it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layer directory {diff_id}: {reason}")]
pub struct LayerMismatch {
    /// The layer's diff id (its directory name).
    pub diff_id: Digest,
    /// The blob the directory was compared with.
    pub blob: Digest,
    /// How they differ, or why they could not be compared (`/etc/x is missing`).
    pub reason: String,
}

impl LayerMismatch {
    /// A mismatch of `pair`.
    pub fn new(pair: &LayerPair, reason: impl Into<String>) -> Self {
        Self {
            diff_id: pair.diff_id.clone(),
            blob: pair.blob.clone(),
            reason: reason.into(),
        }
    }
}

/// Verifies one layer directory against its blob.
pub type LayerVerifier<'a> =
    dyn Fn(&Store, &LayerPair) -> std::result::Result<(), LayerMismatch> + 'a;

impl Store {
    /// Checks the store without verifying layer directories (see [`Store::check_with`]).
    ///
    /// # Errors
    ///
    /// As [`Store::check_with`].
    pub fn check(&self, opts: CheckOptions) -> Result<CheckReport> {
        self.check_with(opts, &|_, _| Ok(()))
    }

    /// Checks the store (see the module docs), verifying each layer directory that some tagged
    /// image or cache entry pairs with a blob through `verify_layer`.
    ///
    /// Takes the shared root lock (the exclusive one with repair, waiting for running builds),
    /// so a running build is never mistaken for damage: every store write is atomic, and a
    /// half-done build leaves only unreferenced content.
    ///
    /// # Errors
    ///
    /// Lock errors and IO errors listing or reading the store's directories; damage is not an
    /// error but a [`Problem`] in the report.
    pub fn check_with(
        &self,
        opts: CheckOptions,
        verify_layer: &LayerVerifier<'_>,
    ) -> Result<CheckReport> {
        let _guard: LockGuard = if opts.repair {
            self.lock_exclusive()?
        } else {
            self.lock_shared()?
        };
        let mut report = CheckReport::default();
        let mut bad_blobs = BTreeSet::new();

        // 1. Every blob hashes to its name.
        for (digest, path) in self.digest_entries(&self.blob_dir())? {
            report.blobs += 1;
            let actual = hash_file(&path).map_err(|source| Error::ReadBlob {
                digest: digest.clone(),
                source,
            })?;
            if actual != digest {
                report.problems.push(Problem::CorruptBlob {
                    digest: digest.clone(),
                    actual,
                });
                bad_blobs.insert(digest);
            }
        }

        // 2. The graph reachable from each tag.
        let mut pairs: HashMap<Digest, Digest> = HashMap::new();
        let mut broken_tags = Vec::new();
        match self.images() {
            Ok(images) => {
                for (reference, desc) in images {
                    report.tags += 1;
                    let before = report.problems.len();
                    let mut visitor = Verify {
                        store: self,
                        bad: &bad_blobs,
                        problems: &mut report.problems,
                        pairs: &mut pairs,
                    };
                    // The visitor records damage and never fails.
                    walk(
                        self,
                        &desc,
                        Edge::Root {
                            tag: Some(&reference),
                        },
                        &mut visitor,
                    )?;
                    if report.problems.len() > before {
                        broken_tags.push(reference);
                    }
                }
            }
            Err(e) => report.problems.push(Problem::BrokenIndex {
                reason: error_chain(&e),
            }),
        }

        // 3. Cache entries name existing content; they also pair layer blobs with directories
        // (the engine lists a step's layer blob and its diff id at the same position).
        let mut bad_entries = Vec::new();
        for (path, entry) in self.cache_entries()? {
            report.cache_entries += 1;
            let reason = match &entry {
                None => Some("not valid JSON of the cache entry shape".to_owned()),
                Some(e) => e
                    .blobs
                    .iter()
                    .find(|d| !self.has_blob(d) || bad_blobs.contains(*d))
                    .map(|d| format!("names blob {d}, which is missing or corrupt"))
                    .or_else(|| {
                        e.layer_dirs
                            .iter()
                            .find(|d| !self.has_layer_dir(d))
                            .map(|d| format!("names layer directory {d}, which is missing"))
                    }),
            };
            if let Some(reason) = reason {
                report.problems.push(Problem::BrokenCacheEntry {
                    path: path.clone(),
                    reason,
                });
                bad_entries.push(path);
            } else if let Some(e) = entry
                .as_ref()
                .filter(|e| e.blobs.len() == e.layer_dirs.len())
            {
                for (blob, diff_id) in e.blobs.iter().zip(&e.layer_dirs) {
                    pairs.entry(diff_id.clone()).or_insert_with(|| blob.clone());
                }
            }
        }

        // 4. Layer directories against their blobs.
        let mut bad_dirs = Vec::new();
        for (diff_id, dir) in self.digest_entries(&self.layers_dir())? {
            let Some(blob) = pairs.get(&diff_id).filter(|b| !bad_blobs.contains(*b)) else {
                report.layer_dirs_unverified += 1;
                continue;
            };
            if !self.has_blob(blob) {
                report.layer_dirs_unverified += 1;
                continue;
            }
            report.layer_dirs_verified += 1;
            let pair = LayerPair {
                diff_id: diff_id.clone(),
                dir,
                blob: blob.clone(),
            };
            if let Err(mismatch) = verify_layer(self, &pair) {
                report.problems.push(Problem::LayerDir {
                    diff_id: diff_id.clone(),
                    reason: mismatch.reason,
                });
                bad_dirs.push(diff_id);
            }
        }

        if opts.repair {
            self.repair(
                &mut report,
                &bad_blobs,
                &broken_tags,
                &bad_entries,
                &bad_dirs,
            )?;
        }
        Ok(report)
    }

    fn repair(
        &self,
        report: &mut CheckReport,
        bad_blobs: &BTreeSet<Digest>,
        broken_tags: &[Reference],
        bad_entries: &[PathBuf],
        bad_dirs: &[Digest],
    ) -> Result<()> {
        for d in bad_blobs {
            let path = self.blob_path(d);
            remove_file(&path)?;
            report.repairs.push(format!("removed corrupt blob {d}"));
        }
        for r in broken_tags {
            if self.untag(r)? {
                report
                    .repairs
                    .push(format!("untagged {r} (its image is incomplete)"));
            }
        }
        for path in bad_entries {
            remove_file(path)?;
            report
                .repairs
                .push(format!("removed cache entry {}", path.display()));
        }
        for d in bad_dirs {
            self.remove_layer_dir(d)?;
            report.repairs.push(format!("removed layer directory {d}"));
        }
        // A removed blob or directory may leave further cache entries dangling.
        for (path, entry) in self.cache_entries()? {
            let dangling = entry.is_none_or(|e| {
                !e.blobs.iter().all(|d| self.has_blob(d))
                    || !e.layer_dirs.iter().all(|d| self.has_layer_dir(d))
            });
            if dangling {
                remove_file(&path)?;
                report
                    .repairs
                    .push(format!("removed cache entry {}", path.display()));
            }
        }
        let (temps, _) = atomic::clean_stale_temps(&self.tmp_dir())?;
        if temps > 0 {
            report
                .repairs
                .push(format!("removed {temps} stale temporary entries"));
        }
        Ok(())
    }

    /// The diff ids of the unpacked layer directories.
    ///
    /// # Errors
    ///
    /// [`Error::ListDir`] when `layers/` cannot be listed.
    pub fn layer_dir_ids(&self) -> Result<Vec<Digest>> {
        Ok(self
            .digest_entries(&self.layers_dir())?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// Entries of `dir` named by a sha256 hex digest, sorted; other names are not the store's
    /// (never created by it, so never deleted by prune or check).
    pub(crate) fn digest_entries(&self, dir: &Path) -> Result<Vec<(Digest, PathBuf)>> {
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
        out.sort();
        Ok(out)
    }
}

/// Verifies the descriptor graph of one tag: collects problems and (layer diff id → blob)
/// pairs.
struct Verify<'a> {
    store: &'a Store,
    bad: &'a BTreeSet<Digest>,
    problems: &'a mut Vec<Problem>,
    pairs: &'a mut HashMap<Digest, Digest>,
}

impl Verify<'_> {
    /// Checks that `desc` names a present, intact blob of the declared size; returns its digest.
    fn blob(&mut self, desc: &Descriptor, referrer: &str) -> Option<Digest> {
        let Ok(digest) = Digest::try_from(desc.digest()) else {
            self.problems.push(Problem::InvalidDigest {
                digest: desc.digest().to_string(),
                referrer: referrer.to_owned(),
            });
            return None;
        };
        if self.bad.contains(&digest) {
            // Already reported as corrupt; the referrer is broken through it.
            self.problems.push(Problem::MissingBlob {
                digest,
                referrer: format!("{referrer}, corrupt"),
            });
            return None;
        }
        match fs::metadata(self.store.blob_path(&digest)) {
            Ok(m) => {
                if m.len() != desc.size() {
                    self.problems.push(Problem::SizeMismatch {
                        digest,
                        declared: desc.size(),
                        actual: m.len(),
                    });
                    return None;
                }
                Some(digest)
            }
            Err(_) => {
                self.problems.push(Problem::MissingBlob {
                    digest,
                    referrer: referrer.to_owned(),
                });
                None
            }
        }
    }
}

impl Visitor for Verify<'_> {
    fn reach(&mut self, desc: &Descriptor, edge: Edge<'_>) -> Result<Option<Digest>> {
        Ok(self.blob(desc, &edge.to_string()))
    }

    fn unreadable(&mut self, digest: Digest, what: &'static str, error: Error) -> Result<()> {
        self.problems.push(Problem::UnparsableBlob {
            digest,
            what,
            reason: error_chain(&error),
        });
        Ok(())
    }

    fn image_config(
        &mut self,
        manifest: &Digest,
        config: Digest,
        layers: &[Option<Digest>],
    ) -> Result<()> {
        match self.store.read_config(&config) {
            Ok(cfg) => {
                let diff_ids = cfg.rootfs().diff_ids();
                if diff_ids.len() != layers.len() {
                    self.problems.push(Problem::UnparsableBlob {
                        digest: config,
                        what: "config",
                        reason: format!(
                            "{} diff ids for {} layers of manifest {manifest}",
                            diff_ids.len(),
                            layers.len()
                        ),
                    });
                    return Ok(());
                }
                for (id, layer) in diff_ids.iter().zip(layers) {
                    if let (Ok(id), Some(layer)) = (id.parse::<Digest>(), layer) {
                        self.pairs.entry(id).or_insert_with(|| layer.clone());
                    }
                }
            }
            Err(e) => self.unreadable(config, "config", e)?,
        }
        Ok(())
    }
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut w = Sha256Writer::new(io::sink());
    io::copy(&mut file, &mut w)?;
    Ok(w.finish().1)
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CacheEntry;
    use rbuild_oci::media_type;
    use rbuild_oci::oci_spec::image::MediaType;

    /// A store with one tagged image: manifest → config (one diff id) + one layer blob, a layer
    /// directory for it and a cache entry naming both.
    fn image_store() -> (tempfile::TempDir, Store, Digest, Digest, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = store.put_blob(b"not really a tar").unwrap();
        let diff_id = Digest::sha256_of(b"uncompressed");
        let config_bytes = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let config = store.put_blob(config_bytes.as_bytes()).unwrap();
        let manifest_bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{m}","config":{{"mediaType":"{c}","digest":"{config}","size":{cs}}},"layers":[{{"mediaType":"{l}","digest":"{layer}","size":16}}]}}"#,
            m = media_type::OCI_MANIFEST,
            c = media_type::OCI_CONFIG,
            l = media_type::OCI_LAYER_GZIP,
            cs = config_bytes.len(),
        );
        let manifest = store.put_blob(manifest_bytes.as_bytes()).unwrap();
        let desc = Descriptor::new(
            MediaType::from(media_type::OCI_MANIFEST),
            manifest_bytes.len() as u64,
            &manifest,
        );
        store
            .tag(&"localhost/app:1".parse().unwrap(), desc)
            .unwrap();
        let staging = store.staging().unwrap();
        fs::write(staging.upper().join("f"), b"x").unwrap();
        store.commit_layer_dir(staging, &diff_id).unwrap();
        let entry = CacheEntry {
            blobs: vec![layer.clone()],
            layer_dirs: vec![diff_id.clone()],
            payload: serde_json::Value::Null,
        };
        store.cache_put("step-key", &entry).unwrap();
        (dir, store, manifest, layer, diff_id)
    }

    #[test]
    fn a_consistent_store_is_clean_and_pairs_layers_with_blobs() {
        let (_dir, store, _m, layer, diff_id) = image_store();
        let seen = std::cell::RefCell::new(Vec::new());
        let report = store
            .check_with(CheckOptions::default(), &|_, p| {
                seen.borrow_mut().push(p.clone());
                Ok(())
            })
            .unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.blobs, 3);
        assert_eq!(report.tags, 1);
        assert_eq!(report.cache_entries, 1);
        assert_eq!(report.layer_dirs_verified, 1);
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].blob, layer);
        assert_eq!(seen[0].diff_id, diff_id);
    }

    #[test]
    fn a_corrupt_layer_blob_is_found_and_repair_drops_tag_blob_and_cache_entry() {
        let (_dir, store, manifest, layer, _diff_id) = image_store();
        // Same size, different content: only hashing notices.
        fs::write(store.blob_path(&layer), b"NOT really a tar").unwrap();
        let report = store.check(CheckOptions::default()).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::CorruptBlob { digest, .. } if *digest == layer)),
            "{:?}",
            report.problems
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::BrokenCacheEntry { .. }))
        );
        // Without repair nothing changed.
        assert!(store.has_blob(&layer));

        let report = store.check(CheckOptions::default().repair(true)).unwrap();
        assert!(!report.repairs.is_empty());
        assert!(!store.has_blob(&layer));
        assert!(store.images().unwrap().is_empty());
        assert_eq!(store.cache_get("step-key").unwrap(), None);
        // The manifest itself was intact and stays (prune collects it).
        assert!(store.has_blob(&manifest));
        let again = store.check(CheckOptions::default()).unwrap();
        assert!(again.is_clean(), "{:?}", again.problems);
    }

    #[test]
    fn a_missing_config_and_a_wrong_size_are_reported() {
        let (_dir, store, manifest, _layer, _diff_id) = image_store();
        let m = store.read_manifest(&manifest).unwrap();
        let config = Digest::try_from(m.config().digest()).unwrap();
        fs::remove_file(store.blob_path(&config)).unwrap();
        let report = store.check(CheckOptions::default()).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::MissingBlob { digest, .. } if *digest == config)),
            "{:?}",
            report.problems
        );

        // A tag whose descriptor lies about the manifest size.
        let desc = Descriptor::new(MediaType::from(media_type::OCI_MANIFEST), 3, &manifest);
        store
            .tag(&"localhost/liar:1".parse().unwrap(), desc)
            .unwrap();
        let report = store.check(CheckOptions::default()).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::SizeMismatch { declared: 3, .. }))
        );
        store.check(CheckOptions::default().repair(true)).unwrap();
        assert!(store.images().unwrap().is_empty());
        assert!(store.check(CheckOptions::default()).unwrap().is_clean());
    }

    #[test]
    fn a_failing_layer_verifier_removes_the_directory_on_repair() {
        let (_dir, store, _m, _layer, diff_id) = image_store();
        let report = store
            .check_with(CheckOptions::default().repair(true), &|_, pair| {
                Err(LayerMismatch::new(pair, "extra file /etc/evil"))
            })
            .unwrap();
        assert!(
            matches!(&report.problems[..], [Problem::LayerDir { reason, .. }] if reason.contains("evil"))
        );
        assert!(!store.has_layer_dir(&diff_id));
        // The cache entry named the directory, so it went too.
        assert_eq!(store.cache_get("step-key").unwrap(), None);
        assert!(store.check(CheckOptions::default()).unwrap().is_clean());
    }

    #[test]
    fn garbage_cache_entries_and_a_broken_index_are_damage() {
        let (_dir, store, ..) = image_store();
        let junk = store.cache_entries_dir().join("junk.json");
        fs::write(&junk, b"{not json").unwrap();
        fs::write(store.index_path(), b"[]").unwrap();
        let report = store.check(CheckOptions::default()).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::BrokenIndex { .. }))
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::BrokenCacheEntry { path, .. } if *path == junk))
        );
        store.check(CheckOptions::default().repair(true)).unwrap();
        assert!(!junk.exists());
    }

    #[test]
    fn unreferenced_content_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_blob(b"orphan").unwrap();
        let staging = store.staging().unwrap();
        store
            .commit_layer_dir(staging, &Digest::sha256_of(b"orphan layer"))
            .unwrap();
        let report = store.check(CheckOptions::default()).unwrap();
        assert!(report.is_clean());
        assert_eq!(report.layer_dirs_unverified, 1);
        assert_eq!(store.layer_dir_ids().unwrap().len(), 1);
    }
}
