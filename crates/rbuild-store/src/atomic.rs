//! Crash-safe file replacement and the naming of temporary entries under `<root>/tmp`.
//!
//! Every file the store publishes (blobs, `index.json`, cache entries, state files) is written to
//! a temporary file in `<root>/tmp` (same filesystem, so `rename(2)` is atomic), fsynced, then
//! renamed into place, and the destination directory is fsynced so the rename itself survives a
//! crash (the classic ext4 "zero-length file after crash" lesson). A reader therefore sees either
//! the old or the new content, never a torn file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The prefix of a temporary entry made by this process: `<kind>-<pid>-`. The pid lets a later
/// open tell entries of crashed processes (stale) from those of running ones.
pub(crate) fn temp_prefix(kind: &str) -> String {
    format!("{kind}-{}-", std::process::id())
}

/// Writes `bytes` to `dest` atomically, using `tmp_dir` (same filesystem) for the temp file.
/// The file gets mode 0644 so that tools running as another user (skopeo, umoci) can read it.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix("file"))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(tmp_dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    sync_parent(dest)
}

/// Like [`write_atomic`] but never replaces an existing `dest` (`link(2)` fails with `EEXIST`).
/// Returns whether this call created the file. Used when two processes may initialise the same
/// root at once: the first one wins and the second must not overwrite what it may already have
/// changed.
pub(crate) fn create_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<bool> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix("file"))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(tmp_dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    match tmp.persist_noclobber(dest) {
        Ok(_) => {
            sync_parent(dest)?;
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

/// fsyncs the directory that holds `path`, making a rename or create in it durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Whether the `<kind>-<pid>-<random>` entry `name` in `<root>/tmp` belongs to no running
/// process. Names that do not follow the pattern are stale too: nothing of ours makes them.
pub(crate) fn is_stale_temp(name: &str) -> bool {
    let pid = name
        .split('-')
        .nth(1)
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|&p| p > 0);
    match pid {
        None => true,
        // kill(pid, 0) probes existence: EPERM still means "exists, not ours".
        Some(p) => matches!(kill(Pid::from_raw(p), None), Err(Errno::ESRCH)),
    }
}

/// Removes the stale entries of `tmp_dir` (see [`is_stale_temp`]); returns how many entries
/// and bytes went. Callers hold the exclusive root lock or know no other process uses the root.
pub(crate) fn clean_stale_temps(tmp_dir: &Path) -> crate::Result<(u64, u64)> {
    let mut count = 0;
    let mut bytes = 0;
    let entries = fs::read_dir(tmp_dir).map_err(|source| crate::Error::ListDir {
        path: tmp_dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| crate::Error::ListDir {
            path: tmp_dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        if is_stale_temp(&name.to_string_lossy()) {
            bytes += crate::tree::remove_tree(&entry.path())?;
            count += 1;
        }
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temps_of_this_process_are_not_stale() {
        let mine = format!("{}abc", temp_prefix("blob"));
        assert!(!is_stale_temp(&mine));
        // pid 1 always exists.
        assert!(!is_stale_temp("blob-1-xyz"));
        assert!(is_stale_temp("garbage"));
        assert!(is_stale_temp("blob-notapid-x"));
        // The largest pid Linux allows is 2^22; this one cannot be running.
        assert!(is_stale_temp("blob-2147483646-x"));
    }

    #[test]
    fn create_atomic_does_not_replace() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        assert!(create_atomic(dir.path(), &dest, b"one").unwrap());
        assert!(!create_atomic(dir.path(), &dest, b"two").unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        write_atomic(dir.path(), &dest, b"three").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"three");
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
