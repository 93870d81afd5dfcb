//! Progress of a build as a stream of events; the caller decides how to show them.

use std::time::Duration;

use rbuild_oci::Digest;

/// Something that happened during a build.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BuildEvent {
    /// A step begins (or is found in the cache: then `cached` is true and no output follows).
    StepStarted {
        /// Stage index (0-based) in the Dockerfile.
        stage: usize,
        /// The stage's name, if it has one.
        stage_name: Option<String>,
        /// Step number within the stage, 1-based (`FROM` is 1).
        index: usize,
        /// Steps in the stage.
        total: usize,
        /// The instruction after variable expansion, as docker prints it.
        text: String,
        /// Whether the step's result comes from the cache.
        cached: bool,
        /// The platform the stage runs on, when the build names platforms (`--platform`):
        /// the steps of a multi-platform build interleave.
        platform: Option<rbuild_oci::Platform>,
    },
    /// Output of a RUN step, as it arrives.
    StepOutput {
        /// Stage index.
        stage: usize,
        /// Step number.
        index: usize,
        /// Raw bytes (stdout and stderr merged).
        bytes: Vec<u8>,
    },
    /// A step finished.
    StepFinished {
        /// Stage index.
        stage: usize,
        /// Step number.
        index: usize,
        /// Wall time of the step.
        elapsed: Duration,
    },
    /// Why a step missed the cache (only with [`crate::BuildOptions::explain`]).
    CacheMiss {
        /// Stage index.
        stage: usize,
        /// Step number.
        index: usize,
        /// The first input that differs from the last build of this step.
        reason: String,
    },
    /// A base image is being pulled because the store does not have it.
    Pulling {
        /// The normalised reference.
        reference: String,
    },
    /// A warning about the Dockerfile or the build (undefined variable, deprecated instruction, …).
    Warning(String),
    /// The image was written to the store.
    ImageWritten {
        /// Manifest digest.
        digest: Digest,
        /// Tags given to it.
        tags: Vec<String>,
    },
}
