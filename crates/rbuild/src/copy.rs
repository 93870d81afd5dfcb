//! COPY: which context files land where, with which owner and mode — decided (and hashed for
//! the cache key) before anything is copied — and then copying them into a new layer directory.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use sha2::{Digest as _, Sha256};

use crate::context::{Context, EntryKind, HashCache, clean_rel, glob_match, has_glob};
use crate::view::LayerView;

/// One path a COPY writes.
#[derive(Debug, Clone)]
pub struct CopyItem {
    /// Destination, relative to `/`, no leading slash.
    pub dest: String,
    /// Source on the host.
    pub src: PathBuf,
    /// Kind (with link target).
    pub kind: EntryKind,
    /// Mode after `--chmod`.
    pub mode: u32,
    /// Owner after `--chown`.
    pub uid: u32,
    /// Group after `--chown`.
    pub gid: u32,
    /// Source mtime (docker keeps it).
    pub mtime: (i64, i64),
    /// Content hash (files).
    pub sha256: Option<String>,
    /// The source as the user names it (context path, or `<<NAME` for a heredoc).
    pub label: String,
    /// Inline content (heredoc sources) instead of `src`.
    pub content: Option<std::sync::Arc<Vec<u8>>>,
    /// ADD: a local archive to extract at `dest` instead of copying it.
    pub extract: bool,
}

/// Everything a COPY will write, and the digest of it.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    /// Items, sorted by destination.
    pub items: Vec<CopyItem>,
    /// Owner for directories the COPY has to create.
    pub owner: (u32, u32),
    /// sha256 over (dest, kind, mode, uid, gid, link target, content) of every item.
    pub digest: String,
}

impl CopyPlan {
    /// A plan with no items yet (a COPY of heredocs only).
    pub fn empty(owner: (u32, u32)) -> Self {
        Self {
            items: Vec::new(),
            owner,
            digest: String::new(),
        }
    }

    /// Adds a heredoc source: a file named `name` (or `dest` itself when it does not end in `/`
    /// and this is the only source) with `content`, mode 0644 unless `--chmod`.
    pub fn add_inline(
        &mut self,
        name: &str,
        content: Vec<u8>,
        dest: &str,
        workdir: &str,
        chown: Option<(u32, u32)>,
        chmod: Option<u32>,
    ) {
        let dest_abs = if dest.starts_with('/') {
            dest.to_owned()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        let dest_rel = clean_rel(&dest_abs).unwrap_or_default();
        let target = if dest.ends_with('/') || dest_rel.is_empty() {
            format!(
                "{}{}{name}",
                dest_rel,
                if dest_rel.is_empty() { "" } else { "/" }
            )
        } else {
            dest_rel
        };
        let (uid, gid) = chown.unwrap_or((0, 0));
        self.items.push(CopyItem {
            dest: target,
            src: PathBuf::new(),
            kind: EntryKind::File,
            mode: chmod.unwrap_or(0o644),
            uid,
            gid,
            mtime: (0, 0),
            sha256: Some(hex::encode(Sha256::digest(&content))),
            label: format!("<<{name}"),
            content: Some(std::sync::Arc::new(content)),
            extract: false,
        });
    }

    /// ADD: local files that are tar archives (plain, gzip, bzip2, xz or zstd) are extracted
    /// at the destination directory instead of copied (docker's rule: by content, not name).
    pub fn mark_archives(&mut self) {
        for it in &mut self.items {
            if it.kind == EntryKind::File
                && it.content.is_none()
                && crate::archive::is_archive(&it.src)
            {
                it.extract = true;
                // The archive's contents land in the destination's directory.
                if let Some((dir, _)) = it.dest.rsplit_once('/') {
                    it.dest = dir.to_owned();
                } else {
                    it.dest = String::new();
                }
            }
        }
    }

    /// Sorts the items and computes the digest over them.
    pub fn seal(&mut self) {
        self.items
            .sort_by(|a, b| a.dest.cmp(&b.dest).then(a.label.cmp(&b.label)));
        let mut h = Sha256::new();
        for it in &self.items {
            let (kind, link) = match &it.kind {
                EntryKind::File if it.extract => ("x", String::new()),
                EntryKind::File => ("f", String::new()),
                EntryKind::Dir => ("d", String::new()),
                EntryKind::Symlink(t) => ("l", t.to_string_lossy().into_owned()),
            };
            h.update(format!(
                "{}\0{kind}\0{:o}\0{}\0{}\0{link}\0{}\n",
                it.dest,
                it.mode,
                it.uid,
                it.gid,
                it.sha256.as_deref().unwrap_or("")
            ));
        }
        self.digest = hex::encode(h.finalize());
    }
}

/// The inputs of a COPY after expansion.
pub struct CopyRequest<'a> {
    /// Sources as written.
    pub sources: &'a [String],
    /// Destination as written.
    pub dest: &'a str,
    /// WORKDIR in force.
    pub workdir: &'a str,
    /// Resolved `--chown`.
    pub chown: Option<(u32, u32)>,
    /// Parsed `--chmod`.
    pub chmod: Option<u32>,
    /// The instruction keyword, for messages.
    pub keyword: &'a str,
    /// `--exclude` patterns (`.dockerignore` syntax, matched against the path below each
    /// source and against the full context path).
    pub exclude: &'a [String],
    /// `--parents`: keep each source's context path under the destination.
    pub parents: bool,
}

