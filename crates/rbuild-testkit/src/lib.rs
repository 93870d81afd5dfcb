//! Test fixtures for rbuild's tests: a registry process, a spec-strict in-process registry, a
//! private Docker engine, a fake Kubernetes API server and a base-image maker. Dev-dependency
//! only; never published.

pub mod busybox;
pub mod docker;
pub mod kube;
pub mod registry;
pub mod strict_registry;
