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
//! <root>/mounts/             persistent `RUN --mount=type=cache` directories
//! <root>/lock                flock(2) file: the garbage-collection lock (see below)
//! <root>/index.lock          flock(2) file serialising read-modify-write of index.json
//! ```
//!
//! # Permissions
//!
//! The root, `layers/`, `tmp/` and `mounts/` are mode 0700, and [`Store::open`] tightens them in
//! a store made by an older version. Layer directories hold image content as the image has it
//! (setuid-root binaries, world-writable directories), and the root runs as root: if any local
//! user could reach them, they could run a setuid binary of any pulled image with the host's
//! root (the class of docker's CVE-2021-41091, fixed there by making `/var/lib/docker` 0710 and
//! its overlay dirs 0700). Overlay and bind mounts resolve these paths once, with the mounter's
//! credentials, so a RUN step as a non-root user is not affected.
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
mod tree;
mod walk;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

pub use blob::BlobWriter;
pub use cache::CacheEntry;
pub use check::{CheckOptions, CheckReport, LayerMismatch, LayerPair, LayerVerifier, Problem};
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
    "mounts",
];

/// Mode of the root and of the directories holding layer content, staging and cache mounts.
const PRIVATE_DIR_MODE: u32 = 0o700;

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
        for dir in [store.blob_dir(), store.cache_dir()] {
            create_dir(&dir)?;
        }
        create_dir(&store.cache_entries_dir())?;
        create_dir(&store.state_dir())?;
        for dir in [store.layers_dir(), store.tmp_dir(), store.mounts_dir()] {
            create_private_dir(&dir)?;
        }
        // After creating: a store made by an older version (0755) is tightened here, and so is
        // a root whose mode the umask or another tool loosened.
        for dir in [
            store.root.clone(),
            store.layers_dir(),
            store.tmp_dir(),
            store.mounts_dir(),
        ] {
            restrict_dir(&dir)?;
        }
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
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent)?;
        }
        // 0700 from the start: created 0755 and tightened later, a local user could open a
        // directory of it (and keep the descriptor) in between.
        create_private_dir(&self.root)?;
        create_private_dir(&self.tmp_dir())?;
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

    /// Records, on first use, which overlayfs xattr marks opaque directories in this store's
    /// layer directories (`trusted.overlay.opaque` rootful, `user.overlay.opaque` in a user
    /// namespace), and refuses a process that uses the other one: it would misread every
    /// opaque directory the store holds.
    ///
    /// # Errors
    ///
    /// [`Error::LayerFormat`] on a mismatch; [`Error::ReadLayout`] / [`Error::WriteFile`]
    /// when the record cannot be read or written.
    pub fn claim_layer_format(&self, opaque_xattr: &str) -> Result<()> {
        let path = self.state_dir().join("opaque-xattr");
        let recorded = match fs::read_to_string(&path) {
            // Stores from before this record only ever had rootful builds.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.has_any_layer_dir() => {
                Ok("trusted.overlay.opaque".to_owned())
            }
            other => other,
        };
        match recorded {
            Ok(found) if found.trim() == opaque_xattr => Ok(()),
            Ok(found) => Err(Error::LayerFormat {
                path: self.root.clone(),
                found: found.trim().to_owned(),
                wanted: opaque_xattr.to_owned(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => atomic::write_atomic(
                &self.tmp_dir(),
                &path,
                format!("{opaque_xattr}\n").as_bytes(),
            )
            .map_err(|source| Error::WriteFile { path, source }),
            Err(source) => Err(Error::ReadLayout { path, source }),
        }
    }

    fn has_any_layer_dir(&self) -> bool {
        fs::read_dir(self.layers_dir()).is_ok_and(|mut entries| entries.next().is_some())
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.cache_dir().join("state")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where persistent cache mounts live (`<root>/mounts`); created 0700 by [`Store::open`].
    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
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

/// Creates `path` (its parent exists) with mode [`PRIVATE_DIR_MODE`]; an existing directory is
/// left as it is (see [`restrict_dir`]).
fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(source) => Err(Error::CreateRoot {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Sets `path`'s mode to [`PRIVATE_DIR_MODE`] unless it is that already. The directory is
/// opened with `O_NOFOLLOW` and changed through the descriptor, so a symlink planted in its
/// place is refused rather than followed.
fn restrict_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let err = |source| Error::Restrict {
        path: path.to_owned(),
        source,
    };
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(err)?;
    let mode = dir.metadata().map_err(err)?.permissions().mode() & 0o7777;
    if mode != PRIVATE_DIR_MODE {
        dir.set_permissions(fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            .map_err(err)?;
    }
    Ok(())
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
            "mounts",
        ] {
            assert!(root.join(d).is_dir(), "{d} missing");
        }
        // Reopening keeps the contents.
        fs::write(root.join("index.json"), EMPTY_INDEX).unwrap();
        Store::open(&root).unwrap();
    }

    #[test]
    fn open_makes_private_dirs_and_tightens_old_stores() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let private = ["", "layers", "tmp", "mounts"];
        Store::open(&root).unwrap();
        for d in private {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        // A store made 0755 by an older version is tightened on open.
        for d in private {
            fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let store = Store::open(&root).unwrap();
        for d in private {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        // Staging directories (RUN upper dirs, secret and mount scratch) are private too.
        let staging = store.staging().unwrap();
        assert_eq!(mode(staging.path()), 0o700);
    }

    #[test]
    fn open_refuses_a_private_dir_replaced_by_a_symlink() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Store::open(&root).unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        fs::remove_dir(root.join("layers")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("layers")).unwrap();
        let err = Store::open(&root).unwrap_err();
        assert!(matches!(err, Error::Restrict { .. }), "{err:?}");
        // The link's target was neither re-moded nor written.
        let m = fs::metadata(&outside).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m, 0o755);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
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
