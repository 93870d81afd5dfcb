//! Job directories and artifacts on disk: copying a project, saving `artifacts:paths`,
//! restoring them into a later job's directory.

use std::io;
use std::path::{Path, PathBuf};

use regex::Regex;

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

/// Resolves `artifacts:paths` entries against `root`: plain paths (files or whole directories)
/// and globs with `*` (within one path component) and `**` (any depth), as GitLab Runner's
/// doublestar matching does. Paths that would leave `root` (`..`, absolute) are ignored.
/// Returns the matched paths relative to `root`, and the patterns that matched nothing.
pub(crate) fn resolve_paths(root: &Path, patterns: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let mut found = Vec::new();
    let mut unmatched = Vec::new();
    for pattern in patterns {
        let rel = pattern.trim_start_matches("./").trim_end_matches('/');
        let rel_path = Path::new(rel);
        if rel.is_empty()
            || rel_path.is_absolute()
            || rel_path.components().any(|c| c.as_os_str() == "..")
        {
            unmatched.push(pattern.clone());
            continue;
        }
        let before = found.len();
        if !rel.contains(['*', '?', '[']) {
            if std::fs::symlink_metadata(root.join(rel)).is_ok() {
                found.push(rel_path.to_owned());
            }
        } else if let Some(re) = glob_regex(rel) {
            // Walk only below the literal prefix of the pattern.
            let prefix: PathBuf = rel_path
                .components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect();
            walk(root, &prefix, &mut |p| {
                if re.is_match(&p.to_string_lossy()) {
                    found.push(p.to_owned());
                }
            });
        }
        if found.len() == before {
            unmatched.push(pattern.clone());
        }
    }
    (found, unmatched)
}

fn walk(root: &Path, rel: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let child = rel.join(entry.file_name());
        f(&child);
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &child, f);
        }
    }
}

fn glob_regex(pattern: &str) -> Option<Regex> {
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

/// Copies the matched `paths` (relative to `workdir`) into `store`.
pub(crate) fn save(workdir: &Path, paths: &[PathBuf], store: &Path) -> io::Result<()> {
    std::fs::create_dir_all(store)?;
    for p in paths {
        copy_tree(&workdir.join(p), &store.join(p), None)?;
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
        let (mut found, unmatched) = resolve_paths(r, &pats);
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