/// Resolves a COPY against the context; hashes the files it ships (through the hash cache).
///
/// # Errors
///
/// A message naming the source that is missing, excluded by `.dockerignore`, or outside the
/// context, or a destination that cannot take several sources.
pub fn plan(
    ctx: &mut Context,
    cache: &mut HashCache,
    view: &LayerView,
    req: &CopyRequest<'_>,
) -> Result<CopyPlan, String> {
    let kw = req.keyword;
    // Expand sources: (relative path in the context, is the path itself a directory?).
    let mut matched: Vec<String> = Vec::new();
    for src in req.sources {
        let rel = clean_rel(src).ok_or_else(|| {
            format!("{kw} source `{src}` is outside the build context (sources are relative to the context directory)")
        })?;
        if has_glob(&rel) {
            let hits: Vec<String> = ctx
                .entries()
                .keys()
                .filter(|k| glob_match(&rel, k))
                .cloned()
                .collect();
            if hits.is_empty() {
                return Err(format!(
                    "{kw} source `{src}`: no file in the build context matches this pattern"
                ));
            }
            matched.extend(hits);
        } else if rel.is_empty() || ctx.entries().contains_key(&rel) {
            matched.push(rel);
        } else if ctx.is_excluded(&rel) {
            return Err(format!("{kw} source `{src}` is excluded by .dockerignore"));
        } else {
            return Err(format!(
                "{kw} source `{src}` not found in the build context"
            ));
        }
    }
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.to_owned()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let dest_rel = clean_rel(&dest_abs).unwrap_or_default();
    let dest_is_dir = req.dest.ends_with('/')
        || req.dest == "."
        || matched.len() > 1
        || view
            .find(&dest_rel)
            .is_some_and(|p| fs::metadata(&p).is_ok_and(|m| m.is_dir()));
    if req.sources.len() > 1 && !req.dest.ends_with('/') && !dest_is_dir {
        return Err(format!(
            "when using {kw} with more than one source file, the destination must be a directory and end with a /"
        ));
    }
    ctx.hash_files(&matched, cache).map_err(|e| e.to_string())?;
    let owner = req.chown.unwrap_or((0, 0));
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
    for rel in &matched {
        let is_dir = rel.is_empty() || ctx.entries()[rel].kind == EntryKind::Dir;
        // --parents: `COPY --parents a/b/c.txt /d/` lands at /d/a/b/c.txt.
        let dest_rel = if req.parents {
            let parent = if is_dir {
                rel.as_str()
            } else {
                rel.rsplit_once('/').map_or("", |(p, _)| p)
            };
            join(&dest_rel, parent)
        } else {
            dest_rel.clone()
        };
        if is_dir {
            let prefix = if rel.is_empty() {
                String::new()
            } else {
                format!("{rel}/")
            };
            for (k, e) in ctx.entries().range(prefix.clone()..) {
                let Some(suffix) = k.strip_prefix(&prefix) else {
                    break;
                };
                if excluded(k, suffix) {
                    continue;
                }
                let dest = join(&dest_rel, suffix);
                if seen.insert(dest.clone()) {
                    items.push(item(dest, k, e, req));
                }
            }
        } else {
            let e = &ctx.entries()[rel];
            let name = rel.rsplit('/').next().unwrap_or(rel);
            if excluded(rel, name) {
                continue;
            }
            let dest = if dest_is_dir || req.parents {
                join(&dest_rel, name)
            } else {
                dest_rel.clone()
            };
            if seen.insert(dest.clone()) {
                items.push(item(dest, rel, e, req));
            }
        }
    }
    let mut plan = CopyPlan {
        items,
        owner,
        digest: String::new(),
    };
    plan.seal();
    Ok(plan)
}

