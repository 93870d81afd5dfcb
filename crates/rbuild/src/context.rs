//! The build context: the files a Dockerfile can COPY, after `.dockerignore`.
//!
//! The context is walked once per build. File contents are hashed only when the file's
//! identity (size, mtime, ctime, inode) is not in the persistent hash cache, so a rebuild with
//! nothing changed stats files and reads none (docs/ARCHITECTURE.md, "cache keys").

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rbuild_dockerfile::Ignore;
use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Identity {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

/// The persistent file-hash cache of one context directory.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct HashCache {
    files: HashMap<String, (Identity, String)>,
    /// Whether this build changed the cache (only then is it written back).
    #[serde(skip)]
    dirty: bool,
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
        let mut entries = BTreeMap::new();
        let mut it = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(item) = it.next() {
            let item = item.map_err(|e| ContextError::Walk {
                path: e.path().unwrap_or(&root).to_owned(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk error")),
            })?;
            if item.depth() == 0 {
                continue;
            }
            let Ok(rel) = item.path().strip_prefix(&root) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            let is_dir = item.file_type().is_dir();
            if ignore.is_excluded(&rel) {
                // A directory can be skipped whole unless an exception pattern may re-include
                // something below it (moby's patternmatcher has the same shortcut).
                if is_dir && !ignore.may_have_exceptions_under(&rel) {
                    it.skip_current_dir();
                }
                continue;
            }
            let md = item.metadata().map_err(|e| ContextError::Walk {
                path: item.path().to_owned(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("stat error")),
            })?;
            let kind = if md.file_type().is_symlink() {
                let target = fs::read_link(item.path()).map_err(|source| ContextError::Walk {
                    path: item.path().to_owned(),
                    source,
                })?;
                EntryKind::Symlink(target)
            } else if is_dir {
                EntryKind::Dir
            } else if md.file_type().is_file() {
                EntryKind::File
            } else {
                // Sockets, fifos and devices are not part of a build context (docker skips them too).
                continue;
            };
            let link_id =
                (md.nlink() > 1 && kind == EntryKind::File).then_some((md.dev(), md.ino()));
            entries.insert(
                rel.clone(),
                Entry {
                    path: item.path().to_owned(),
                    rel,
                    kind,
                    mode: md.permissions().mode() & 0o7777,
                    size: md.len(),
                    mtime: (md.mtime(), md.mtime_nsec()),
                    sha256: None,
                    owner: None,
                    link_id,
                    identity: Identity {
                        size: md.len(),
                        mtime_ns: i128::from(md.mtime()) * 1_000_000_000
                            + i128::from(md.mtime_nsec()),
                        ctime_ns: i128::from(md.ctime()) * 1_000_000_000
                            + i128::from(md.ctime_nsec()),
                        ino: md.ino(),
                    },
                },
            );
        }
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
        let wanted: Vec<String> = self
            .entries
            .iter()
            .filter(|(rel, e)| {
                e.kind == EntryKind::File
                    && e.sha256.is_none()
                    && prefixes
                        .iter()
                        .zip(&dirs)
                        .any(|(p, d)| p.is_empty() || *rel == p || rel.starts_with(d.as_str()))
            })
            .map(|(rel, _)| rel.clone())
            .collect();
        let mut to_read = Vec::new();
        for rel in &wanted {
            let entry = &self.entries[rel];
            match cache.files.get(&self.cache_key(rel, entry)) {
                Some((id, hash)) if *id == entry.identity => {
                    let hash = hash.clone();
                    if let Some(e) = self.entries.get_mut(rel) {
                        e.sha256 = Some(hash);
                    }
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
            let key = match self.entries.get_mut(&rel) {
                Some(e) => {
                    e.sha256 = Some(hash.clone());
                    let e = e.clone();
                    self.cache_key(&rel, &e)
                }
                None => rel,
            };
            cache.files.insert(key, (id, hash));
            cache.dirty = true;
        }
        Ok(read)
    }
}

impl HashCache {
    /// Drops entries for files that are no longer in `context`.
    pub(crate) fn retain_present(&mut self, context: &Context) {
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
}
