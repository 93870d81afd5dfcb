//! The store's error type: one variant per failed operation, carrying the path, digest or
//! reference it was working on and the underlying cause as `source()`.

use std::io;
use std::path::PathBuf;

use rbuild_oci::{Digest, Reference};

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Creating the root directory or one of its subdirectories failed.
    #[error("cannot create store directory {path}")]
    CreateRoot {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting a store directory to mode 0700 failed.
    #[error("cannot restrict store directory {path} to its owner (mode 0700)")]
    Restrict {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory exists, is not empty and holds no `oci-layout` file: refusing to write into
    /// someone else's data.
    #[error(
        "{path} is not an rbuild store (no oci-layout file and not empty); choose an empty or new directory"
    )]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },
    /// Reading or parsing `oci-layout` failed.
    #[error("cannot read OCI layout marker {path}")]
    ReadLayout {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `oci-layout` is not valid JSON of the expected shape.
    #[error("cannot parse OCI layout marker {path}")]
    ParseLayout {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// `oci-layout` names a version this store does not understand.
    #[error("{path} declares image layout version `{version}`, expected 1.0.0")]
    LayoutVersion {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The version found.
        version: String,
    },
    /// Taking the root lock failed.
    #[error("cannot lock {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating a temporary file or directory under `<root>/tmp` failed.
    #[error("cannot create a temporary entry in {dir}")]
    CreateTemp {
        /// The temp directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Flushing, syncing or renaming a new blob into place failed.
    #[error("cannot store blob {digest}")]
    CommitBlob {
        /// The digest computed over the written bytes.
        digest: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the bytes of a new blob failed.
    #[error("cannot write blob")]
    WriteBlob {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The written bytes do not hash to the digest the caller expected.
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the caller announced.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Reading a blob failed (including: it is not in the store).
    #[error("cannot read blob {digest}")]
    ReadBlob {
        /// The blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A stored blob no longer hashes to its name: disk corruption or outside tampering.
    #[error("blob {digest} is corrupt (its content hashes to {actual}); delete it and pull again")]
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// A manifest, index or config blob is not valid JSON of the expected shape.
    #[error("cannot parse {what} {digest}")]
    ParseBlob {
        /// `manifest`, `index` or `config`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Reading `index.json` failed.
    #[error("cannot read image index {path}")]
    ReadIndex {
        /// The `index.json` path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `index.json` is not a valid OCI image index.
    #[error("cannot parse image index {path}")]
    ParseIndex {
        /// The `index.json` path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The descriptor to tag does not name a sha256 blob present in the store: every tag
    /// must point at content, or other readers of the layout fail on it.
    #[error("cannot tag {reference}: manifest {digest} is not in the store; write it first")]
    TagMissingManifest {
        /// The reference.
        reference: Reference,
        /// The descriptor's digest as written.
        digest: String,
    },
    /// Tagging needs a tag; a reference that only pins a digest cannot name an image.
    #[error("cannot tag {reference}: the reference has no tag")]
    TagWithoutTag {
        /// The reference.
        reference: Reference,
    },
    /// Serialising JSON for a file failed.
    #[error("cannot serialise {what}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Writing a file atomically (temp + fsync + rename) failed.
    #[error("cannot write {path}")]
    WriteFile {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a cache entry failed.
    #[error("cannot read cache entry {path}")]
    ReadCacheEntry {
        /// The entry file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A cache entry is not valid JSON of the expected shape.
    #[error("cannot parse cache entry {path}")]
    ParseCacheEntry {
        /// The entry file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A state file name that is not a plain file name.
    #[error("invalid state name `{name}` (allowed: [A-Za-z0-9._-]+, not `.` or `..`)")]
    StateName {
        /// The name.
        name: String,
    },
    /// Reading a state file failed.
    #[error("cannot read state file {path}")]
    ReadState {
        /// The state file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating a staging directory failed.
    #[error("cannot create staging directory {path}")]
    CreateStaging {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Moving a staged upper directory into `layers/` failed.
    #[error("cannot commit layer directory for {diff_id}")]
    CommitLayer {
        /// The layer's diff id.
        diff_id: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Listing a store directory failed.
    #[error("cannot list {path}")]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The store's layer directories mark opaque directories with another overlayfs xattr
    /// than this process uses: a store made by rootful builds used rootless, or the reverse.
    #[error(
        "the layer directories of {path} mark opaque directories with {found} (made by {}), \
         but this process uses {wanted} ({}): a store is either rootful or rootless; use \
         another --root",
        mode_of(found),
        mode_of(wanted)
    )]
    LayerFormat {
        /// The store's root.
        path: PathBuf,
        /// The xattr the store records.
        found: String,
        /// The xattr this process uses.
        wanted: String,
    },
    /// Removing a file or directory tree failed.
    #[error("cannot remove {path}")]
    Remove {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whether the error means "the blob is not in the store" (as opposed to an IO failure or
    /// corruption), so that a caller can fall back to pulling it.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::ReadBlob { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Which kind of build writes opaque markers as `xattr`.
fn mode_of(xattr: &str) -> &'static str {
    if xattr.starts_with("trusted.") {
        "rootful builds"
    } else {
        "rootless builds, in a user namespace"
    }
}
