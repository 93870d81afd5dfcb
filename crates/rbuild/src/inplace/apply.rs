//! Clearing a root filesystem and applying layer directories (overlay upper form) onto it, as
//! overlayfs would show them stacked: whiteouts delete, an opaque directory hides what was
//! there, everything else replaces the entry of the same name.
//!
//! Every write goes through descriptors opened under the root one component at a time with
//! `O_NOFOLLOW`: a symlink that an earlier layer left in the root (say `/x → /rbuild/store`) is
//! replaced by the directory the layer has, never followed. Preserved paths are skipped, and a
//! directory that holds one is emptied instead of removed.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::Preserved;
use crate::rootfs::{self, file_type, is_whiteout, list_dir, lstat_at, open_dir_at};

/// Removes everything under `root` but the preserved paths.
pub(super) fn clear(root: &Path, preserved: &Preserved) -> io::Result<()> {
    let dir = rootfs::open_root(root)?;
    clear_dir(&dir, Path::new(""), preserved)
}

fn clear_dir(dir: &OwnedFd, rel: &Path, preserved: &Preserved) -> io::Result<()> {
    for name in list_dir(dir)? {
        remove(dir, &name, &rel.join(&name), preserved)?;
    }
    Ok(())
}

/// Removes `name` (in `dir`, at `rel` below the root) without following links; a directory
/// that holds a preserved path is emptied around it instead.
fn remove(dir: &OwnedFd, name: &OsStr, rel: &Path, preserved: &Preserved) -> io::Result<()> {
    if preserved.covers(rel) {
        return Ok(());
    }
    if preserved.below(rel) {
        match open_dir_at(dir, name) {
            Ok(sub) => return clear_dir(&sub, rel, preserved),
            // Not a directory: nothing preserved is really below it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    crate::copy::remove_all_at(dir, name)
}

/// Applies the layer directory `layer` onto `root`.
pub(super) fn apply(layer: &Path, root: &Path, preserved: &Preserved) -> io::Result<()> {
    let src = rootfs::open_root(layer)?;
    let dst = rootfs::open_root(root)?;
    apply_dir(&src, &dst, Path::new(""), preserved)
}

fn apply_dir(src: &OwnedFd, dst: &OwnedFd, rel: &Path, preserved: &Preserved) -> io::Result<()> {
    if !rel.as_os_str().is_empty() && rootfs::is_opaque(src) {
        clear_dir(dst, rel, preserved)?;
    }
    for name in list_dir(src)? {
        let r = rel.join(&name);
        if preserved.covers(&r) {
            continue;
        }
        let st = lstat_at(src, &name)?;
        if is_whiteout(&st) {
            remove(dst, &name, &r, preserved)?;
            continue;
        }
        let existing = match lstat_at(dst, &name) {
            Ok(e) => Some(file_type(&e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        match file_type(&st) {
            FileType::Directory => {
                if existing != Some(FileType::Directory) {
                    if existing.is_some() {
                        remove(dst, &name, &r, preserved)?;
                    }
                    rustix::fs::mkdirat(dst, name.as_os_str(), Mode::from_raw_mode(0o700))?;
                }
                let s = open_dir_at(src, &name)?;
                let d = open_dir_at(dst, &name)?;
                apply_dir(&s, &d, &r, preserved)?;
                set_meta(&d, &st)?;
                copy_xattrs(&s, &d)?;
            }
            kind => {
                if existing.is_some() {
                    remove(dst, &name, &r, preserved)?;
                }
                copy_entry(src, dst, &name, kind, &st)?;
            }
        }
    }
    Ok(())
}

/// Copies a non-directory entry `name` of `src` into `dst` (where it does not exist), with its
/// owner, mode, times and xattrs.
pub(super) fn copy_entry(
    src: &OwnedFd,
    dst: &OwnedFd,
    name: &OsStr,
    kind: FileType,
    st: &rustix::fs::Stat,
) -> io::Result<()> {
    match kind {
        FileType::RegularFile => {
            let from = rustix::fs::openat(
                src,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let to = rustix::fs::openat(
                dst,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut from = std::fs::File::from(from);
            let mut to = std::fs::File::from(to);
            io::copy(&mut from, &mut to)?;
            let to = OwnedFd::from(to);
            let from = OwnedFd::from(from);
            set_meta(&to, st)?;
            copy_xattrs(&from, &to)?;
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(src, name, Vec::new())?;
            rustix::fs::symlinkat(target.as_c_str(), dst, name)?;
            chown_at(dst, name, st)?;
            rustix::fs::utimensat(dst, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        other => {
            rustix::fs::mknodat(
                dst,
                name,
                other,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                st.st_rdev,
            )?;
            chown_at(dst, name, st)?;
            rustix::fs::chmodat(
                dst,
                name,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )?;
            rustix::fs::utimensat(dst, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
        }
    }
    Ok(())
}

/// `lchown` of `name` in `dst` to the owner `st` records.
fn chown_at(dst: &OwnedFd, name: &OsStr, st: &rustix::fs::Stat) -> io::Result<()> {
    rustix::fs::chownat(
        dst,
        name,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn times(st: &rustix::fs::Stat) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Owner, then mode (chown clears setuid bits), then times, of an open file or directory.
pub(super) fn set_meta(fd: &impl AsFd, st: &rustix::fs::Stat) -> io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    rustix::fs::futimens(fd, &times(st))?;
    Ok(())
}

/// Copies the content xattrs (not overlayfs' own) of `from` to `to`.
pub(super) fn copy_xattrs(from: &impl AsFd, to: &impl AsFd) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::flistxattr(from, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if rbuild_layer::is_overlay_xattr(name) {
            continue;
        }
        let name = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::fgetxattr(from, name, &mut value)?;
        rustix::fs::fsetxattr(to, name, &value[..len], rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    #[test]
    fn layers_apply_like_an_overlay_and_never_write_through_links_or_over_preserved_paths() {
        if !crate::test_support::is_root("in-place apply") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (root, layer, outside) = (
            dir.path().join("root"),
            dir.path().join("layer"),
            dir.path().join("outside"),
        );
        for d in [&root, &layer, &outside] {
            fs::create_dir(d).unwrap();
        }
        // The root as earlier layers left it.
        fs::create_dir_all(root.join("etc/app")).unwrap();
        fs::write(root.join("etc/app/old.conf"), "old").unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        fs::write(root.join("delete-me"), "x").unwrap();
        symlink(&outside, root.join("trap")).unwrap();
        fs::create_dir_all(root.join("secrets")).unwrap();
        fs::write(root.join("secrets/token"), "keep").unwrap();
        fs::write(outside.join("sentinel"), "untouched").unwrap();
        // The layer: an opaque /etc/app, a whiteout, a directory where the root has a link, a
        // file over a preserved path.
        fs::create_dir_all(layer.join("etc/app")).unwrap();
        xattr::set(
            layer.join("etc/app"),
            rbuild_layer::overlay_opaque_xattr(),
            b"y",
        )
        .unwrap();
        fs::write(layer.join("etc/app/new.conf"), "new").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            layer.join("delete-me"),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
        fs::create_dir(layer.join("trap")).unwrap();
        fs::write(layer.join("trap/evil"), "written through a link?").unwrap();
        fs::create_dir(layer.join("secrets")).unwrap();
        fs::write(layer.join("secrets/token"), "replaced?").unwrap();
        symlink("passwd", layer.join("etc/link")).unwrap();

        let preserved = Preserved::new([PathBuf::from("/secrets")]);
        apply(&layer, &root, &preserved).unwrap();

        assert!(
            !root.join("etc/app/old.conf").exists(),
            "opaque hides the old content"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/app/new.conf")).unwrap(),
            "new"
        );
        assert!(!root.join("delete-me").exists());
        assert!(root.join("trap").symlink_metadata().unwrap().is_dir());
        assert_eq!(
            fs::read_to_string(root.join("trap/evil")).unwrap(),
            "written through a link?"
        );
        assert!(!outside.join("evil").exists());
        assert_eq!(
            fs::read_to_string(outside.join("sentinel")).unwrap(),
            "untouched"
        );
        assert_eq!(
            fs::read_to_string(root.join("secrets/token")).unwrap(),
            "keep"
        );
        assert_eq!(
            fs::read_link(root.join("etc/link")).unwrap(),
            PathBuf::from("passwd")
        );

        clear(&root, &preserved).unwrap();
        let left: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["secrets"]);
        assert_eq!(
            fs::read_to_string(root.join("secrets/token")).unwrap(),
            "keep"
        );
        assert_eq!(
            fs::read_to_string(outside.join("sentinel")).unwrap(),
            "untouched"
        );
    }
}
