//! COPY and ADD: which source files land where, with which owner and mode.
//!
//! Planning ([`plan`]) happens before anything runs and decides only what depends on the
//! sources: the files, their modes, content hashes and link targets, and where each lands
//! *relative to the destination*. Everything that depends on the state the step runs on is
//! decided when it runs ([`execute`]), against the stage's merged layers at that point — as
//! BuildKit's file operation does:
//!
//! - whether the destination is an existing directory (made by an earlier `RUN mkdir` or
//!   `WORKDIR` of the same stage, or a symlink to one: `/usr/local/bin -> /opt/bin`);
//! - where the destination really is: symlinks in the image are followed *inside* the image
//!   ([`crate::rootfs`]), never out of it, and never through a host path;
//! - who `--chown=name` is (the user database of that state).
//!
//! The step's cache key covers the plan; the state is covered by the parent step's key.
//! Files are written into a fresh layer directory through descriptors only: each directory is
//! entered with `O_NOFOLLOW`, each file created with `O_EXCL | O_NOFOLLOW`, so nothing a source
//! tree or an image contains can redirect a write.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use sha2::{Digest as _, Sha256};

use crate::context::{Context, EntryKind, HashCache, clean_rel, glob_match, has_glob};
use crate::rootfs::{self, Layers, open_dir_at};
use crate::view::LayerView;

/// One path a COPY writes.
#[derive(Debug, Clone)]
pub(crate) struct CopyItem {
    /// Where it lands below the destination: for a file source, its name (used when the
    /// destination is a directory); for what is inside a directory source, its path below
    /// that directory (with `--parents`, its whole context path).
    pub sub: String,
    /// A file source that lands *at* the destination when the destination is not a
    /// directory (`COPY a.txt /b.txt`), else at `dest/sub`.
    pub whole: bool,
    /// Source on the host (messages, metadata of a reused copy).
    pub src: PathBuf,
    /// Source path relative to its root, for reads beneath the context root.
    pub src_rel: String,
    /// Kind (with link target).
    pub kind: EntryKind,
    /// Mode after `--chmod`.
    pub mode: u32,
    /// The source's own owner, kept when there is no `--chown` (stage and image sources);
    /// `None` is 0:0 (context files).
    pub owner: Option<(u32, u32)>,
    /// Source mtime (docker keeps it).
    pub mtime: (i64, i64),
    /// Source size in bytes (files), as walked.
    pub size: u64,
    /// Content hash (files).
    pub sha256: Option<String>,
    /// The source as the user names it (context path, or `<<NAME` for a heredoc).
    pub label: String,
    /// Inline content (heredoc sources) instead of `src`.
    pub content: Option<Arc<Vec<u8>>>,
    /// ADD: a local archive to extract at the destination instead of copying it.
    pub extract: bool,
    /// Files of one source (a directory) that share this id are written as hard links of
    /// each other: (source index, device, inode). Separately named sources are copied
    /// separately, as BuildKit does.
    pub link_group: Option<(usize, u64, u64)>,
}

/// Everything a COPY will write, and the digest of it.
#[derive(Debug, Clone)]
pub(crate) struct CopyPlan {
    /// Items, sorted by where they land.
    pub items: Vec<CopyItem>,
    /// The destination: absolute, cleaned, WORKDIR applied, as written (not resolved).
    pub dest: String,
    /// The destination is a directory whatever the image holds: it ends in `/` or is `.`, or
    /// several files are copied.
    pub dest_is_dir: bool,
    /// Several sources were named: the destination must turn out to be a directory.
    pub many_sources: bool,
    /// `--chown` as written; resolved against the state the step runs on.
    pub chown: Option<String>,
    /// The instruction keyword, for messages.
    pub keyword: &'static str,
    /// The open context root the sources are read beneath (`None` for layer sources).
    pub root: Option<Arc<OwnedFd>>,
    /// sha256 over everything above (not the root) and every item.
    pub digest: String,
}

impl CopyPlan {
    /// A plan with no items yet (a COPY of heredocs or URLs only).
    pub(crate) fn empty(
        keyword: &'static str,
        dest: &str,
        workdir: &str,
        chown: Option<&str>,
    ) -> Self {
        let (dest, dest_is_dir) = dest_of(dest, workdir);
        Self {
            items: Vec::new(),
            dest,
            dest_is_dir,
            many_sources: false,
            chown: chown.map(str::to_owned),
            keyword,
            root: None,
            digest: String::new(),
        }
    }

