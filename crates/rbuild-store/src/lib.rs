//! The rbuild on-disk store: an OCI image layout with tags, locks, cache index and unpacked
//! layers.
//!
//! A store root looks like this:
//!
//! ```text
//! <root>/oci-layout          {"imageLayoutVersion":"1.0.0"} (written last when creating)
//! <root>/index.json          OCI image index, one manifest descriptor per tag, annotated with
//!                            org.opencontainers.image.ref.name = docker.io/library/busybox:latest
//! <root>/blobs/sha256/<hex>  blobs; a blob path that exists is complete and verified
//! <root>/layers/<diffid>/    unpacked layers (overlay upperdir form), used as overlay lowerdirs
//! <root>/cache/entries/      step cache: sha256(key) -> JSON entry
//! <root>/cache/state/        small named state files of the engine
//! <root>/tmp/                same-filesystem temp area; stale entries are removed on open
//! <root>/lock                flock(2) file: the garbage-collection lock (see below)
//! <root>/index.lock          flock(2) file serialising read-modify-write of index.json
//! ```
//!
//! `skopeo inspect oci:<root>:docker.io/library/busybox:latest` and
//! `umoci unpack --image <root>:docker.io/library/busybox:latest` read the root as is, provided
//! the name matches the OCI `ref.name` grammar (see [`is_oci_ref_name`]).
//!
//! # Locking contract
//!
//! Layer directories serve as overlay lowerdirs of running builds and blobs are written before the
//! manifest that refers to them is tagged, so [`Store::prune`] must not run concurrently with a
//! build. Therefore:
//!
//! - a build (anything that writes blobs, layer dirs or cache entries, or mounts layer dirs)
//!   holds [`Store::lock_shared`] for its whole duration;
//! - [`Store::prune`] takes [`Store::lock_exclusive`] itself; do not call it while the same
//!   process holds a guard on the same root (flock locks belong to open files, so it would wait
//!   for itself);
//! - [`Store::tag`] and [`Store::untag`] serialise on a separate `index.lock`, so they may be
//!   called while holding the shared lock.
//! - temp entries under `<root>/tmp` are named `<kind>-<pid>-<random>`; [`Store::open`] (when
//!   nobody holds the root lock) and [`Store::prune`] delete those whose pid is not running. A
//!   process in another pid namespace must therefore hold the shared lock while it writes.
//!
//! # Example
//!
//! ```no_run
//! use std::io::Write;
//! use rbuild_oci::{Reference, media_type};
//! use rbuild_oci::oci_spec::image::{Descriptor, MediaType};
//! use rbuild_store::Store;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("/var/lib/rbuild".as_ref())?;
//! let _build = store.lock_shared()?;
//!
//! // Stream a layer into the store; the digest is computed while writing.
//! let mut w = store.blob_writer()?;
//! w.write_all(b"...layer bytes...")?;
//! let (layer, _size) = w.commit(None)?;
//!
//! // Small JSON blobs in one call.
//! let manifest_bytes = br#"{"schemaVersion":2}"#;
//! let manifest = store.put_blob(manifest_bytes)?;
//!
//! let r: Reference = "localhost/app:dev".parse()?;
//! let desc = Descriptor::new(
//!     MediaType::from(media_type::OCI_MANIFEST),
//!     manifest_bytes.len() as u64,
//!     &manifest,
//! );
//! store.tag(&r, desc)?;
//! assert!(store.resolve(&r)?.is_some());
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

mod atomic;
mod blob;
mod cache;
mod check;
mod error;
mod index;
mod layer;
mod prune;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

pub use blob::BlobWriter;
pub use cache::CacheEntry;
pub use check::{CheckOptions, CheckReport, LayerPair, LayerVerifier, Problem};
pub use error::{Error, Result};
pub use index::{REF_NAME_ANNOTATION, is_oci_ref_name};
pub use layer::Staging;
pub use prune::{PruneOptions, PruneReport};

/// The content of `oci-layout` (image-spec `image-layout.md`).
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// An empty image index, the initial `index.json`.
const EMPTY_INDEX: &[u8] =
    br#"{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#;
/// Entries a root may contain: a directory holding only these is a store whose creation was
/// interrupted and may be completed.
const KNOWN_ENTRIES: &[&str] = &[
    "oci-layout",
    "index.json",
    "blobs",
    "layers",
    "cache",
    "tmp",
    "lock",
    "index.lock",
];

