//! Reading layer blobs: unpack to upperdir form, or apply onto a root filesystem.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::stat::SFlag;
use nix::sys::time::TimeSpec;
use rbuild_oci::Digest;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::meta::{Meta, apply_fd_meta, owner_io_error, read_meta, set_node_xattr_tolerant};
use crate::resolve::{Root, WalkError, components, join};
use crate::sys::{self, AsFdRef};
use crate::write::{OPAQUE_MARKER, WHITEOUT_PREFIX, overlay_opaque_xattr};
use crate::{Error, Result};

/// What an unpack or apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed (whiteouts included, skipped ones not).
    pub entries: u64,
    /// Bytes of regular file contents written.
    pub bytes: u64,
    /// Whiteout and opaque markers processed.
    pub whiteouts: u64,
    /// Entries skipped: types a layer cannot carry (sockets, GNU volume labels, PAX global
    /// headers) and aufs metadata (`.wh..wh.*` other than the opaque marker), as docker does.
    pub skipped: u64,
    /// sha256 of the whole uncompressed stream: compare with the config's `diff_id`.
    pub diff_id: Digest,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keep whiteouts as overlay markers (char 0/0, opaque xattr).
    Upperdir,
    /// Carry whiteouts out (delete) on a full root filesystem.
    Apply,
}

/// Unpacks a layer blob into `dest` in overlay upperdir form: `.wh.<name>` becomes a character
/// device 0/0 named `<name>`, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
///
/// gzip, zstd or plain tar is detected from the magic bytes. Ownership, modes (setuid kept),
/// mtimes (directories after their children), xattrs and device nodes are restored, which
/// needs root. Entries that would land outside `dest` are refused (see [`Error::Refused`]).
///
/// # Errors
///
/// [`Error::OpenRoot`] when `dest` is not a directory, [`Error::ReadBlob`] for a corrupt or
/// truncated blob, [`Error::Refused`] for an escaping entry, [`Error::UnpackEntry`] when
/// creating an entry fails.
pub fn unpack_layer<R: Read>(blob: R, dest: &Path) -> Result<UnpackStats> {
    extract(blob, dest, Mode::Upperdir)
}

/// Applies a layer blob onto the full root filesystem `root` (flattening): `.wh.<name>` removes
/// `<name>`, `.wh..wh..opq` removes everything in its directory that this layer did not
/// itself write, and other entries replace what is there (a directory over a directory merges).
///
/// # Errors
///
/// As [`unpack_layer`].
pub fn apply_layer<R: Read>(blob: R, root: &Path) -> Result<UnpackStats> {
    extract(blob, root, Mode::Apply)
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Peeks at the first bytes and wraps `blob` in the matching decompressor.
fn decompress<'a, R: Read + 'a>(blob: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::with_capacity(128 * 1024, blob);
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = head[..got].to_vec();
    let magic = head.clone();
    let whole = io::Cursor::new(head).chain(reader);
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        // Multi-member: pigz and concatenated gzip streams are valid layers.
        Box::new(flate2::read::MultiGzDecoder::new(whole))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(whole)?)
    } else {
        Box::new(whole)
    })
}