    /// Adds a file with inline content (a heredoc, or a downloaded URL): named `name` below a
    /// directory destination, or the destination itself when it does not end in `/`.
    pub(crate) fn add_inline(&mut self, name: &str, label: String, content: Vec<u8>, mode: u32) {
        self.items.push(CopyItem {
            sub: name.to_owned(),
            whole: true,
            src: PathBuf::new(),
            src_rel: String::new(),
            kind: EntryKind::File,
            mode,
            owner: None,
            mtime: (0, 0),
            size: content.len() as u64,
            sha256: Some(hex::encode(Sha256::digest(&content))),
            label,
            content: Some(Arc::new(content)),
            extract: false,
            link_group: None,
        });
    }

    /// ADD: local files that are tar archives (plain, gzip, bzip2, xz or zstd) are extracted
    /// into the destination directory instead of copied (docker's rule: by content, not name).
    pub(crate) fn mark_archives(&mut self) {
        let root = self.root.clone();
        for it in &mut self.items {
            if it.kind == EntryKind::File && it.content.is_none() {
                let probe = match &root {
                    Some(fd) => rootfs::open_beneath(&**fd, &it.src_rel)
                        .map(crate::archive::is_archive_file),
                    None => Ok(crate::archive::is_archive(&it.src)),
                };
                if probe.unwrap_or(false) {
                    it.extract = true;
                }
            }
        }
    }

    /// Sorts the items and computes the digest over them.
    pub(crate) fn seal(&mut self) {
        self.items
            .sort_by(|a, b| a.sub.cmp(&b.sub).then(a.label.cmp(&b.label)));
        let mut h = Sha256::new();
        h.update(format!(
            "copy/v2\0{}\0{}\0{}\0{}\n",
            self.dest,
            self.dest_is_dir,
            self.many_sources,
            self.chown.as_deref().unwrap_or("-")
        ));
        // Hard-link groups are keyed by their first member, not by inode numbers.
        let mut groups: HashMap<(usize, u64, u64), String> = HashMap::new();
        // One line per item, formatted into a reused buffer.
        let mut line = String::new();
        for it in &self.items {
            let (kind, link) = match &it.kind {
                EntryKind::File if it.extract => ("x", String::new()),
                EntryKind::File => ("f", String::new()),
                EntryKind::Dir => ("d", String::new()),
                EntryKind::Symlink(t) => ("l", t.to_string_lossy().into_owned()),
            };
            let group = it
                .link_group
                .map(|g| groups.entry(g).or_insert_with(|| it.sub.clone()).clone())
                .unwrap_or_default();
            let (uid, gid) = it.owner.unwrap_or((0, 0));
            line.clear();
            // Writing to a String cannot fail.
            let _ = writeln!(
                line,
                "{}\0{}\0{kind}\0{:o}\0{uid}\0{gid}\0{link}\0{}\0{group}",
                it.sub,
                it.whole,
                it.mode,
                it.sha256.as_deref().unwrap_or("")
            );
            h.update(line.as_bytes());
        }
        self.digest = hex::encode(h.finalize());
    }
}

/// The destination as an absolute clean path, and whether it is a directory by its form.
fn dest_of(dest: &str, workdir: &str) -> (String, bool) {
    let abs = if dest.starts_with('/') {
        dest.to_owned()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let rel = crate::context::clamp_rel(&abs);
    let is_dir = dest.ends_with('/') || dest == "." || rel.is_empty();
    (format!("/{rel}"), is_dir)
}

/// The inputs of a COPY after expansion.
pub(crate) struct CopyRequest<'a> {
    /// Sources as written.
    pub sources: &'a [String],
    /// Destination as written.
    pub dest: &'a str,
    /// WORKDIR in force.
    pub workdir: &'a str,
    /// `--chown` as written.
    pub chown: Option<&'a str>,
    /// Parsed `--chmod`.
    pub chmod: Option<u32>,
    /// The instruction keyword, for messages.
    pub keyword: &'static str,
    /// `--exclude` patterns (`.dockerignore` syntax, matched against the path below each
    /// source and against the full context path).
    pub exclude: &'a [String],
    /// `--parents`: keep each source's context path under the destination.
    pub parents: bool,
    /// Sources come from a stage or an image: their owners are kept without `--chown`.
    pub keep_owners: bool,
    /// Where the sources come from, for messages (`the build context`, `stage build`).
    pub origin: &'a str,
}