fn item(dest: String, label: &str, e: &crate::context::Entry, req: &CopyRequest<'_>) -> CopyItem {
    let (uid, gid) = req.chown.unwrap_or((0, 0));
    let mode = match (&e.kind, req.chmod) {
        (EntryKind::Symlink(_), _) => 0o777,
        (_, Some(m)) => m,
        (_, None) => e.mode,
    };
    CopyItem {
        dest,
        src: e.path.clone(),
        kind: e.kind.clone(),
        mode,
        uid,
        gid,
        mtime: e.mtime,
        sha256: e.sha256.clone(),
        label: label.to_owned(),
        content: None,
        extract: false,
    }
}

/// Writes the plan's files into `upper` (a fresh layer directory). Parent directories that the
/// image already has are recreated with the image's owner, mode and mtime so the layer does not
/// change them; new ones get mode 0755 and the COPY's owner.
///
/// # Errors
///
/// IO errors, with the path.
pub fn execute(
    plan: &CopyPlan,
    upper: &Path,
    view: &LayerView,
    reuse: Option<&Reuse<'_>>,
) -> io::Result<()> {
    let mut dirs_to_stamp: Vec<(PathBuf, (i64, i64))> = Vec::new();
    for it in &plan.items {
        let target = upper.join(&it.dest);
        if let Some(parent) = Path::new(&it.dest).parent() {
            ensure_parents(upper, parent, view, plan.owner, &mut dirs_to_stamp)?;
        }
        match &it.kind {
            EntryKind::Dir => {
                match fs::create_dir(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(with_path(e, &target)),
                }
                lchown(&target, Some(it.uid), Some(it.gid)).map_err(|e| with_path(e, &target))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(it.mode))
                    .map_err(|e| with_path(e, &target))?;
                dirs_to_stamp.push((target, it.mtime));
            }
            EntryKind::File if it.extract => {
                fs::create_dir_all(&target).map_err(|e| with_path(e, &target))?;
                crate::archive::extract(&it.src, &target).map_err(|e| with_path(e, &it.src))?;
                continue;
            }
            EntryKind::File => {
                match &it.content {
                    Some(bytes) => {
                        fs::write(&target, bytes.as_slice()).map_err(|e| with_path(e, &target))?
                    }
                    None => {
                        if !it.extract && reuse.is_some_and(|r| r.link(it, &target)) {
                            continue;
                        }
                        fs::copy(&it.src, &target).map_err(|e| with_path(e, &it.src))?;
                    }
                }
                lchown(&target, Some(it.uid), Some(it.gid)).map_err(|e| with_path(e, &target))?;
                // chown clears setuid bits: set the mode after it.
                fs::set_permissions(&target, fs::Permissions::from_mode(it.mode))
                    .map_err(|e| with_path(e, &target))?;
                set_mtime(&target, it.mtime)?;
            }
            EntryKind::Symlink(t) => {
                symlink(t, &target).map_err(|e| with_path(e, &target))?;
                lchown(&target, Some(it.uid), Some(it.gid)).map_err(|e| with_path(e, &target))?;
                set_mtime(&target, it.mtime)?;
            }
        }
    }
    // Directory times last: creating entries inside a directory changes its mtime.
    for (d, t) in dirs_to_stamp.iter().rev() {
        set_mtime(d, *t)?;
    }
    Ok(())
}

