//! Resolving tar entry names inside a root directory without ever leaving it.
//!
//! Names are split lexically first ([`components`]): `..` anywhere is refused (stricter than
//! docker, which cleans `a/../b` to `b`, but a layer we accept must not depend on that), and a
//! leading `/` is stripped as docker's `archive.Unpack` does. Then the parent directories are
//! opened one component at a time, each relative to the previous descriptor with
//! `O_NOFOLLOW | O_DIRECTORY`, so a symlink in the tree — also one created earlier by the same
//! tar — stops the walk instead of redirecting it (CVE-2018-15664, the tar-slip family).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use crate::sys;

/// Why a name cannot be resolved.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// Component `index` is a symlink.
    Symlink(usize),
    /// Component `index` exists but is not a directory.
    NotDir(usize),
    /// A component does not exist (only when not creating).
    Missing,
    /// Another error.
    Io(std::io::Error),
}

/// Splits a tar name into its components, dropping empty and `.` ones and a leading `/`.
///
/// # Errors
///
/// A reason string when a component is `..`.
pub(crate) fn components(name: &[u8]) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains a `..` component".into()),
            c => out.push(OsStr::from_bytes(c).to_owned()),
        }
    }
    Ok(out)
}

/// Joins components back to `a/b/c` (for messages and the set of written paths).
pub(crate) fn join(comps: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_bytes());
    }
    out
}

/// An open root directory with a one-entry cache of the last parent directory resolved (tar
/// entries come grouped by directory, so this saves most of the per-component opens).
pub(crate) struct Root {
    fd: OwnedFd,
    cache: Option<(Vec<OsString>, OwnedFd)>,
}

impl Root {
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let dir = std::fs::File::open(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(std::io::Error::from(std::io::ErrorKind::NotADirectory));
        }
        Ok(Self {
            fd: OwnedFd::from(dir),
            cache: None,
        })
    }

    /// The root itself.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Forgets the cached parent: call after anything was removed or replaced, so that a
    /// descriptor of an unlinked directory is never written into.
    pub(crate) fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Opens the directory `comps` below the root, refusing symlinks on the way; with `create`,
    /// missing directories are made (mode 0755, root-owned, like docker's `MkdirAll` for
    /// parents a tar does not list).
    pub(crate) fn dir(
        &mut self,
        comps: &[OsString],
        create: bool,
    ) -> Result<BorrowedFd<'_>, WalkError> {
        if comps.is_empty() {
            return Ok(self.fd.as_fd());
        }
        let hit = matches!(&self.cache, Some((c, _)) if c.as_slice() == comps);
        if !hit {
            let fd = self.walk(comps, create)?;
            self.cache = Some((comps.to_vec(), fd));
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(WalkError::Io(std::io::Error::other("parent cache lost"))),
        }
    }

    fn walk(&self, comps: &[OsString], create: bool) -> Result<OwnedFd, WalkError> {
        let mut cur: Option<OwnedFd> = None;
        for (i, c) in comps.iter().enumerate() {
            let base = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let next = match sys::open_dir_at(base, c) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match sys::mkdir_at(base, c, 0o755) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(WalkError::Io(e.into())),
                    }
                    sys::open_dir_at(base, c).map_err(|e| classify(base, c, i, e))?
                }
                Err(e) => return Err(classify(base, c, i, e)),
            };
            cur = Some(next);
        }
        cur.ok_or_else(|| WalkError::Io(std::io::Error::other("empty path")))
    }
}

/// Turns an `openat(O_NOFOLLOW|O_DIRECTORY)` failure into a [`WalkError`].
fn classify(base: BorrowedFd<'_>, name: &OsStr, index: usize, e: Errno) -> WalkError {
    match e {
        Errno::ENOENT => WalkError::Missing,
        Errno::ELOOP | Errno::ENOTDIR => match sys::lstat_at(base, name) {
            Ok(st) if sys::is_symlink(&st) => WalkError::Symlink(index),
            Ok(_) => WalkError::NotDir(index),
            Err(e) => WalkError::Io(e.into()),
        },
        e => WalkError::Io(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|c| c.to_str().unwrap()).collect()
    }

    #[test]
    fn components_strip_root_and_dots_and_refuse_dotdot() {
        assert_eq!(names(&components(b"/a//b/./c/").unwrap()), ["a", "b", "c"]);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b"../x").is_err());
        assert!(components(b"/abs/../../x").is_err());
        assert!(components(b"a/..").is_err());
        assert_eq!(names(&components(b"a/..b").unwrap()), ["a", "..b"]);
        assert_eq!(join(&components(b"/a/b").unwrap()), b"a/b");
    }

    #[test]
    fn walk_refuses_symlinks_and_creates_missing_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", tmp.path().join("evil")).unwrap();
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        let mut root = Root::open(tmp.path()).unwrap();
        let c = components(b"evil/etc").unwrap();
        assert!(matches!(root.dir(&c, true), Err(WalkError::Symlink(0))));
        let c = components(b"file/x").unwrap();
        assert!(matches!(root.dir(&c, true), Err(WalkError::NotDir(0))));
        let c = components(b"new/sub").unwrap();
        assert!(matches!(root.dir(&c, false), Err(WalkError::Missing)));
        assert!(root.dir(&c, true).is_ok());
        assert!(tmp.path().join("new/sub").is_dir());
    }
}