/// Resolves a COPY against its source tree (the context, or a stage's or image's files);
/// hashes the files it ships (through the hash cache).
///
/// # Errors
///
/// A message naming the source that is missing, excluded by `.dockerignore`, outside the
/// context, or a symlink that leads out of it.
pub(crate) fn plan(
    ctx: &mut Context,
    cache: &mut HashCache,
    req: &CopyRequest<'_>,
) -> Result<CopyPlan, String> {
    let kw = req.keyword;
    // Expand sources to (path as matched, path after following a top-level symlink).
    let mut matched: Vec<(String, String)> = Vec::new();
    for src in req.sources {
        let rel = clean_rel(src).ok_or_else(|| {
            format!(
                "{kw} source `{src}` is outside {} (sources are relative to it)",
                req.origin
            )
        })?;
        let follow = |ctx: &Context, rel: &str| -> Result<String, String> {
            ctx.follow(rel).ok_or_else(|| {
                let target = match &ctx.entries()[rel].kind {
                    EntryKind::Symlink(t) => t.display().to_string(),
                    _ => String::new(),
                };
                format!(
                    "{kw} source `{rel}` is a symbolic link to `{target}`, which is not in {}",
                    req.origin
                )
            })
        };
        if has_glob(&rel) {
            let hits: Vec<String> = ctx
                .entries()
                .keys()
                .filter(|k| glob_match(&rel, k))
                .cloned()
                .collect();
            // BuildKit: a pattern that matches nothing copies nothing (the classic builder
            // fails); a plain path that does not exist is still an error.
            for h in hits {
                let to = follow(ctx, &h)?;
                matched.push((h, to));
            }
        } else if rel.is_empty() {
            matched.push((String::new(), String::new()));
        } else if ctx.entries().contains_key(&rel) {
            let to = follow(ctx, &rel)?;
            matched.push((rel, to));
        } else if ctx.is_excluded(&rel) {
            return Err(format!("{kw} source `{src}` is excluded by .dockerignore"));
        } else {
            return Err(format!("{kw} source `{src}` not found in {}", req.origin));
        }
    }
    let (dest, dest_is_dir) = dest_of(req.dest, req.workdir);
    let many = matched.len() > 1;
    let prefixes: Vec<String> = matched.iter().map(|(_, to)| to.clone()).collect();
    ctx.hash_files(&prefixes, cache)
        .map_err(|e| e.to_string())?;
    let join = |a: &str, b: &str| -> String {
        match (a.is_empty(), b.is_empty()) {
            (true, _) => b.to_owned(),
            (_, true) => a.to_owned(),
            _ => format!("{a}/{b}"),
        }
    };
    let exclude = if req.exclude.is_empty() {
        None
    } else {
        Some(
            rbuild_dockerfile::Ignore::parse(&req.exclude.join("\n"))
                .map_err(|e| format!("{kw} --exclude: {e}"))?,
        )
    };
    let excluded = |full: &str, below: &str| {
        exclude
            .as_ref()
            .is_some_and(|x| x.is_excluded(full) || (!below.is_empty() && x.is_excluded(below)))
    };
    let mut items = Vec::new();
    let mut seen = BTreeSet::new();
    for (source, (name_rel, rel)) in matched.iter().enumerate() {
        let is_dir = rel.is_empty() || ctx.entries()[rel].kind == EntryKind::Dir;
        // --parents: `COPY --parents a/b/c.txt /d/` lands at /d/a/b/c.txt.
        let base = if req.parents {
            if is_dir {
                name_rel.clone()
            } else {
                name_rel.rsplit_once('/').map_or("", |(p, _)| p).to_owned()
            }
        } else {
            String::new()
        };
        if is_dir {
            // The destination directory is made even when the source directory is empty;
            // like BuildKit (which copies a directory's contents only), it does not take the
            // source directory's owner or mode.
            if !rel.is_empty() && seen.insert((false, base.clone())) {
                items.push(item(
                    base.clone(),
                    false,
                    name_rel,
                    &ctx.entries()[rel],
                    req,
                    source,
                ));
            }
            for (k, suffix, e) in ctx.below(rel) {
                if excluded(k, suffix) {
                    continue;
                }
                let sub = join(&base, suffix);
                if seen.insert((false, sub.clone())) {
                    items.push(item(sub, false, k, e, req, source));
                }
            }
        } else {
            let e = &ctx.entries()[rel];
            let name = name_rel.rsplit('/').next().unwrap_or(name_rel);
            if excluded(name_rel, name) {
                continue;
            }
            let whole = !req.parents && !many;
            let sub = join(&base, name);
            if seen.insert((whole, sub.clone())) {
                items.push(item(sub, whole, name_rel, e, req, source));
            }
        }
    }
    let mut plan = CopyPlan {
        items,
        dest,
        dest_is_dir: dest_is_dir || many,
        many_sources: req.sources.len() > 1,
        chown: req.chown.map(str::to_owned),
        keyword: kw,
        root: ctx.root_fd().cloned(),
        digest: String::new(),
    };
    plan.seal();
    Ok(plan)
}