/// The previous result of the same COPY step, whose unchanged files can be hard-linked into
/// the new layer directory instead of copied (layer directories are never modified after
/// they are committed).
pub struct Reuse<'a> {
    /// The previous layer directory.
    pub dir: &'a Path,
    /// The previous step's sources in `--explain` form (label → kind, mode, owner, content, dest).
    pub files: &'a std::collections::BTreeMap<String, String>,
}

impl Reuse<'_> {
    /// Links the previous copy of `it` at `target` when it is the same file: same recorded
    /// content, mode, owner and destination, and the same size and mtime on disk. False when it
    /// must be copied.
    fn link(&self, it: &CopyItem, target: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.files.get(&it.label) != Some(&describe(it)) {
            return false;
        }
        let prev = self.dir.join(&it.dest);
        let (Ok(old), Ok(src)) = (fs::symlink_metadata(&prev), fs::metadata(&it.src)) else {
            return false;
        };
        let same = old.is_file()
            && old.len() == src.len()
            && old.mode() & 0o7777 == it.mode
            && (old.uid(), old.gid()) == (it.uid, it.gid)
            && (old.mtime(), old.mtime_nsec()) == it.mtime;
        same && fs::hard_link(&prev, target).is_ok()
    }
}

/// An item as `--explain` records it: `kind mode uid:gid content → /dest`.
pub fn describe(it: &CopyItem) -> String {
    let (kind, content) = match &it.kind {
        EntryKind::File => ("file", it.sha256.clone().unwrap_or_default()),
        EntryKind::Dir => ("dir", String::new()),
        EntryKind::Symlink(t) => ("link", t.display().to_string()),
    };
    format!(
        "{kind} {:o} {}:{} {content} → /{}",
        it.mode, it.uid, it.gid, it.dest
    )
}

/// Creates the directories of `rel` under `upper`, each a copy of the image's directory
/// (owner, mode, mtime) if it has one, else a new 0755 directory owned by `owner`.
pub fn ensure_parents(
    upper: &Path,
    rel: &Path,
    view: &LayerView,
    owner: (u32, u32),
    stamps: &mut Vec<(PathBuf, (i64, i64))>,
) -> io::Result<()> {
    let mut cur = upper.to_path_buf();
    let mut rel_so_far = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        rel_so_far.push(c);
        if fs::symlink_metadata(&cur).is_ok() {
            continue;
        }
        fs::create_dir(&cur).map_err(|e| with_path(e, &cur))?;
        let existing = view
            .find(&rel_so_far.to_string_lossy())
            .and_then(|p| fs::symlink_metadata(p).ok())
            .filter(fs::Metadata::is_dir);
        if let Some(md) = existing {
            use std::os::unix::fs::MetadataExt;
            lchown(&cur, Some(md.uid()), Some(md.gid())).map_err(|e| with_path(e, &cur))?;
            fs::set_permissions(&cur, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| with_path(e, &cur))?;
            stamps.push((cur.clone(), (md.mtime(), md.mtime_nsec())));
        } else {
            lchown(&cur, Some(owner.0), Some(owner.1)).map_err(|e| with_path(e, &cur))?;
            fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                .map_err(|e| with_path(e, &cur))?;
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, (s, ns): (i64, i64)) -> io::Result<()> {
    let t = TimeSpec::new(s, ns);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| with_path(io::Error::from(e), path))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
