//! Content-addressed blobs under `blobs/sha256/<hex>` (image-spec `image-layout.md`, "Blobs").
//!
//! A blob is streamed into a temp file in `<root>/tmp` through a hashing writer, fsynced,
//! checked against the digest the caller expects, and renamed into place. A path under
//! `blobs/` that exists is therefore always complete and correct, and `has_blob` is a `stat`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use rbuild_oci::{Digest, Sha256Writer};
use tempfile::NamedTempFile;

use crate::{Error, Result, Store, atomic};

/// A blob being written. Write the bytes, then [`commit`](BlobWriter::commit); dropping it
/// without committing removes the temp file.
pub struct BlobWriter {
    inner: Sha256Writer<BufWriter<NamedTempFile>>,
    blob_dir: PathBuf,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("written", &self.inner.written())
            .field("blob_dir", &self.blob_dir)
            .finish()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.written()
    }

    /// Finishes the blob: flush, fsync, compare with `expected` (when given), rename into
    /// `blobs/sha256/<hex>`. If the blob is already present the temp file is dropped and the
    /// existing (equal) blob kept. Returns the digest and size.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] when the bytes do not hash to `expected` (the temp file is
    /// removed), [`Error::WriteBlob`] / [`Error::CommitBlob`] for IO failures.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (buffered, digest, size) = self.inner.finish();
        let tmp = buffered.into_inner().map_err(|e| Error::WriteBlob {
            source: e.into_error(),
        })?;
        if let Some(expected) = expected
            && *expected != digest
        {
            // `tmp` is dropped here, which deletes the file.
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let dest = self.blob_dir.join(digest.hex());
        let commit_err = |source| Error::CommitBlob {
            digest: digest.clone(),
            source,
        };
        if dest.exists() {
            return Ok((digest, size));
        }
        tmp.as_file().sync_all().map_err(commit_err)?;
        tmp.persist(&dest).map_err(|e| commit_err(e.error))?;
        atomic::sync_parent(&dest).map_err(commit_err)?;
        Ok((digest, size))
    }
}

impl Store {
    /// Where the blob `d` lives (whether or not it is present).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blob_dir().join(d.hex())
    }

    /// Whether the blob `d` is present (and therefore complete).
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Starts writing a new blob into a temp file under `<root>/tmp`.
    ///
    /// # Errors
    ///
    /// [`Error::CreateTemp`] when the temp file cannot be created.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix(&atomic::temp_prefix("blob"))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(&dir)
            .map_err(|source| Error::CreateTemp { dir, source })?;
        Ok(BlobWriter {
            inner: Sha256Writer::new(BufWriter::with_capacity(256 * 1024, tmp)),
            blob_dir: self.blob_dir(),
        })
    }

    /// A private (0600) temp file under `<root>/tmp`, on the store's filesystem, removed when
    /// dropped; a crash leaves an entry that the next [`Store::open`] or prune removes. `kind`
    /// starts its name (`<kind>-<pid>-…`, see the crate docs), e.g. `download`.
    ///
    /// # Errors
    ///
    /// [`Error::CreateTemp`] when the file cannot be created.
    pub fn temp_file(&self, kind: &str) -> Result<NamedTempFile> {
        let dir = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(&atomic::temp_prefix(kind))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(&dir)
            .map_err(|source| Error::CreateTemp { dir, source })
    }

    /// Stores `bytes` as a blob and returns its digest. A blob already present is not rewritten.
    ///
    /// # Errors
    ///
    /// As [`Store::blob_writer`] and [`BlobWriter::commit`].
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256_of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(|source| Error::WriteBlob { source })?;
        let (d, _) = w.commit(Some(&digest))?;
        Ok(d)
    }

    /// Reads the whole blob `d`, verifying its digest (meant for manifests and configs; stream
    /// layers with [`Store::open_blob`]).
    ///
    /// # Errors
    ///
    /// [`Error::ReadBlob`] when it is missing or unreadable ([`Error::is_not_found`] tells
    /// which), [`Error::CorruptBlob`] when its content no longer matches its name.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut bytes)
            .map_err(|source| Error::ReadBlob {
                digest: d.clone(),
                source,
            })?;
        let actual = Digest::sha256_of(&bytes);
        if actual != *d {
            return Err(Error::CorruptBlob {
                digest: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens the blob `d` for reading.
    ///
    /// # Errors
    ///
    /// [`Error::ReadBlob`] when it is missing or cannot be opened.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).map_err(|source| Error::ReadBlob {
            digest: d.clone(),
            source,
        })
    }

    /// The size of the blob `d` in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::ReadBlob`] when it is missing.
    pub fn blob_size(&self, d: &Digest) -> Result<u64> {
        fs::metadata(self.blob_path(d))
            .map(|m| m.len())
            .map_err(|source| Error::ReadBlob {
                digest: d.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn tmp_count(store: &Store) -> usize {
        fs::read_dir(store.tmp_dir()).unwrap().count()
    }

    #[test]
    fn streamed_blob_lands_under_its_digest() {
        let (_d, store) = store();
        let mut w = store.blob_writer().unwrap();
        for _ in 0..1000 {
            w.write_all(b"0123456789").unwrap();
        }
        assert_eq!(w.written(), 10_000);
        let expected = Digest::sha256_of(&b"0123456789".repeat(1000));
        let (d, size) = w.commit(Some(&expected)).unwrap();
        assert_eq!(d, expected);
        assert_eq!(size, 10_000);
        assert!(store.has_blob(&d));
        assert_eq!(store.blob_size(&d).unwrap(), 10_000);
        assert_eq!(store.read_blob(&d).unwrap(), b"0123456789".repeat(1000));
        assert_eq!(tmp_count(&store), 0);
    }

    #[test]
    fn digest_mismatch_is_an_error_and_leaves_nothing() {
        let (_d, store) = store();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"actual").unwrap();
        let wrong = Digest::sha256_of(b"expected");
        let err = w.commit(Some(&wrong)).unwrap_err();
        match err {
            Error::DigestMismatch { expected, actual } => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, Digest::sha256_of(b"actual"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!store.has_blob(&Digest::sha256_of(b"actual")));
        assert!(!store.has_blob(&wrong));
        assert_eq!(tmp_count(&store), 0);
    }

    #[test]
    fn putting_twice_keeps_one_blob_and_no_temps() {
        let (_d, store) = store();
        let a = store.put_blob(b"same").unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"same").unwrap();
        let (b, _) = w.commit(None).unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::read_dir(store.blob_dir()).unwrap().count(), 1);
        assert_eq!(tmp_count(&store), 0);
    }

    #[test]
    fn dropped_writer_removes_its_temp() {
        let (_d, store) = store();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"partial").unwrap();
        assert_eq!(tmp_count(&store), 1);
        drop(w);
        assert_eq!(tmp_count(&store), 0);
    }

    #[test]
    fn missing_and_corrupt_blobs_are_told_apart() {
        let (_d, store) = store();
        let missing = Digest::sha256_of(b"nope");
        let err = store.read_blob(&missing).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        let d = store.put_blob(b"good").unwrap();
        fs::write(store.blob_path(&d), b"evil").unwrap();
        let err = store.read_blob(&d).unwrap_err();
        assert!(
            matches!(err, Error::CorruptBlob { ref actual, .. } if *actual == Digest::sha256_of(b"evil"))
        );
        assert!(!err.is_not_found());
    }
}