fn item(
    sub: String,
    whole: bool,
    label: &str,
    e: &crate::context::Entry,
    req: &CopyRequest<'_>,
    source: usize,
) -> CopyItem {
    let mode = match (&e.kind, req.chmod) {
        (EntryKind::Symlink(_), _) => 0o777,
        (_, Some(m)) => m,
        (_, None) => e.mode,
    };
    CopyItem {
        sub,
        whole,
        src: e.path.clone(),
        src_rel: e.rel.clone(),
        kind: e.kind.clone(),
        mode,
        owner: if req.keep_owners { e.owner } else { None },
        mtime: e.mtime,
        size: e.size,
        sha256: e.sha256.clone(),
        label: label.to_owned(),
        content: None,
        extract: false,
        link_group: e.link_id.map(|(dev, ino)| (source, dev, ino)),
    }
}

/// Why a COPY could not be carried out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// The input is wrong for the state the step runs on (a message for the user).
    #[error("{0}")]
    Input(String),
    /// Reading a source or writing the layer failed.
    #[error("{what}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CopyError {
    let what = what.into();
    move |source| CopyError::Io { what, source }
}

/// Writes the plan's files into `upper` (a fresh, empty layer directory) on top of `view`,
/// the stage's layers as they are when the step runs.
///
/// # Errors
///
/// [`CopyError::Input`] for what the user must fix (unknown `--chown` user, several sources
/// to a destination that is not a directory), [`CopyError::Io`] otherwise.
pub(crate) fn execute(
    plan: &CopyPlan,
    upper: &Path,
    view: &LayerView,
    reuse: Option<&Reuse<'_>>,
) -> Result<(), CopyError> {
    let kw = plan.keyword;
    let owner = match &plan.chown {
        Some(spec) => Some(
            view.resolve_chown(spec)
                .map_err(|m| CopyError::Input(format!("{kw} --chown={spec}: {m}")))?,
        ),
        None => None,
    };
    let mut w = Writer::open(upper, view, owner.unwrap_or((0, 0)))?;
    let dest = w
        .layers
        .resolve(&plan.dest, true)
        .map_err(|e| CopyError::Input(format!("{kw} destination {}: {e}", plan.dest)))?;
    let dest_is_dir = plan.dest_is_dir || dest.node.as_ref().is_some_and(rootfs::Node::is_dir);
    if plan.many_sources && !dest_is_dir {
        return Err(CopyError::Input(format!(
            "when using {kw} with more than one source file, the destination must be a directory and end with a /"
        )));
    }
    let dest_rel = dest.rel();
    let reuse = match reuse {
        Some(r) => rootfs::open_root(r.dir).ok().map(|fd| (r, fd)),
        None => None,
    };
    let mut links: HashMap<(usize, u64, u64), (Arc<OwnedFd>, OsString)> = HashMap::new();
    let mut prev_dirs = HashMap::new();
    for it in &plan.items {
        // An archive is extracted into the destination itself, a directory whether or not it
        // ends in `/` (docker: "ADD app.tar /opt2" fills /opt2).
        let target = if (it.whole && !dest_is_dir) || it.sub.is_empty() || it.extract {
            dest_rel.clone()
        } else if dest_rel.is_empty() {
            it.sub.clone()
        } else {
            format!("{dest_rel}/{}", it.sub)
        };
        let (uid, gid) = owner.or(it.owner).unwrap_or((0, 0));
        if it.extract {
            let dir = w.dir_at(&target, (uid, gid))?;
            let src = open_source(plan, it)?;
            // The archive's own `./` entry does not change the destination (docker).
            let before = rustix::fs::fstat(&*dir).map_err(|e| CopyError::Io {
                what: format!("read /{target}"),
                source: e.into(),
            })?;
            crate::archive::extract(&rootfs::proc_fd(&src), &rootfs::proc_fd(&*dir))
                .map_err(io_err(format!("extract {}", it.label)))?;
            // BuildKit: an explicit --chown overrides the owners the archive records.
            if let Some((u, g)) = owner {
                chown_tree(&dir, u, g).map_err(io_err(format!("set the owners of /{target}")))?;
            }
            set_owner_mode(
                &*dir,
                before.st_uid,
                before.st_gid,
                before.st_mode & 0o7777,
                &target,
            )?;
            continue;
        }
        match &it.kind {
            EntryKind::Dir if it.sub.is_empty() || target.is_empty() => {
                w.dir_at(&target, owner.unwrap_or((0, 0)))?;
            }
            EntryKind::Dir => {
                let dir = w.dir_at(&target, (uid, gid))?;
                set_owner_mode(&*dir, uid, gid, it.mode, &target)?;
                w.stamps.push((dir, it.mtime));
            }
            EntryKind::Symlink(t) => {
                let (parent, name) = w.entry_at(&target)?;
                rustix::fs::symlinkat(t.as_os_str(), &*parent, &name).map_err(|e| {
                    CopyError::Io {
                        what: format!("create /{target}"),
                        source: e.into(),
                    }
                })?;
                chown_at(&parent, &name, uid, gid, &target)?;
                set_times_at(&parent, &name, it.mtime, &target)?;
                // A new link may redirect paths resolved before: forget them.
                w.forget();
            }
            EntryKind::File => {
                let (parent, name) = w.entry_at(&target)?;
                if let Some(g) = it.link_group
                    && let Some((first_dir, first_name)) = links.get(&g)
                {
                    rustix::fs::linkat(
                        &**first_dir,
                        first_name.as_os_str(),
                        &*parent,
                        &name,
                        AtFlags::empty(),
                    )
                    .map_err(|e| CopyError::Io {
                        what: format!("link /{target}"),
                        source: e.into(),
                    })?;
                    continue;
                }
                let linked = match (&reuse, &it.content) {
                    (Some((r, fd)), None) => {
                        r.link(it, fd, &mut prev_dirs, &target, &parent, &name, (uid, gid))
                    }
                    _ => false,
                };
                if !linked {
                    write_file(plan, it, &parent, &name, &target, (uid, gid))?;
                }
                if let Some(g) = it.link_group {
                    links.insert(g, (parent.clone(), name.clone()));
                }
            }
        }
    }
    w.finish()
}

