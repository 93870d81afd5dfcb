//! Errors of the engine.

use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a build or another engine operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Dockerfile could not be read.
    #[error("failed to read Dockerfile {}", path.display())]
    ReadDockerfile {
        /// Where we looked.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The Dockerfile is invalid, or an instruction cannot be carried out as written.
    /// Reads like a compiler diagnostic: `Dockerfile:3:1: unknown instruction: FOO`.
    #[error("{file}:{line}{}: {message}", column.map(|c| format!(":{c}")).unwrap_or_default())]
    Dockerfile {
        /// The Dockerfile's name as the user gave it.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong and, where we can tell, what to do.
        message: String,
    },
    /// A RUN step exited non-zero.
    #[error(
        "{file}:{line}: RUN {command} failed with exit code {status}{}",
        format_output(output)
    )]
    RunFailed {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line of the RUN instruction.
        line: usize,
        /// The command as written.
        command: String,
        /// Exit status (128+N for signal N).
        status: i32,
        /// The tail of the command's output.
        output: String,
    },
    /// A step failed for a reason outside the Dockerfile (IO, store, sandbox, layer).
    #[error("{file}:{line}: {what}")]
    Step {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line of the instruction.
        line: usize,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// An image reference that is not in the local store.
    #[error("image {reference} is not in the local store{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    ImageNotFound {
        /// The normalised reference.
        reference: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// An image index has no manifest for a platform the build or command needs.
    #[error("image {reference} has no manifest for {platform} (it has: {})", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    NoPlatform {
        /// The image as named.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// RUN steps for a foreign platform need a binfmt_misc emulator that is not registered.
    #[error(
        "{file}:{line}: RUN for {platform} needs an emulator: {reason}; install QEMU user emulation and register it with binfmt_misc (Debian: `apt-get install qemu-user-static`; without systemd: `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` and `cat /usr/lib/binfmt.d/qemu-{qemu}.conf > /proc/sys/fs/binfmt_misc/register`)"
    )]
    NoEmulator {
        /// The Dockerfile's name.
        file: String,
        /// The first RUN instruction that needs it.
        line: usize,
        /// The platform.
        platform: String,
        /// QEMU's name for the architecture (`aarch64`).
        qemu: String,
        /// What is missing.
        reason: String,
    },
    /// The executor cannot run RUN steps on this machine (not root, no overlayfs, namespaces
    /// refused), or failed to start one.
    #[error(transparent)]
    Executor(#[from] crate::executor::ExecutorError),
    /// The build was cancelled (its [`CancelToken`](crate::CancelToken) fired, or its future was
    /// dropped).
    #[error("the build was cancelled")]
    Cancelled,
    /// Pulling a base (or `--from`) image failed.
    #[error("{file}:{line}: failed to pull {reference}")]
    Pull {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line of the instruction that names the image.
        line: usize,
        /// The image.
        reference: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// An `ADD <url>` download failed.
    #[error("{file}:{line}: ADD {url}: failed to download")]
    Download {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line of the ADD instruction.
        line: usize,
        /// The URL as written.
        url: String,
        /// The cause.
        #[source]
        source: Box<crate::download::DownloadError>,
    },
    /// The local store failed.
    #[error("failed to {op}")]
    Store {
        /// What was being done, e.g. `write the image manifest`.
        op: String,
        /// The cause.
        #[source]
        source: Box<rbuild_store::Error>,
    },
    /// Writing or applying a layer failed.
    #[error("failed to {op}")]
    Layer {
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: Box<rbuild_layer::Error>,
    },
    /// A registry request failed.
    #[error("failed to {op}")]
    Registry {
        /// What was being done, naming the registry and repository.
        op: String,
        /// The cause.
        #[source]
        source: Box<rbuild_registry::Error>,
    },
    /// The build context could not be read (a file, `.dockerignore`).
    #[error("failed to {op}")]
    Context {
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: Box<crate::context::ContextError>,
    },
    /// `rbuild run`'s container could not be run.
    #[error("failed to {op}")]
    Sandbox {
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: Box<rbuild_sandbox::Error>,
    },
    /// A file operation failed.
    #[error("failed to {op}")]
    Io {
        /// What was being done, naming the file.
        op: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Image metadata (a manifest, config or index) could not be read or written as JSON, or
    /// holds an invalid digest.
    #[error("failed to {op}")]
    Metadata {
        /// What was being done, naming the blob.
        op: String,
        /// The cause.
        #[source]
        source: Box<MetadataError>,
    },
    /// A request the engine cannot carry out, or data that breaks an invariant, with the
    /// reason (e.g. a platform that cannot be built here, a layer whose content does not match
    /// its `diff_id`).
    #[error("cannot {op}: {reason}")]
    Invalid {
        /// What was asked.
        op: String,
        /// Why not.
        reason: String,
    },
}

/// The cause of [`Error::Metadata`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// JSON that does not parse or serialise.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A digest that is not `sha256:<64 hex>`.
    #[error(transparent)]
    Digest(#[from] rbuild_oci::DigestError),
    /// An OCI structure that the OCI types reject.
    #[error(transparent)]
    Oci(#[from] rbuild_oci::oci_spec::OciSpecError),
}

/// Sources the engine wraps with the name of the operation that failed ([`Error::op`]).
pub(crate) trait OpSource {
    fn with_op(self, op: String) -> Error;
}

impl OpSource for rbuild_store::Error {
    fn with_op(self, op: String) -> Error {
        Error::Store {
            op,
            source: Box::new(self),
        }
    }
}
impl OpSource for rbuild_layer::Error {
    fn with_op(self, op: String) -> Error {
        Error::Layer {
            op,
            source: Box::new(self),
        }
    }
}
impl OpSource for rbuild_registry::Error {
    fn with_op(self, op: String) -> Error {
        Error::Registry {
            op,
            source: Box::new(self),
        }
    }
}
impl OpSource for std::io::Error {
    fn with_op(self, op: String) -> Error {
        Error::Io { op, source: self }
    }
}
impl OpSource for serde_json::Error {
    fn with_op(self, op: String) -> Error {
        Error::Metadata {
            op,
            source: Box::new(self.into()),
        }
    }
}
impl OpSource for rbuild_oci::DigestError {
    fn with_op(self, op: String) -> Error {
        Error::Metadata {
            op,
            source: Box::new(self.into()),
        }
    }
}
impl OpSource for rbuild_oci::oci_spec::OciSpecError {
    fn with_op(self, op: String) -> Error {
        Error::Metadata {
            op,
            source: Box::new(self.into()),
        }
    }
}
impl OpSource for crate::context::ContextError {
    fn with_op(self, op: String) -> Error {
        Error::Context {
            op,
            source: Box::new(self),
        }
    }
}
impl OpSource for rbuild_sandbox::Error {
    fn with_op(self, op: String) -> Error {
        Error::Sandbox {
            op,
            source: Box::new(self),
        }
    }
}
impl OpSource for tokio::task::JoinError {
    /// A task that did not finish was cancelled (a panic is passed on as the panic it is).
    fn with_op(self, _op: String) -> Error {
        if self.is_panic() {
            std::panic::resume_unwind(self.into_panic());
        }
        Error::Cancelled
    }
}

fn format_output(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        let mut s = String::from("\noutput:\n");
        for line in output.trim_end().lines() {
            s.push_str("  ");
            s.push_str(line);
            s.push('\n');
        }
        s.truncate(s.trim_end().len());
        s
    }
}

impl Error {
    /// Wraps a sub-crate's error with the operation that failed, in the variant for its kind.
    pub(crate) fn op<E: OpSource>(op: impl Into<String>) -> impl FnOnce(E) -> Self {
        let op = op.into();
        move |e| e.with_op(op)
    }

    /// A request the engine cannot carry out, or data that breaks an invariant.
    pub(crate) fn invalid(op: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            op: op.into(),
            reason: reason.into(),
        }
    }
}

/// What a parser error says, with its cause (`failed to process "${X:?}": X: is required`),
/// without the parser's own `line N:` prefix: the engine adds `FILE:LINE:`.
pub(crate) fn dockerfile_message(e: &rbuild_dockerfile::Error) -> String {
    let mut msg = e.kind().to_string();
    let mut cause = std::error::Error::source(e.kind());
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}
