//! `cache:` between jobs and runs: saved under a cache directory the runner owns (the CLI
//! uses `ROOT/pipeline-cache`), one directory per key, restored before the job's scripts and
//! saved after them, as GitLab Runner does.
//!
//! Keys come from the pipeline file and `key:files` from the job's checkout: both are
//! untrusted. A key is one path component (GitLab refuses `/`, `.` and `..`; we escape every
//! byte outside `[A-Za-z0-9._-]`), files are hashed through descriptors under the checkout,
//! and saving and restoring go through the same descriptor-relative copies as artifacts (a
//! symlink is kept as a symlink, never followed, on either side). Each key has a lock file:
//! restoring holds it shared, saving exclusive while the new content is renamed into place,
//! so concurrent jobs and runs never see a half-written cache.

use std::fs::File;
use std::io;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use sha2::{Digest as _, Sha256};

use super::{artifacts, rooted};
use crate::model::{Cache, CacheKey};
use crate::variables::expand;

/// The key of `cache` for a job with environment `env` whose checkout is `workdir`.
///
/// `key:files`: the SHA-256 of the named files' contents (each file's path and bytes; a
/// missing file counts as absent), prefixed by `prefix-` when given. GitLab hashes the
/// commits that last changed the files instead; a local run also has uncommitted changes,
/// which this sees.
///
/// # Errors
///
/// A key that is empty, `.` or `..` after expansion (GitLab refuses those too).
pub(crate) fn key(
    cache: &Cache,
    env: &std::collections::BTreeMap<String, String>,
    workdir: &Path,
) -> Result<String, String> {
    let key = match &cache.key {
        CacheKey::Text(t) => expand(t, env),
        CacheKey::Files { files, prefix } => {
            let root = rooted::open_root(workdir).map_err(|e| e.to_string())?;
            let mut hash = Sha256::new();
            for f in files {
                let rel = Path::new(f.trim_start_matches("./"));
                hash.update(f.as_bytes());
                hash.update([0]);
                match rooted::read_beneath(root.as_fd(), rel) {
                    Ok(text) => hash.update(text.as_bytes()),
                    Err(_) => hash.update(b"\xff(absent)"),
                }
                hash.update([0]);
            }
            let digest = hex(&hash.finalize());
            match prefix {
                Some(p) => format!("{}-{digest}", expand(p, env)),
                None => digest,
            }
        }
    };
    if key.is_empty() || key == "." || key == ".." || key.contains('/') {
        return Err(format!(
            "cache key {key:?} is not allowed (empty, `.`, `..` or containing `/`)"
        ));
    }
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The directory name of a key: bytes outside `[A-Za-z0-9._-]` escaped as `%XX`.
fn dir_name(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

fn lock(dir: &Path, key: &str, op: FlockOperation) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{}.lock", dir_name(key))))?;
    rustix::fs::flock(&file, op)?;
    Ok(file)
}

/// Restores the first of `keys` that has a saved cache into `workdir`; returns that key.
///
/// # Errors
///
/// IO errors of the lock or of the copy.
pub(crate) fn restore(dir: &Path, keys: &[String], workdir: &Path) -> io::Result<Option<String>> {
    for key in keys {
        let saved = dir.join(dir_name(key));
        let _lock = lock(dir, key, FlockOperation::LockShared)?;
        if saved.is_dir() {
            artifacts::restore(&saved, workdir)?;
            return Ok(Some(key.clone()));
        }
    }
    Ok(None)
}

/// Saves `paths` (matched in `workdir`) as the cache of `key`, replacing what was there.
///
/// # Errors
///
/// IO errors of the lock, the copy or the rename.
pub(crate) fn save(dir: &Path, key: &str, workdir: &Path, paths: &[PathBuf]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let staging = tempfile::Builder::new().prefix(".new-").tempdir_in(dir)?;
    let content = staging.path().join("content");
    artifacts::save(workdir, paths, &content)?;
    let target = dir.join(dir_name(key));
    let _lock = lock(dir, key, FlockOperation::LockExclusive)?;
    if target.exists() {
        let old = staging.path().join("old");
        std::fs::rename(&target, &old)?;
    }
    std::fs::rename(&content, &target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_and_refuse_paths() {
        let env = std::collections::BTreeMap::from([("REF".to_owned(), "main".to_owned())]);
        let text = |t: &str| Cache {
            key: CacheKey::Text(t.into()),
            ..Cache::default()
        };
        let dir = Path::new("/nonexistent");
        assert_eq!(key(&text("deps-$REF"), &env, dir).unwrap(), "deps-main");
        assert!(key(&text(".."), &env, dir).is_err());
        assert!(key(&text("a/b"), &env, dir).is_err());
        assert!(key(&text("$NOPE"), &env, dir).is_err());
        assert_eq!(dir_name("a b%"), "a%20b%25");
    }

    #[test]
    fn files_keys_follow_content_and_never_leave_the_checkout() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("w");
        std::fs::create_dir(&work).unwrap();
        std::fs::write(work.join("Cargo.lock"), "v1").unwrap();
        let c = Cache {
            key: CacheKey::Files {
                files: vec!["Cargo.lock".into()],
                prefix: Some("rust".into()),
            },
            ..Cache::default()
        };
        let env = std::collections::BTreeMap::new();
        let k1 = key(&c, &env, &work).unwrap();
        assert!(k1.starts_with("rust-") && k1.len() == 5 + 64, "{k1}");
        assert_eq!(key(&c, &env, &work).unwrap(), k1);
        std::fs::write(work.join("Cargo.lock"), "v2").unwrap();
        let k2 = key(&c, &env, &work).unwrap();
        assert_ne!(k1, k2);
        // A key file that links out of the checkout is hashed as absent, not read.
        std::fs::write(tmp.path().join("outside"), "v2").unwrap();
        std::fs::remove_file(work.join("Cargo.lock")).unwrap();
        let absent = key(&c, &env, &work).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), work.join("Cargo.lock")).unwrap();
        assert_eq!(key(&c, &env, &work).unwrap(), absent);
    }
}