/// Writes into a fresh layer directory (the top of `layers`) through descriptors.
struct Writer {
    /// The new layer on top of the stage's layers.
    layers: Layers,
    upper: Arc<OwnedFd>,
    /// Owner of directories the COPY creates.
    owner: (u32, u32),
    /// Directories whose times are set last (creating entries changes a directory's mtime).
    stamps: Vec<(Arc<OwnedFd>, (i64, i64))>,
    /// Resolved directories by the path they were asked for (files of one directory come
    /// together, so most lookups are one hash probe).
    dirs: HashMap<String, (Arc<OwnedFd>, String)>,
}

impl Writer {
    fn open(upper: &Path, view: &LayerView, owner: (u32, u32)) -> Result<Self, CopyError> {
        let mut dirs = vec![upper.to_path_buf()];
        dirs.extend(view.dirs().iter().cloned());
        let layers = Layers::open(&dirs).map_err(io_err("open the layers"))?;
        let upper = Arc::new(rootfs::open_root(upper).map_err(io_err("open the new layer"))?);
        Ok(Self {
            layers,
            upper,
            owner,
            stamps: Vec::new(),
            dirs: HashMap::new(),
        })
    }

    fn forget(&mut self) {
        self.dirs.clear();
    }

    /// The directory of the new layer at `path` of the merged view, following symlinks
    /// inside the image: directories the image has are copied up (owner, mode, times),
    /// missing ones are made 0755 with the COPY's owner.
    fn dir_at(&mut self, path: &str, owner: (u32, u32)) -> Result<Arc<OwnedFd>, CopyError> {
        if let Some((fd, _)) = self.dirs.get(path) {
            return Ok(fd.clone());
        }
        let r = self
            .layers
            .resolve(path, true)
            .map_err(|e| CopyError::Input(e.to_string()))?;
        if let Some(n) = &r.node
            && !n.is_dir()
        {
            // A file where a directory goes: replace it (docker removes a non-directory that
            // is in the way of a directory).
            let rel = r.rel();
            let (parent, name) = self.upper_parent(&rel)?;
            rootfs_remove(&parent, &name, &rel)?;
            rustix::fs::mkdirat(&*parent, &name, Mode::from_raw_mode(0o755)).map_err(|e| {
                CopyError::Io {
                    what: format!("create /{rel}"),
                    source: e.into(),
                }
            })?;
            chown_at(&parent, &name, owner.0, owner.1, &rel)?;
            self.dirs.clear();
            return self.dir_at(path, owner);
        }
        let mut comps: Vec<OsString> = r.dir.clone();
        if r.node.is_some() && !r.rel().is_empty() {
            comps.push(OsString::from(
                r.rel().rsplit('/').next().unwrap_or_default(),
            ));
        }
        let existing = comps.len();
        comps.extend(r.missing.iter().cloned());
        let fd = self.ensure(&comps, existing, owner)?;
        let rel = comps
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        self.dirs.insert(path.to_owned(), (fd.clone(), rel));
        Ok(fd)
    }

