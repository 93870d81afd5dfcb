//! OCI distribution client: push that skips what the registry has, pull with digest
//! verification, login, tags, catalog, referrers; conformant against a real registry. The
//! [`conformance`] module checks a registry against the distribution spec's four workflows.
//!
//! The crate is split like kube-rs: [`request`] builds `http::Request`s and [`response`] parses
//! answers (both pure, unit-tested without a network); [`Client`] sends them with reqwest,
//! authenticates (basic, bearer tokens with scope growth, docker `config.json` and credential
//! helpers) and retries (connection errors, 408/429/5xx with `Retry-After`).
//!
//! Pushing an image whose blobs live anywhere (a store, an OCI layout) takes a
//! [`BlobSource`]; progress arrives as [`PushEvent`]s through an owned [`Events`] sink, with
//! docker's lines available through [`PushEvent::docker_line`]. Push and pull futures are
//! `Send + 'static`:
//!
//! ```no_run
//! use std::io::Read;
//! use std::sync::Arc;
//! use rbuild_oci::{Digest, Reference};
//! use rbuild_registry::{BlobSource, Client, ClientOptions, Events, ImageToPush, PushEvent};
//!
//! struct Dir(std::path::PathBuf);
//! impl BlobSource for Dir {
//!     fn open(&self, d: &Digest) -> std::io::Result<Box<dyn Read + Send>> {
//!         Ok(Box::new(std::fs::File::open(self.0.join("blobs/sha256").join(d.hex()))?))
//!     }
//! }
//!
//! # async fn run(image: ImageToPush) -> Result<(), rbuild_registry::Error> {
//! let client = Client::new(ClientOptions::default())?;
//! let target: Reference = "127.0.0.1:5000/app:v1".parse().expect("valid reference");
//! let source = Arc::new(Dir("layout".into()));
//! let events = Events::new(|e: PushEvent| {
//!     if let Some(line) = e.docker_line() {
//!         println!("{line}");
//!     }
//! });
//! // The future borrows nothing: it can run on its own task.
//! let push = tokio::spawn(client.push_image(&target, image, source, events));
//! let result = push.await.expect("the push task panicked")?;
//! println!("pushed {}", result.digest);
//! # Ok(())
//! # }
//! ```

mod auth;
mod blob;
mod body;
mod client;
pub mod conformance;
pub mod credentials;
mod error;
mod manifest;
mod operation;
mod pull;
mod push;
pub mod request;
pub mod response;

pub use blob::{BlobSink, BlobSource, BlobWriter, MountOutcome};
pub use client::{Client, ClientOptions};
pub use credentials::{Credentials, CredentialsEnv};
pub use error::{Error, Result};
pub use manifest::{
    Manifest, ManifestHead, Platform, PlatformError, SelectPlatformError, index_platforms,
    select_platform,
};
pub use pull::{PullEvent, PulledImage};
pub use push::{BlobRef, BlobStatus, ImageToPush, PushEvent, PushResult};
pub use rbuild_oci::Events;
