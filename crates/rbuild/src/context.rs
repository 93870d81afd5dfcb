//! The build context: the files a Dockerfile can COPY, after `.dockerignore`.
//!
//! The context is walked once per build. File contents are hashed only when the file's
//! identity (size, mtime, ctime, inode) is not in the persistent hash cache, so a rebuild with
//! nothing changed stats files and reads none (docs/ARCHITECTURE.md, "cache keys").

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rbuild_dockerfile::Ignore;
use sha2::{Digest as _, Sha256};

pub(crate) use crate::rootfs::clean_rel;

/// The kind of a context entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link with its target.
    Symlink(PathBuf),
}

/// A file, directory or link of the context.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Absolute path on the host (for messages and metadata; reads of context files go
    /// through [`Context::open`], beneath the context root).
    pub path: PathBuf,
    /// Path relative to the root it was found in (for a followed symlink: its target's).
    pub rel: String,
    /// Kind.
    pub kind: EntryKind,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Content sha256 (files; filled by [`Context::hash_files`]).
    pub sha256: Option<String>,
    /// Owner to keep when no `--chown` is given: a stage's or image's files keep theirs
    /// (BuildKit); context files have none (they land as 0:0).
    pub owner: Option<(u32, u32)>,
    /// Device and inode of a file with several links, so a COPY keeps hard links linked.
    pub link_id: Option<(u64, u64)>,
    identity: Identity,
}

/// What the hash cache keys a file's content on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Identity {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

/// The persistent file-hash cache of one context directory.
///
/// Stored in a compact binary form ([`HashCache::to_bytes`]) that loads with one read and no
/// parsing beyond fixed-size fields: at 100,000 files the JSON it replaced took longer to
/// parse than the whole walk of the context.
#[derive(Debug, Default)]
pub(crate) struct HashCache {
    files: HashMap<String, (Identity, [u8; 32])>,
    /// Whether this build changed the cache (only then is it written back).
    dirty: bool,
    /// How many entries this build looked up or added (each file is hashed at most once per
    /// context): when that is all of them, none can be stale.
    used: usize,
}

/// A walked build context.
#[derive(Debug)]
pub(crate) struct Context {
    /// The context directory, open: every read is resolved beneath it (`None` for a tree
    /// taken from layers, whose directories are immutable and read by host path).
    root_fd: Option<Arc<OwnedFd>>,
    /// Included entries by slash-separated path relative to the root (no leading `/`).
    entries: BTreeMap<String, Entry>,
    ignore: Ignore,
}

