//! Whole-store consistency check: the store's own checks ([`Store::check_with`]) plus
//! verification of every unpacked layer directory against the blob it came from.
//!
//! A layer directory is verified by unpacking its blob afresh into a staging directory with the
//! same unpacker that made it ([`rbuild_layer::unpack_layer`]), checking that the uncompressed
//! stream hashes to the directory's diff id, and comparing the two trees entry by entry: type,
//! mode, owner, size and content of regular files, link targets, device numbers (whiteouts are
//! character devices 0/0) and the overlay opaque xattr. Modification times are not compared:
//! the layer writer clamps them to `SOURCE_DATE_EPOCH` in the tar while the RUN upperdir keeps
//! the originals, and directory times change whenever a child is created.
//!
//! ```no_run
//! use rbuild::Store;
//! use rbuild::check::{CheckOptions, check};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("/var/lib/rbuild".as_ref())?;
//! let report = check(&store, CheckOptions::default())?;
//! for problem in &report.problems {
//!     eprintln!("{problem}");
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rbuild_oci::Sha256Writer;
use rbuild_store::{LayerMismatch, LayerPair, Store};

pub use rbuild_store::{CheckOptions, CheckReport, Problem};

/// Checks the whole store, layer directories included; with [`CheckOptions::repair`], drops
/// what is broken so that the next build recreates it.
///
/// # Errors
///
/// Store errors (locking, listing directories); damage is reported in [`CheckReport::problems`],
/// not as an error.
pub fn check(store: &Store, opts: CheckOptions) -> rbuild_store::Result<CheckReport> {
    store.check_with(opts, &verify_layer_dir)
}

/// Verifies one layer directory against its blob (see the module docs).
///
/// # Errors
///
/// The first difference, or why the blob could not be unpacked.
pub fn verify_layer_dir(store: &Store, pair: &LayerPair) -> Result<(), LayerMismatch> {
    verify(store, pair).map_err(|reason| LayerMismatch::new(pair, reason))
}

fn verify(store: &Store, pair: &LayerPair) -> Result<(), String> {
    let staging = store
        .staging()
        .map_err(|e| format!("cannot create a staging directory: {e}"))?;
    let blob = store
        .open_blob(&pair.blob)
        .map_err(|e| format!("cannot open layer blob {}: {e}", pair.blob))?;
    let stats = rbuild_layer::unpack_layer(BufReader::new(blob), &staging.upper())
        .map_err(|e| format!("cannot unpack layer blob {}: {e}", pair.blob))?;
    if stats.diff_id != pair.diff_id {
        return Err(format!(
            "blob {} uncompresses to {}, not to the directory's diff id",
            pair.blob, stats.diff_id
        ));
    }
    let expected =
        snapshot(&staging.upper()).map_err(|e| format!("cannot read unpacked blob: {e}"))?;
    let actual = snapshot(&pair.dir).map_err(|e| format!("cannot read the directory: {e}"))?;
    compare(&expected, &actual)
}

/// What is compared of one entry.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Regular files: size and content digest; symlinks: the target; devices: the number.
    detail: String,
    opaque: bool,
}

fn snapshot(root: &Path) -> io::Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    for item in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let item = item.map_err(io::Error::other)?;
        let path = item.path();
        let m = fs::symlink_metadata(path)?;
        let ft = m.file_type();
        let (kind, detail) = if ft.is_file() {
            let mut w = Sha256Writer::new(io::sink());
            io::copy(&mut File::open(path)?, &mut w)?;
            let (_, digest, size) = w.finish();
            ("file", format!("{size} bytes {digest}"))
        } else if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            ("symlink", fs::read_link(path)?.display().to_string())
        } else if ft.is_char_device() {
            ("char", m.rdev().to_string())
        } else if ft.is_block_device() {
            ("block", m.rdev().to_string())
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("other", String::new())
        };
        let opaque = ft.is_dir()
            && xattr::get(path, rbuild_layer::overlay_opaque_xattr())
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y");
        let rel = path
            .strip_prefix(root)
            .map_err(io::Error::other)?
            .to_owned();
        out.insert(
            rel,
            Entry {
                kind,
                // Symlink modes are not meaningful on Linux (always 0777).
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                detail,
                opaque,
            },
        );
    }
    Ok(out)
}

fn compare(
    expected: &BTreeMap<PathBuf, Entry>,
    actual: &BTreeMap<PathBuf, Entry>,
) -> Result<(), String> {
    for (path, want) in expected {
        match actual.get(path) {
            None => return Err(format!("/{} is missing", path.display())),
            Some(got) if got != want => {
                return Err(format!(
                    "/{} differs: expected {} mode {:o} {}:{} {}{}, found {} mode {:o} {}:{} {}{}",
                    path.display(),
                    want.kind,
                    want.mode,
                    want.uid,
                    want.gid,
                    want.detail,
                    if want.opaque { " (opaque)" } else { "" },
                    got.kind,
                    got.mode,
                    got.uid,
                    got.gid,
                    got.detail,
                    if got.opaque { " (opaque)" } else { "" },
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = actual.keys().find(|p| !expected.contains_key(*p)) {
        return Err(format!("/{} is not in the layer", extra.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_layer::{LayerOptions, write_layer};
    use rbuild_oci::Digest;

    /// A store whose only layer directory was committed from `tree` and whose blob was written
    /// from the same tree, paired through a cache entry as the engine does.
    fn store_with_layer() -> (tempfile::TempDir, Store, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("root")).unwrap();
        let staging = store.staging().unwrap();
        let upper = staging.upper();
        fs::create_dir(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/motd"), b"hello\n").unwrap();
        std::os::unix::fs::symlink("motd", upper.join("etc/link")).unwrap();
        let mut w = store.blob_writer().unwrap();
        let (_, desc) = write_layer(&upper, &mut w, &LayerOptions::default()).unwrap();
        let (blob, _) = w.commit(Some(&desc.digest)).unwrap();
        store.commit_layer_dir(staging, &desc.diff_id).unwrap();
        let entry = rbuild_store::CacheEntry {
            blobs: vec![blob],
            layer_dirs: vec![desc.diff_id.clone()],
            payload: serde_json::Value::Null,
        };
        store.cache_put("k", &entry).unwrap();
        (dir, store, desc.diff_id)
    }

    #[test]
    fn an_intact_layer_directory_verifies() {
        let (_dir, store, _) = store_with_layer();
        let report = check(&store, CheckOptions::default()).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.layer_dirs_verified, 1);
    }

    #[test]
    fn changed_added_and_removed_files_are_found_and_repaired() {
        for damage in ["change", "add", "remove"] {
            let (_dir, store, diff_id) = store_with_layer();
            let dir = store.layer_dir(&diff_id);
            match damage {
                "change" => fs::write(dir.join("etc/motd"), b"HELLO\n").unwrap(),
                "add" => fs::write(dir.join("etc/evil"), b"x").unwrap(),
                _ => fs::remove_file(dir.join("etc/link")).unwrap(),
            }
            let report = check(&store, CheckOptions::default()).unwrap();
            assert!(
                matches!(&report.problems[..], [Problem::LayerDir { .. }]),
                "{damage}: {:?}",
                report.problems
            );
            check(&store, CheckOptions::default().repair(true)).unwrap();
            assert!(!store.has_layer_dir(&diff_id), "{damage}");
            assert!(check(&store, CheckOptions::default()).unwrap().is_clean());
        }
    }
}
