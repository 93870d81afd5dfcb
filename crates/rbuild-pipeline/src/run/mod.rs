//! Running a plan: stages in order, the jobs of a stage concurrently (bounded), artifacts
//! between jobs, masked and prefixed output, and a summary.

mod artifacts;
mod rooted;
mod shell;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

pub use shell::ShellRunner;

use crate::error::{Error, Result};
use crate::model::When;
use crate::plan::{Plan, PlannedJob};
use crate::variables::Variable;

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

/// Progress of a run, for the CLI to display.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Replaces secret values with `[MASKED]` (GitLab's marker) in output lines.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<String>,
}

impl Masker {
    /// Masks these values. Multi-line values (a kubeconfig's content) are masked line by line,
    /// since output is masked per line; lines shorter than 8 characters are not masked on
    /// their own (GitLab's minimum masked length), the whole short value still is.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = Vec::new();
        for v in values {
            if v.contains('\n') {
                secrets.extend(
                    v.lines()
                        .map(str::trim)
                        .filter(|l| l.len() >= 8)
                        .map(str::to_owned),
                );
            } else if !v.is_empty() {
                secrets.push(v);
            }
        }
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// The line with every secret replaced.
    pub fn mask(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[MASKED]");
            }
        }
        out
    }
}

/// Where a job writes its output: masks, prefixes with the job (via [`Event::Output`]) and
/// forwards to the run's event callback. Cheap to clone.
#[derive(Clone)]
pub struct JobOutput {
    job: String,
    masker: Arc<Masker>,
    sink: Arc<dyn Fn(&Event) + Send + Sync>,
}

impl JobOutput {
    /// An output handle for `job` sending masked lines to `sink` (for executors' own tests).
    pub fn new(
        job: impl Into<String>,
        masker: Masker,
        sink: Arc<dyn Fn(&Event) + Send + Sync>,
    ) -> Self {
        Self {
            job: job.into(),
            masker: Arc::new(masker),
            sink,
        }
    }

    /// Emits one line (without newline).
    pub fn line(&self, stream: Stream, line: &str) {
        (self.sink)(&Event::Output {
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
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Succeeded.
    Passed,
    /// Failed, and the failure fails the pipeline.
    Failed,
    /// Failed with `allow_failure`.
    AllowedFailure,
    /// Not run because of its `when` and the state of earlier stages.
    Skipped,
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobStatus::Passed => "passed",
            JobStatus::Failed => "failed",
            JobStatus::AllowedFailure => "failed (allowed)",
            JobStatus::Skipped => "skipped",
        })
    }
}

/// One row of the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// Job name.
    pub name: String,
    /// Stage name.
    pub stage: String,
    /// How it ended.
    pub status: JobStatus,
    /// Wall time (zero when skipped).
    pub duration: Duration,
    /// Exit code of its scripts, when it ran.
    pub exit_code: Option<i32>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Jobs in the order they finished within each stage, stages in order.
    pub jobs: Vec<JobReport>,
    /// Wall time of the whole run.
    pub duration: Duration,
}

impl RunReport {
    /// True when no job failed without `allow_failure` (the CLI exits non-zero otherwise).
    pub fn success(&self) -> bool {
        !self.jobs.iter().any(|j| j.status == JobStatus::Failed)
    }

    /// The report row of a job.
    pub fn job(&self, name: &str) -> Option<&JobReport> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// A plain-text table: job, stage, status, duration.
    pub fn summary_table(&self) -> String {
        let w_job = self
            .jobs
            .iter()
            .map(|j| j.name.len())
            .chain([3])
            .max()
            .unwrap_or(3);
        let w_stage = self
            .jobs
            .iter()
            .map(|j| j.stage.len())
            .chain([5])
            .max()
            .unwrap_or(5);
        let mut s = format!(
            "{:<w_job$}  {:<w_stage$}  {:<16}  {:>8}\n",
            "JOB", "STAGE", "STATUS", "DURATION"
        );
        for j in &self.jobs {
            let status = j.status.to_string();
            let dur = format!("{:.1}s", j.duration.as_secs_f64());
            s.push_str(&format!(
                "{:<w_job$}  {:<w_stage$}  {status:<16}  {dur:>8}\n",
                j.name, j.stage
            ));
        }
        let verdict = if self.success() { "passed" } else { "failed" };
        s.push_str(&format!(
            "pipeline {verdict} in {:.1}s\n",
            self.duration.as_secs_f64()
        ));
        s
    }
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The project checkout.
    pub project_dir: PathBuf,
    /// At most this many jobs of a stage at once (`--jobs`, at least 1).
    pub concurrency: usize,
    /// Run each job in a fresh copy of the project (as a CI runner's clean checkout) instead of
    /// in the project itself; artifacts are then the only way files travel between jobs.
    pub isolate: bool,
    /// Where job copies and saved artifacts go (default: a temporary directory, removed at the
    /// end of the run). Created, or set, mode 0700.
    pub work_dir: Option<PathBuf>,
    /// Directories put first on every job's `PATH`.
    pub path_prepend: Vec<PathBuf>,
}