/// Why a context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Walking the directory failed.
    #[error("failed to read the build context at {}", path.display())]
    Walk {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `.dockerignore` is invalid.
    #[error("invalid .dockerignore: {0}")]
    Ignore(String),
    /// Hashing a file failed.
    #[error("failed to read {}", path.display())]
    Hash {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Context {
    /// Walks `root`, leaving out what `.dockerignore` excludes.
    ///
    /// # Errors
    ///
    /// [`ContextError`] when the directory cannot be read or `.dockerignore` is invalid.
    pub(crate) fn walk(root: &Path) -> Result<Self, ContextError> {
        let root = root.canonicalize().map_err(|source| ContextError::Walk {
            path: root.to_owned(),
            source,
        })?;
        let root_fd = crate::rootfs::open_root(&root)
            .map(Arc::new)
            .map_err(|source| ContextError::Walk {
                path: root.clone(),
                source,
            })?;
        // Read beneath the root: a `.dockerignore` that is a symlink is refused, never followed.
        let ignore_text = crate::rootfs::open_beneath(&*root_fd, ".dockerignore").and_then(|f| {
            let mut text = String::new();
            (&f).take(16 << 20).read_to_string(&mut text)?;
            Ok(text)
        });
        let ignore = match ignore_text {
            Ok(text) => Ignore::parse(&text).map_err(|e| ContextError::Ignore(e.to_string()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ignore::parse("").map_err(|e| ContextError::Ignore(e.to_string()))?
            }
            Err(source) => {
                return Err(ContextError::Walk {
                    path: root.join(".dockerignore"),
                    source,
                });
            }
        };
        let mut found = Vec::new();
        walk_dir(&root, &root_fd, "", &ignore, &mut found)?;
        // Sorted first, so the map is built in one pass instead of by 100,000 inserts.
        found.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let entries: BTreeMap<String, Entry> = found.into_iter().collect();
        Ok(Self {
            root_fd: Some(root_fd),
            entries,
            ignore,
        })
    }

    /// A source tree taken from an image's or stage's merged layers (`COPY --from`): each
    /// source path is resolved inside that root (symlinks followed within it, as BuildKit does
    /// for COPY sources) and listed as overlayfs shows it. File contents are hashed by
    /// [`Context::hash_files`] like context files, with the cache keyed by their path in the
    /// store (layer directories never change).
    ///
    /// # Errors
    ///
    /// When the layers cannot be read or a source resolves through a non-directory.
    pub(crate) fn from_view(view: &crate::view::LayerView, sources: &[String]) -> io::Result<Self> {
        let mut listed = BTreeMap::new();
        for src in sources {
            let rel = clean_rel(src).unwrap_or_default();
            if has_glob(&rel) {
                // List the directory above the first pattern, then follow matches that are links.
                let fixed: Vec<&str> = rel.split('/').take_while(|c| !has_glob(c)).collect();
                let parent = fixed.join("/");
                let all = view.list(&parent)?;
                let links: Vec<String> = all
                    .iter()
                    .filter(|(k, e)| {
                        glob_match(&rel, k) && e.node.file_type() == rustix::fs::FileType::Symlink
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                listed.extend(all);
                for k in links {
                    let below = format!("{k}/");
                    listed.retain(|key: &String, _| key != &k && !key.starts_with(&below));
                    listed.extend(view.list(&k)?);
                }
            } else {
                listed.extend(view.list(&rel)?);
            }
        }
        let mut entries = BTreeMap::new();
        for (rel, e) in listed {
            let st = &e.node.stat;
            let kind = match e.node.file_type() {
                rustix::fs::FileType::Symlink => match e.node.read_link() {
                    Ok(t) => EntryKind::Symlink(PathBuf::from(t)),
                    Err(_) => continue,
                },
                rustix::fs::FileType::Directory => EntryKind::Dir,
                rustix::fs::FileType::RegularFile => EntryKind::File,
                _ => continue,
            };
            let mtime = (st.st_mtime, st.st_mtime_nsec as i64);
            let size = st.st_size as u64;
            entries.insert(
                rel,
                Entry {
                    path: e.host.clone(),
                    rel: e.node.rel.clone(),
                    kind,
                    mode: st.st_mode & 0o7777,
                    size,
                    mtime,
                    sha256: None,
                    owner: Some((st.st_uid, st.st_gid)),
                    link_id: (st.st_nlink > 1
                        && e.node.file_type() == rustix::fs::FileType::RegularFile)
                        .then_some((st.st_dev, st.st_ino)),
                    identity: Identity {
                        size,
                        mtime_ns: i128::from(mtime.0) * 1_000_000_000 + i128::from(mtime.1),
                        ctime_ns: i128::from(st.st_ctime) * 1_000_000_000
                            + i128::from(st.st_ctime_nsec as i64),
                        ino: st.st_ino,
                    },
                },
            );
        }
        Ok(Self {
            root_fd: None,
            entries,
            ignore: Ignore::parse("").unwrap_or_else(|_| unreachable!("empty ignore file")),
        })
    }

    /// Opens a file entry for reading: beneath the context root for context files (a symlink
    /// planted on the way since the walk is refused), by its host path in an immutable layer
    /// directory otherwise — never following a symlink.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened.
    pub(crate) fn open(&self, e: &Entry) -> io::Result<fs::File> {
        open_entry(self.root_fd.as_deref(), e)
    }

    /// The hash-cache key of an entry: its context path, or for a tree taken from layers its
    /// path in the store (unique and immutable).
    fn cache_key(&self, rel: &str, e: &Entry) -> String {
        if self.root_fd.is_some() {
            rel.to_owned()
        } else {
            e.path.to_string_lossy().into_owned()
        }
    }

    /// The open context root, when this is a context directory.
    pub(crate) fn root_fd(&self) -> Option<&Arc<OwnedFd>> {
        self.root_fd.as_ref()
    }

    /// Resolves a context path that is a symlink to what it points at, inside the context
    /// (an absolute target starts at the context root, `..` stops there; what `.dockerignore`
    /// excludes is not there). BuildKit follows a COPY source that is a symlink this way;
    /// symlinks inside a copied directory stay symlinks.
    pub(crate) fn follow(&self, rel: &str) -> Option<String> {
        let mut cur = rel.to_owned();
        for _ in 0..40 {
            let e = self.entries.get(&cur)?;
            let EntryKind::Symlink(target) = &e.kind else {
                return Some(cur);
            };
            let t = target.to_string_lossy();
            let joined = if t.starts_with('/') {
                t.into_owned()
            } else {
                match cur.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{t}"),
                    None => t.into_owned(),
                }
            };
            cur = clamp_rel(&joined);
            if cur.is_empty() {
                return Some(cur);
            }
            // Directories on the way may themselves be links.
            let comps: Vec<&str> = cur.split('/').collect();
            let mut prefix = String::new();
            for (i, c) in comps.iter().enumerate() {
                if i + 1 == comps.len() {
                    break;
                }
                let next = if prefix.is_empty() {
                    (*c).to_owned()
                } else {
                    format!("{prefix}/{c}")
                };
                let resolved = match self.entries.get(&next).map(|e| &e.kind) {
                    Some(EntryKind::Symlink(_)) => self.follow(&next)?,
                    Some(EntryKind::Dir) => next,
                    _ => return None,
                };
                prefix = resolved;
            }
            let last = comps.last().copied().unwrap_or_default();
            cur = if prefix.is_empty() {
                last.to_owned()
            } else {
                format!("{prefix}/{last}")
            };
        }
        None
    }

    /// Included entries, sorted by relative path.
    pub(crate) fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// Everything strictly below the directory `rel` (`""` for the root), in path order, as
    /// (path, path below `rel`, entry).
    pub(crate) fn below<'s>(
        &'s self,
        rel: &str,
    ) -> impl Iterator<Item = (&'s str, &'s str, &'s Entry)> {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        self.entries
            .range(prefix.clone()..)
            .map_while(move |(k, e)| Some((k.as_str(), k.strip_prefix(prefix.as_str())?, e)))
    }

    /// Whether `.dockerignore` excludes `rel`.
    pub(crate) fn is_excluded(&self, rel: &str) -> bool {
        self.ignore.is_excluded(rel)
    }

    /// Fills in the content hash of the files under the given relative paths (a path names
    /// itself and everything below it), reusing `cache` where the file's identity is unchanged
    /// and reading the rest in parallel. Returns how many files were read.
    ///
    /// # Errors
    ///
    /// [`ContextError::Hash`] when a file cannot be read.
    pub(crate) fn hash_files(
        &mut self,
        prefixes: &[String],
        cache: &mut HashCache,
    ) -> Result<usize, ContextError> {
        let dirs: Vec<String> = prefixes.iter().map(|p| format!("{p}/")).collect();
        let by_host_path = self.root_fd.is_none();
        // One pass over the entries: cache hits are filled in place, misses collected.
        let mut to_read = Vec::new();
        for (rel, entry) in &mut self.entries {
            if entry.kind != EntryKind::File
                || entry.sha256.is_some()
                || !prefixes
                    .iter()
                    .zip(&dirs)
                    .any(|(p, d)| p.is_empty() || rel == p || rel.starts_with(d.as_str()))
            {
                continue;
            }
            let hit = if by_host_path {
                cache.files.get(entry.path.to_string_lossy().as_ref())
            } else {
                cache.files.get(rel.as_str())
            };
            match hit {
                Some((id, hash)) if *id == entry.identity => {
                    entry.sha256 = Some(hex::encode(hash));
                    cache.used += 1;
                }
                _ => to_read.push((rel.clone(), entry.path.clone(), entry.identity)),
            }
        }
        let root_fd = self.root_fd.clone();
        let hashed: Vec<(String, Identity, String)> = to_read
            .par_iter()
            .map(|(rel, path, id)| {
                let file = match &root_fd {
                    Some(fd) => crate::rootfs::open_beneath(&**fd, rel),
                    None => fs::File::open(path),
                };
                file.and_then(hash_file)
                    .map(|h| (rel.clone(), *id, h))
                    .map_err(|source| ContextError::Hash {
                        path: path.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        let read = hashed.len();
        for (rel, id, hash) in hashed {
            let key = match self.entries.get(&rel) {
                Some(e) => self.cache_key(&rel, e),
                None => rel.clone(),
            };
            let mut raw = [0u8; 32];
            if hex::decode_to_slice(&hash, &mut raw).is_ok() {
                cache.files.insert(key, (id, raw));
                cache.dirty = true;
                cache.used += 1;
            }
            if let Some(e) = self.entries.get_mut(&rel) {
                e.sha256 = Some(hash);
            }
        }
        Ok(read)
    }
}

/// The first bytes of a stored [`HashCache`]; a file without them (an older rbuild's JSON, a
/// torn write) loads as an empty cache, which only costs reading the files again.
const HASH_CACHE_MAGIC: &[u8; 16] = b"rbuild-hashes/1\n";
/// Bytes of one record after its key: size, mtime, ctime, inode, sha256.
const HASH_RECORD: usize = 8 + 16 + 16 + 8 + 32;

impl HashCache {
    /// The stored form: [`HASH_CACHE_MAGIC`], then per file the key's length (u32), the key,
    /// size (u64), mtime and ctime in nanoseconds (i128), inode (u64), all little endian, and
    /// the 32-byte sha256.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let keys: usize = self.files.keys().map(String::len).sum();
        let mut out = Vec::with_capacity(16 + keys + self.files.len() * (4 + HASH_RECORD));
        out.extend_from_slice(HASH_CACHE_MAGIC);
        for (key, (id, hash)) in &self.files {
            let Ok(len) = u32::try_from(key.len()) else {
                continue;
            };
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&id.size.to_le_bytes());
            out.extend_from_slice(&id.mtime_ns.to_le_bytes());
            out.extend_from_slice(&id.ctime_ns.to_le_bytes());
            out.extend_from_slice(&id.ino.to_le_bytes());
            out.extend_from_slice(hash);
        }
        out
    }

    /// Reads [`HashCache::to_bytes`]' form; anything else gives an empty cache.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        fn parse(mut b: &[u8]) -> Option<HashMap<String, (Identity, [u8; 32])>> {
            fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
                let (head, rest) = b.split_at_checked(n)?;
                *b = rest;
                Some(head)
            }
            fn arr<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
                take(b, N)?.try_into().ok()
            }
            if take(&mut b, HASH_CACHE_MAGIC.len())? != HASH_CACHE_MAGIC {
                return None;
            }
            let mut files = HashMap::new();
            while !b.is_empty() {
                let len = usize::try_from(u32::from_le_bytes(arr(&mut b)?)).ok()?;
                let key = std::str::from_utf8(take(&mut b, len)?).ok()?.to_owned();
                let id = Identity {
                    size: u64::from_le_bytes(arr(&mut b)?),
                    mtime_ns: i128::from_le_bytes(arr(&mut b)?),
                    ctime_ns: i128::from_le_bytes(arr(&mut b)?),
                    ino: u64::from_le_bytes(arr(&mut b)?),
                };
                files.insert(key, (id, arr(&mut b)?));
            }
            Some(files)
        }
        Self {
            files: parse(bytes).unwrap_or_default(),
            dirty: false,
            used: 0,
        }
    }

    /// Drops entries for files that are no longer in `context`.
    pub(crate) fn retain_present(&mut self, context: &Context) {
        if self.used == self.files.len() {
            // Every entry belongs to a file this build hashed or found: nothing to drop.
            return;
        }
        let before = self.files.len();
        self.files
            .retain(|rel, _| context.entries.contains_key(rel));
        self.dirty |= self.files.len() != before;
    }

    /// Keeps only the entries whose key `keep` accepts (marks the cache changed when any
    /// went).
    pub(crate) fn retain_keys(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let before = self.files.len();
        self.files.retain(|k, _| keep(k));
        self.dirty |= self.files.len() != before;
    }

    /// Whether files were hashed or forgotten since the cache was loaded: a no-change rebuild
    /// leaves it clean and does not rewrite it.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }
}

/// Lists the directory open as `dir_fd` (at `rel_dir` below the context root `root`) and
/// everything below it into `out`, leaving out what `ignore` excludes. Entries are stat'ed
/// relative to their directory's descriptor, never following a symlink, and subdirectories
/// are walked in parallel: a large context costs about what `find` costs.
fn walk_dir(
    root: &Path,
    dir_fd: &OwnedFd,
    rel_dir: &str,
    ignore: &Ignore,
    out: &mut Vec<(String, Entry)>,
) -> Result<(), ContextError> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let dir_path = || root.join(rel_dir);
    let walk_err = |path: PathBuf| {
        move |e: rustix::io::Errno| ContextError::Walk {
            path,
            source: e.into(),
        }
    };
    let mut names = Vec::new();
    let mut d = rustix::fs::Dir::read_from(dir_fd).map_err(walk_err(dir_path()))?;
    while let Some(e) = d.read() {
        let e = e.map_err(walk_err(dir_path()))?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    drop(d);
    let mut subdirs = Vec::new();
    for name in names {
        let name_str = name.to_string_lossy();
        let rel = if rel_dir.is_empty() {
            name_str.into_owned()
        } else {
            format!("{rel_dir}/{name_str}")
        };
        let path = root.join(&rel);
        let md = rustix::fs::statat(dir_fd, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(walk_err(path.clone()))?;
        let ft = rustix::fs::FileType::from_raw_mode(md.st_mode);
        let is_dir = ft == rustix::fs::FileType::Directory;
        let excluded = ignore.is_excluded(&rel);
        // An excluded directory is skipped whole unless an exception pattern may re-include
        // something below it (moby's patternmatcher has the same shortcut).
        if is_dir && (!excluded || ignore.may_have_exceptions_under(&rel)) {
            subdirs.push((rel.clone(), name.clone()));
        }
        if excluded {
            continue;
        }
        let kind = match ft {
            rustix::fs::FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir_fd, &name, Vec::new())
                    .map_err(walk_err(path.clone()))?;
                EntryKind::Symlink(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
            }
            rustix::fs::FileType::Directory => EntryKind::Dir,
            rustix::fs::FileType::RegularFile => EntryKind::File,
            // Sockets, fifos and devices are not part of a build context (docker skips them too).
            _ => continue,
        };
        let size = md.st_size.unsigned_abs();
        let mtime = (md.st_mtime, md.st_mtime_nsec as i64);
        let link_id =
            (md.st_nlink > 1 && kind == EntryKind::File).then_some((md.st_dev, md.st_ino));
        out.push((
            rel.clone(),
            Entry {
                path,
                rel,
                kind,
                mode: md.st_mode & 0o7777,
                size,
                mtime,
                sha256: None,
                owner: None,
                link_id,
                identity: Identity {
                    size,
                    mtime_ns: i128::from(mtime.0) * 1_000_000_000 + i128::from(mtime.1),
                    ctime_ns: i128::from(md.st_ctime) * 1_000_000_000
                        + i128::from(md.st_ctime_nsec as i64),
                    ino: md.st_ino,
                },
            },
        ));
    }
    let below = subdirs
        .into_par_iter()
        .map(|(rel, name)| {
            // Opened here, not while listing: only the directories being walked hold a
            // descriptor, however wide the tree.
            let fd =
                crate::rootfs::open_dir_at(dir_fd, &name).map_err(|source| ContextError::Walk {
                    path: root.join(&rel),
                    source,
                })?;
            let mut v = Vec::new();
            walk_dir(root, &fd, &rel, ignore, &mut v).map(|()| v)
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.extend(below.into_iter().flatten());
    Ok(())
}

fn open_entry(root: Option<&OwnedFd>, e: &Entry) -> io::Result<fs::File> {
    match root {
        Some(fd) => crate::rootfs::open_beneath(fd, &e.rel),
        None => {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&e.path)
        }
    }
}

/// Like [`clean_rel`], but `..` at the root stays at the root (symlink targets inside a root).
pub(crate) fn clamp_rel(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn hash_file(f: fs::File) -> io::Result<String> {
    copy_hashed(f, &mut io::sink())
}

/// Copies `src` to `out` and returns the sha256 (hex) of what was copied: one read of the
/// bytes serves both, so a copy can be checked against the hash its cache key was built from.
///
/// # Errors
///
/// IO errors of either side.
pub(crate) fn copy_hashed(mut src: impl Read, out: &mut impl io::Write) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Matches `name` against a shell pattern as Go's `filepath.Match` does: `*` and `?` do not
/// match `/`, `[...]` is a class (`[!...]`/`[^...]` negated), `\` escapes.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && n[0] != '/' && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(&c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('!' | '^'));
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let mut first = true;
                while i < p.len() && (p[i] != ']' || first) {
                    first = false;
                    let lo = p[i];
                    if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&x| x != ']') {
                        if lo <= c && c <= p[i + 2] {
                            matched = true;
                        }
                        i += 3;
                    } else {
                        if lo == c {
                            matched = true;
                        }
                        i += 1;
                    }
                }
                if i >= p.len() {
                    return false; // unterminated class: Go reports ErrBadPattern, i.e. no match
                }
                matched != negate && c != '/' && m(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && m(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

/// Whether `s` contains glob metacharacters.
pub(crate) fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_like_go() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("d/*.txt", "d/a.txt"));
        assert!(glob_match("f?o", "foo"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
    }

    #[test]
    fn clean_rel_stays_inside() {
        assert_eq!(clean_rel("./a/../b/").as_deref(), Some("b"));
        assert_eq!(clean_rel("/x/y").as_deref(), Some("x/y"));
        assert_eq!(clean_rel(".").as_deref(), Some(""));
        assert_eq!(clean_rel("../etc"), None);
    }

    #[test]
    fn walks_hashes_and_reuses_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/a.txt"), "a").unwrap();
        fs::write(dir.path().join("b.log"), "b").unwrap();
        fs::write(dir.path().join(".dockerignore"), "*.log\n").unwrap();
        let mut ctx = Context::walk(dir.path()).unwrap();
        assert!(ctx.entries().contains_key("sub/a.txt"));
        assert!(!ctx.entries().contains_key("b.log"));
        let mut cache = HashCache::default();
        assert_eq!(ctx.hash_files(&[String::new()], &mut cache).unwrap(), 2);
        let mut again = Context::walk(dir.path()).unwrap();
        assert_eq!(again.hash_files(&[String::new()], &mut cache).unwrap(), 0);
        assert_eq!(
            again.entries()["sub/a.txt"].sha256.as_deref(),
            Some("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")
        );
    }

    #[test]
    fn the_hash_cache_survives_its_stored_form() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/x"), "x").unwrap();
        fs::write(dir.path().join("y"), "y").unwrap();
        std::os::unix::fs::symlink("a/b/x", dir.path().join("link")).unwrap();
        let mut ctx = Context::walk(dir.path()).unwrap();
        assert_eq!(
            ctx.entries().keys().collect::<Vec<_>>(),
            ["a", "a/b", "a/b/x", "link", "y"]
        );
        assert_eq!(
            ctx.entries()["link"].kind,
            EntryKind::Symlink(PathBuf::from("a/b/x"))
        );
        let mut cache = HashCache::default();
        assert_eq!(ctx.hash_files(&[String::new()], &mut cache).unwrap(), 2);
        assert!(cache.is_dirty());
        let bytes = cache.to_bytes();
        let mut back = HashCache::from_bytes(&bytes);
        assert!(!back.is_dirty());
        assert_eq!(back.files, cache.files);
        let mut again = Context::walk(dir.path()).unwrap();
        assert_eq!(again.hash_files(&[String::new()], &mut back).unwrap(), 0);
        assert_eq!(
            again.entries()["y"].sha256.as_deref(),
            ctx.entries()["y"].sha256.as_deref()
        );
        // A torn file, or an older rbuild's JSON, is an empty cache, not an error.
        assert!(
            HashCache::from_bytes(&bytes[..bytes.len() - 1])
                .files
                .is_empty()
        );
        assert!(HashCache::from_bytes(b"{\"files\":{}}").files.is_empty());
    }

    #[test]
    fn excluded_directories_are_skipped_unless_an_exception_reaches_in() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["skip/a", "keep/b", "keep/c.log", "part/x", "part/y"] {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        fs::write(
            dir.path().join(".dockerignore"),
            "skip\n*/*.log\npart\n!part/y\n",
        )
        .unwrap();
        let ctx = Context::walk(dir.path()).unwrap();
        assert_eq!(
            ctx.entries().keys().collect::<Vec<_>>(),
            [".dockerignore", "keep", "keep/b", "part/y"]
        );
    }
}
