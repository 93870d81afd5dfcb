//! Layer tarballs: a deterministic streaming writer, safe unpack/apply, whiteouts.
//!
//! Every layer of an image lives on disk as a directory in **overlay upperdir form**: a deleted
//! path is a character device 0/0 under that name, and a directory that hides the lower layers'
//! contents carries the xattr `trusted.overlay.opaque=y`. A RUN step's overlay upperdir and a
//! COPY step's fresh directory are both in that form, so one writer covers both.
//!
//! - [`write_layer`] tars such a directory in one pass: tar → sha256 (the `diff_id`) →
//!   gzip/zstd → sha256 (the blob digest) → your writer, with memory independent of the layer
//!   size and gzip spread over all cores (pigz-style, still one standard gzip member).
//!   Entries are sorted, headers carry no user/host names, and `source_date_epoch` clamps
//!   timestamps, so the same tree gives the same digests. Whiteouts become the OCI `.wh.` files (image-spec `layer.md`, "Whiteouts").
//! - [`unpack_layer`] turns a blob back into upperdir form (for use as an overlay lowerdir).
//! - [`apply_layer`] applies a blob onto a full root filesystem: whiteouts delete (flattening).
//!
//! Both readers refuse entries that would land outside the root (see [`Error::Refused`]).
//!
//! ```no_run
//! use std::fs::File;
//! use std::path::Path;
//!
//! use rbuild_layer::{Compression, LayerOptions, apply_layer, write_layer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let opts = LayerOptions::default()
//!     .compression(Compression::Gzip)
//!     .source_date_epoch(Some(1_700_000_000));
//! let blob = File::create("/var/tmp/layer.tar.gz")?;
//! let (_file, desc) = write_layer(Path::new("/var/lib/rbuild/upper"), blob, &opts)?;
//! println!("{} {} ({} bytes, diff_id {})", desc.media_type, desc.digest, desc.size, desc.diff_id);
//!
//! // Flatten it onto a root filesystem (needs root to set ownership and device nodes).
//! let stats = apply_layer(File::open("/var/tmp/layer.tar.gz")?, Path::new("/var/tmp/rootfs"))?;
//! assert_eq!(stats.diff_id, desc.diff_id);
//! # Ok(())
//! # }
//! ```

mod error;
mod meta;
mod pax;
mod pgzip;
mod resolve;
mod sys;
mod unpack;
mod write;

use rbuild_oci::{Digest, media_type};

pub use error::{Error, Result};
pub use unpack::{UnpackStats, apply_layer, unpack_layer};
pub use write::{is_empty_diff, is_overlay_xattr, overlay_opaque_xattr, write_layer};

/// The gzip level used when none is set: 6, Go's default and so what docker and buildah use.
///
/// Measured on a Debian bookworm minbase root filesystem (170 MB tar) with flate2's zlib-rs
/// backend, `benches/scale.sh` (buildah's layer of the same tree: 63.3 MB):
///
/// | level | layer   |
/// |------:|--------:|
/// | 1     | 78.8 MB |
/// | 2     | 65.6 MB |
/// | 3     | 63.3 MB |
/// | 6     | 61.6 MB |
///
/// zlib-rs' level 1 (`deflate_quick`) is much faster on text but 25 % larger; the build time
/// barely differs, because compression runs on all cores in 1 MiB chunks and chunks that
/// cannot shrink (random or already-compressed content) are stored without searching for
/// matches at any level. Pick another level with [`LayerOptions::level`]
/// (`rbuild build --compression-level N`).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// The zstd level used when none is set (zstd's own default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip (`…tar+gzip`), what every registry and runtime accepts.
    #[default]
    Gzip,
    /// zstd (`…tar+zstd`), smaller and faster; needs containerd ≥ 1.5 / docker ≥ 23 to pull.
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::None => media_type::OCI_LAYER_TAR,
            Self::Gzip => media_type::OCI_LAYER_GZIP,
            Self::Zstd => media_type::OCI_LAYER_ZSTD,
        }
    }
}

/// Options of [`write_layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    compression: Compression,
    gzip_level: Option<u32>,
    zstd_level: Option<i32>,
    source_date_epoch: Option<i64>,
}

impl LayerOptions {
    /// The compression of the blob (default gzip).
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The gzip level, 0–9 (default [`DEFAULT_GZIP_LEVEL`]); larger values are clamped to 9.
    #[must_use]
    pub fn gzip_level(mut self, level: u32) -> Self {
        self.gzip_level = Some(level.min(9));
        self
    }