    /// Makes the directories `comps` exist in the new layer; the first `existing` ones exist
    /// in the merged view (copied up with their metadata), the rest are created.
    fn ensure(
        &mut self,
        comps: &[OsString],
        existing: usize,
        owner: (u32, u32),
    ) -> Result<Arc<OwnedFd>, CopyError> {
        let mut cur = self.upper.clone();
        let mut rel = String::new();
        for (i, c) in comps.iter().enumerate() {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(&c.to_string_lossy());
            match open_dir_at(&*cur, c) {
                Ok(fd) => {
                    cur = Arc::new(fd);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CopyError::Io {
                        what: format!("open /{rel} in the new layer"),
                        source: e,
                    });
                }
            }
            let image_dir = if i < existing {
                self.layers
                    .lookup(&rel)
                    .map_err(io_err(format!("read /{rel}")))?
                    .filter(rootfs::Node::is_dir)
            } else {
                None
            };
            rustix::fs::mkdirat(&*cur, c.as_os_str(), Mode::from_raw_mode(0o755)).map_err(|e| {
                CopyError::Io {
                    what: format!("create /{rel}"),
                    source: e.into(),
                }
            })?;
            let fd = Arc::new(open_dir_at(&*cur, c).map_err(io_err(format!("open /{rel}")))?);
            let (uid, gid, mode) = match &image_dir {
                Some(n) => (n.stat.st_uid, n.stat.st_gid, n.stat.st_mode & 0o7777),
                None => (owner.0, owner.1, 0o755),
            };
            set_owner_mode(&*fd, uid, gid, mode, &rel)?;
            if let Some(n) = &image_dir {
                for (name, value) in n.xattrs() {
                    let _ = rustix::fs::fsetxattr(
                        &*fd,
                        name.as_os_str(),
                        &value,
                        rustix::fs::XattrFlags::empty(),
                    );
                }
                self.stamps
                    .push((fd.clone(), (n.stat.st_mtime, n.stat.st_mtime_nsec as i64)));
            }
            cur = fd;
        }
        Ok(cur)
    }

    /// The new layer's directory that holds `rel` (an already resolved path) and its name.
    fn upper_parent(&mut self, rel: &str) -> Result<(Arc<OwnedFd>, OsString), CopyError> {
        let comps = rootfs::components(rel);
        let Some((name, dirs)) = comps.split_last() else {
            return Err(CopyError::Input("cannot replace the root directory".into()));
        };
        let owner = self.owner;
        let fd = self.ensure(dirs, dirs.len(), owner)?;
        Ok((fd, name.clone()))
    }

    /// The directory and free name where the entry `path` is to be created: its parent is
    /// resolved inside the image (symlinks followed), the name itself is not followed, and
    /// whatever the new layer already has under that name is removed.
    fn entry_at(&mut self, path: &str) -> Result<(Arc<OwnedFd>, OsString), CopyError> {
        let (parent_path, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", path),
        };
        if name.is_empty() {
            return Err(CopyError::Input(
                "cannot copy a file onto the root directory".into(),
            ));
        }
        let owner = self.owner;
        let parent = self.dir_at(parent_path, owner)?;
        let name = OsString::from(name);
        let shown = format!("{parent_path}/{}", name.to_string_lossy());
        rootfs_remove(&parent, &name, &shown)?;
        Ok((parent, name))
    }

    /// Sets the recorded directory times, deepest first.
    fn finish(self) -> Result<(), CopyError> {
        for (fd, t) in self.stamps.iter().rev() {
            rustix::fs::futimens(&**fd, &stamp(*t)).map_err(|e| CopyError::Io {
                what: "set directory times".into(),
                source: e.into(),
            })?;
        }
        Ok(())
    }
}

