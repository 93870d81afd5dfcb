//! Job directories and artifacts on disk: copying a project, saving `artifacts:paths`,
//! restoring them into a later job's directory.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use regex::Regex;

use super::rooted;

/// Copies `src` into `dst` (created if needed), recursively, keeping symlinks as symlinks and
/// file modes (`fs::copy` copies permission bits). Entries whose path equals `skip` are left
/// out, so a work directory inside the project is not copied into itself.
pub(crate) fn copy_tree(src: &Path, dst: &Path, skip: Option<&Path>) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src)?;
        if std::fs::symlink_metadata(dst).is_ok() {
            remove_any(dst)?;
        }
        return std::os::unix::fs::symlink(target, dst);
    }
    if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let path = entry.path();
            if skip.is_some_and(|s| s == path) {
                continue;
            }
            copy_tree(&path, &dst.join(entry.file_name()), skip)?;
        }
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::symlink_metadata(dst).is_ok_and(|m| !m.is_file()) {
        remove_any(dst)?;
    }
    std::fs::copy(src, dst).map(|_| ())
}

fn remove_any(p: &Path) -> io::Result<()> {
    let m = std::fs::symlink_metadata(p)?;
    if m.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// What [`resolve_paths`] found.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// Matched paths, relative to the root.
    pub found: Vec<PathBuf>,
    /// Patterns that matched nothing.
    pub unmatched: Vec<String>,
    /// Patterns whose directories lead out of the root through a symlink (GitLab Runner
    /// skips these too: "artifact path is not a subpath of project directory").
    pub outside: Vec<String>,
}

/// Resolves `artifacts:paths` entries against `root`: plain paths (files or whole directories)
/// and globs with `*` (within one path component) and `**` (any depth), as GitLab Runner's
/// doublestar matching does. Paths that would leave `root` (`..`, absolute) match nothing;
/// paths whose directories are symlinks out of `root` are reported in
/// [`Resolved::outside`]. Globs never descend into a symlinked directory. Nothing outside
/// `root` is looked at (see [`rooted`]).
pub(crate) fn resolve_paths(root: &Path, patterns: &[String]) -> io::Result<Resolved> {
    let root_fd = rooted::open_root(root)?;
    let mut r = Resolved::default();
    for pattern in patterns {
        let rel = pattern.trim_start_matches("./").trim_end_matches('/');
        let rel_path = Path::new(rel);
        if rel.is_empty()
            || rel_path.is_absolute()
            || rel_path.components().any(|c| c.as_os_str() == "..")
        {
            r.unmatched.push(pattern.clone());
            continue;
        }
        let before = r.found.len();
        if !rel.contains(['*', '?', '[']) {
            let parent = rel_path.parent().unwrap_or(Path::new(""));
            let name = rel_path.file_name().unwrap_or_default();
            match rooted::open_dir_beneath(root_fd.as_fd(), parent) {
                Ok(dir) => {
                    if rooted::kind_at(dir.as_fd(), name)?.is_some() {
                        r.found.push(rel_path.to_owned());
                    }
                }
                Err(e) if rooted::is_escape(&e) => {
                    r.outside.push(pattern.clone());
                    continue;
                }
                // Missing or not a directory: nothing matches.
                Err(_) => {}
            }
        } else if let Some(re) = glob_regex(rel) {
            // Walk only below the literal prefix of the pattern.
            let prefix: PathBuf = rel_path
                .components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect();
            match rooted::open_dir_beneath(root_fd.as_fd(), &prefix) {
                Ok(dir) => walk(dir.as_fd(), &prefix, &mut |p| {
                    if re.is_match(&p.to_string_lossy()) {
                        r.found.push(p.to_owned());
                    }
                })?,
                Err(e) if rooted::is_escape(&e) => {
                    r.outside.push(pattern.clone());
                    continue;
                }
                Err(_) => {}
            }
        }
        if r.found.len() == before {
            r.unmatched.push(pattern.clone());
        }
    }
    Ok(r)
}

/// Calls `f` with every entry below `dir` (named `rel` relative to the root), descending into
/// real directories only.
fn walk(dir: BorrowedFd<'_>, rel: &Path, f: &mut dyn FnMut(&Path)) -> io::Result<()> {
    for (name, kind) in rooted::list(dir)? {
        let child = rel.join(&name);
        f(&child);
        if kind == rustix::fs::FileType::Directory {
            let sub = rooted::open_dir_beneath(dir, Path::new(&name))?;
            walk(sub.as_fd(), &child, f)?;
        }
    }
    Ok(())
}

pub(crate) fn glob_regex(pattern: &str) -> Option<Regex> {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` matches zero or more directories.
                if chars.peek() == Some(&'/') {
                    chars.next();
                    re.push_str("(?:.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re).ok()
}

/// Copies the matched `paths` (relative to `workdir`) into `store` (a fresh directory of the
/// runner's), keeping symlinks as symlinks (see [`rooted::copy_entry`]): a job that links an
/// artifact path to a host file gets the link saved, never the file's bytes.
pub(crate) fn save(workdir: &Path, paths: &[PathBuf], store: &Path) -> io::Result<()> {
    std::fs::create_dir_all(store)?;
    let src_root = rooted::open_root(workdir)?;
    let dst_root = rooted::open_root(store)?;
    for p in paths {
        let parent = p.parent().unwrap_or(Path::new(""));
        let Some(name) = p.file_name() else { continue };
        let src = rooted::open_dir_beneath(src_root.as_fd(), parent)?;
        let dst = rooted::ensure_dirs(dst_root.as_fd(), parent)?;
        rooted::copy_entry(src.as_fd(), name, dst.as_fd(), name)?;
    }
    Ok(())
}

/// Restores the artifacts saved in `saved` into `workdir`, a job's checkout, without following
/// any symlink the checkout holds (see [`rooted`]): a planted `out -> /host/dir` is replaced by
/// the artifact's `out/` directory, never written through.
pub(crate) fn restore(saved: &Path, workdir: &Path) -> io::Result<()> {
    let src = rooted::open_root(saved)?;
    let dst = rooted::open_root(workdir)?;
    for (name, _) in rooted::list(src.as_fd())? {
        rooted::copy_entry(src.as_fd(), &name, dst.as_fd(), &name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_plain_paths() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for f in ["out/a.txt", "out/sub/b.txt", "out/sub/c.log", "top.bin"] {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), f).unwrap();
        }
        let pats: Vec<String> = [
            "out/**/*.txt",
            "top.bin",
            "missing",
            "../etc/passwd",
            "out/*.log",
        ]
        .iter()
        .map(|s| (*s).into())
        .collect();
        let res = resolve_paths(r, &pats).unwrap();
        let (mut found, unmatched) = (res.found, res.unmatched);
        found.sort();
        let want: Vec<PathBuf> = ["out/a.txt", "out/sub/b.txt", "top.bin"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(found, want);
        assert_eq!(unmatched, ["missing", "../etc/passwd", "out/*.log"]);
    }

    #[test]
    fn copy_tree_keeps_symlinks_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink("d/f", src.join("link")).unwrap();
        std::fs::create_dir_all(src.join("work")).unwrap();
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst, Some(&src.join("work"))).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("d/f")).unwrap(), "x");
        assert_eq!(
            std::fs::read_link(dst.join("link")).unwrap(),
            Path::new("d/f")
        );
        assert!(!dst.join("work").exists());
    }
}
