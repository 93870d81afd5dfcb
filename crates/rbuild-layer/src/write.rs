//! The layer writer: an upperdir-form directory → a deterministic, compressed tar stream.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::thread;

use rbuild_oci::Sha256Writer;
use tar::EntryType;

use crate::pax::{EntryHeader, write_header, write_padding};
use crate::pgzip::ParallelGzip;
use crate::{Compression, Error, LayerDescriptor, LayerOptions, Result};

/// Name prefix of a whiteout file (image-spec `layer.md`, "Whiteouts").
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker file.
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The overlayfs xattr marking an opaque directory in the layer directories of this process
/// (kernel `Documentation/filesystems/overlayfs.rst`): `trusted.overlay.opaque` as root on the
/// host, `user.overlay.opaque` inside a user namespace, where overlayfs is mounted with
/// `userxattr` because `trusted.*` needs the host's `CAP_SYS_ADMIN`, and in a container
/// without that capability (the in-place executor). Rootless stores are
/// separate from root's, so one store only ever holds one of the two.
pub fn overlay_opaque_xattr() -> &'static str {
    static NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let initial = std::fs::read_to_string("/proc/self/uid_map").map_or(true, |map| {
            map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
        });
        // Setting trusted.* needs CAP_SYS_ADMIN (of the host): an unprivileged container's
        // root, which the in-place executor serves, has not got it either.
        let sys_admin = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let hex = s
                    .lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))?
                    .trim()
                    .to_owned();
                u64::from_str_radix(&hex, 16).ok()
            })
            .is_some_and(|caps| caps & (1 << 21) != 0);
        if initial && sys_admin {
            "trusted.overlay.opaque"
        } else {
            "user.overlay.opaque"
        }
    })
}

/// overlayfs' private xattrs (`trusted.overlay.*`, and `user.overlay.*` of a `userxattr`
/// mount): never part of image content, and never taken from a layer, which could otherwise
/// forge opaque markers or redirects.
pub fn is_overlay_xattr(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Size of the copy buffer for file contents.
const COPY_BUF: usize = 128 * 1024;

/// Tars the upperdir-form directory `dir` into `out` and describes the blob.
///
/// Entries are in byte order of their names within each directory, parents before children,
/// without a `./` root entry (like docker's layers). Hard links (same device and inode, more
/// than one link) become `Link` entries naming the first path. uid/gid are numeric only; user
/// and group names are left empty so that the host's `/etc/passwd` cannot leak in. A
/// character device 0/0 (an overlay whiteout) becomes an empty file `.wh.<name>` with mode
/// 0600, and an opaque directory is followed by `<dir>/.wh..wh..opq`, as docker's
/// `overlayWhiteoutConverter` does. Sockets are skipped (docker skips them too).
///
/// The stream goes tar → sha256 (`diff_id`) → compressor → sha256 (`digest`) → `out` in one
/// pass with fixed-size buffers: memory does not grow with the layer. gzip runs on all cores
/// in 1 MiB chunks the way pigz does, still as one standard gzip member whose bytes do not
/// depend on the number of cores.
///
/// # Errors
///
/// [`Error::ReadSource`] when a file cannot be read, [`Error::FileChanged`] when a file shrank
/// while it was copied, [`Error::WriteStream`] when `out` or the compressor fails.
pub fn write_layer<W: Write>(
    dir: &Path,
    out: W,
    opts: &LayerOptions,
) -> Result<(W, LayerDescriptor)> {
    let blob = Sha256Writer::new(BufWriter::with_capacity(COPY_BUF, out));
    let compressor = match opts.get_compression() {
        Compression::None => Compressor::Plain(blob),
        Compression::Gzip => Compressor::Gzip(ParallelGzip::new(
            blob,
            opts.get_gzip_level(),
            gzip_threads(),
        )),
        Compression::Zstd => Compressor::Zstd(
            zstd::stream::write::Encoder::new(blob, opts.get_zstd_level())
                .map_err(|source| Error::WriteStream { source })?,
        ),
    };
    let mut w = TarWriter {
        out: Sha256Writer::new(compressor),
        epoch: opts.get_source_date_epoch(),
        links: HashMap::new(),
        buf: vec![0; COPY_BUF],
    };
    w.walk(dir, b"")?;
    // End of archive: two zero blocks (POSIX ustar).
    w.out
        .write_all(&[0u8; 1024])
        .map_err(|source| Error::WriteStream { source })?;
    let (compressor, diff_id, _) = w.out.finish();
    let blob = compressor
        .finish()
        .map_err(|source| Error::WriteStream { source })?;
    let (buffered, digest, size) = blob.finish();
    let out = buffered.into_inner().map_err(|e| Error::WriteStream {
        source: e.into_error(),
    })?;
    Ok((
        out,
        LayerDescriptor {
            diff_id,
            digest,
            size,
            media_type: opts.get_compression().media_type(),
        },
    ))
}

/// Whether the upperdir-form directory `dir` has no entries, i.e. the step changed nothing.
///
/// # Errors
///
/// [`Error::ReadSource`] when `dir` cannot be listed.
pub fn is_empty_diff(dir: &Path) -> Result<bool> {
    let mut it = fs::read_dir(dir).map_err(|source| Error::ReadSource {
        path: dir.to_owned(),
        source,
    })?;
    Ok(it.next().is_none())
}

/// Threads for gzip: the machine's parallelism, capped so that the chunks in flight (about
/// 2 MiB each) stay a small, fixed amount of memory.
fn gzip_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// The compressor stage of the pipeline.
enum Compressor<W: Write> {
    Plain(W),
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Self::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Self::Gzip(g) => g.finish(),
            Self::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
            Self::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
            Self::Zstd(w) => w.flush(),
        }
    }
}