/// Sets the owner, then the mode (chown clears setuid bits), of an open file or directory.
fn set_owner_mode(
    fd: impl AsFd,
    uid: u32,
    gid: u32,
    mode: u32,
    shown: &str,
) -> Result<(), CopyError> {
    let fd = fd.as_fd();
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| owner_error(shown, uid, gid, e))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| CopyError::Io {
        what: format!("set the mode of /{shown}"),
        source: e.into(),
    })
}

/// Access and modification times both set to `t` (seconds, nanoseconds).
fn stamp(t: (i64, i64)) -> Timestamps {
    let ts = Timespec {
        tv_sec: t.0,
        tv_nsec: t.1 as _,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// Removes `name` from `dir` (recursively, never following a symlink); missing is fine.
fn rootfs_remove(dir: &OwnedFd, name: &OsStr, shown: &str) -> Result<(), CopyError> {
    remove_all_at(dir, name).map_err(|source| CopyError::Io {
        what: format!("replace /{}", shown.trim_start_matches('/')),
        source,
    })
}

/// Removes `name` from `dir`, recursively, never following a symlink; missing is fine.
pub(crate) fn remove_all_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let st = match rootfs::lstat_at(dir, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if rootfs::file_type(&st) == FileType::Directory {
        let sub = open_dir_at(dir, name)?;
        for child in rootfs::list_dir(&sub)? {
            remove_all_at(&sub, &child)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Sets the owner of everything below the directory `dir`, never following a symlink.
fn chown_tree(dir: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    for name in rootfs::list_dir(dir)? {
        rustix::fs::chownat(
            dir,
            name.as_os_str(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        let st = rootfs::lstat_at(dir, &name)?;
        if rootfs::file_type(&st) == FileType::Directory {
            let sub = open_dir_at(dir, &name)?;
            chown_tree(&sub, uid, gid)?;
        }
    }
    Ok(())
}

fn chown_at(dir: &OwnedFd, name: &OsStr, uid: u32, gid: u32, shown: &str) -> Result<(), CopyError> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| owner_error(shown, uid, gid, e))
}

/// A failed chown of `/shown` to `uid:gid`; EINVAL means the id does not exist in this user
/// namespace (a rootless build whose ranges do not cover it), which the message says.
fn owner_error(shown: &str, uid: u32, gid: u32, e: rustix::io::Errno) -> CopyError {
    let what = if e == rustix::io::Errno::INVAL {
        format!(
            "give /{shown} the owner {uid}:{gid}: the id is not mapped in this user namespace \
             (a rootless build needs /etc/subuid and /etc/subgid ranges covering it; see \
             `rbuild info`)"
        )
    } else {
        format!("give /{shown} the owner {uid}:{gid}")
    };
    CopyError::Io {
        what,
        source: e.into(),
    }
}

fn set_times_at(dir: &OwnedFd, name: &OsStr, t: (i64, i64), shown: &str) -> Result<(), CopyError> {
    rustix::fs::utimensat(dir, name, &stamp(t), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
        CopyError::Io {
            what: format!("set the times of /{shown}"),
            source: e.into(),
        }
    })
}

/// Opens an item's source: beneath the context root, or its immutable layer file.
fn open_source(plan: &CopyPlan, it: &CopyItem) -> Result<fs::File, CopyError> {
    let r = match &plan.root {
        Some(fd) => rootfs::open_beneath(&**fd, &it.src_rel),
        None => {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&it.src)
        }
    };
    r.map_err(io_err(format!("read {}", it.label)))
}

fn write_file(
    plan: &CopyPlan,
    it: &CopyItem,
    parent: &OwnedFd,
    name: &OsStr,
    target: &str,
    (uid, gid): (u32, u32),
) -> Result<(), CopyError> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| CopyError::Io {
        what: format!("create /{target}"),
        source: e.into(),
    })?;
    let mut out = fs::File::from(fd);
    match &it.content {
        Some(bytes) => {
            use std::io::Write as _;
            out.write_all(bytes)
                .map_err(io_err(format!("write /{target}")))?;
        }
        None => {
            let src = open_source(plan, it)?;
            if plan.root.is_some() {
                // Context files: copy exactly what the key was computed from. A file edited
                // after planning would otherwise be stored under its old content's key and
                // served to the next build.
                let got = crate::context::copy_hashed(src, &mut out)
                    .map_err(io_err(format!("copy {}", it.label)))?;
                if it.sha256.as_deref() != Some(got.as_str()) {
                    return Err(CopyError::Input(format!(
                        "{} source `{}` changed during the build (its content is not what the cache key was computed from); build again",
                        plan.keyword, it.label
                    )));
                }
            } else {
                io::copy(&mut { src }, &mut out).map_err(io_err(format!("copy {}", it.label)))?;
            }
        }
    }
    set_owner_mode(&out, uid, gid, it.mode, target)?;
    rustix::fs::futimens(&out, &stamp(it.mtime)).map_err(|e| CopyError::Io {
        what: format!("set the times of /{target}"),
        source: e.into(),
    })
}

/// The previous result of the same COPY step, whose unchanged files can be hard-linked into
/// the new layer directory instead of copied (layer directories are never modified after
/// they are committed).
pub(crate) struct Reuse<'a> {
    /// The previous layer directory.
    pub dir: &'a Path,
    /// The previous step's sources in `--explain` form (label → kind, mode, owner, content, dest).
    pub files: &'a std::collections::BTreeMap<String, String>,
}

