//! The in-root resolver: every path that comes from build input is looked up here, inside its
//! own root, through directory descriptors — never by handing a host path string to the kernel.
//!
//! A root is a stack of layer directories in overlay upperdir form (top-most first; see
//! `rbuild-layer`), seen the way overlayfs shows them:
//!
//! - the top-most layer that has a name decides what it is;
//! - a whiteout (character device 0/0) hides the name in every lower layer;
//! - a directory merges with the directories of the same name below it, down to the first
//!   layer where that name is *not* a directory (a file, a symlink, a whiteout) or the first
//!   opaque directory (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y` as a rootless
//!   overlay writes it) — so nothing below a non-directory ever shows through.
//!
//! Each layer directory is only ever entered with `openat(O_NOFOLLOW | O_DIRECTORY)` one
//! component at a time, so a symlink stored in a layer is never followed by the kernel.
//! Symlinks are followed by [`Layers::resolve`] itself, as path text inside the root: an
//! absolute target restarts at the image's `/`, `..` stops at it (BuildKit's and
//! continuity's `fs.RootPath`), and more than 40 links is `ELOOP` as in the kernel.
//!
//! The same model serves COPY/ADD destinations (symlinks in the image are followed inside it:
//! `/usr/local/bin -> /opt/bin`), `COPY --from` sources, `RUN --mount from=` sources, and the
//! user database a `--chown` reads.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

/// Symlinks followed in one resolution before giving up (the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// An open stack of layer directories, top-most first.
#[derive(Debug, Clone)]
pub(crate) struct Layers {
    roots: Vec<Arc<OwnedFd>>,
    paths: Vec<PathBuf>,
}

/// One entry of the merged view.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Index of the layer that provides this entry (0 = top-most).
    pub layer: usize,
    /// Path relative to the root, slash-separated, no leading `/` (empty for the root).
    pub rel: String,
    /// `lstat` of the entry in its layer.
    pub stat: Stat,
    parent: Option<Arc<OwnedFd>>,
    name: OsString,
    /// For a directory: the directories of every layer it merges (layer index, descriptor),
    /// top-most first.
    dirs: Vec<(usize, Arc<OwnedFd>)>,
}

/// A path resolved inside the root.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The directories of the path, symlinks resolved, that exist in the merged view.
    pub dir: Vec<OsString>,
    /// Components below `dir` that do not exist (all but the last are directories to create).
    pub missing: Vec<OsString>,
    /// The final entry when it exists (`missing` is then empty).
    pub node: Option<Node>,
}

impl Resolved {
    /// The resolved path, relative to the root.
    pub(crate) fn rel(&self) -> String {
        let mut parts: Vec<&OsStr> = self.dir.iter().map(OsString::as_os_str).collect();
        parts.extend(self.missing.iter().map(OsString::as_os_str));
        if let Some(n) = &self.node
            && self.missing.is_empty()
        {
            return n.rel.clone();
        }
        join(&parts)
    }
}

/// Why a path could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A component that must be a directory is a file (or a device, ...).
    #[error("/{path} is not a directory")]
    NotDir {
        /// The offending path, relative to the root.
        path: String,
    },
    /// Too many symbolic links.
    #[error("too many levels of symbolic links resolving /{path}")]
    Loop {
        /// The path being resolved.
        path: String,
    },
    /// A symlink leads below a directory that does not exist.
    #[error("/{path}: a symbolic link leads into a missing directory")]
    Dangling {
        /// The path being resolved.
        path: String,
    },
    /// Reading a layer directory failed.
    #[error("failed to read layer directory at /{path}")]
    Io {
        /// The path being resolved.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ResolveError {
    fn io(path: &str, e: impl Into<io::Error>) -> Self {
        Self::Io {
            path: path.to_owned(),
            source: e.into(),
        }
    }
}

