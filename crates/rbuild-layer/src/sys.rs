//! Thin descriptor-relative filesystem calls (`*at` syscalls) used by the safe unpacker.
//!
//! Everything takes a parent directory descriptor and a single name component, so no call here
//! ever resolves a multi-component path string that a symlink could redirect.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags, fstatat, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

fn open_raw(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    openat(dir, name, flags | OFlag::O_CLOEXEC, mode)
}

/// Opens the directory `name` in `dir` without following a symlink (`ENOTDIR` or `ELOOP` if it
/// is one, `ENOTDIR` if it is something else).
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    open_raw(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

/// Creates a new regular file `name` in `dir` (`O_EXCL`, so an existing name or a planted
/// symlink fails instead of being written through).
pub(crate) fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<File> {
    let fd = open_raw(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(File::from(fd))
}

/// `lstat` of `name` in `dir`.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// Whether a stat result is a directory / a symlink.
pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Whether a stat result is an overlayfs whiteout: a character device 0/0.
pub(crate) fn is_whiteout(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR && st.st_rdev == 0
}

pub(crate) fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> nix::Result<()> {
    mkdirat(dir, name, Mode::from_bits_truncate(mode))
}

pub(crate) fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: SFlag,
    perm: u32,
    dev: u64,
) -> nix::Result<()> {
    mknodat(dir, name, kind, Mode::from_bits_truncate(perm), dev)
}

pub(crate) fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    symlinkat(target, dir, name)
}

/// Hard-links `old_name` in `old_dir` as `new_name` in `new_dir`; a symlink target is linked
/// itself, not followed (no `AT_SYMLINK_FOLLOW`).
pub(crate) fn link_at(
    old_dir: BorrowedFd<'_>,
    old_name: &OsStr,
    new_dir: BorrowedFd<'_>,
    new_name: &OsStr,
) -> nix::Result<()> {
    linkat(old_dir, old_name, new_dir, new_name, AtFlags::empty())
}

/// `lchown` of `name` in `dir`.
pub(crate) fn lchown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> nix::Result<()> {
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// Sets atime and mtime of `name` in `dir` without following a symlink.
pub(crate) fn lutimes_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: TimeSpec) -> nix::Result<()> {
    utimensat(dir, name, &mtime, &mtime, UtimensatFlags::NoFollowSymlink)
}

/// Removes `name` from `dir`, recursively for a directory, never following symlinks.
/// A missing name is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if is_dir(&st) {
        let sub = open_dir_at(dir, name)?;
        for child in list_dir(sub.as_fd_ref())? {
            remove_all_at(sub.as_fd_ref(), &child)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The names in the directory open as `dir`.
///
/// Read through `/proc/self/fd/N`: the kernel resolves that magic link to the very directory we
/// hold open, so the listing cannot be redirected (nix's `dir` feature is not enabled in the
/// workspace, and this avoids an `fdopendir` wrapper).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<std::ffi::OsString>> {
    let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        names.push(entry?.file_name());
    }
    Ok(names)
}

/// A path that names `name` inside the directory open as `dir`, for calls that only take paths
/// (`lsetxattr`). Only the last component is looked up by name, and the `l*` calls do not
/// follow it.
pub(crate) fn fd_child_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

/// Borrowing helper so that callers can write `fd.as_fd_ref()` on an `OwnedFd`.
pub(crate) trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}

impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn open_dir_at_does_not_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
        let root = File::open(tmp.path()).unwrap();
        assert!(open_dir_at(root.as_fd(), OsStr::new("real")).is_ok());
        // Linux reports ENOTDIR for O_DIRECTORY|O_NOFOLLOW on a symlink, ELOOP without
        // O_DIRECTORY; either way the link is not followed.
        let err = open_dir_at(root.as_fd(), OsStr::new("link")).unwrap_err();
        assert!(matches!(err, Errno::ENOTDIR | Errno::ELOOP), "{err}");
    }

    #[test]
    fn remove_all_at_does_not_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d/link")).unwrap();
        std::fs::write(root.join("d/e/f"), b"x").unwrap();
        let fd = File::open(&root).unwrap();
        remove_all_at(fd.as_fd(), OsStr::new("d")).unwrap();
        assert!(!root.join("d").exists());
        assert!(outside.join("keep").exists());
        remove_all_at(fd.as_fd(), OsStr::new("missing")).unwrap();
    }
}
