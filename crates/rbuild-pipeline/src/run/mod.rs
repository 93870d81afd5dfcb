//! Running a plan: stages in order, the jobs of a stage concurrently (bounded), artifacts
//! between jobs, masked and prefixed output, and a summary.

pub(crate) mod artifacts;
mod cache;
mod masker;
mod report;
pub(crate) mod rooted;
mod scheduler;
mod shell;

use rbuild_oci::Events;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use masker::Masker;
pub use report::{JobReport, JobStatus, RunReport};
pub use scheduler::{RunOptions, Runner};
pub use shell::ShellRunner;

use crate::error::Result;
use crate::plan::PlannedJob;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The job's stdout.
    Stdout,
    /// The job's stderr.
    Stderr,
    /// A message from the runner itself (artifact notes, executor errors).
    System,
}

/// Progress of a run, for the CLI to display (carried internally by the same
/// [`Events`] sink as build, push, pull and deploy events).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A stage begins.
    StageStarted {
        /// Stage name.
        stage: String,
    },
    /// A job begins.
    JobStarted {
        /// Job name.
        job: String,
    },
    /// A line of job output, secrets already masked.
    Output {
        /// Job name.
        job: String,
        /// Source stream.
        stream: Stream,
        /// The line, without its newline.
        line: String,
    },
    /// A job ended (or was skipped at run time).
    JobFinished {
        /// Job name.
        job: String,
        /// How it ended.
        status: JobStatus,
        /// Wall time.
        duration: Duration,
    },
}

impl fmt::Display for Event {
    /// One line, prefixed by the job name: `[build image] Step 1/8 : FROM …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::StageStarted { stage } => write!(f, "== stage {stage}"),
            Event::JobStarted { job } => write!(f, "[{job}] job started"),
            Event::Output { job, line, .. } => write!(f, "[{job}] {line}"),
            Event::JobFinished {
                job,
                status,
                duration,
            } => {
                write!(f, "[{job}] job {status} in {:.1}s", duration.as_secs_f64())
            }
        }
    }
}

/// Where a job writes its output: masks, prefixes with the job (via [`Event::Output`]) and
/// forwards to the run's event callback. Cheap to clone.
#[derive(Clone)]
pub struct JobOutput {
    job: String,
    masker: Arc<Masker>,
    sink: Events<Event>,
}

impl JobOutput {
    /// An output handle for `job` sending masked lines to `sink` (for executors' own tests).
    pub fn new(job: impl Into<String>, masker: Masker, sink: Events<Event>) -> Self {
        Self {
            job: job.into(),
            masker: Arc::new(masker),
            sink,
        }
    }

    /// Emits one line (without newline).
    pub fn line(&self, stream: Stream, line: &str) {
        self.sink.emit(Event::Output {
            job: self.job.clone(),
            stream,
            line: self.masker.mask(line),
        });
    }

    /// The job name.
    pub fn job(&self) -> &str {
        &self.job
    }
}

impl fmt::Debug for JobOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobOutput")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// What an executor gets besides the [`PlannedJob`].
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's environment: the planned one with `CI_PROJECT_DIR` pointing at `workdir`.
    pub env: BTreeMap<String, String>,
    /// The directory the job runs in, with artifacts of earlier jobs restored.
    pub workdir: PathBuf,
    /// Directories to put first on `PATH` (e.g. `docker`/`deploy` shims), in order.
    pub path_prepend: Vec<PathBuf>,
    /// Whether the main script succeeded (`CI_JOB_STATUS` for `after_script`); `None` before.
    pub job_status: Option<bool>,
}

impl JobContext {
    /// `PATH` for the job: `path_prepend`, then the job's `PATH` (or `fallback`).
    pub fn path_var(&self, fallback: &str) -> String {
        let mut parts: Vec<String> = self
            .path_prepend
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let base = self.env.get("PATH").map_or(fallback, String::as_str);
        if !base.is_empty() {
            parts.push(base.to_owned());
        }
        parts.join(":")
    }
}

/// How a job's scripts ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOutcome {
    /// Exit code of `before_script` + `script` (`None`: killed by a signal or never started).
    pub exit_code: Option<i32>,
}

impl JobOutcome {
    /// Exit code 0.
    pub fn success() -> Self {
        Self { exit_code: Some(0) }
    }

    /// Whether the scripts succeeded.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Runs one job. Implemented by [`ShellRunner`] (host shell) and, in the CLI, by an executor
/// that runs the job inside its image.
///
/// Contract: run `before_script` + `script` as one shell session that stops at the first
/// failing command, then `after_script` in a fresh session whatever happened (its failure does
/// not change the outcome); send every output line through `out`.
pub trait JobRunner: Send + Sync {
    /// Runs `job` in `cx.workdir` with `cx.env`.
    ///
    /// # Errors
    ///
    /// Only when the job could not be run at all (the image cannot be pulled, the shell cannot
    /// be spawned); a script that fails is an `Ok` outcome with its exit code.
    fn run(
        &self,
        job: &PlannedJob,
        cx: &JobContext,
        out: &JobOutput,
    ) -> impl Future<Output = Result<JobOutcome>> + Send;

    /// Whether dropping the future of [`JobRunner::run`] stops the job and everything it
    /// started. The runner enforces `timeout:` only for executors that say so; for others it
    /// logs that the timeout is not enforced rather than leave a job running unseen.
    fn stops_when_dropped(&self) -> bool {
        false
    }
}
