//! Read-only lookups in the stack of unpacked layer directories of an image, without mounting:
//! the metadata of an existing directory, `/etc/passwd` and `/etc/group` for `--chown` and USER.
//!
//! Layer directories are in overlay upperdir form: a deleted path is a character device 0/0, a
//! directory that replaces a lower one carries `trusted.overlay.opaque=y`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The layer directories of an image, top-most first.
#[derive(Debug, Clone, Default)]
pub struct LayerView {
    dirs: Vec<PathBuf>,
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    matches!(xattr_get(path, "trusted.overlay.opaque"), Some(v) if v == b"y")
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, name).ok().flatten()
}

impl LayerView {
    /// A view over `dirs`, top-most first.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// The directories, top-most first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The host path of `rel` (slash-separated, relative to `/`) in the merged view, if it
    /// exists. Symlinks inside the image are not followed.
    pub fn find(&self, rel: &str) -> Option<PathBuf> {
        let comps: Vec<&str> = rel
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        'layers: for dir in &self.dirs {
            let mut p = dir.clone();
            for (i, c) in comps.iter().enumerate() {
                p.push(c);
                match fs::symlink_metadata(&p) {
                    Ok(md) if is_whiteout(&md) => return None,
                    Ok(md) if i + 1 == comps.len() => {
                        let _ = md;
                        return Some(p);
                    }
                    Ok(md) if md.is_dir() => {
                        if is_opaque(&p) {
                            // Nothing below this directory comes from lower layers.
                            let rest: PathBuf = comps[i + 1..].iter().collect();
                            let full = p.join(rest);
                            return fs::symlink_metadata(&full)
                                .ok()
                                .filter(|m| !is_whiteout(m))
                                .map(|_| full);
                        }
                    }
                    Ok(_) => return None, // a file where a directory was expected
                    Err(_) => continue 'layers,
                }
            }
            if comps.is_empty() {
                return Some(dir.clone());
            }
        }
        None
    }

    /// Reads a small file from the merged view.
    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        self.find(rel).and_then(|p| fs::read(p).ok())
    }

    /// Resolves a USER / `--chown` spec (`uid`, `uid:gid`, `name`, `name:group`) against the
    /// image's `/etc/passwd` and `/etc/group`, as docker does. A user without a group gets the
    /// user's primary group (0 when the user is numeric and unknown).
    ///
    /// # Errors
    ///
    /// A message naming the user or group that the image does not define.
    pub fn resolve_user(&self, spec: &str) -> Result<(u32, u32), String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let passwd =
            String::from_utf8_lossy(&self.read("etc/passwd").unwrap_or_default()).into_owned();
        let (uid, primary) = if let Ok(uid) = user.parse::<u32>() {
            let primary = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2].parse() == Ok(uid))
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(0);
            (uid, primary)
        } else {
            passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[0] == user)
                .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .ok_or_else(|| {
                    format!("unable to find user {user}: no matching entries in passwd file")
                })?
        };
        let gid = match group {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    let groups =
                        String::from_utf8_lossy(&self.read("etc/group").unwrap_or_default())
                            .into_owned();
                    groups
                        .lines()
                        .map(|l| l.split(':').collect::<Vec<_>>())
                        .find(|f| f.len() > 2 && f[0] == g)
                        .and_then(|f| f[2].parse().ok())
                        .ok_or_else(|| {
                            format!("unable to find group {g}: no matching entries in group file")
                        })?
                }
            },
        };
        Ok((uid, gid))
    }
}

/// One path of a merged listing.
#[derive(Debug, Clone)]
pub struct ViewEntry {
    /// The host path in the layer directory that provides it.
    pub host: PathBuf,
    /// Its metadata (not following symlinks).
    pub metadata: fs::Metadata,
}

impl LayerView {
    /// Lists everything at and below `prefix` (relative, slash-separated; empty for the whole
    /// root) in the merged view, as overlayfs would show it: upper layers win, whiteouts hide
    /// lower paths, an opaque directory hides what lower layers have below it.
    pub fn list(&self, prefix: &str) -> std::collections::BTreeMap<String, ViewEntry> {
        use std::collections::{BTreeMap, BTreeSet};
        let prefix = prefix.trim_matches('/');
        let comps: Vec<&str> = prefix.split('/').filter(|c| !c.is_empty()).collect();
        let mut out: BTreeMap<String, ViewEntry> = BTreeMap::new();
        let mut deleted: BTreeSet<String> = BTreeSet::new();
        let mut opaque: BTreeSet<String> = BTreeSet::new();
        let hidden = |rel: &str, deleted: &BTreeSet<String>, opaque: &BTreeSet<String>| {
            let mut cur = String::new();
            for c in rel.split('/') {
                if !cur.is_empty() {
                    if opaque.contains(&cur) {
                        return true;
                    }
                    cur.push('/');
                }
                cur.push_str(c);
                if deleted.contains(&cur) {
                    return true;
                }
            }
            false
        };
        for dir in &self.dirs {
            // Ancestors of the prefix in this layer: a whiteout or non-directory ends the search.
            let mut p = dir.clone();
            let mut blocked = false;
            let mut so_far = String::new();
            for c in &comps[..comps.len().saturating_sub(1)] {
                p.push(c);
                if !so_far.is_empty() {
                    so_far.push('/');
                }
                so_far.push_str(c);
                match fs::symlink_metadata(&p) {
                    Ok(md) if is_whiteout(&md) => {
                        deleted.insert(so_far.clone());
                        blocked = true;
                        break;
                    }
                    Ok(md) if md.is_dir() => {
                        if is_opaque(&p) {
                            opaque.insert(so_far.clone());
                        }
                    }
                    Ok(_) => {
                        blocked = true;
                        break;
                    }
                    Err(_) => {
                        blocked = true;
                        break;
                    }
                }
            }
            if blocked && hidden(prefix, &deleted, &opaque) {
                break;
            }
            if blocked {
                continue;
            }
            let start = dir.join(prefix);
            if fs::symlink_metadata(&start).is_err() {
                continue;
            }
            // Whiteouts and opaque dirs of this layer hide lower layers only.
            let mut new_deleted = BTreeSet::new();
            let mut new_opaque = BTreeSet::new();
            for item in walkdir::WalkDir::new(&start)
                .follow_links(false)
                .sort_by_file_name()
            {
                let Ok(item) = item else { continue };
                let Ok(rel) = item.path().strip_prefix(dir) else {
                    continue;
                };
                let rel = rel.to_string_lossy().into_owned();
                if rel.is_empty() || hidden(&rel, &deleted, &opaque) {
                    continue;
                }
                let Ok(md) = item.path().symlink_metadata() else {
                    continue;
                };
                if is_whiteout(&md) {
                    new_deleted.insert(rel);
                    continue;
                }
                if md.is_dir() && is_opaque(item.path()) {
                    new_opaque.insert(rel.clone());
                }
                out.entry(rel).or_insert(ViewEntry {
                    host: item.path().to_owned(),
                    metadata: md,
                });
            }
            deleted.extend(new_deleted);
            opaque.extend(new_opaque);
            if hidden(prefix, &deleted, &opaque) {
                break;
            }
        }
        out
    }
}
