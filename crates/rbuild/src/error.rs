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
    /// The machine cannot run RUN steps (not root, no overlayfs, namespaces refused).
    #[error("cannot run RUN steps on this machine")]
    SandboxUnavailable(#[source] rbuild_sandbox::Error),
    /// Any other failed operation, named in `op`.
    #[error("failed to {op}")]
    Operation {
        /// The operation, e.g. `write the image manifest`.
        op: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
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
    /// Wraps any error as a failed operation.
    pub(crate) fn op<E: Into<BoxError>>(op: impl Into<String>) -> impl FnOnce(E) -> Self {
        let op = op.into();
        move |e| Self::Operation {
            op,
            source: e.into(),
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