impl From<ResolveError> for io::Error {
    fn from(e: ResolveError) -> Self {
        let kind = match &e {
            ResolveError::NotDir { .. } => io::ErrorKind::NotADirectory,
            ResolveError::Dangling { .. } => io::ErrorKind::NotFound,
            ResolveError::Loop { .. } => io::ErrorKind::InvalidInput,
            ResolveError::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// Whether a stat result is an overlay whiteout.
pub(crate) fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// The file type of a stat result.
pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Whether the directory open as `fd` is an opaque overlay directory.
pub(crate) fn is_opaque(fd: impl AsFd) -> bool {
    let fd = fd.as_fd();
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::fgetxattr(fd, rbuild_layer::overlay_opaque_xattr(), &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

/// Opens directory `name` in `dir` without following a symlink.
pub(crate) fn open_dir_at(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `lstat` of `name` in `dir`.
pub(crate) fn lstat_at(dir: impl AsFd, name: &OsStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Opens a directory path (a host path the caller owns: a layer directory, a context root).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `rel` below `root` for reading, refusing any symlink or `..` on the way
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). For build-context files: they were
/// walked without following links, and a link planted since then must not redirect the read.
pub(crate) fn open_beneath(root: impl AsFd, rel: &str) -> io::Result<std::fs::File> {
    let rel = if rel.is_empty() { "." } else { rel };
    let fd = rustix::fs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
    )?;
    Ok(std::fs::File::from(fd))
}

/// The names in the directory open as `dir`, sorted.
pub(crate) fn list_dir(dir: impl AsFd) -> io::Result<Vec<OsString>> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn join(parts: &[&OsStr]) -> String {
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(&p.to_string_lossy());
    }
    out
}

fn child_rel(parent: &str, name: &OsStr) -> String {
    if parent.is_empty() {
        name.to_string_lossy().into_owned()
    } else {
        format!("{parent}/{}", name.to_string_lossy())
    }
}

/// Splits a slash path into its components, dropping empty and `.` ones (`..` is kept).
pub(crate) fn components(path: &str) -> Vec<OsString> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(OsString::from)
        .collect()
}

impl Layers {
    /// Opens the layer directories `paths`, top-most first.
    ///
    /// # Errors
    ///
    /// When a directory cannot be opened.
    pub(crate) fn open(paths: &[PathBuf]) -> io::Result<Self> {
        let roots = paths
            .iter()
            .map(|p| {
                open_root(p)
                    .map(Arc::new)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
            })
            .collect::<io::Result<_>>()?;
        Ok(Self {
            roots,
            paths: paths.to_vec(),
        })
    }

    /// The host path of an entry: its layer directory joined with its path. Every directory on
    /// the way was entered with `O_NOFOLLOW` in that layer, and layer directories are
    /// immutable, so the path names the same entry (for tools that only take paths).
    pub(crate) fn host_path(&self, node: &Node) -> PathBuf {
        self.paths
            .get(node.layer)
            .map_or_else(PathBuf::new, |p| p.join(&node.rel))
    }

    /// The root directory node.
    pub(crate) fn root(&self) -> io::Result<Node> {
        let stat = match self.roots.first() {
            Some(fd) => rustix::fs::fstat(fd.as_fd())?,
            None => {
                // An empty image (FROM scratch): a root directory that is there and empty.
                let mut st = rustix::fs::stat("/")?;
                st.st_mode = 0o40755;
                st.st_uid = 0;
                st.st_gid = 0;
                st
            }
        };
        Ok(Node {
            layer: 0,
            rel: String::new(),
            stat,
            parent: None,
            name: OsString::new(),
            dirs: self.roots.iter().cloned().enumerate().collect(),
        })
    }

    /// Looks `name` up in directory `dir` of the merged view (no symlink followed).
    ///
    /// # Errors
    ///
    /// IO errors of the layer directories.
    pub(crate) fn child(&self, dir: &Node, name: &OsStr) -> io::Result<Option<Node>> {
        for (i, (layer, d)) in dir.dirs.iter().enumerate() {
            let layer = *layer;
            let st = match lstat_at(d.as_fd(), name) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if is_whiteout(&st) {
                return Ok(None);
            }
            let node = |dirs| Node {
                layer,
                rel: child_rel(&dir.rel, name),
                stat: st,
                parent: Some(d.clone()),
                name: name.to_owned(),
                dirs,
            };
            if file_type(&st) != FileType::Directory {
                return Ok(Some(node(Vec::new())));
            }
            let top = Arc::new(open_dir_at(d.as_fd(), name)?);
            let mut dirs = vec![(layer, top.clone())];
            if !is_opaque(top.as_fd()) {
                for (lower_layer, lower) in &dir.dirs[i + 1..] {
                    let st = match lstat_at(lower.as_fd(), name) {
                        Ok(st) => st,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    if file_type(&st) != FileType::Directory {
                        break; // a file, link or whiteout ends the merge
                    }
                    let fd = Arc::new(open_dir_at(lower.as_fd(), name)?);
                    let opaque = is_opaque(fd.as_fd());
                    dirs.push((*lower_layer, fd));
                    if opaque {
                        break;
                    }
                }
            }
            return Ok(Some(node(dirs)));
        }
        Ok(None)
    }

    /// Looks up a path of the merged view without following any symlink.
    ///
    /// # Errors
    ///
    /// IO errors of the layer directories.
    pub(crate) fn lookup(&self, rel: &str) -> io::Result<Option<Node>> {
        let mut cur = self.root()?;
        for c in components(rel) {
            if c == ".." {
                return Ok(None);
            }
            if file_type(&cur.stat) != FileType::Directory {
                return Ok(None);
            }
            match self.child(&cur, &c)? {
                Some(n) => cur = n,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Resolves `path` inside the root, following symlinks as path text within it (the final
    /// component only with `follow_last`). Components that do not exist are returned in
    /// [`Resolved::missing`]; what exists must be a directory on the way.
    ///
    /// # Errors
    ///
    /// [`ResolveError`] for a non-directory on the way, a symlink loop, or IO errors.
    pub(crate) fn resolve(&self, path: &str, follow_last: bool) -> Result<Resolved, ResolveError> {
        let mut queue: VecDeque<OsString> = components(path).into();
        let root = self.root().map_err(|e| ResolveError::io(path, e))?;
        let mut stack: Vec<Node> = vec![root];
        let mut dir: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if c == ".." {
                if stack.len() > 1 {
                    stack.pop();
                    dir.pop();
                }
                continue;
            }
            let last = queue.is_empty();
            let cur = stack.last().cloned().unwrap_or_else(|| unreachable!());
            let child = self
                .child(&cur, &c)
                .map_err(|e| ResolveError::io(path, e))?;
            match child {
                None => {
                    let mut missing = vec![c];
                    for q in queue {
                        if q == ".." {
                            return Err(ResolveError::Dangling {
                                path: path.to_owned(),
                            });
                        }
                        missing.push(q);
                    }
                    return Ok(Resolved {
                        dir,
                        missing,
                        node: None,
                    });
                }
                Some(n) if file_type(&n.stat) == FileType::Symlink && (!last || follow_last) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(ResolveError::Loop {
                            path: path.to_owned(),
                        });
                    }
                    let target = n.read_link().map_err(|e| ResolveError::io(path, e))?;
                    let bytes = target.as_bytes();
                    if bytes.first() == Some(&b'/') {
                        stack.truncate(1);
                        dir.clear();
                    }
                    for t in components(&String::from_utf8_lossy(bytes))
                        .into_iter()
                        .rev()
                    {
                        queue.push_front(t);
                    }
                }
                Some(n) if last => {
                    return Ok(Resolved {
                        dir,
                        missing: Vec::new(),
                        node: Some(n),
                    });
                }
                Some(n) if file_type(&n.stat) == FileType::Directory => {
                    dir.push(c);
                    stack.push(n);
                }
                Some(n) => {
                    return Err(ResolveError::NotDir { path: n.rel });
                }
            }
        }
        // The path named the root itself (or climbed to it).
        let node = stack.pop().unwrap_or_else(|| unreachable!());
        let name = dir.pop();
        Ok(Resolved {
            dir,
            missing: Vec::new(),
            node: if name.is_some() || node.rel.is_empty() {
                Some(node)
            } else {
                None
            },
        })
    }

    /// Resolves `path` (following every symlink inside the root) to an existing entry.
    ///
    /// # Errors
    ///
    /// As [`Layers::resolve`].
    pub(crate) fn find(&self, path: &str) -> Result<Option<Node>, ResolveError> {
        let r = self.resolve(path, true)?;
        Ok(r.node)
    }

    /// Reads a regular file of the merged view (symlinks followed inside the root), up to
    /// `limit` bytes.
    ///
    /// # Errors
    ///
    /// As [`Layers::resolve`], or when the file cannot be read.
    pub(crate) fn read(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read as _;
        let Some(node) = self.find(path)? else {
            return Ok(None);
        };
        if file_type(&node.stat) != FileType::RegularFile {
            return Ok(None);
        }
        let mut out = Vec::new();
        node.open()?.take(limit).read_to_end(&mut out)?;
        Ok(Some(out))
    }

    /// The entries of directory `dir` of the merged view, sorted by name.
    ///
    /// # Errors
    ///
    /// IO errors of the layer directories.
    pub(crate) fn children(&self, dir: &Node) -> io::Result<Vec<Node>> {
        let mut names = BTreeSet::new();
        for (_, d) in &dir.dirs {
            names.extend(list_dir(d.as_fd())?);
        }
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Some(c) = self.child(dir, &n)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Visits `start` and everything below it, depth first in name order, as overlayfs shows
    /// it. Only the descriptors of the current directory chain are open at a time.
    ///
    /// # Errors
    ///
    /// IO errors of the layer directories, or the visitor's.
    pub(crate) fn walk(
        &self,
        start: &Node,
        visit: &mut dyn FnMut(&Node) -> io::Result<()>,
    ) -> io::Result<()> {
        visit(start)?;
        if file_type(&start.stat) == FileType::Directory {
            for c in self.children(start)? {
                self.walk(&c, visit)?;
            }
        }
        Ok(())
    }
}

impl Node {
    /// Whether this is a directory.
    pub(crate) fn is_dir(&self) -> bool {
        file_type(&self.stat) == FileType::Directory
    }

    /// The file type.
    pub(crate) fn file_type(&self) -> FileType {
        file_type(&self.stat)
    }

    /// The target of a symlink.
    ///
    /// # Errors
    ///
    /// When this is not a symlink or it cannot be read.
    pub(crate) fn read_link(&self) -> io::Result<OsString> {
        let parent = self
            .parent
            .as_ref()
            .ok_or_else(|| io::Error::other("the root is not a symlink"))?;
        let t = rustix::fs::readlinkat(parent.as_fd(), self.name.as_os_str(), Vec::new())?;
        Ok(OsStr::from_bytes(t.as_bytes()).to_owned())
    }

    /// Opens a regular file for reading (never following a symlink).
    ///
    /// # Errors
    ///
    /// When it cannot be opened.
    pub(crate) fn open(&self) -> io::Result<std::fs::File> {
        let parent = self
            .parent
            .as_ref()
            .ok_or_else(|| io::Error::other("the root is not a file"))?;
        let fd = rustix::fs::openat(
            parent.as_fd(),
            self.name.as_os_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// The directory that holds this entry in its layer, and its name there (for `linkat`).
    pub(crate) fn location(&self) -> Option<(&OwnedFd, &OsStr)> {
        self.parent.as_deref().map(|p| (p, self.name.as_os_str()))
    }

    /// Reads an extended attribute of the entry (not following a symlink).
    pub(crate) fn xattrs(&self) -> Vec<(OsString, Vec<u8>)> {
        let Some((parent, name)) = self.location() else {
            return Vec::new();
        };
        let path = proc_path(parent, name);
        let Ok(names) = xattr::list(&path) else {
            return Vec::new();
        };
        names
            .filter(|n| !rbuild_layer::is_overlay_xattr(n.as_bytes()))
            .filter_map(|n| {
                let v = xattr::get(&path, &n).ok().flatten()?;
                Some((n, v))
            })
            .collect()
    }
}

/// A path naming `name` inside the directory open as `dir`, for calls that only take paths
/// (`lgetxattr`): only the last component is looked up by name, and the `l*` calls do not
/// follow it.
pub(crate) fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    proc_fd(dir).join(name)
}

/// `/proc/self/fd/N`: the very file or directory open as `fd`, for calls that take a path.
pub(crate) fn proc_fd(fd: &impl AsFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Cleans a root-relative path (a context source, an image path): strips `./` and leading `/`, resolves `..` within the
/// root. Returns `None` when the path climbs out of the root.
pub(crate) fn clean_rel(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    fn layers(dirs: &[&Path]) -> Layers {
        Layers::open(&dirs.iter().map(|d| d.to_path_buf()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("opt/bin")).unwrap();
        fs::create_dir_all(root.join("usr/local")).unwrap();
        symlink("/opt/bin", root.join("usr/local/bin")).unwrap();
        symlink("../../../../../etc", root.join("up")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let l = layers(&[&root]);
        let r = l.resolve("/usr/local/bin/tool", false).unwrap();
        assert_eq!(r.rel(), "opt/bin/tool");
        assert!(r.node.is_none());
        let r = l.resolve("/usr/local/bin", true).unwrap();
        assert_eq!(r.rel(), "opt/bin");
        assert!(r.node.unwrap().is_dir());
        // `..` in a link target stops at the image's root: /up is /etc of the image.
        let r = l.resolve("/up/passwd", false).unwrap();
        assert_eq!(r.rel(), "etc/passwd");
        assert_eq!(r.missing, [OsString::from("etc"), "passwd".into()]);
        assert!(matches!(
            l.resolve("/loop1/x", false),
            Err(ResolveError::Loop { .. })
        ));
    }

    #[test]
    fn non_directories_hide_lower_layers_like_overlayfs() {
        let t = tempfile::tempdir().unwrap();
        let (upper, lower) = (t.path().join("upper"), t.path().join("lower"));
        fs::create_dir_all(lower.join("app/d")).unwrap();
        fs::write(lower.join("app/d/evil"), "x").unwrap();
        fs::create_dir_all(lower.join("keep")).unwrap();
        fs::write(lower.join("keep/a"), "a").unwrap();
        fs::create_dir_all(upper.join("app")).unwrap();
        symlink("/elsewhere", upper.join("app/d")).unwrap();
        fs::create_dir_all(upper.join("keep")).unwrap();
        fs::write(upper.join("keep/b"), "b").unwrap();
        let l = layers(&[&upper, &lower]);
        let app = l.lookup("app").unwrap().unwrap();
        let names: Vec<String> = l
            .children(&app)
            .unwrap()
            .iter()
            .map(|n| n.rel.clone())
            .collect();
        assert_eq!(names, ["app/d"]);
        assert!(l.lookup("app/d/evil").unwrap().is_none());
        let keep = l.lookup("keep").unwrap().unwrap();
        let mut seen = Vec::new();
        l.walk(&keep, &mut |n| {
            seen.push(n.rel.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["keep", "keep/a", "keep/b"]);
    }

    #[test]
    fn a_link_stored_in_a_layer_is_never_followed_on_the_host() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("shadow"), "secret").unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(&root).unwrap();
        symlink(&outside, root.join("link")).unwrap();
        let l = layers(&[&root]);
        // Resolved inside the root, the link's absolute target does not exist there.
        assert!(l.find("/link/shadow").unwrap().is_none());
        assert!(l.read("/link/shadow", 1 << 20).unwrap().is_none());
    }
}