/// One directory entry, stat'ed, with the name it gets in the tar.
struct Child {
    /// Name in the tar (differs from the file name for whiteouts).
    tar_name: Vec<u8>,
    name: OsString,
    meta: Metadata,
    whiteout: bool,
}

struct TarWriter<W: Write> {
    out: W,
    epoch: Option<i64>,
    /// (dev, ino) → tar path of the first occurrence, for hard links.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    fn walk(&mut self, dir: &Path, rel: &[u8]) -> Result<()> {
        let read_err = |source| Error::ReadSource {
            path: dir.to_owned(),
            source,
        };
        let mut children = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name();
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(|source| Error::ReadSource {
                path: path.clone(),
                source,
            })?;
            let whiteout = meta.file_type().is_char_device() && meta.rdev() == 0;
            let mut tar_name = Vec::new();
            if whiteout {
                tar_name.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            }
            tar_name.extend_from_slice(name.as_bytes());
            children.push(Child {
                tar_name,
                name,
                meta,
                whiteout,
            });
        }
        // Byte order of the names as they appear in the tar: deterministic whatever order
        // the filesystem lists them in.
        children.sort_by(|a, b| a.tar_name.cmp(&b.tar_name));
        for child in children {
            let path = dir.join(&child.name);
            let mut child_rel = rel.to_vec();
            child_rel.extend_from_slice(&child.tar_name);
            self.entry(&path, &child_rel, &child)?;
            if child.meta.is_dir() {
                child_rel.push(b'/');
                self.walk(&path, &child_rel)?;
            }
        }
        Ok(())
    }

    fn mtime(&self, meta: &Metadata) -> i64 {
        let m = meta.mtime();
        match self.epoch {
            Some(e) if m > e => e,
            _ => m,
        }
    }

    fn entry(&mut self, path: &Path, rel: &[u8], child: &Child) -> Result<()> {
        let meta = &child.meta;
        let no_xattrs = BTreeMap::new();
        let mut h = EntryHeader {
            path: rel,
            kind: EntryType::Regular,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            size: 0,
            mtime: self.mtime(meta),
            link: None,
            device: None,
            xattrs: &no_xattrs,
        };
        if child.whiteout {
            // Whiteout inodes can be shared hard links (overlayfs since Linux 5.8, "whiteout
            // inode sharing"), so this check comes before the hard-link one.
            h.mode = 0o600;
            return self.header(&h);
        }
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let xattrs = read_xattrs(path)?;
        h.xattrs = &xattrs.content;

        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                h.kind = EntryType::Link;
                h.link = Some(&first);
                return self.header(&h);
            }
            self.links.insert(key, rel.to_vec());
        }

        if ft.is_dir() {
            let mut name = rel.to_vec();
            name.push(b'/');
            h.path = &name;
            h.kind = EntryType::Directory;
            self.header(&h)?;
            if xattrs.opaque {
                let mut marker = name.clone();
                marker.extend_from_slice(OPAQUE_MARKER.as_bytes());
                let m = EntryHeader {
                    path: &marker,
                    kind: EntryType::Regular,
                    mode: h.mode & 0o777,
                    xattrs: &no_xattrs,
                    ..h
                };
                self.header(&m)?;
            }
            Ok(())
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|source| Error::ReadSource {
                path: path.to_owned(),
                source,
            })?;
            h.kind = EntryType::Symlink;
            h.link = Some(target.as_os_str().as_bytes());
            self.header(&h)
        } else if ft.is_char_device() || ft.is_block_device() {
            h.kind = if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let rdev = meta.rdev();
            h.device = Some((libc::major(rdev), libc::minor(rdev)));
            self.header(&h)
        } else if ft.is_fifo() {
            h.kind = EntryType::Fifo;
            self.header(&h)
        } else {
            h.size = meta.len();
            self.header(&h)?;
            self.contents(path, meta.len())
        }
    }

    fn header(&mut self, h: &EntryHeader<'_>) -> Result<()> {
        write_header(&mut self.out, h).map_err(|source| Error::WriteStream { source })
    }

    /// Copies exactly `size` bytes (what the header promised) of `path`, then the padding.
    fn contents(&mut self, path: &Path, size: u64) -> Result<()> {
        let read_err = |source| Error::ReadSource {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?.take(size);
        let mut copied = 0u64;
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(|source| Error::WriteStream { source })?;
            copied += n as u64;
        }
        if copied != size {
            return Err(Error::FileChanged {
                path: path.to_owned(),
                expected: size,
                read: copied,
            });
        }
        write_padding(&mut self.out, size).map_err(|source| Error::WriteStream { source })
    }
}