/// An opened store root. Cheap to share by reference across threads: every operation opens its
/// own files, and cross-process safety comes from `flock(2)` and atomic renames.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Which kind of lock a [`LockGuard`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Many holders at once: running builds.
    Shared,
    /// One holder, no shared holders: garbage collection.
    Exclusive,
}

/// A held `flock(2)` lock; released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    kind: LockKind,
}

impl LockGuard {
    /// Which kind of lock this is.
    pub fn kind(&self) -> LockKind {
        self.kind
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock anyway; unlocking first just makes the release
        // independent of any descriptor duplicated into a child process.
        let _ = FileExt::unlock(&self.file);
    }
}

impl Store {
    /// Opens the store at `root`, creating the layout if it is missing.
    ///
    /// Creation is safe against crashes and concurrent openers: directories are created
    /// idempotently, `index.json` only if absent (by `link(2)`), and `oci-layout` last, so a root
    /// with `oci-layout` is complete. When no other process holds the root lock, temporary
    /// entries left by dead processes are removed.
    ///
    /// # Errors
    ///
    /// [`Error::NotAStore`] when `root` is a non-empty directory without `oci-layout` (other than
    /// an interrupted creation), [`Error::LayoutVersion`] for an unknown layout version, and
    /// IO errors naming the directory or file that could not be created or read.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_owned(),
        };
        let layout = root.join("oci-layout");
        match fs::read(&layout) {
            Ok(bytes) => check_layout(&layout, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => store.create()?,
            Err(source) => {
                return Err(Error::ReadLayout {
                    path: layout,
                    source,
                });
            }
        }
        // Directories a layout made by another tool (skopeo, umoci) lacks.
        for dir in [store.blob_dir(), store.layers_dir(), store.cache_dir()] {
            create_dir(&dir)?;
        }
        create_dir(&store.cache_entries_dir())?;
        create_dir(&store.state_dir())?;
        create_dir(&store.tmp_dir())?;
        if let Some(_guard) = store.try_lock_exclusive()? {
            atomic::clean_stale_temps(&store.tmp_dir())?;
        }
        Ok(store)
    }

    fn create(&self) -> Result<()> {
        match fs::read_dir(&self.root) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|source| Error::ListDir {
                        path: self.root.clone(),
                        source,
                    })?;
                    let name = entry.file_name();
                    if !KNOWN_ENTRIES.iter().any(|k| name == *k) {
                        return Err(Error::NotAStore {
                            path: self.root.clone(),
                        });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::ListDir {
                    path: self.root.clone(),
                    source,
                });
            }
        }
        create_dir(&self.root)?;
        create_dir(&self.tmp_dir())?;
        create_dir(&self.blob_dir())?;
        let index = self.index_path();
        atomic::create_atomic(&self.tmp_dir(), &index, EMPTY_INDEX).map_err(|source| {
            Error::WriteFile {
                path: index,
                source,
            }
        })?;
        let layout = self.root.join("oci-layout");
        // Another process may have finished creating the root meanwhile: keep its file.
        atomic::create_atomic(&self.tmp_dir(), &layout, OCI_LAYOUT).map_err(|source| {
            Error::WriteFile {
                path: layout,
                source,
            }
        })?;
        Ok(())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the shared root lock, waiting while a prune holds the exclusive one. Hold it for
    /// the whole of a build (see the crate docs).
    ///
    /// # Errors
    ///
    /// [`Error::Lock`] when the lock file cannot be opened or locked.
    pub fn lock_shared(&self) -> Result<LockGuard> {
        let file = self.open_lock_file("lock")?;
        FileExt::lock_shared(&file).map_err(|source| self.lock_error("lock", source))?;
        Ok(LockGuard {
            file,
            kind: LockKind::Shared,
        })
    }

    /// Takes the exclusive root lock, waiting until no build holds the shared one.
    ///
    /// # Errors
    ///
    /// [`Error::Lock`] when the lock file cannot be opened or locked.
    pub fn lock_exclusive(&self) -> Result<LockGuard> {
        let file = self.open_lock_file("lock")?;
        FileExt::lock_exclusive(&file).map_err(|source| self.lock_error("lock", source))?;
        Ok(LockGuard {
            file,
            kind: LockKind::Exclusive,
        })
    }

    /// Takes the exclusive root lock if nobody holds the root lock now; `None` otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Lock`] when the lock file cannot be opened or the lock call fails.
    pub fn try_lock_exclusive(&self) -> Result<Option<LockGuard>> {
        let file = self.open_lock_file("lock")?;
        let got =
            FileExt::try_lock_exclusive(&file).map_err(|source| self.lock_error("lock", source))?;
        Ok(got.then_some(LockGuard {
            file,
            kind: LockKind::Exclusive,
        }))
    }

    /// The short-lived lock around read-modify-write of `index.json`.
    pub(crate) fn lock_index(&self) -> Result<LockGuard> {
        let file = self.open_lock_file("index.lock")?;
        FileExt::lock_exclusive(&file).map_err(|source| self.lock_error("index.lock", source))?;
        Ok(LockGuard {
            file,
            kind: LockKind::Exclusive,
        })
    }

    fn open_lock_file(&self, name: &str) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.root.join(name))
            .map_err(|source| self.lock_error(name, source))
    }

    fn lock_error(&self, name: &str, source: io::Error) -> Error {
        Error::Lock {
            path: self.root.join(name),
            source,
        }
    }

    pub(crate) fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub(crate) fn cache_entries_dir(&self) -> PathBuf {
        self.cache_dir().join("entries")
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.cache_dir().join("state")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }
}