fn extract<R: Read>(blob: R, root_path: &Path, mode: Mode) -> Result<UnpackStats> {
    let root = Root::open(root_path).map_err(|source| Error::OpenRoot {
        path: root_path.to_owned(),
        source,
    })?;
    let reader = HashingReader {
        inner: decompress(blob).map_err(|source| Error::ReadBlob { source })?,
        hasher: Sha256::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut ex = Extractor {
        root,
        mode,
        written: HashSet::new(),
        dir_times: Vec::new(),
        stats: Counts::default(),
        buf: vec![0; 128 * 1024],
    };
    for entry in archive
        .entries()
        .map_err(|source| Error::ReadBlob { source })?
    {
        let mut entry = entry.map_err(|source| Error::ReadBlob { source })?;
        ex.entry(&mut entry)?;
    }
    ex.finish_dir_times()?;
    // Hash what follows the end-of-archive blocks too: the diff_id covers the whole stream.
    let mut reader = archive.into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(|source| Error::ReadBlob { source })?;
    Ok(UnpackStats {
        entries: ex.stats.entries,
        bytes: ex.stats.bytes,
        whiteouts: ex.stats.whiteouts,
        skipped: ex.stats.skipped,
        diff_id: Digest::from_hasher(reader.hasher),
    })
}

#[derive(Default)]
struct Counts {
    entries: u64,
    bytes: u64,
    whiteouts: u64,
    skipped: u64,
}

struct Extractor {
    root: Root,
    mode: Mode,
    /// Paths this layer wrote: whiteouts and opaque markers hide only the lower layers'
    /// content (image-spec `layer.md`), never an entry of the same layer, whatever the order.
    written: HashSet<Vec<u8>>,
    /// Directories whose mtime is set at the end, deepest last in the list.
    dir_times: Vec<(Vec<OsString>, TimeSpec)>,
    stats: Counts,
    buf: Vec<u8>,
}

impl Extractor {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason: &str| Error::Refused {
            entry: name.clone(),
            reason: reason.to_owned(),
        };
        let comps = components(&raw).map_err(|r| refuse(&r))?;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            self.stats.skipped += 1;
            return Ok(());
        }
        let Some((last, parent)) = comps.split_last() else {
            // `./` or `/`: the root itself. Only a directory may describe it.
            if kind == EntryType::Directory {
                let meta = read_meta(entry, &name)?;
                self.set_dir_meta(&[], &meta, &name)?;
                self.stats.entries += 1;
                return Ok(());
            }
            return Err(refuse("a non-directory entry names the root itself"));
        };
        let last_bytes = last.as_bytes();
        if let Some(target) = last_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if last_bytes == OPAQUE_MARKER.as_bytes() {
                self.opaque(parent, &name)?;
            } else if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // aufs metadata such as `.wh..wh.plnk`: docker skips these.
                self.stats.skipped += 1;
                return Ok(());
            } else if target.is_empty() || target == b"." || target == b".." {
                return Err(refuse("whiteout names no file inside its directory"));
            } else {
                let meta = read_meta(entry, &name)?;
                self.whiteout(parent, OsStr::from_bytes(target), &meta, &name)?;
            }
            self.stats.entries += 1;
            self.stats.whiteouts += 1;
            return Ok(());
        }

        let meta = read_meta(entry, &name)?;
        match kind {
            EntryType::Directory => {
                self.make_dir(parent, last, &name)?;
                self.set_dir_meta(&comps, &meta, &name)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.make_file(parent, last, entry, &meta, &name)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("symlink without a target"))?
                    .into_owned();
                // The target is stored as is: it is never followed while unpacking.
                self.make_other(parent, last, &name, |dir, n| {
                    sys::symlink_at(OsStr::from_bytes(&target), dir, n)
                })?;
                self.set_meta_at(parent, last, &meta, &name, false)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("hard link without a target"))?
                    .into_owned();
                self.make_hardlink(parent, last, &target, &name)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        // A bad field must not silently become 0/0, which in upperdir form
                        // would be a whiteout.
                        let h = entry.header();
                        let bad = || Error::ReadBlob {
                            source: io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("entry `{name}` has no valid device numbers"),
                            ),
                        };
                        let major = h.device_major().ok().flatten().ok_or_else(bad)?;
                        let minor = h.device_minor().ok().flatten().ok_or_else(bad)?;
                        let kind = if kind == EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (kind, libc::makedev(major, minor))
                    }
                };
                self.make_other(parent, last, &name, |dir, n| {
                    sys::mknod_at(dir, n, sflag, 0o600, dev)
                })?;
                self.set_meta_at(parent, last, &meta, &name, true)?;
            }
            _ => {
                self.stats.skipped += 1;
                return Ok(());
            }
        }
        self.written.insert(join(&comps));
        self.stats.entries += 1;
        Ok(())
    }

    /// Opens the parent directory `comps` for entry `name`, turning walk errors into
    /// [`Error::Refused`] / [`Error::UnpackEntry`].
    fn parent(
        &mut self,
        comps: &[OsString],
        create: bool,
        name: &str,
    ) -> Result<Option<BorrowedFd<'_>>> {
        match self.root.dir(comps, create) {
            Ok(fd) => Ok(Some(fd)),
            Err(WalkError::Missing) => Ok(None),
            Err(WalkError::Symlink(i)) => Err(Error::Refused {
                entry: name.to_owned(),
                reason: format!(
                    "`{}` is a symlink; writing through it could leave the root",
                    String::from_utf8_lossy(&join(&comps[..=i]))
                ),
            }),
            Err(WalkError::NotDir(i)) => Err(Error::UnpackEntry {
                entry: name.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!(
                        "parent `{}` is not a directory",
                        String::from_utf8_lossy(&join(&comps[..=i]))
                    ),
                ),
            }),
            Err(WalkError::Io(source)) => Err(Error::UnpackEntry {
                entry: name.to_owned(),
                source,
            }),
        }
    }

    fn parent_required(&mut self, comps: &[OsString], name: &str) -> Result<BorrowedFd<'_>> {
        match self.parent(comps, true, name)? {
            Some(fd) => Ok(fd),
            None => Err(unpack_err(name, Errno::ENOENT)),
        }
    }

    fn make_dir(&mut self, parent: &[OsString], last: &OsStr, name: &str) -> Result<()> {
        let upperdir = self.mode == Mode::Upperdir;
        let dir = self.parent_required(parent, name)?;
        match sys::mkdir_at(dir, last, 0o700) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => {
                let st = sys::lstat_at(dir, last).map_err(|e| unpack_err(name, e))?;
                if sys::is_dir(&st) {
                    // A directory over a directory merges (docker keeps the existing one).
                    return Ok(());
                }
                sys::remove_all_at(dir, last).map_err(|e| unpack_io(name, e))?;
                sys::mkdir_at(dir, last, 0o700).map_err(|e| unpack_err(name, e))?;
                if upperdir && sys::is_whiteout(&st) {
                    // `.wh.d` then `d/`: the layer deleted the lower `d` and made a new one. In
                    // upperdir form that is an opaque directory, or the lower contents would
                    // show through again (what overlayfs itself records for `rm -r d; mkdir d`).
                    use xattr::FileExt as _;
                    let fd = sys::open_dir_at(dir, last).map_err(|e| unpack_err(name, e))?;
                    File::from(fd)
                        .set_xattr(overlay_opaque_xattr(), b"y")
                        .map_err(|e| unpack_io(name, e))?;
                }
                self.root.invalidate();
                Ok(())
            }
            Err(e) => Err(unpack_err(name, e)),
        }
    }

    /// Sets owner, mode and xattrs of the directory `comps` now, and queues its mtime.
    fn set_dir_meta(&mut self, comps: &[OsString], meta: &Meta, name: &str) -> Result<()> {
        let fd = match comps.split_last() {
            None => self.root.fd().try_clone_to_owned(),
            Some((last, parent)) => {
                let dir = self.parent_required(parent, name)?;
                sys::open_dir_at(dir, last).map_err(io::Error::from)
            }
        }
        .map_err(|e| unpack_io(name, e))?;
        let file = File::from(fd);
        apply_fd_meta(&file, meta).map_err(|e| unpack_io(name, e))?;
        self.dir_times.push((comps.to_vec(), meta.mtime));
        Ok(())
    }

    /// Removes whatever is at `last` in `parent` (a directory recursively), never following
    /// symlinks, so that the new entry is created fresh instead of written through an old one
    /// (e.g. into a hard link shared with another path).
    fn clear(&mut self, parent: &[OsString], last: &OsStr, name: &str) -> Result<()> {
        let dir = self.parent_required(parent, name)?;
        match sys::lstat_at(dir, last) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(unpack_err(name, e)),
            Ok(st) => {
                let was_dir = sys::is_dir(&st);
                sys::remove_all_at(dir, last).map_err(|e| unpack_io(name, e))?;
                if was_dir {
                    self.root.invalidate();
                }
                Ok(())
            }
        }
    }

    fn make_file<R: Read>(
        &mut self,
        parent: &[OsString],
        last: &OsStr,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        name: &str,
    ) -> Result<()> {
        self.clear(parent, last, name)?;
        let dir = self.parent_required(parent, name)?;
        let mut file = sys::create_file_at(dir, last).map_err(|e| unpack_err(name, e))?;
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(Error::ReadBlob { source }),
            };
            io::Write::write_all(&mut file, &self.buf[..n]).map_err(|e| unpack_io(name, e))?;
            written += n as u64;
        }
        self.stats.bytes += written;
        apply_fd_meta(&file, meta).map_err(|e| unpack_io(name, e))?;
        let t = meta.mtime;
        nix::sys::stat::futimens(&file, &t, &t).map_err(|e| unpack_err(name, e))
    }

    fn make_other(
        &mut self,
        parent: &[OsString],
        last: &OsStr,
        name: &str,
        create: impl FnOnce(BorrowedFd<'_>, &OsStr) -> nix::Result<()>,
    ) -> Result<()> {
        self.clear(parent, last, name)?;
        let dir = self.parent_required(parent, name)?;
        create(dir, last).map_err(|e| unpack_err(name, e))
    }

    /// Owner, mode, xattrs and mtime of a non-regular, non-directory node.
    fn set_meta_at(
        &mut self,
        parent: &[OsString],
        last: &OsStr,
        meta: &Meta,
        name: &str,
        chmod: bool,
    ) -> Result<()> {
        let dir = self.parent_required(parent, name)?;
        sys::lchown_at(dir, last, meta.uid, meta.gid).map_err(|e| owner_err(name, meta, e))?;
        let path = sys::fd_child_path(dir, last);
        if chmod {
            // chmod after chown: chown clears setuid/setgid. The node was created by us a
            // moment ago in a directory we hold open; `lstat` confirms it is not a symlink.
            let st = sys::lstat_at(dir, last).map_err(|e| unpack_err(name, e))?;
            if !sys::is_symlink(&st) {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| unpack_io(name, e))?;
            }
        }
        for (k, v) in &meta.xattrs {
            // `xattr::set` is `lsetxattr`: the last component is not followed.
            set_node_xattr_tolerant(|| xattr::set(&path, k, v)).map_err(|e| unpack_io(name, e))?;
        }
        sys::lutimes_at(dir, last, meta.mtime).map_err(|e| unpack_err(name, e))
    }

    fn make_hardlink(
        &mut self,
        parent: &[OsString],
        last: &OsStr,
        target: &[u8],
        name: &str,
    ) -> Result<()> {
        let refuse = |reason: String| Error::Refused {
            entry: name.to_owned(),
            reason,
        };
        let tcomps = components(target).map_err(|r| refuse(format!("hard link target {r}")))?;
        let Some((tlast, tparent)) = tcomps.split_last() else {
            return Err(refuse("hard link target is the root".into()));
        };
        if tparent == parent && tlast == last {
            return Err(refuse("hard link to itself".into()));
        }
        // Resolve the target's directory first, with the same symlink refusal: linkat would
        // otherwise resolve a symlinked parent for us (docker's CVE-2014-6407 class).
        let tdir = match self.parent(tparent, false, name) {
            Ok(Some(fd)) => fd.try_clone_to_owned().map_err(|e| unpack_io(name, e))?,
            Ok(None) => return Err(unpack_err(name, Errno::ENOENT)),
            Err(Error::Refused { reason, .. }) => {
                return Err(refuse(format!("hard link target: {reason}")));
            }
            Err(e) => return Err(e),
        };
        self.clear(parent, last, name)?;
        let dir = self.parent_required(parent, name)?;
        sys::link_at(tdir.as_fd_ref(), tlast, dir, last).map_err(|e| unpack_err(name, e))
    }

    fn whiteout(
        &mut self,
        parent: &[OsString],
        target: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<()> {
        let mut path = join(parent);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(target.as_bytes());
        if self.written.contains(&path) {
            return Ok(());
        }
        match self.mode {
            Mode::Apply => {
                // Nothing to delete when the parent does not exist.
                let Some(dir) = self.parent(parent, false, name)? else {
                    return Ok(());
                };
                sys::remove_all_at(dir, target).map_err(|e| unpack_io(name, e))?;
                self.root.invalidate();
                Ok(())
            }
            Mode::Upperdir => {
                // overlayfs' whiteout: a character device 0/0 (mode 0, as the kernel makes it).
                self.make_other(parent, target, name, |dir, n| {
                    sys::mknod_at(dir, n, SFlag::S_IFCHR, 0, 0)
                })?;
                let dir = self.parent_required(parent, name)?;
                sys::lchown_at(dir, target, meta.uid, meta.gid)
                    .map_err(|e| owner_err(name, meta, e))?;
                sys::lutimes_at(dir, target, meta.mtime).map_err(|e| unpack_err(name, e))
            }
        }
    }

    fn opaque(&mut self, parent: &[OsString], name: &str) -> Result<()> {
        let dir = self.parent_required(parent, name)?;
        let dir = File::from(dir.try_clone_to_owned().map_err(|e| unpack_io(name, e))?);
        match self.mode {
            Mode::Upperdir => {
                use xattr::FileExt as _;
                dir.set_xattr(overlay_opaque_xattr(), b"y")
                    .map_err(|e| unpack_io(name, e))
            }
            Mode::Apply => {
                let prefix = join(parent);
                for child in sys::list_dir(dir.as_fd()).map_err(|e| unpack_io(name, e))? {
                    let mut path = prefix.clone();
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(child.as_bytes());
                    if !self.written.contains(&path) {
                        sys::remove_all_at(dir.as_fd(), &child).map_err(|e| unpack_io(name, e))?;
                    }
                }
                self.root.invalidate();
                Ok(())
            }
        }
    }

    /// Sets directory mtimes last and deepest first: creating children changes a directory's
    /// mtime, so earlier settings would be lost.
    fn finish_dir_times(&mut self) -> Result<()> {
        self.root.invalidate();
        let times = std::mem::take(&mut self.dir_times);
        for (comps, t) in times.into_iter().rev() {
            let name = String::from_utf8_lossy(&join(&comps)).into_owned();
            let fd = match comps.split_last() {
                None => self
                    .root
                    .fd()
                    .try_clone_to_owned()
                    .map_err(|e| unpack_io(&name, e))?,
                Some((last, parent)) => {
                    // A later whiteout may have removed it: nothing to do then.
                    let Ok(dir) = self.root.dir(parent, false) else {
                        continue;
                    };
                    match sys::open_dir_at(dir, last) {
                        Ok(fd) => fd,
                        Err(_) => continue,
                    }
                }
            };
            nix::sys::stat::futimens(&fd, &t, &t).map_err(|e| unpack_err(&name, e))?;
        }
        Ok(())
    }
}

fn unpack_err(entry: &str, e: Errno) -> Error {
    unpack_io(entry, e.into())
}

/// A failed chown of `entry`: names the ids, and says when they do not exist in this user
/// namespace (a rootless build whose ranges do not cover the image's owners).
fn owner_err(entry: &str, meta: &Meta, e: Errno) -> Error {
    unpack_io(entry, owner_io_error(meta.uid, meta.gid, e.into()))
}

fn unpack_io(entry: &str, source: io::Error) -> Error {
    Error::UnpackEntry {
        entry: entry.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression_by_magic() {
        let plain = b"hello world".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        for blob in [plain.clone(), gz, zst, b"ab".to_vec()] {
            let mut out = Vec::new();
            decompress(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            if blob != b"ab" {
                assert_eq!(out, plain);
            } else {
                assert_eq!(out, b"ab");
            }
        }
    }
}
