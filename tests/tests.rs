//! Integration tests across crates: the `rbuild` binary end to end, its output read back by
//! tools we did not write (skopeo, umoci).
//!
//! RUN steps need root, kernel overlayfs and namespaces; the tests that build say so and skip
//! when the machine cannot (`RBUILD_REQUIRE_SANDBOX=1`, set by CI, turns a skip into a failure).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

mod build_image;
mod builder_features;
mod cache;
mod cache_correctness;
mod containment;
mod deploy_cli;
mod differential;
mod hardening;
mod inplace;
mod multi_platform;
mod parse_cli;
mod pipeline_cli;
mod pipeline_runs;
mod registry_cli;
mod registry_conformance_cli;
mod reliability;
mod rootless;
mod sandbox;
mod semantics;
mod support;