/// The xattrs of a path that belong in the layer, and whether it is an opaque directory.
struct Xattrs {
    content: BTreeMap<String, Vec<u8>>,
    opaque: bool,
}

fn read_xattrs(path: &Path) -> Result<Xattrs> {
    let err = |source| Error::ReadSource {
        path: path.to_owned(),
        source,
    };
    let mut out = Xattrs {
        content: BTreeMap::new(),
        opaque: false,
    };
    // `xattr::list`/`get` use the l* calls: a symlink's own xattrs, never its target's.
    let names = match xattr::list(path) {
        Ok(names) => names,
        // A filesystem without xattr support simply has none.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(err(e)),
    };
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            // PAX keys are UTF-8; a non-UTF-8 xattr name cannot be represented.
            continue;
        };
        let Some(value) = xattr::get(path, &name).map_err(err)? else {
            continue;
        };
        if name == overlay_opaque_xattr() {
            out.opaque = value == b"y";
        } else if !is_overlay_xattr(&name) {
            out.content.insert(name, value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(blob: &[u8]) -> Vec<(String, EntryType)> {
        let mut ar = tar::Archive::new(blob);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn order_is_sorted_parents_first_and_whiteouts_renamed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("b/c")).unwrap();
        fs::write(d.join("b.txt"), b"x").unwrap();
        fs::write(d.join("a"), b"hello").unwrap();
        fs::write(d.join("b/c/z"), b"").unwrap();
        let opts = LayerOptions::default().compression(Compression::None);
        let (blob, desc) = write_layer(d, Vec::new(), &opts).unwrap();
        let names: Vec<_> = list(&blob).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b/", "b/c/", "b/c/z", "b.txt"]);
        assert_eq!(
            desc.diff_id, desc.digest,
            "uncompressed: both digests agree"
        );
        assert_eq!(desc.size, blob.len() as u64);
        assert_eq!(desc.diff_id, rbuild_oci::Digest::sha256_of(&blob));
    }

    #[test]
    fn empty_diff() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(is_empty_diff(tmp.path()).unwrap());
        fs::write(tmp.path().join("f"), b"").unwrap();
        assert!(!is_empty_diff(tmp.path()).unwrap());
        assert!(is_empty_diff(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn empty_dir_gives_a_valid_empty_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = LayerOptions::default().compression(Compression::None);
        let (blob, _) = write_layer(tmp.path(), Vec::new(), &opts).unwrap();
        assert_eq!(blob, vec![0u8; 1024]);
    }
}