    /// The zstd level, 1–22 (default [`DEFAULT_ZSTD_LEVEL`]).
    #[must_use]
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = Some(level);
        self
    }

    /// The level of whichever compression is used: gzip 0–9, zstd 1–22 (values outside are
    /// clamped); no effect on an uncompressed layer.
    #[must_use]
    pub fn level(mut self, level: i32) -> Self {
        self.gzip_level = Some(level.clamp(0, 9).unsigned_abs());
        self.zstd_level = Some(level.clamp(1, 22));
        self
    }

    /// Clamp every mtime later than `epoch` (seconds since 1970) down to `epoch`, as
    /// `SOURCE_DATE_EPOCH` asks (reproducible-builds.org) and BuildKit's
    /// `rewrite-timestamp=true` does. Earlier mtimes are kept.
    #[must_use]
    pub fn source_date_epoch(mut self, epoch: Option<i64>) -> Self {
        self.source_date_epoch = epoch;
        self
    }

    /// The compression that will be used.
    pub fn get_compression(&self) -> Compression {
        self.compression
    }

    /// The gzip level that will be used.
    pub fn get_gzip_level(&self) -> u32 {
        self.gzip_level.unwrap_or(DEFAULT_GZIP_LEVEL)
    }

    /// The zstd level that will be used.
    pub fn get_zstd_level(&self) -> i32 {
        self.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL)
    }

    /// The level of the compression that will be used (0 for none).
    pub fn get_level(&self) -> i32 {
        match self.compression {
            Compression::None => 0,
            Compression::Gzip => i32::try_from(self.get_gzip_level()).unwrap_or(9),
            Compression::Zstd => self.get_zstd_level(),
        }
    }

    /// The timestamp clamp, if any.
    pub fn get_source_date_epoch(&self) -> Option<i64> {
        self.source_date_epoch
    }
}

/// What [`write_layer`] produced: enough for the manifest entry and the config's `rootfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// sha256 of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the blob as written (manifest `layers[].digest`).
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type of the blob (one of `rbuild_oci::media_type::OCI_LAYER_*`).
    pub media_type: &'static str,
}

impl LayerDescriptor {
    /// The manifest `layers[]` entry for this blob.
    pub fn to_oci_descriptor(&self) -> rbuild_oci::oci_spec::image::Descriptor {
        use rbuild_oci::oci_spec::image::{Descriptor, MediaType};
        Descriptor::new(MediaType::from(self.media_type), self.size, &self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_and_setters() {
        let o = LayerOptions::default();
        assert_eq!(o.get_compression(), Compression::Gzip);
        assert_eq!(o.get_gzip_level(), DEFAULT_GZIP_LEVEL);
        assert_eq!(o.get_source_date_epoch(), None);
        let o = o
            .compression(Compression::Zstd)
            .gzip_level(42)
            .source_date_epoch(Some(5));
        assert_eq!(o.get_compression(), Compression::Zstd);
        assert_eq!(o.get_gzip_level(), 9);
        assert_eq!(o.get_source_date_epoch(), Some(5));
        assert_eq!(o.get_level(), DEFAULT_ZSTD_LEVEL);
        let o = o.level(19);
        assert_eq!((o.get_level(), o.get_gzip_level()), (19, 9));
        let o = o.compression(Compression::Gzip).level(-3);
        assert_eq!(o.get_level(), 0);
        assert_eq!(o.compression(Compression::None).level(5).get_level(), 0);
    }

    #[test]
    fn descriptor_for_the_manifest() {
        let d = LayerDescriptor {
            diff_id: Digest::sha256_of(b"tar"),
            digest: Digest::sha256_of(b"blob"),
            size: 4,
            media_type: media_type::OCI_LAYER_GZIP,
        };
        let oci = d.to_oci_descriptor();
        assert_eq!(oci.size(), 4);
        assert_eq!(oci.digest().to_string(), d.digest.to_string());
        assert_eq!(oci.media_type().to_string(), media_type::OCI_LAYER_GZIP);
    }

    #[test]
    fn media_types_follow_compression() {
        assert_eq!(Compression::None.media_type(), media_type::OCI_LAYER_TAR);
        assert_eq!(Compression::Gzip.media_type(), media_type::OCI_LAYER_GZIP);
        assert_eq!(Compression::Zstd.media_type(), media_type::OCI_LAYER_ZSTD);
    }
}
