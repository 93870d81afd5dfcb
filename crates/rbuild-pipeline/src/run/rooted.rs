//! Descriptor-relative file operations under a root directory that a job controls (its
//! checkout), never following a symlink the job may have planted.
//!
//! A job can leave anything in its checkout: `out -> /etc`, `out/x -> /root/.ssh/id_rsa`.
//! Saving artifacts then must not read through such a link into the host, and restoring them
//! into a later job's checkout must not write through one (the tar-slip family of bugs, which
//! artifact extractors keep meeting). So every path below a root is walked one component at a
//! time relative to an open directory descriptor:
//!
//! - reading (saving artifacts): the directories leading to an artifact path are resolved with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so a symlink that stays inside the
//!   checkout (`build -> target/release`) works and one that leaves it (absolute, or `..` past
//!   the root, or `/proc/self/root`) fails with `EXDEV`/`ELOOP`; on kernels before 5.6 any
//!   symlink on the way is refused. The artifact itself and everything below it is never
//!   followed: a symlink is saved as a symlink, as GitLab's artifact zip and tar formats store
//!   them.
//! - writing (restoring): every component is opened with `O_NOFOLLOW`; an existing symlink or
//!   file where a directory must go is replaced by the directory (GNU tar's default, without
//!   `--keep-directory-symlink`), an existing entry where a file or symlink goes is removed
//!   first, and files are created `O_EXCL`, so nothing is ever written through a link.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Flags of every directory opened for walking.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the root directory itself (a path the runner chose, not the job).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The normal components of a relative path; `None` for `..`, a root or a prefix (callers
/// reject such paths before; this keeps the walk honest on its own).
fn names(rel: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn outside(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is not a path inside the directory", rel.display()),
    )
}

/// Opens directory `rel` below `root` for reading, following only symlinks that stay below
/// `root` (see the module docs). `EXDEV` or `ELOOP` means the path leaves the root.
pub(crate) fn open_dir_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let comps = names(rel).ok_or_else(|| outside(rel))?;
    if comps.is_empty() {
        return Ok(rustix::fs::openat(root, ".", dir_flags(), Mode::empty())?);
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
        Err(Errno::NOSYS) => {}
        other => return Ok(other?),
    }
    // No openat2 (Linux < 5.6): refuse every symlink on the way instead.
    let mut dir = rustix::fs::openat(root, ".", dir_flags(), Mode::empty())?;
    for name in comps {
        dir = rustix::fs::openat(&dir, name, dir_flags(), Mode::empty())?;
    }
    Ok(dir)
}

/// Reads the regular file `rel` below `root` as text, following only symlinks that stay
/// below `root` (on kernels without `openat2`, none): an included pipeline file that links
/// out of the project is refused, never read.
pub(crate) fn read_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<String> {
    use std::io::Read as _;
    names(rel).ok_or_else(|| outside(rel))?;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let fd = match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
        Err(Errno::NOSYS) => {
            let parent = rel.parent().unwrap_or(Path::new(""));
            let name = rel.file_name().ok_or_else(|| outside(rel))?;
            let dir = open_dir_beneath(root, parent)?;
            rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW, Mode::empty())?
        }
        other => other?,
    };
    // A FIFO or device would block or never end: only regular files are pipeline files.
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", rel.display()),
        ));
    }
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text)?;
    Ok(text)
}

/// Whether an error from [`open_dir_beneath`] means "the path leaves the root".
pub(crate) fn is_escape(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::XDEV | Errno::LOOP)
    )
}

/// The type of `name` in `dir`, without following it; `None` when absent.
pub(crate) fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The names in directory `dir`, without `.` and `..`, with their types (never followed).
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<(OsString, FileType)>> {
    let mut out = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            // Some filesystems do not fill d_type.
            match kind_at(dir, name)? {
                Some(k) => kind = k,
                None => continue,
            }
        }
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}