impl RunOptions {
    /// Defaults: in place, 4 jobs at once, temporary work directory.
    pub fn new(project_dir: impl Into<PathBuf>) -> Self {
        Self {
            project_dir: project_dir.into(),
            concurrency: 4,
            isolate: false,
            work_dir: None,
            path_prepend: Vec::new(),
        }
    }

    /// Sets the concurrency bound.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs each job in its own copy of the project.
    #[must_use]
    pub fn isolate(mut self, yes: bool) -> Self {
        self.isolate = yes;
        self
    }

    /// Keeps job copies and artifacts in `dir`.
    #[must_use]
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// Puts `dir` first on every job's `PATH` (shim commands such as `docker`, `deploy`).
    #[must_use]
    pub fn path_prepend(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path_prepend.push(dir.into());
        self
    }
}

/// Runs plans with an executor.
#[derive(Debug)]
pub struct Runner<R> {
    executor: R,
    opts: RunOptions,
}

impl<R: JobRunner> Runner<R> {
    /// A runner with `executor` and `opts`.
    pub fn new(executor: R, opts: RunOptions) -> Self {
        Self { executor, opts }
    }

    /// Runs `plan`: stages in order, jobs of a stage concurrently up to the bound. A job that
    /// fails without `allow_failure` makes later `on_success` jobs skip and `on_failure` jobs
    /// run; `always` jobs run regardless. Events go to `on_event`.
    ///
    /// # Errors
    ///
    /// [`Error::JobIo`] when the work directory, a job copy or artifacts cannot be written.
    /// Job failures (including executor errors) are not errors: see [`RunReport::success`].
    pub async fn run<F>(&self, plan: &Plan, on_event: F) -> Result<RunReport>
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        let sink: Arc<dyn Fn(&Event) + Send + Sync> = Arc::new(on_event);
        let started = Instant::now();
        // The work directory holds every job's checkout copy and saved artifacts: 0700, so
        // other local users can read none of it. A temporary one gets a random name, created
        // exclusively (a predictable name in a shared /tmp could be a planted symlink).
        let (work, temporary) = match &self.opts.work_dir {
            Some(d) => {
                private_dir(d).map_err(|source| Error::JobIo {
                    job: String::new(),
                    action: format!("create work directory {}", d.display()),
                    source,
                })?;
                (d.clone(), false)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("rbuild-pipeline-")
                    .tempdir()
                    .map_err(|source| Error::JobIo {
                        job: String::new(),
                        action: format!(
                            "create a work directory in {}",
                            std::env::temp_dir().display()
                        ),
                        source,
                    })?;
                (dir.keep(), true)
            }
        };
        let result = self.run_stages(plan, &sink, &work).await;
        if temporary {
            // Best effort: a leftover temporary directory is not worth failing the run for.
            let _ = std::fs::remove_dir_all(&work);
        }
        let mut report = result?;
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn run_stages(
        &self,
        plan: &Plan,
        sink: &Arc<dyn Fn(&Event) + Send + Sync>,
        work: &Path,
    ) -> Result<RunReport> {
        let mut report = RunReport::default();
        let mut failed = false;
        for stage in &plan.stages {
            sink(&Event::StageStarted {
                stage: stage.name.clone(),
            });
            let mut to_run = Vec::new();
            for job in &stage.jobs {
                let runs = match job.when {
                    When::Always => true,
                    When::OnFailure => failed,
                    _ => !failed,
                };
                if runs {
                    to_run.push(job);
                } else {
                    sink(&Event::JobFinished {
                        job: job.name.clone(),
                        status: JobStatus::Skipped,
                        duration: Duration::ZERO,
                    });
                    report.jobs.push(JobReport {
                        name: job.name.clone(),
                        stage: job.stage.clone(),
                        status: JobStatus::Skipped,
                        duration: Duration::ZERO,
                        exit_code: None,
                    });
                }
            }
            let results: Vec<Result<JobReport>> = futures::stream::iter(to_run)
                .map(|job| self.run_job(job, sink, work))
                .buffer_unordered(self.opts.concurrency.max(1))
                .collect()
                .await;
            for r in results {
                let r = r?;
                failed |= r.status == JobStatus::Failed;
                report.jobs.push(r);
            }
        }
        Ok(report)
    }

