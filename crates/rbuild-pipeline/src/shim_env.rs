//! The environment through which a run talks to the `docker` and `deploy` commands it puts on
//! a job's `PATH` (the rbuild CLI's shims, or any program that speaks the same protocol).
//!
//! The shims run as child processes of the job's script, so the runner cannot hand them
//! arguments: it sets these variables in every job's environment instead.

/// Names the file where `docker push` appends each pushed image (`repo:tag@sha256:…`, one a
/// line), so that `deploy NAME` knows the image this job pushed last. One file per job.
pub const PUSHES_ENV: &str = "RBUILD_JOB_PUSHES";

/// Comma-separated registries (`host[:port]`) the shims speak plain HTTP to: the run's
/// insecure registries, passed down to its jobs.
pub const INSECURE_ENV: &str = "RBUILD_INSECURE_REGISTRIES";

/// `false` when the run does not verify registries' TLS certificates.
pub const TLS_VERIFY_ENV: &str = "RBUILD_TLS_VERIFY";

/// The image store the shims use (the run's store, so that `docker build` in one job and
/// `docker push` in the next see the same images).
pub const ROOT_ENV: &str = "RBUILD_ROOT";