/// Opens (creating when missing) directory `name` in `dir` for writing into. An existing
/// symlink, file or other non-directory there is removed and replaced by the directory: it is
/// never followed.
pub(crate) fn ensure_dir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<OwnedFd> {
    for _ in 0..3 {
        match rustix::fs::openat(dir, name, dir_flags(), Mode::empty()) {
            Ok(fd) => return Ok(fd),
            // ELOOP: a symlink (O_NOFOLLOW); ENOTDIR: a file, fifo, device.
            Err(Errno::LOOP | Errno::NOTDIR) => {
                rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode & 0o777)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(format!(
        "{} keeps changing under the restore",
        Path::new(name).display()
    )))
}

/// Opens (creating) the directories of `rel` below `root` with [`ensure_dir`].
pub(crate) fn ensure_dirs(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let comps = names(rel).ok_or_else(|| outside(rel))?;
    let mut dir = rustix::fs::openat(root, ".", dir_flags(), Mode::empty())?;
    for name in comps {
        dir = ensure_dir(dir.as_fd(), name, 0o755)?;
    }
    Ok(dir)
}

/// Removes `name` from `dir` and, for a directory, everything below it; symlinks are removed,
/// never followed. A missing entry is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match kind_at(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let sub = rustix::fs::openat(dir, name, dir_flags(), Mode::empty())?;
            for (child, _) in list(sub.as_fd())? {
                remove_all_at(sub.as_fd(), &child)?;
            }
            Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
        }
        Some(_) => Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?),
    }
}

/// Copies entry `src_name` of `src_dir` to `dst_name` in `dst_dir`, recursively, without
/// following a symlink on either side: symlinks are copied as symlinks, regular files by
/// content with their permission bits (setuid/setgid/sticky dropped), directories merged into
/// an existing directory. Other types (fifos, sockets, devices) are skipped, as GitLab's
/// archives cannot carry them either.
pub(crate) fn copy_entry(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    dst_dir: BorrowedFd<'_>,
    dst_name: &OsStr,
) -> io::Result<()> {
    let st = rustix::fs::statat(src_dir, src_name, AtFlags::SYMLINK_NOFOLLOW)?;
    let mode = st.st_mode & 0o777;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(src_dir, src_name, Vec::new())?;
            remove_all_at(dst_dir, dst_name)?;
            rustix::fs::symlinkat(target.as_c_str(), dst_dir, dst_name)?;
        }
        FileType::Directory => {
            let src = rustix::fs::openat(src_dir, src_name, dir_flags(), Mode::empty())?;
            let dst = ensure_dir(dst_dir, dst_name, mode)?;
            for (child, _) in list(src.as_fd())? {
                copy_entry(src.as_fd(), &child, dst.as_fd(), &child)?;
            }
        }
        FileType::RegularFile => {
            let src = rustix::fs::openat(
                src_dir,
                src_name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                Mode::empty(),
            )?;
            remove_all_at(dst_dir, dst_name)?;
            let dst = rustix::fs::openat(
                dst_dir,
                dst_name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut src = File::from(src);
            let mut dst = File::from(dst);
            io::copy(&mut src, &mut dst)?;
            // After writing: the umask does not apply to fchmod.
            rustix::fs::fchmod(&dst, Mode::from_raw_mode(mode))?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn beneath_follows_inner_links_and_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("target/release")).unwrap();
        symlink("target/release", root.join("build")).unwrap();
        symlink(d.path(), root.join("abs")).unwrap();
        symlink("../..", root.join("up")).unwrap();
        symlink("/proc/self/root", root.join("magic")).unwrap();
        let fd = open_root(&root).unwrap();
        assert!(open_dir_beneath(fd.as_fd(), Path::new("build")).is_ok());
        for bad in ["abs", "up", "magic", "magic/etc"] {
            let e = open_dir_beneath(fd.as_fd(), Path::new(bad)).unwrap_err();
            assert!(is_escape(&e), "{bad}: {e}");
        }
        assert!(open_dir_beneath(fd.as_fd(), Path::new("../x")).is_err());
    }

    #[test]
    fn ensure_dir_replaces_a_symlink_instead_of_following_it() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let sentinel = d.path().join("sentinel");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&sentinel).unwrap();
        symlink(&sentinel, root.join("out")).unwrap();
        let fd = open_root(&root).unwrap();
        let out = ensure_dirs(fd.as_fd(), Path::new("out/sub")).unwrap();
        rustix::fs::mkdirat(&out, "x", Mode::from_raw_mode(0o755)).unwrap();
        assert!(root.join("out/sub/x").is_dir());
        assert!(
            !std::fs::symlink_metadata(root.join("out"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(std::fs::read_dir(&sentinel).unwrap().count(), 0);
    }
}