fn check_layout(path: &Path, bytes: &[u8]) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Layout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let layout: Layout = serde_json::from_slice(bytes).map_err(|source| Error::ParseLayout {
        path: path.to_owned(),
        source,
    })?;
    if layout.version == "1.0.0" {
        Ok(())
    } else {
        Err(Error::LayoutVersion {
            path: path.to_owned(),
            version: layout.version,
        })
    }
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| Error::CreateRoot {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = Store::open(&root).unwrap();
        assert_eq!(store.root(), root);
        assert_eq!(fs::read(root.join("oci-layout")).unwrap(), OCI_LAYOUT);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        for d in [
            "blobs/sha256",
            "layers",
            "cache/entries",
            "cache/state",
            "tmp",
        ] {
            assert!(root.join(d).is_dir(), "{d} missing");
        }
        // Reopening keeps the contents.
        fs::write(root.join("index.json"), EMPTY_INDEX).unwrap();
        Store::open(&root).unwrap();
    }

    #[test]
    fn concurrent_opens_of_a_new_root_agree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new");
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| Store::open(&root))).collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        assert_eq!(fs::read(root.join("oci-layout")).unwrap(), OCI_LAYOUT);
        assert_eq!(fs::read(root.join("index.json")).unwrap(), EMPTY_INDEX);
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn open_refuses_a_foreign_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("important.txt"), b"x").unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NotAStore { .. }), "{err:?}");
        // Nothing was written into it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn open_completes_an_interrupted_creation_and_rejects_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        Store::open(dir.path()).unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::LayoutVersion { ref version, .. } if version == "2.0.0"));
    }

    #[test]
    fn open_cleans_stale_temps_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stale = store.tmp_dir().join("blob-2147483646-abc");
        let live = store
            .tmp_dir()
            .join(format!("{}x", atomic::temp_prefix("blob")));
        fs::create_dir_all(stale.join("sub")).unwrap();
        fs::write(&live, b"in progress").unwrap();
        Store::open(dir.path()).unwrap();
        assert!(!stale.exists());
        assert!(live.exists());
    }

    #[test]
    fn open_leaves_temps_alone_while_the_root_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stale = store.tmp_dir().join("blob-2147483646-abc");
        fs::write(&stale, b"x").unwrap();
        let _guard = store.lock_shared().unwrap();
        Store::open(dir.path()).unwrap();
        assert!(stale.exists());
    }

    #[test]
    fn shared_locks_coexist_and_exclude_the_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.lock_shared().unwrap();
        let b = store.lock_shared().unwrap();
        assert_eq!(a.kind(), LockKind::Shared);
        assert!(store.try_lock_exclusive().unwrap().is_none());
        drop(a);
        assert!(store.try_lock_exclusive().unwrap().is_none());
        drop(b);
        let x = store.try_lock_exclusive().unwrap();
        assert_eq!(x.as_ref().map(LockGuard::kind), Some(LockKind::Exclusive));
        assert!(store.try_lock_exclusive().unwrap().is_none());
    }
}
