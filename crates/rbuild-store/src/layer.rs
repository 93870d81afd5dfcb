//! Unpacked layers: `layers/<diffid hex>/`, each an overlay upperdir-form tree (whiteouts as
//! character devices 0/0, opaque dirs as `trusted.overlay.opaque=y`), reused as an overlay
//! lowerdir by every build whose image contains the layer.
//!
//! A layer directory only ever appears by `rename(2)` of a finished staging `upper/`, so a layer
//! directory that exists is complete; it is removed by renaming it into `<root>/tmp` first, so a
//! half-deleted tree is never visible under `layers/`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use rbuild_oci::Digest;

use crate::tree::remove_tree;
use crate::{Error, Result, Store, atomic};

/// A fresh directory under `<root>/tmp` holding `upper/` and `work/`: overlayfs requires upper
/// and work directories on the same filesystem, and the store's tmp area is on the same
/// filesystem as `layers/`, so committing is a rename. Dropping it removes what is left.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    /// The staging directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The overlay upperdir (or the target of a layer extraction): it becomes the layer.
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }

    /// The overlay workdir (empty, same filesystem as [`Staging::upper`]).
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Best effort: a leftover is a stale temp entry that the next open or prune removes.
        let _ = remove_tree(&self.path);
    }
}

impl Store {
    /// Where the unpacked layer with uncompressed digest `diff_id` lives.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    /// Whether the layer `diff_id` is unpacked (and therefore complete).
    pub fn has_layer_dir(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// Creates a staging directory with empty `upper/` (mode 0755: overlay shows the upperdir's
    /// mode as the mode of `/`) and `work/`.
    ///
    /// # Errors
    ///
    /// [`Error::CreateTemp`] / [`Error::CreateStaging`] when the directories cannot be created.
    pub fn staging(&self) -> Result<Staging> {
        let dir = self.tmp_dir();
        let path = tempfile::Builder::new()
            .prefix(&atomic::temp_prefix("staging"))
            .tempdir_in(&dir)
            .map_err(|source| Error::CreateTemp { dir, source })?
            .keep();
        let staging = Staging { path };
        // 0700 whatever the tempfile version or umask gives: a staging directory holds a RUN
        // step's upper dir, its secrets and mount scratch while the step runs.
        fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o700)).map_err(
            |source| Error::CreateStaging {
                path: staging.path().to_owned(),
                source,
            },
        )?;
        for sub in [staging.upper(), staging.work()] {
            fs::create_dir(&sub)
                .and_then(|()| fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)))
                .map_err(|source| Error::CreateStaging { path: sub, source })?;
        }
        Ok(staging)
    }

    /// Makes `staging`'s `upper/` the layer directory of `diff_id` by an atomic rename, so a
    /// layer directory that exists after a crash of the process is complete. If the layer is already present (another build got there first) the existing
    /// directory is kept, since layers with equal diff ids have equal content, and the staging
    /// copy is discarded. Returns the layer directory.
    ///
    /// # Errors
    ///
    /// [`Error::CommitLayer`] when renaming fails.
    pub fn commit_layer_dir(&self, staging: Staging, diff_id: &Digest) -> Result<PathBuf> {
        let dest = self.layer_dir(diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let err = |source: io::Error| Error::CommitLayer {
            diff_id: diff_id.clone(),
            source,
        };
        let upper = staging.upper();
        // No syncfs here: it waits for every dirty page of the filesystem (a previous build's
        // 50 MiB copy included) and doubled the time of a one-file-changed rebuild. A layer
        // directory is derived data: the rename is atomic for crashes of the process, the blob
        // it came from is fsynced, and after a power loss `rbuild check --repair` finds a
        // directory that does not match its diff_id and drops it for the next build to remake.
        // RENAME_NOREPLACE: a plain rename(2) would silently replace an empty directory that a
        // concurrent build committed (and may have mounted) in the meantime.
        match renameat2(
            AT_FDCWD,
            &upper,
            AT_FDCWD,
            &dest,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {}
            Err(Errno::EEXIST | Errno::ENOTEMPTY) => return Ok(dest),
            Err(e) => return Err(err(e.into())),
        }
        atomic::sync_parent(&dest).map_err(err)?;
        Ok(dest)
    }

    /// Removes the layer directory `diff_id`, if present; returns the bytes freed. Only safe
    /// under the exclusive root lock: a running build may use it as a lowerdir.
    pub(crate) fn remove_layer_dir(&self, diff_id: &Digest) -> Result<u64> {
        let dir = self.layer_dir(diff_id);
        let doomed = self.tmp_dir().join(format!(
            "{}{}",
            atomic::temp_prefix("removing"),
            diff_id.hex()
        ));
        match fs::rename(&dir, &doomed) {
            Ok(()) => remove_tree(&doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(Error::Remove { path: dir, source }),
        }
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
    fn staging_commits_into_layers_and_cleans_up() {
        let (_d, store) = store();
        let staging = store.staging().unwrap();
        let staging_path = staging.path().to_owned();
        assert!(staging.work().is_dir());
        fs::write(staging.upper().join("hello"), b"hi").unwrap();
        let diff_id = Digest::sha256_of(b"layer");
        assert!(!store.has_layer_dir(&diff_id));
        let dir = store.commit_layer_dir(staging, &diff_id).unwrap();
        assert_eq!(dir, store.layer_dir(&diff_id));
        assert!(store.has_layer_dir(&diff_id));
        assert_eq!(fs::read(dir.join("hello")).unwrap(), b"hi");
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(!staging_path.exists());
    }

    #[test]
    fn second_commit_of_a_layer_keeps_the_first() {
        let (_d, store) = store();
        let diff_id = Digest::sha256_of(b"layer");
        for content in [&b"first"[..], b"second"] {
            let staging = store.staging().unwrap();
            fs::write(staging.upper().join("f"), content).unwrap();
            store.commit_layer_dir(staging, &diff_id).unwrap();
        }
        assert_eq!(
            fs::read(store.layer_dir(&diff_id).join("f")).unwrap(),
            b"first"
        );
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn empty_layer_commit_does_not_replace_an_existing_empty_layer() {
        let (_d, store) = store();
        let diff_id = Digest::sha256_of(b"");
        let first = store
            .commit_layer_dir(store.staging().unwrap(), &diff_id)
            .unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&first).unwrap());
        // Simulate losing the `is_dir` race: commit the upper by hand through the same path.
        let staging = store.staging().unwrap();
        let res = renameat2(
            AT_FDCWD,
            &staging.upper(),
            AT_FDCWD,
            &first,
            RenameFlags::RENAME_NOREPLACE,
        );
        assert_eq!(res, Err(Errno::EEXIST));
        let again = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&first).unwrap());
        assert_eq!(ino, again);
    }

    #[test]
    fn dropped_staging_is_removed_even_with_read_only_content() {
        let (_d, store) = store();
        let staging = store.staging().unwrap();
        let path = staging.path().to_owned();
        let ro = staging.work().join("work");
        fs::create_dir(&ro).unwrap();
        fs::write(ro.join("f"), b"x").unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o000)).unwrap();
        drop(staging);
        assert!(!path.exists());
    }

    #[test]
    fn removing_a_layer_dir_frees_its_bytes() {
        let (_d, store) = store();
        let staging = store.staging().unwrap();
        fs::write(staging.upper().join("f"), b"abc").unwrap();
        let diff_id = Digest::sha256_of(b"l");
        store.commit_layer_dir(staging, &diff_id).unwrap();
        assert_eq!(store.remove_layer_dir(&diff_id).unwrap(), 3);
        assert!(!store.has_layer_dir(&diff_id));
        assert_eq!(store.remove_layer_dir(&diff_id).unwrap(), 0);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }
}
