//! Errors of loading, planning and running a pipeline.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a `/pattern/flags` literal was refused (GitLab's `Gitlab::UntrustedRegexp` syntax).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// No leading `/`.
    #[error("a pattern starts with `/`")]
    MissingOpeningSlash,
    /// No closing `/`.
    #[error("a pattern ends with `/`")]
    MissingClosingSlash,
    /// A flag other than `i`, `m` and `s`.
    #[error("unknown regex flag `{0}`")]
    UnknownFlag(char),
    /// The body does not compile (the `regex` crate's message, which quotes the spot).
    #[error("{0}")]
    Compile(regex::Error),
}

/// Everything that can go wrong between reading `.gitlab-ci.yml` and the end of a run.
///
/// User errors (bad YAML, a job in an unknown stage) carry the file and line so that the CLI
/// can print them like a compiler diagnostic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pipeline file (or an included one) could not be read.
    #[error("failed to read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The IO cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{}:{line}:{column}: invalid YAML", path.display())]
    ParseYaml {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the parser gave none).
        line: usize,
        /// 1-based column (0 when the parser gave none).
        column: usize,
        /// The parser's message.
        #[source]
        source: serde_yaml::Error,
    },
    /// The YAML is valid but does not describe a pipeline GitLab would accept.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the job or keyword (0 when unknown).
        line: usize,
        /// The top-level key (job name or global keyword) the problem is in; empty when it is
        /// the file as a whole.
        key: String,
        /// What is wrong and, where possible, what to do.
        message: String,
    },
    /// A line of a variables file (`--var-file`) is not `KEY=VALUE` with a valid name.
    #[error("{}:{line}: {message}", path.display())]
    VarFile {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A `/pattern/flags` literal (an `only:`/`except:` ref, a `=~` operand) is not one.
    #[error("invalid pattern {pattern:?}")]
    Pattern {
        /// The literal as written.
        pattern: String,
        /// Why it was refused.
        #[source]
        source: PatternError,
    },
    /// A variable refers to itself through other variables.
    #[error("circular variable reference: {chain}")]
    CircularVariable {
        /// The cycle, e.g. `A -> B -> A`.
        chain: String,
    },
    /// A `rules:if` or `only:variables` expression does not parse.
    #[error("invalid expression {expression:?} at offset {offset}: {message}")]
    Expression {
        /// The expression text.
        expression: String,
        /// Byte offset of the problem.
        offset: usize,
        /// What was expected.
        message: String,
    },
    /// A `--job` name that is not in the pipeline.
    #[error("no job named {name:?} in the pipeline")]
    UnknownJob {
        /// The requested name.
        name: String,
    },
    /// A `git` command needed for the predefined variables failed.
    #[error("failed to run `git {args}` in {}", dir.display())]
    Git {
        /// The arguments.
        args: String,
        /// The repository directory.
        dir: PathBuf,
        /// The IO cause or the command's stderr.
        #[source]
        source: std::io::Error,
    },
    /// Preparing a job's directory, copying artifacts or spawning its shell failed.
    #[error("failed to {action} for job {job:?}")]
    JobIo {
        /// The job.
        job: String,
        /// What was being done (`copy the project`, `save artifacts`, `spawn sh`).
        action: String,
        /// The IO cause.
        #[source]
        source: std::io::Error,
    },
    /// A plan whose `needs` make a job wait for itself (loading rejects such files; a plan
    /// built or edited by hand can still have one).
    #[error("job {job:?} waits for itself through `needs`")]
    NeedsCycle {
        /// A job on the cycle.
        job: String,
    },
    /// A [`JobRunner`](crate::JobRunner) could not run a job at all (as opposed to the job failing).
    #[error("executor failed to run job {job:?}")]
    Executor {
        /// The job.
        job: String,
        /// The executor's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
