//! Errors of the sandbox.

use std::io;
use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a sandbox could not be started or waited for. A process that ran and failed is not an
/// error: see [`Outcome::status`](crate::Outcome::status).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `args` was empty.
    #[error("no command to run: the argument list is empty")]
    NoCommand,
    /// A field of the spec cannot be used.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidSpec {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A lower, upper or work directory (or a bind source) is missing or unreadable.
    #[error("cannot use {what} directory {path}")]
    OverlayDir {
        /// `lower`, `upper`, `work` or `bind mount source`.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the per-run scratch directory (mountpoints, generated files) failed.
    #[error("failed to prepare the sandbox scratch entry {path}")]
    PrepareScratch {
        /// The entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the pipes or forking the sandbox process failed.
    #[error("failed to start the sandbox process")]
    Spawn {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A step of the sandbox setup failed inside the child, before the command was executed.
    #[error("sandbox setup failed: {step}")]
    Setup {
        /// What the child was doing, with the paths involved.
        step: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The user of the spec has no entry in the rootfs's `/etc/passwd`.
    #[error(
        "unable to find user {user}: no matching entries in the image's /etc/passwd \
         (use a numeric uid, or create the user in an earlier step)"
    )]
    UnknownUser {
        /// The user name.
        user: String,
    },
    /// The group of the spec has no entry in the rootfs's `/etc/group`.
    #[error("unable to find group {group}: no matching entries in the image's /etc/group")]
    UnknownGroup {
        /// The group name.
        group: String,
    },
    /// The user belongs to more supplementary groups than supported.
    #[error("user {user} is a member of too many groups in the image's /etc/group")]
    TooManyGroups {
        /// The user.
        user: String,
    },
    /// Reading the captured output failed.
    #[error("failed to read the sandbox output")]
    ReadOutput {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Waiting for the sandbox process failed.
    #[error("failed to wait for the sandbox process")]
    Wait {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The seccomp filter could not be compiled.
    #[error("cannot compile the seccomp filter: {reason}")]
    Seccomp {
        /// What seccompiler said.
        reason: String,
    },
    /// Creating, configuring or reading a per-run cgroup failed.
    #[error("failed to {op}")]
    Cgroup {
        /// What was being done, with the path.
        op: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// This process cannot run sandboxes (see [`check_support`](crate::check_support)).
    #[error("{what}: {remedy}")]
    Unsupported {
        /// What is missing.
        what: String,
        /// What to do about it.
        remedy: &'static str,
    },
    /// The run was cancelled through its [`CancelHandle`](crate::CancelHandle): the step's
    /// processes were killed (or never started) and its mounts, cgroup and scratch directory
    /// are gone.
    #[error("the run was cancelled")]
    Cancelled,
}
