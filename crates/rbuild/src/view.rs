//! Read-only lookups in the stack of unpacked layer directories of an image, without mounting:
//! the metadata of an existing directory, `/etc/passwd` and `/etc/group` for `--chown` and USER.
//!
//! Layer directories are in overlay upperdir form: a deleted path is a character device 0/0, a
//! directory that replaces a lower one carries `trusted.overlay.opaque=y`.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use crate::rootfs::{Layers, Node};

/// The layer directories of an image, top-most first.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerView {
    dirs: Vec<PathBuf>,
}

impl LayerView {
    /// A view over `dirs`, top-most first. A layer that appears more than once (two steps
    /// that produced identical layers) is kept only where it is top-most: everything its lower
    /// copy provides, the upper copy provides too, so the merged view is the same — and
    /// overlayfs refuses the same lower directory twice.
    pub(crate) fn new(dirs: Vec<PathBuf>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let dirs = dirs
            .into_iter()
            .filter(|d| seen.insert(d.clone()))
            .collect();
        Self { dirs }
    }

    /// The directories, top-most first.
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Opens the layer directories for in-root lookups.
    ///
    /// # Errors
    ///
    /// When a layer directory cannot be opened.
    pub(crate) fn layers(&self) -> io::Result<Layers> {
        Layers::open(&self.dirs)
    }

    /// Reads a small file from the merged view.
    pub(crate) fn read(&self, rel: &str) -> Option<Vec<u8>> {
        self.layers().ok()?.read(rel, 16 << 20).ok().flatten()
    }

    /// Resolves a `--chown` spec (and the owner WORKDIR gives the directories it creates) as
    /// BuildKit's file operations do: like a USER (`uid`, `uid:gid`, `name`, `name:group`, looked up in the image's
    /// `/etc/passwd` and `/etc/group`), except that a numeric
    /// user without a group gets the same number as its group (`--chown=1234` is 1234:1234).
    ///
    /// # Errors
    ///
    /// A message naming the user or group that the image does not define.
    pub(crate) fn resolve_chown(&self, spec: &str) -> Result<(u32, u32), String> {
        self.resolve_owner(spec, true)
    }

    /// The `/etc/passwd` fields (at least four) of `user`: looked up by uid when it is a
    /// number (runc's rule), by name otherwise.
    fn passwd_entry(&self, user: &str) -> Option<Vec<String>> {
        let passwd = self.read("etc/passwd")?;
        let uid = user.parse::<u32>().ok();
        String::from_utf8_lossy(&passwd)
            .lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| {
                f.len() > 3
                    && match uid {
                        Some(uid) => f[2].parse() == Ok(uid),
                        None => f[0] == user,
                    }
            })
    }

    /// The home directory of a USER spec (`name` or `uid`, with an optional `:group`) in the
    /// image's `/etc/passwd`; `/` when it has none (runc sets HOME this way).
    pub(crate) fn home_of(&self, user: Option<&str>) -> String {
        let name = user.unwrap_or("0").split(':').next().unwrap_or("0");
        let name = if name.is_empty() { "0" } else { name };
        self.passwd_entry(name)
            .and_then(|f| f.get(5).cloned())
            .unwrap_or_else(|| "/".to_owned())
    }

    fn resolve_owner(&self, spec: &str, numeric_group: bool) -> Result<(u32, u32), String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let (uid, primary) = if let Ok(uid) = user.parse::<u32>() {
            if numeric_group {
                (uid, uid)
            } else {
                let primary = self
                    .passwd_entry(user)
                    .and_then(|f| f[3].parse().ok())
                    .unwrap_or(0);
                (uid, primary)
            }
        } else {
            self.passwd_entry(user)
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
pub(crate) struct ViewEntry {
    /// The host path in the layer directory that provides it (every directory on the way is a
    /// real directory of that layer; layer directories are immutable).
    pub host: PathBuf,
    /// The entry itself, readable through descriptors.
    pub node: Node,
}

impl LayerView {
    /// Lists `path` and everything below it in the merged view, as overlayfs would show it:
    /// upper layers win, whiteouts and opaque directories hide lower paths, a non-directory
    /// hides everything below it in lower layers. Symlinks in `path` itself are followed inside
    /// the image (BuildKit follows them in COPY sources); the listing's keys keep the path as
    /// given (cleaned, no leading `/`), with what is below it appended.
    ///
    /// # Errors
    ///
    /// When a layer cannot be read, or `path` resolves through a non-directory or a loop.
    pub(crate) fn list(&self, path: &str) -> io::Result<BTreeMap<String, ViewEntry>> {
        let layers = self.layers()?;
        let mut out = BTreeMap::new();
        let Some(start) = layers.find(path)? else {
            return Ok(out);
        };
        let given = crate::rootfs::clean_rel(path).unwrap_or_default();
        let base = start.rel.clone();
        layers.walk(&start, &mut |n| {
            let below = n
                .rel
                .strip_prefix(&base)
                .unwrap_or(&n.rel)
                .trim_start_matches('/');
            let key = match (given.is_empty(), below.is_empty()) {
                (true, _) => below.to_owned(),
                (_, true) => given.clone(),
                _ => format!("{given}/{below}"),
            };
            out.insert(
                key,
                ViewEntry {
                    host: layers.host_path(n),
                    node: n.clone(),
                },
            );
            Ok(())
        })?;
        Ok(out)
    }
}
