//! Removing directory trees the store made or unpacked, whatever their modes and entry types.
//!
//! Kept apart from `layer` and `atomic` because both need it (a layer directory and a stale
//! temporary entry are removed the same way) and neither may depend on the other.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::{Error, Result};

/// Removes `path` and everything below it, returning the bytes of regular files removed.
///
/// Layer trees come from images and RUN steps: directories may be read-only (mode 0555 or
/// even 0000, like overlayfs's own `work/work`), and entries may be device nodes, fifos,
/// sockets or dangling symlinks. Without `CAP_DAC_OVERRIDE` a read-only directory cannot be
/// listed or emptied, so each directory is made `u+rwx` before descending. Symlinks are removed,
/// never followed. A missing `path` is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<u64> {
    let remove_err = |source| Error::Remove {
        path: path.to_owned(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(remove_err(source)),
    };
    if !meta.is_dir() {
        let freed = if meta.is_file() { meta.len() } else { 0 };
        return match fs::remove_file(path) {
            Ok(()) => Ok(freed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(remove_err(source)),
        };
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700)).map_err(remove_err)?;
    }
    let mut freed = 0;
    let entries = fs::read_dir(path).map_err(|source| Error::ListDir {
        path: path.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::ListDir {
            path: path.to_owned(),
            source,
        })?;
        freed += remove_tree(&entry.path())?;
    }
    match fs::remove_dir(path) {
        Ok(()) => Ok(freed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(freed),
        Err(source) => Err(remove_err(source)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn remove_tree_copes_with_odd_entries() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("t");
        let ro = top.join("ro");
        fs::create_dir_all(ro.join("inner")).unwrap();
        fs::write(ro.join("inner/file"), b"12345").unwrap();
        symlink("/nonexistent", top.join("dangling")).unwrap();
        // A symlink to outside content must be unlinked, not followed.
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        symlink(&outside, top.join("link")).unwrap();
        nix::unistd::mkfifo(&top.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        if nix::unistd::geteuid().is_root() {
            // An overlay whiteout: character device 0/0.
            nix::sys::stat::mknod(
                &top.join("whiteout"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap();
        } else {
            println!("not root: skipping the character-device part");
        }
        fs::set_permissions(ro.join("inner"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o000)).unwrap();
        assert_eq!(remove_tree(&top).unwrap(), 5);
        assert!(!top.exists());
        assert!(outside.join("keep").exists());
        assert_eq!(remove_tree(&top).unwrap(), 0);
    }
}