    async fn run_job(
        &self,
        job: &PlannedJob,
        sink: &Arc<dyn Fn(&Event) + Send + Sync>,
        work: &Path,
    ) -> Result<JobReport> {
        let started = Instant::now();
        let io = |action: String| {
            move |source| Error::JobIo {
                job: job.name.clone(),
                action,
                source,
            }
        };
        sink(&Event::JobStarted {
            job: job.name.clone(),
        });
        let out = JobOutput::new(
            job.name.clone(),
            Masker::new(secret_values(job)),
            sink.clone(),
        );
        let artifacts_root = work.join("artifacts");
        let workdir = if self.opts.isolate {
            let dir = work
                .join("jobs")
                .join(crate::slug::ref_slug(&format!("{}-{}", job.id, job.name)));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io("clean the job directory".into()))?;
            }
            artifacts::copy_tree(&self.opts.project_dir, &dir, Some(work))
                .map_err(io("copy the project".into()))?;
            dir
        } else {
            self.opts.project_dir.clone()
        };
        for from in &job.artifacts_from {
            let saved = artifacts_root.join(artifact_dir_name(from));
            if saved.exists() {
                artifacts::restore(&saved, &workdir)
                    .map_err(io(format!("restore artifacts of {from:?}")))?;
                out.line(Stream::System, &format!("restored artifacts of {from}"));
            }
        }
        let env = job_env(job, &workdir)?;
        let mut cx = JobContext {
            env,
            workdir: workdir.clone(),
            path_prepend: self.opts.path_prepend.clone(),
            job_status: None,
        };
        let outcome = match self.executor.run(job, &cx, &out).await {
            Ok(o) => o,
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                out.line(Stream::System, &format!("ERROR: {msg}"));
                JobOutcome { exit_code: None }
            }
        };
        cx.job_status = Some(outcome.succeeded());
        if let Some(a) = &job.artifacts {
            let wanted = match a.when {
                When::Always => true,
                When::OnFailure => !outcome.succeeded(),
                _ => outcome.succeeded(),
            };
            if wanted && !a.paths.is_empty() {
                let resolved = artifacts::resolve_paths(&workdir, &a.paths)
                    .map_err(io("look up artifacts".into()))?;
                for p in resolved.unmatched {
                    out.line(Stream::System, &format!("WARNING: {p}: no matching files"));
                }
                for p in resolved.outside {
                    out.line(
                        Stream::System,
                        &format!(
                            "WARNING: {p}: leads out of the project directory through a symlink, not saved"
                        ),
                    );
                }
                let found = resolved.found;
                let store = artifacts_root.join(artifact_dir_name(&job.name));
                artifacts::save(&workdir, &found, &store).map_err(io("save artifacts".into()))?;
                out.line(
                    Stream::System,
                    &format!("saved {} artifact path(s)", found.len()),
                );
            }
        }
        let status = if outcome.succeeded() {
            JobStatus::Passed
        } else if job.allow_failure.allows(outcome.exit_code) {
            JobStatus::AllowedFailure
        } else {
            JobStatus::Failed
        };
        let duration = started.elapsed();
        sink(&Event::JobFinished {
            job: job.name.clone(),
            status,
            duration,
        });
        Ok(JobReport {
            name: job.name.clone(),
            stage: job.stage.clone(),
            status,
            duration,
            exit_code: outcome.exit_code,
        })
    }
}

/// Creates `dir` (and its parents) if missing and makes it mode 0700.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

/// Raw and expanded values of the job's masked variables (they differ when a secret's value
/// contains `$`).
fn secret_values(job: &PlannedJob) -> Vec<String> {
    let mut values = job.variables.masked_values();
    for v in job.variables.iter().filter(|v| v.masked) {
        if let Some(expanded) = job
            .env
            .get(&v.name)
            .filter(|e| !e.is_empty() && **e != v.value)
        {
            values.push(expanded.clone());
        }
    }
    values
}

fn artifact_dir_name(job: &str) -> String {
    // Job names contain spaces and slashes; the slug plus a hash-free index is not unique, so
    // keep the name readable but unambiguous by escaping instead.
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_string()
            } else {
                format!("%{:02x}", c as u32)
            }
        })
        .collect()
}

/// The job's environment with `CI_PROJECT_DIR` set to where it actually runs (re-expanded, so
/// variables built from `$CI_PROJECT_DIR` follow).
fn job_env(job: &PlannedJob, workdir: &Path) -> Result<BTreeMap<String, String>> {
    let dir = workdir.to_string_lossy();
    if job.env.get("CI_PROJECT_DIR").map(String::as_str) == Some(&*dir) {
        return Ok(job.env.clone());
    }
    let mut vars = job.variables.clone();
    vars.push(Variable::new("CI_PROJECT_DIR", dir.into_owned()).with_expand(false));
    vars.expand_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masker_masks_longest_first_and_multiline_by_line() {
        let m = Masker::new([
            "abc".to_owned(),
            "abcdef".to_owned(),
            "line-one-secret\nok\nline-two-secret".into(),
        ]);
        assert_eq!(m.mask("x abcdef y abc"), "x [MASKED] y [MASKED]");
        assert_eq!(m.mask("line-two-secret ok"), "[MASKED] ok");
    }

    #[test]
    fn summary_table_lists_jobs() {
        let report = RunReport {
            jobs: vec![JobReport {
                name: "build image".into(),
                stage: "build".into(),
                status: JobStatus::AllowedFailure,
                duration: Duration::from_millis(1500),
                exit_code: Some(1),
            }],
            duration: Duration::from_secs(2),
        };
        let t = report.summary_table();
        assert!(
            t.contains("build image  build  failed (allowed)      1.5s"),
            "{t}"
        );
        assert!(t.ends_with("pipeline passed in 2.0s\n"));
    }

    #[test]
    fn artifact_dir_names_are_distinct() {
        assert_eq!(artifact_dir_name("build image"), "build%20image");
        assert_ne!(artifact_dir_name("a/b"), artifact_dir_name("a b"));
    }
}
