//! rbuild: build OCI images from Dockerfiles without a daemon.
//!
//! The engine parses a Dockerfile, computes a cache key for every step before running anything,
//! runs RUN steps in Linux namespaces on an overlay mount, turns each step's changes into a
//! content-addressed layer and stores the image in a local OCI layout ([`Store`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rbuild::{BuildEvent, BuildOptions, Builder, Store};
//!
//! let store = Store::open(std::path::Path::new("/var/lib/rbuild"))?;
//! let builder = Builder::new(store).progress(|event: BuildEvent| {
//!     if let BuildEvent::StepStarted { index, total, text, cached, .. } = event {
//!         eprintln!("[{index}/{total}] {}{text}", if cached { "CACHED " } else { "" });
//!     }
//! });
//! let out = builder
//!     .build(BuildOptions::new("./app").tag("localhost/app:dev".parse()?))
//!     .await?;
//! println!("{}", out.digest);
//! # Ok(()) }
//! ```
//!
//! Building needs root (kernel overlayfs and namespaces); everything else works unprivileged.

mod archive;
mod build;
mod cancel;
pub mod check;
pub mod config;
pub mod container;
mod context;
mod copy;
mod download;
mod emulation;
mod error;
mod events;
mod execute;
pub mod executor;
mod explain;
pub mod export;
pub mod image;
mod inplace;
mod key;
mod options;
mod plan;
pub mod registry;
mod remote_cache;
mod rootfs;
mod stage;
mod step;
mod view;

pub use build::{BuildOutput, Builder};
pub use cancel::CancelToken;
pub use context::ContextError;
pub use download::{DownloadError, DownloadOptions};
pub use error::{BoxError, Error, MetadataError, Result};
pub use events::BuildEvent;
pub use options::{BuildOptions, DockerfileSource, ImageFormat, SecretSource};
pub use rbuild_oci::Events;

pub use rbuild_dockerfile as dockerfile;
pub use rbuild_layer as layer;
pub use rbuild_oci as oci;
pub use rbuild_oci::{Digest, Platform, Reference};
pub use rbuild_sandbox as sandbox;
pub use rbuild_store as store;
pub use rbuild_store::Store;

/// Helpers of the crate's unit tests.
#[cfg(test)]
mod test_support {
    /// Whether the test runs as root (layers hold root-owned files, which only root can
    /// create); prints why it skips, and fails instead under CI (`RBUILD_REQUIRE_SANDBOX`).
    pub(crate) fn is_root(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        let why = format!("{test}: skipped: needs root to unpack root-owned layer files");
        assert!(
            std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
            "{why}"
        );
        eprintln!("{why}");
        false
    }
}