impl Reuse<'_> {
    /// Links the previous copy of `it` (found at the same resolved path `target` in the
    /// previous layer, every directory entered without following links) as `name` in
    /// `parent` when it is the same file: same recorded content, mode, owner and
    /// destination, and the same size and mtime on disk. False when it must be copied.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the pieces are all different"
    )]
    fn link(
        &self,
        it: &CopyItem,
        prev_root: &OwnedFd,
        prev_dirs: &mut HashMap<String, Option<Arc<OwnedFd>>>,
        target: &str,
        parent: &OwnedFd,
        name: &OsStr,
        (uid, gid): (u32, u32),
    ) -> bool {
        if self.files.get(&it.label) != Some(&describe(it)) {
            return false;
        }
        let (dir_rel, last) = target.rsplit_once('/').unwrap_or(("", target));
        // Files of one directory come together: open each directory of the previous layer
        // once (entered component by component without following links).
        let prev_dir = prev_dirs
            .entry(dir_rel.to_owned())
            .or_insert_with(|| {
                let mut cur: Option<OwnedFd> = None;
                for c in rootfs::components(dir_rel) {
                    let base: &OwnedFd = cur.as_ref().unwrap_or(prev_root);
                    cur = Some(open_dir_at(base, &c).ok()?);
                }
                match cur {
                    Some(fd) => Some(Arc::new(fd)),
                    None => rustix::io::dup(prev_root).ok().map(Arc::new),
                }
            })
            .clone();
        let Some(prev_dir) = prev_dir else {
            return false;
        };
        let last = OsStr::new(last);
        let Ok(old) = rootfs::lstat_at(&*prev_dir, last) else {
            return false;
        };
        let same = rootfs::file_type(&old) == FileType::RegularFile
            && old.st_size as u64 == it.size
            && old.st_mode & 0o7777 == it.mode
            && (old.st_uid, old.st_gid) == (uid, gid)
            && (old.st_mtime, old.st_mtime_nsec as i64) == it.mtime;
        same && rustix::fs::linkat(&*prev_dir, last, parent, name, AtFlags::empty()).is_ok()
    }
}

/// An item as `--explain` records it: `kind mode owner content → sub`.
pub(crate) fn describe(it: &CopyItem) -> String {
    let (kind, content) = match &it.kind {
        EntryKind::File => ("file", it.sha256.clone().unwrap_or_default()),
        EntryKind::Dir => ("dir", String::new()),
        EntryKind::Symlink(t) => ("link", t.display().to_string()),
    };
    let owner = it
        .owner
        .map_or_else(|| "-".to_owned(), |(u, g)| format!("{u}:{g}"));
    format!("{kind} {:o} {owner} {content} → {}", it.mode, it.sub)
}

/// Creates the directory `path` of the merged view in the fresh layer `upper` (WORKDIR):
/// symlinks in the image are followed inside it; directories it has to create get `owner`.
/// Returns false when the directory already exists (nothing to write).
///
/// # Errors
///
/// When `path` cannot be a directory in this image, or on IO errors.
pub(crate) fn mkdir(
    upper: &Path,
    view: &LayerView,
    path: &str,
    owner: (u32, u32),
) -> Result<bool, CopyError> {
    let mut w = Writer::open(upper, view, owner)?;
    let r = w
        .layers
        .resolve(path, true)
        .map_err(|e| CopyError::Input(format!("WORKDIR {path}: {e}")))?;
    match &r.node {
        Some(n) if n.is_dir() => return Ok(false),
        Some(_) => {
            return Err(CopyError::Input(format!(
                "WORKDIR {path}: /{} exists and is not a directory",
                r.rel()
            )));
        }
        None => {}
    }
    w.dir_at(path, owner)?;
    w.finish()?;
    Ok(true)
}
