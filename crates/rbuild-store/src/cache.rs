//! The step cache (`cache/entries/`) and small named state files (`cache/state/`).
//!
//! A cache key is any string the engine computes (see ARCHITECTURE "Cache keys"); the entry
//! file is named by the sha256 of the key, so keys of any length or alphabet map to safe file
//! names, and it stores the key itself so a lookup can confirm it. Entries name the blobs and
//! layer directories they rely on, which lets [`Store::prune`] drop entries whose content is
//! gone and lets [`Store::cache_get`] treat such entries as misses.

use std::fs;
use std::io;
use std::path::PathBuf;

use rbuild_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Store, atomic};

/// A cached step result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CacheEntry {
    /// Blobs the result refers to (layer blobs, configs, manifests).
    #[serde(default)]
    pub blobs: Vec<Digest>,
    /// Unpacked layer directories (by diff id) the result refers to.
    #[serde(default)]
    pub layer_dirs: Vec<Digest>,
    /// Engine data (config changes, layer descriptors, …), opaque to the store.
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// The on-disk form: the key is kept to confirm a lookup.
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    key: String,
    #[serde(flatten)]
    entry: CacheEntry,
}

impl Store {
    fn cache_entry_path(&self, key: &str) -> PathBuf {
        self.cache_entries_dir()
            .join(format!("{}.json", Digest::sha256_of(key.as_bytes()).hex()))
    }

    /// Looks `key` up. An entry whose blobs or layer directories are no longer all present is a
    /// miss (`None`): using it would fail later, and the step must run again anyway.
    ///
    /// # Errors
    ///
    /// [`Error::ReadCacheEntry`] / [`Error::ParseCacheEntry`] when the entry exists but cannot be
    /// read or parsed.
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheEntry>> {
        let path = self.cache_entry_path(key);
        let Some(stored) = read_entry(&path)? else {
            return Ok(None);
        };
        if stored.key != key {
            return Ok(None);
        }
        let entry = stored.entry;
        let complete = entry.blobs.iter().all(|d| self.has_blob(d))
            && entry.layer_dirs.iter().all(|d| self.has_layer_dir(d));
        Ok(complete.then_some(entry))
    }

    /// Stores `entry` under `key`, replacing any previous entry atomically.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] / [`Error::WriteFile`].
    pub fn cache_put(&self, key: &str, entry: &CacheEntry) -> Result<()> {
        let stored = StoredEntry {
            key: key.to_owned(),
            entry: entry.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|source| Error::Serialize {
            what: "cache entry",
            source,
        })?;
        let path = self.cache_entry_path(key);
        atomic::write_atomic(&self.tmp_dir(), &path, &bytes)
            .map_err(|source| Error::WriteFile { path, source })
    }

    /// Reads the state file `name`, `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::StateName`] for a name that is not a plain file name, [`Error::ReadState`].
    pub fn state_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.state_path(name)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::ReadState { path, source }),
        }
    }

    /// Replaces the state file `name` with `bytes` atomically.
    ///
    /// # Errors
    ///
    /// [`Error::StateName`], [`Error::WriteFile`].
    pub fn state_put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.state_path(name)?;
        atomic::write_atomic(&self.tmp_dir(), &path, bytes)
            .map_err(|source| Error::WriteFile { path, source })
    }

    fn state_path(&self, name: &str) -> Result<PathBuf> {
        let ok = !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(self.state_dir().join(name))
        } else {
            Err(Error::StateName {
                name: name.to_owned(),
            })
        }
    }

    /// All cache entries as (file path, entry), for garbage collection. Unparsable entries
    /// are returned with `None` so that prune can delete them.
    pub(crate) fn cache_entries(&self) -> Result<Vec<(PathBuf, Option<CacheEntry>)>> {
        let dir = self.cache_entries_dir();
        let list_err = |source| Error::ListDir {
            path: dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(list_err)? {
            let path = entry.map_err(list_err)?.path();
            let parsed = match read_entry(&path) {
                Ok(Some(stored)) => Some(stored.entry),
                Ok(None) => continue,
                Err(Error::ParseCacheEntry { .. }) => None,
                Err(e) => return Err(e),
            };
            out.push((path, parsed));
        }
        Ok(out)
    }
}

fn read_entry(path: &PathBuf) -> Result<Option<StoredEntry>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::ReadCacheEntry {
                path: path.clone(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::ParseCacheEntry {
            path: path.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn cache_round_trip_and_replace() {
        let (_d, store) = store();
        let key = "sha256:abc\nRUN echo hi\0weird/key";
        assert_eq!(store.cache_get(key).unwrap(), None);
        let blob = store.put_blob(b"layer").unwrap();
        let entry = CacheEntry {
            blobs: vec![blob.clone()],
            layer_dirs: vec![],
            payload: serde_json::json!({"env": ["A=1"], "layer": null}),
        };
        store.cache_put(key, &entry).unwrap();
        assert_eq!(store.cache_get(key).unwrap(), Some(entry.clone()));
        assert_eq!(store.cache_get("other").unwrap(), None);

        let replaced = CacheEntry {
            payload: serde_json::json!(2),
            ..entry
        };
        store.cache_put(key, &replaced).unwrap();
        assert_eq!(store.cache_get(key).unwrap(), Some(replaced));
        assert_eq!(store.cache_entries().unwrap().len(), 1);
    }

    #[test]
    fn entry_with_missing_content_is_a_miss() {
        let (_d, store) = store();
        let entry = CacheEntry {
            blobs: vec![],
            layer_dirs: vec![Digest::sha256_of(b"not unpacked")],
            payload: serde_json::Value::Null,
        };
        store.cache_put("k", &entry).unwrap();
        assert_eq!(store.cache_get("k").unwrap(), None);
    }

    #[test]
    fn corrupt_entry_is_an_error_naming_the_file() {
        let (_d, store) = store();
        store.cache_put("k", &CacheEntry::default()).unwrap();
        let path = store.cache_entry_path("k");
        fs::write(&path, b"{not json").unwrap();
        match store.cache_get("k") {
            Err(Error::ParseCacheEntry { path: p, .. }) => assert_eq!(p, path),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(store.cache_entries().unwrap(), vec![(path, None)]);
    }

    #[test]
    fn state_files_round_trip_and_reject_paths() {
        let (_d, store) = store();
        assert_eq!(store.state_get("context-hashes.json").unwrap(), None);
        store.state_put("context-hashes.json", b"{}").unwrap();
        store
            .state_put("context-hashes.json", b"{\"a\":1}")
            .unwrap();
        assert_eq!(
            store.state_get("context-hashes.json").unwrap().as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        for bad in ["", ".", "..", "../x", "a/b"] {
            assert!(
                matches!(store.state_put(bad, b""), Err(Error::StateName { .. })),
                "{bad}"
            );
        }
    }
}
