//! OCI primitives shared by every rbuild crate: content digests, image references with docker's
//! normalisation, media types and canonical JSON bytes.
//!
//! The crate is pure: no IO, no async. It re-exports [`oci_spec`] so that users of the higher
//! crates name one version of the spec types.
//!
//! ```
//! use rbuild_oci::{Digest, Reference};
//!
//! let r: Reference = "busybox".parse().unwrap();
//! assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
//!
//! let d = Digest::sha256_of(b"hello");
//! assert_eq!(d.to_string(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
//! ```

mod digest;
mod events;
mod json;
pub mod media_type;
mod platform;
mod reference;

pub use digest::{Digest, DigestError, Sha256Writer};
pub use events::Events;
pub use json::{canonical_json, to_canonical_value};
pub use oci_spec;
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError};
