//! Errors of the layer writer and readers.

use std::io;
use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why writing, unpacking or applying a layer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the source directory (listing, stat, xattrs, file contents) failed.
    #[error("failed to read {path} while writing a layer")]
    ReadSource {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A regular file was shorter than its stat said when we copied it: it changed underneath us.
    #[error("file {path} shrank while it was archived (expected {expected} bytes, read {read})")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Size from stat, already written in the tar header.
        expected: u64,
        /// Bytes actually read.
        read: u64,
    },
    /// Writing the tar stream, the compressor or the output failed.
    #[error("failed to write the layer stream")]
    WriteStream {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The root directory to unpack or apply into could not be opened.
    #[error("failed to open the target directory {path}")]
    OpenRoot {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The blob could not be read or decompressed, or is not a valid tar.
    #[error("failed to read the layer blob")]
    ReadBlob {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An entry would write, link or delete outside the root, or through a symlink.
    ///
    /// Mirrors the tar-slip family (CVE-2018-1002200 and friends: `..` and absolute names),
    /// CVE-2018-15664 / CVE-2019-14271 (symlink swapped into a path component) and
    /// CVE-2021-30465 (symlink exchange on mount paths): every component is opened with
    /// `O_NOFOLLOW` relative to its parent's descriptor, never by a path string.
    #[error("refusing layer entry `{entry}`: {reason}")]
    Refused {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// Why.
        reason: String,
    },
    /// Creating an entry or setting its metadata failed.
    #[error("failed to unpack layer entry `{entry}`")]
    UnpackEntry {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn messages_are_lowercase_and_keep_the_cause_in_source() {
        let e = Error::UnpackEntry {
            entry: "etc/passwd".into(),
            source: io::Error::other("disk full"),
        };
        assert_eq!(e.to_string(), "failed to unpack layer entry `etc/passwd`");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("disk full")
        );
        let e = Error::Refused {
            entry: "../x".into(),
            reason: "path contains `..`".into(),
        };
        assert_eq!(
            e.to_string(),
            "refusing layer entry `../x`: path contains `..`"
        );
    }
}
