//! What a RUN step changed in the root, found by comparing stat indexes taken before and after
//! it, written into the step's upper directory in overlayfs form.
//!
//! Only `lstat` is read for unchanged entries (type, mode, owner, size, mtime, ctime, inode: a
//! change of content, owner, mode or xattrs moves ctime); the content of new and changed files
//! is copied. A deleted entry becomes a 0/0 character device (one for a deleted tree), a
//! directory that was removed and made again (another inode) an opaque directory, and the
//! directories on the way to a change are copied up with their metadata, as overlayfs does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode};

use super::Preserved;
use super::apply::{copy_entry, copy_xattrs, set_meta};
use crate::rootfs::{self, file_type, list_dir, lstat_at, open_dir_at};

/// What identifies an entry's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    kind: FileType,
    mode: u32,
    uid: u32,
    gid: u32,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    nlink: u64,
    /// Birth time where the filesystem records one: a directory removed and made again may
    /// get the freed inode number back (ext4 reuses them at once), but not its birth time.
    btime: Option<(i64, u32)>,
}

impl Key {
    #[allow(
        clippy::useless_conversion,
        reason = "the stat field types differ between architectures"
    )]
    fn of(st: &rustix::fs::Stat) -> Key {
        Key {
            kind: file_type(st),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size,
            mtime: (i64::from(st.st_mtime), st.st_mtime_nsec as i64),
            ctime: (i64::from(st.st_ctime), st.st_ctime_nsec as i64),
            ino: st.st_ino,
            nlink: u64::from(st.st_nlink),
            btime: None,
        }
    }

    /// With the birth time of `name` in `dir` (directories only: that is where it matters).
    fn with_btime(mut self, dir: &OwnedFd, name: &OsStr) -> Key {
        if self.kind == FileType::Directory {
            let x = rustix::fs::statx(
                dir,
                name,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                rustix::fs::StatxFlags::BTIME,
            );
            if let Ok(x) = x
                && x.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0
            {
                self.btime = Some((x.stx_btime.tv_sec, x.stx_btime.tv_nsec));
            }
        }
        self
    }
}

/// The stat of every entry below a root (preserved paths left out), by relative path.
#[derive(Debug, Default)]
pub(super) struct Index {
    entries: BTreeMap<PathBuf, Key>,
}

impl Index {
    /// Walks `root` without following links.
    pub(super) fn take(root: &Path, preserved: &Preserved) -> io::Result<Index> {
        let mut index = Index::default();
        let dir = rootfs::open_root(root)?;
        index.walk(&dir, Path::new(""), preserved)?;
        Ok(index)
    }

    fn walk(&mut self, dir: &OwnedFd, rel: &Path, preserved: &Preserved) -> io::Result<()> {
        for name in list_dir(dir)? {
            let r = rel.join(&name);
            if preserved.covers(&r) {
                continue;
            }
            let st = match lstat_at(dir, &name) {
                Ok(st) => st,
                // Gone since the listing (a process still running): not part of the state.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let key = Key::of(&st).with_btime(dir, &name);
            self.entries.insert(r.clone(), key);
            if key.kind == FileType::Directory {
                let sub = open_dir_at(dir, &name)?;
                self.walk(&sub, &r, preserved)?;
            }
        }
        Ok(())
    }
}

/// Writes into `upper` what changed under `root` since `before`.
pub(super) fn diff(
    root: &Path,
    before: &Index,
    upper: &Path,
    preserved: &Preserved,
) -> io::Result<()> {
    let after = Index::take(root, preserved)?;
    let root_fd = rootfs::open_root(root)?;
    let upper_fd = rootfs::open_root(upper)?;
    let mut writer = Upper {
        root: root_fd,
        upper: upper_fd,
        made: HashSet::new(),
        dirs: Vec::new(),
        links: HashMap::new(),
    };
    // Directories replaced by new ones (another inode): their old content is gone.
    let mut opaque = HashSet::new();
    for (rel, now) in &after.entries {
        let old = before.entries.get(rel);
        if old == Some(now) {
            continue;
        }
        let replaced_dir = now.kind == FileType::Directory
            && old.is_some_and(|o| {
                o.kind == FileType::Directory && (o.ino != now.ino || o.btime != now.btime)
            });
        writer.write(rel, now).map_err(|e| at(rel, e))?;
        if replaced_dir {
            writer.mark_opaque(rel).map_err(|e| at(rel, e))?;
            opaque.insert(rel.clone());
        }
    }
    for rel in before.entries.keys() {
        if after.entries.contains_key(rel) {
            continue;
        }
        // One whiteout for a deleted tree, none inside a directory that is opaque now or
        // that a non-directory replaced (which hides everything below it).
        let covered = rel.ancestors().skip(1).any(|a| {
            !a.as_os_str().is_empty()
                && (opaque.contains(a)
                    || after
                        .entries
                        .get(a)
                        .is_none_or(|k| k.kind != FileType::Directory))
        });
        if !covered {
            writer.whiteout(rel).map_err(|e| at(rel, e))?;
        }
    }
    writer.finish()
}

/// The directory `rel` below the directory `base`, entered one component at a time without
/// following links (`rel` empty: `base` itself, reopened).
fn open_rel(base: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut dir = rustix::fs::openat(
        base,
        ".",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for part in rel.components() {
        dir = open_dir_at(&dir, part.as_os_str())?;
    }
    Ok(dir)
}

/// `e` with the path it happened at.
fn at(rel: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("/{}: {e}", rel.display()))
}

/// Builds the upper directory.
struct Upper {
    root: OwnedFd,
    upper: OwnedFd,
    /// Directories already made in the upper directory.
    made: HashSet<PathBuf>,
    /// Directories whose metadata is set last (their times change as entries are added).
    dirs: Vec<PathBuf>,
    /// Regular files with several links, by inode: the first upper path written.
    links: HashMap<u64, PathBuf>,
}

impl Upper {
    /// The parent of `rel` in the root and in the upper directory (made with the root's
    /// metadata on the way, as a copy-up).
    fn parents(&mut self, rel: &Path) -> io::Result<(OwnedFd, OwnedFd, PathBuf)> {
        let parent = rel.parent().unwrap_or(Path::new("")).to_owned();
        let mut in_root = open_rel(&self.root, Path::new(""))?;
        let mut in_upper = open_rel(&self.upper, Path::new(""))?;
        let mut sofar = PathBuf::new();
        for part in parent.components() {
            let name = part.as_os_str();
            sofar.push(name);
            if !self.made.contains(&sofar) {
                match rustix::fs::mkdirat(&in_upper, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                self.made.insert(sofar.clone());
                self.dirs.push(sofar.clone());
            }
            in_root = open_dir_at(&in_root, name)?;
            in_upper = open_dir_at(&in_upper, name)?;
        }
        Ok((in_root, in_upper, parent))
    }

    fn write(&mut self, rel: &Path, key: &Key) -> io::Result<()> {
        let Some(name) = rel.file_name() else {
            return Ok(());
        };
        let (in_root, in_upper, _) = self.parents(rel)?;
        if key.kind == FileType::Directory {
            if self.made.insert(rel.to_owned()) {
                rustix::fs::mkdirat(&in_upper, name, Mode::from_raw_mode(0o700))?;
                self.dirs.push(rel.to_owned());
            }
            return Ok(());
        }
        let st = lstat_at(&in_root, name)?;
        if key.kind == FileType::RegularFile && key.nlink > 1 {
            if let Some(first) = self.links.get(&key.ino) {
                let first_dir = self.open_upper_parent(first)?;
                let first_name = first.file_name().unwrap_or(OsStr::new(""));
                rustix::fs::linkat(
                    &first_dir,
                    first_name,
                    &in_upper,
                    name,
                    rustix::fs::AtFlags::empty(),
                )?;
                return Ok(());
            }
            self.links.insert(key.ino, rel.to_owned());
        }
        copy_entry(&in_root, &in_upper, name, file_type(&st), &st)
    }

    fn open_upper_parent(&self, rel: &Path) -> io::Result<OwnedFd> {
        open_rel(&self.upper, rel.parent().unwrap_or(Path::new("")))
    }

    fn mark_opaque(&mut self, rel: &Path) -> io::Result<()> {
        let parent = self.open_upper_parent(rel)?;
        let name = rel.file_name().unwrap_or(OsStr::new("."));
        let dir = open_dir_at(&parent, name)?;
        rustix::fs::fsetxattr(
            &dir,
            rbuild_layer::overlay_opaque_xattr(),
            b"y",
            rustix::fs::XattrFlags::empty(),
        )?;
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> io::Result<()> {
        let Some(name) = rel.file_name() else {
            return Ok(());
        };
        let (_, in_upper, _) = self.parents(rel)?;
        match rustix::fs::mknodat(&in_upper, name, FileType::CharacterDevice, Mode::empty(), 0) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets every upper directory's owner, mode, times and xattrs from the root, deepest
    /// first.
    fn finish(mut self) -> io::Result<()> {
        self.dirs.sort();
        for rel in self.dirs.iter().rev() {
            let in_root = open_rel(&self.root, rel)?;
            let in_upper = open_rel(&self.upper, rel)?;
            let st = rustix::fs::fstat(&in_root)?;
            copy_xattrs(&in_root, &in_upper).map_err(|e| at(rel, e))?;
            set_meta(&in_upper, &st).map_err(|e| at(rel, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt as _, symlink};

    #[test]
    fn changes_deletions_and_replaced_dirs_land_in_the_upper_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let upper = dir.path().join("upper");
        fs::create_dir_all(root.join("keep/deep")).unwrap();
        fs::create_dir_all(root.join("gone/sub")).unwrap();
        fs::create_dir_all(root.join("replaced/old")).unwrap();
        fs::create_dir_all(root.join("to-file/sub")).unwrap();
        fs::create_dir_all(root.join("preserved")).unwrap();
        fs::create_dir(&upper).unwrap();
        fs::write(root.join("keep/deep/same"), "same").unwrap();
        fs::write(root.join("keep/edited"), "before").unwrap();
        fs::write(root.join("gone/sub/file"), "x").unwrap();
        fs::write(root.join("deleted"), "x").unwrap();
        let preserved = Preserved::new([PathBuf::from("/preserved")]);
        let before = Index::take(&root, &preserved).unwrap();

        fs::write(root.join("keep/edited"), "after, longer").unwrap();
        fs::write(root.join("keep/deep/new"), "new").unwrap();
        fs::hard_link(root.join("keep/deep/new"), root.join("keep/also-new")).unwrap();
        symlink("/etc/passwd", root.join("link")).unwrap();
        fs::remove_dir_all(root.join("gone")).unwrap();
        fs::remove_file(root.join("deleted")).unwrap();
        fs::remove_dir_all(root.join("replaced")).unwrap();
        fs::create_dir_all(root.join("replaced")).unwrap();
        fs::write(root.join("replaced/fresh"), "f").unwrap();
        fs::write(root.join("preserved/ignored"), "not snapshotted").unwrap();
        fs::remove_dir_all(root.join("to-file")).unwrap();
        fs::write(root.join("to-file"), "a file now").unwrap();
        diff(&root, &before, &upper, &preserved).unwrap();

        let mut found: Vec<String> = walkdir::WalkDir::new(&upper)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(&upper).unwrap().display().to_string();
                let m = e.path().symlink_metadata().unwrap();
                let kind = if m.file_type().is_dir() {
                    "dir"
                } else if m.file_type().is_symlink() {
                    "link"
                } else if m.file_type().is_file() {
                    "file"
                } else {
                    "whiteout"
                };
                format!("{rel} {kind}")
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "deleted whiteout",
                "gone whiteout",
                "keep dir",
                "keep/also-new file",
                "keep/deep dir",
                "keep/deep/new file",
                "keep/edited file",
                "link link",
                "replaced dir",
                "replaced/fresh file",
                "to-file file",
            ]
        );
        assert_eq!(
            fs::read_to_string(upper.join("keep/edited")).unwrap(),
            "after, longer"
        );
        let a = fs::metadata(upper.join("keep/deep/new")).unwrap();
        let b = fs::metadata(upper.join("keep/also-new")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard links stay linked");
        assert_eq!(
            fs::read_link(upper.join("link")).unwrap(),
            PathBuf::from("/etc/passwd")
        );
        let opaque = xattr::get(upper.join("replaced"), rbuild_layer::overlay_opaque_xattr());
        // Setting trusted.* needs CAP_SYS_ADMIN: only check when it could be set.
        if rustix::process::geteuid().is_root() {
            assert_eq!(opaque.unwrap().as_deref(), Some(&b"y"[..]));
        }
        assert!(
            !upper.join("keep/deep/same").exists(),
            "unchanged files stay out"
        );
    }
}
