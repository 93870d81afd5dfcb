//! The scheduler: jobs as a graph (`needs:` edges, else stage order), run concurrently up to
//! a bound, `when:` deciding what runs after a failure, and artifacts carried between jobs.

use rbuild_oci::Events;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::masker::Masker;
use super::report::{JobReport, JobStatus, RunReport};
use super::{Event, JobContext, JobOutcome, JobOutput, JobRunner, Stream};
use super::{artifacts, cache, rooted};
use crate::error::{Error, Result};
use crate::model::{AllowFailure, CachePolicy, When};
use crate::plan::{Plan, PlannedJob};
use crate::variables::{Variable, Variables, expand};

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The project checkout.
    pub project_dir: PathBuf,
    /// At most this many jobs at once (`--jobs`, at least 1).
    pub concurrency: usize,
    /// Run each job in a fresh copy of the project (as a CI runner's clean checkout) instead of
    /// in the project itself; artifacts are then the only way files travel between jobs.
    pub isolate: bool,
    /// Where job copies and saved artifacts go (default: a temporary directory, removed at the
    /// end of the run). Created, or set, mode 0700.
    pub work_dir: Option<PathBuf>,
    /// Directories put first on every job's `PATH`.
    pub path_prepend: Vec<PathBuf>,
    /// Where `cache:` is kept across jobs and runs; without one, `cache:` is skipped (and the
    /// job log says so).
    pub cache_dir: Option<PathBuf>,
}

impl RunOptions {
    /// Defaults: in place, as many jobs at once as the machine has cores, temporary work
    /// directory.
    pub fn new(project_dir: impl Into<PathBuf>) -> Self {
        Self {
            project_dir: project_dir.into(),
            concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            isolate: false,
            work_dir: None,
            path_prepend: Vec::new(),
            cache_dir: None,
        }
    }

    /// Keeps `cache:` in `dir` (created mode 0700 when missing).
    #[must_use]
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
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

    /// Runs `plan`: a job with `needs:` as soon as its needs finished, others after every job
    /// of the earlier stages, concurrently up to the bound. A job that fails without
    /// `allow_failure` makes the `on_success` jobs waiting for it skip and its `on_failure`
    /// jobs run; `always` jobs run regardless. Events go to `on_event`.
    ///
    /// # Errors
    ///
    /// [`Error::JobIo`] when the work directory, a job copy or artifacts cannot be written.
    /// Job failures (including executor errors) are not errors: see [`RunReport::success`].
    pub async fn run<F>(&self, plan: &Plan, on_event: F) -> Result<RunReport>
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        let sink: Events<Event> = Events::new(move |e: Event| on_event(&e));
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
        if let Some(dir) = &self.opts.cache_dir {
            // Caches hold job output (build trees, dependencies): 0700 like the work directory.
            private_dir(dir).map_err(|source| Error::JobIo {
                job: String::new(),
                action: format!("create cache directory {}", dir.display()),
                source,
            })?;
        }
        let result = self.run_graph(plan, &sink, &work).await;
        if temporary {
            // Best effort: a leftover temporary directory is not worth failing the run for.
            let _ = std::fs::remove_dir_all(&work);
        }
        let mut report = result?;
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Runs the plan as a graph: a job with `needs:` starts as soon as the jobs it needs have
    /// finished (`needs: []` at once), any other job once every job of the earlier stages has
    /// (GitLab's stage order). At most `concurrency` jobs run at a time; ready jobs start in
    /// plan order.
    async fn run_graph(&self, plan: &Plan, sink: &Events<Event>, work: &Path) -> Result<RunReport> {
        let jobs: Vec<&PlannedJob> = plan.jobs().collect();
        let deps = dependencies(plan, &jobs);
        let mut done: Vec<Option<JobStatus>> = vec![None; jobs.len()];
        let mut started = vec![false; jobs.len()];
        let mut announced = BTreeSet::new();
        let mut report = RunReport::default();
        // Declared before `running`, whose futures borrow it.
        let dotenv = Mutex::new(BTreeMap::new());
        let mut running = FuturesUnordered::new();
        let mut first_error = None;
        loop {
            // Start (or skip) every job whose dependencies are finished, up to the bound.
            // Skipping finishes a job, which may make others ready: repeat until stable.
            let mut progressed = true;
            while progressed && first_error.is_none() {
                progressed = false;
                for (i, job) in jobs.iter().enumerate() {
                    if started[i] {
                        continue;
                    }
                    let Some(statuses) = deps[i]
                        .iter()
                        .map(|&d| done[d])
                        .collect::<Option<Vec<JobStatus>>>()
                    else {
                        continue;
                    };
                    let runs = should_run(job, &statuses);
                    if runs && running.len() >= self.opts.concurrency.max(1) {
                        continue;
                    }
                    if announced.insert(job.stage.clone()) {
                        sink.emit(Event::StageStarted {
                            stage: job.stage.clone(),
                        });
                    }
                    started[i] = true;
                    progressed = true;
                    if runs {
                        let fut = self.run_job(job, sink, work, &dotenv);
                        running.push(async move { (i, fut.await) });
                    } else {
                        sink.emit(Event::JobFinished {
                            job: job.name.clone(),
                            status: JobStatus::Skipped,
                            duration: Duration::ZERO,
                        });
                        done[i] = Some(JobStatus::Skipped);
                        report.jobs.push(JobReport {
                            name: job.name.clone(),
                            stage: job.stage.clone(),
                            status: JobStatus::Skipped,
                            duration: Duration::ZERO,
                            exit_code: None,
                            allow_failure: job.allow_failure != AllowFailure::No,
                        });
                    }
                }
            }
            let Some((i, result)) = running.next().await else {
                break;
            };
            match result {
                Ok(r) => {
                    done[i] = Some(r.status);
                    report.jobs.push(r);
                }
                // Let the running jobs finish (their processes and directories are cleaned
                // up by their own futures), start nothing new, then report the first error.
                Err(e) => {
                    done[i] = Some(JobStatus::Failed);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(i) = started.iter().position(|s| !s) {
            // Only a cycle in `needs` leaves a job waiting forever; loading rejects those, so
            // this guards hand-made plans.
            return Err(Error::NeedsCycle {
                job: jobs[i].name.clone(),
            });
        }
        // The summary reads in plan order (stages, then file order), not finishing order.
        let position = |name: &str| jobs.iter().position(|j| j.name == name);
        report.jobs.sort_by_key(|r| position(&r.name));
        Ok(report)
    }

    async fn run_job(
        &self,
        job: &PlannedJob,
        sink: &Events<Event>,
        work: &Path,
        dotenv: &Mutex<BTreeMap<String, Variables>>,
    ) -> Result<JobReport> {
        let started = Instant::now();
        let io = |action: String| {
            move |source| Error::JobIo {
                job: job.name.clone(),
                action,
                source,
            }
        };
        sink.emit(Event::JobStarted {
            job: job.name.clone(),
        });
        let out = JobOutput::new(
            job.name.clone(),
            Masker::new(secret_values(job)),
            sink.clone(),
        );
        if job.when == When::Delayed {
            out.line(
                Stream::System,
                &format!(
                    "delayed job (start_in {}): started without waiting in a local run",
                    job.start_in.as_deref().unwrap_or("unset")
                ),
            );
        }
        let timeout = job.timeout.as_ref().map(|t| Duration::from_secs(t.secs));
        if let (Some(t), false) = (&job.timeout, self.executor.stops_when_dropped()) {
            out.line(
                Stream::System,
                &format!(
                    "WARNING: timeout {} is not enforced: this executor cannot stop a job early",
                    t.text
                ),
            );
        }
        // Variables from the dotenv reports of the jobs whose artifacts this job receives
        // (GitLab: they rank above the file's variables, below pipeline and secret ones).
        let mut inherited = Variables::new();
        {
            let reports = dotenv
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for from in &job.artifacts_from {
                if let Some(vars) = reports.get(from) {
                    inherited.extend(vars);
                }
            }
        }
        let max_attempts = 1 + job.retry.as_ref().map_or(0, |r| usize::from(r.max));
        let mut attempt = 0;
        let (outcome, workdir, cache_keys) = loop {
            attempt += 1;
            let workdir = self.prepare_workdir(job, work, &out)?;
            let env = job_env(job, &workdir, &inherited)?;
            let cache_keys = self.restore_caches(job, &env, &workdir, &out)?;
            let mut cx = JobContext {
                env,
                workdir: workdir.clone(),
                path_prepend: self.opts.path_prepend.clone(),
                job_status: None,
            };
            let run = self.executor.run(job, &cx, &out);
            let result = match timeout.filter(|_| self.executor.stops_when_dropped()) {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(r) => r.map(|o| (o, "script_failure")),
                    Err(_) => {
                        out.line(
                            Stream::System,
                            &format!(
                                "ERROR: job exceeded its timeout of {}: stopped",
                                job.timeout.as_ref().map_or("", |t| t.text.as_str())
                            ),
                        );
                        Ok((JobOutcome { exit_code: None }, "job_execution_timeout"))
                    }
                },
                None => run.await.map(|o| (o, "script_failure")),
            };
            let (outcome, reason) = match result {
                Ok(r) => r,
                Err(e) => {
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        msg.push_str(&format!(": {s}"));
                        src = s.source();
                    }
                    out.line(Stream::System, &format!("ERROR: {msg}"));
                    (JobOutcome { exit_code: None }, "runner_system_failure")
                }
            };
            cx.job_status = Some(outcome.succeeded());
            let retry = job
                .retry
                .as_ref()
                .is_some_and(|r| r.applies(reason, outcome.exit_code));
            if outcome.succeeded() || attempt >= max_attempts || !retry {
                break (outcome, workdir, cache_keys);
            }
            out.line(
                Stream::System,
                &format!(
                    "job failed ({reason}, exit code {}): retrying, attempt {} of {max_attempts}",
                    outcome
                        .exit_code
                        .map_or_else(|| "none".to_owned(), |c| c.to_string()),
                    attempt + 1
                ),
            );
        };
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
                let store = work.join("artifacts").join(artifact_dir_name(&job.name));
                artifacts::save(&workdir, &found, &store).map_err(io("save artifacts".into()))?;
                out.line(
                    Stream::System,
                    &format!("saved {} artifact path(s)", found.len()),
                );
            }
            // Reports are collected whatever the job's result (GitLab uploads them always).
            if !a.dotenv.is_empty() {
                let vars = read_dotenv(&workdir, &a.dotenv, &out);
                dotenv
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(job.name.clone(), vars);
            }
        }
        self.save_caches(job, &cache_keys, &workdir, outcome.succeeded(), &out)?;
        let status = if outcome.succeeded() {
            JobStatus::Passed
        } else if job.allow_failure.allows(outcome.exit_code) {
            JobStatus::AllowedFailure
        } else {
            JobStatus::Failed
        };
        let duration = started.elapsed();
        sink.emit(Event::JobFinished {
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
            allow_failure: job.allow_failure != AllowFailure::No,
        })
    }

    /// Computes each cache's key and restores the caches the job pulls (its key, else its
    /// fallback keys in order). Returns the keys, in `job.cache` order (`None` for a cache
    /// whose key is refused: the log says why and it is neither restored nor saved).
    fn restore_caches(
        &self,
        job: &PlannedJob,
        env: &BTreeMap<String, String>,
        workdir: &Path,
        out: &JobOutput,
    ) -> Result<Vec<Option<String>>> {
        let Some(dir) = &self.opts.cache_dir else {
            if !job.cache.is_empty() {
                out.line(
                    Stream::System,
                    "WARNING: cache: no cache directory for this run, caches are skipped",
                );
            }
            return Ok(vec![None; job.cache.len()]);
        };
        let mut keys = Vec::new();
        for c in &job.cache {
            let key = match cache::key(c, env, workdir) {
                Ok(k) => k,
                Err(why) => {
                    out.line(Stream::System, &format!("WARNING: cache: {why}"));
                    keys.push(None);
                    continue;
                }
            };
            if c.policy != CachePolicy::Push {
                let mut tried = vec![key.clone()];
                tried.extend(c.fallback_keys.iter().map(|k| expand(k, env)));
                tried.retain(|k| !k.is_empty() && k != "." && k != ".." && !k.contains('/'));
                let restored =
                    cache::restore(dir, &tried, workdir).map_err(|source| Error::JobIo {
                        job: job.name.clone(),
                        action: format!("restore cache {key:?}"),
                        source,
                    })?;
                out.line(
                    Stream::System,
                    &match restored {
                        Some(k) => format!("cache {k:?} restored"),
                        None => format!("cache {key:?} not found"),
                    },
                );
            }
            keys.push(Some(key));
        }
        Ok(keys)
    }

    /// Saves the caches the job pushes, when their `when` matches the outcome.
    fn save_caches(
        &self,
        job: &PlannedJob,
        keys: &[Option<String>],
        workdir: &Path,
        succeeded: bool,
        out: &JobOutput,
    ) -> Result<()> {
        let Some(dir) = &self.opts.cache_dir else {
            return Ok(());
        };
        for (c, key) in job.cache.iter().zip(keys) {
            let Some(key) = key else { continue };
            let wanted = match c.when {
                When::Always => true,
                When::OnFailure => !succeeded,
                _ => succeeded,
            };
            if c.policy == CachePolicy::Pull || !wanted || c.paths.is_empty() {
                continue;
            }
            let io = |action: String| {
                move |source| Error::JobIo {
                    job: job.name.clone(),
                    action,
                    source,
                }
            };
            let resolved = artifacts::resolve_paths(workdir, &c.paths)
                .map_err(io(format!("look up the paths of cache {key:?}")))?;
            for p in resolved.outside {
                out.line(
                    Stream::System,
                    &format!("WARNING: cache: {p}: leads out of the project directory through a symlink, not saved"),
                );
            }
            cache::save(dir, key, workdir, &resolved.found)
                .map_err(io(format!("save cache {key:?}")))?;
            out.line(
                Stream::System,
                &format!("cache {key:?} saved ({} path(s))", resolved.found.len()),
            );
        }
        Ok(())
    }

    /// The directory the job runs in: the project itself, or (isolated) a fresh copy of it
    /// for each attempt, with the artifacts it receives restored.
    fn prepare_workdir(&self, job: &PlannedJob, work: &Path, out: &JobOutput) -> Result<PathBuf> {
        let io = |action: String| {
            move |source| Error::JobIo {
                job: job.name.clone(),
                action,
                source,
            }
        };
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
            let saved = work.join("artifacts").join(artifact_dir_name(from));
            if saved.exists() {
                artifacts::restore(&saved, &workdir)
                    .map_err(io(format!("restore artifacts of {from:?}")))?;
                out.line(Stream::System, &format!("restored artifacts of {from}"));
            }
        }
        Ok(workdir)
    }
}

/// GitLab's limit on a dotenv report's size.
const DOTENV_MAX_BYTES: usize = 5 * 1024;

/// The variables of a job's `artifacts:reports:dotenv` files, read through a descriptor of
/// its directory (a report that is a symlink out of it is refused); problems are warnings in
/// the job log, as GitLab reports a bad dotenv artifact without failing the job.
fn read_dotenv(workdir: &Path, files: &[String], out: &JobOutput) -> Variables {
    let mut vars = Variables::new();
    let root = match rooted::open_root(workdir) {
        Ok(fd) => fd,
        Err(e) => {
            out.line(Stream::System, &format!("WARNING: dotenv: {e}"));
            return vars;
        }
    };
    for file in files {
        let rel = Path::new(file.trim_start_matches("./"));
        let text = match rooted::read_beneath(std::os::fd::AsFd::as_fd(&root), rel) {
            Ok(t) if t.len() <= DOTENV_MAX_BYTES => t,
            Ok(_) => {
                out.line(
                    Stream::System,
                    &format!("WARNING: dotenv report {file} is larger than 5 KiB: not used"),
                );
                continue;
            }
            Err(e) => {
                out.line(
                    Stream::System,
                    &format!("WARNING: dotenv report {file} not read: {e}"),
                );
                continue;
            }
        };
        match crate::variables::parse_var_file(&text, rel) {
            Ok(parsed) => {
                for v in parsed.iter() {
                    vars.push(Variable::new(v.name.clone(), v.value.clone()).with_expand(false));
                }
                out.line(
                    Stream::System,
                    &format!("dotenv report {file}: {} variable(s)", parsed.len()),
                );
            }
            Err(e) => out.line(
                Stream::System,
                &format!("WARNING: dotenv report not used: {e}"),
            ),
        }
    }
    vars
}

/// For each job (by index into `jobs`), the jobs it waits for: its planned `needs`, or every
/// job of an earlier stage.
fn dependencies(plan: &Plan, jobs: &[&PlannedJob]) -> Vec<Vec<usize>> {
    let stage_of = |job: &PlannedJob| plan.stages.iter().position(|s| s.name == job.stage);
    jobs.iter()
        .map(|job| match &job.needs {
            Some(needs) => needs
                .iter()
                .filter_map(|n| jobs.iter().position(|j| j.name == *n))
                .collect(),
            None => {
                let own = stage_of(job);
                jobs.iter()
                    .enumerate()
                    .filter(|(_, j)| stage_of(j) < own)
                    .map(|(i, _)| i)
                    .collect()
            }
        })
        .collect()
}

/// Whether a job runs once the jobs it waits for ended with `statuses` (GitLab's `when:`):
/// `on_success` (also `manual` and `delayed` once started) when none failed, and — for a job
/// with `needs`, whose needed jobs must have run — none was skipped; `on_failure` when one
/// failed; `always` regardless. Allowed failures count as success.
fn should_run(job: &PlannedJob, statuses: &[JobStatus]) -> bool {
    let failed = statuses.contains(&JobStatus::Failed);
    match job.when {
        When::Always => true,
        When::OnFailure => failed,
        _ => !failed && (job.needs.is_none() || !statuses.contains(&JobStatus::Skipped)),
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
/// variables built from `$CI_PROJECT_DIR` follow) and the dotenv variables it `inherited`
/// (above the file's variables, below secret ones).
fn job_env(
    job: &PlannedJob,
    workdir: &Path,
    inherited: &Variables,
) -> Result<BTreeMap<String, String>> {
    let dir = workdir.to_string_lossy();
    if inherited.is_empty() && job.env.get("CI_PROJECT_DIR").map(String::as_str) == Some(&*dir) {
        return Ok(job.env.clone());
    }
    let mut vars = job.variables.clone();
    for v in inherited.iter() {
        if !job.variables.iter().any(|j| j.name == v.name && j.masked) {
            vars.push(v.clone());
        }
    }
    vars.push(Variable::new("CI_PROJECT_DIR", dir.into_owned()).with_expand(false));
    vars.expand_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn artifact_dir_names_are_distinct() {
        assert_eq!(artifact_dir_name("build image"), "build%20image");
        assert_ne!(artifact_dir_name("a/b"), artifact_dir_name("a b"));
    }

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::{GitInfo, GitRef, Pipeline, PipelineContext, PlanOptions};

    fn plan_of(yaml: &str, project: &Path) -> Plan {
        let pipeline = Pipeline::parse(yaml, Path::new(".gitlab-ci.yml"), project).unwrap();
        let git = GitInfo {
            sha: "0".repeat(40),
            git_ref: GitRef::Branch("main".into()),
            project_name: "p".into(),
            project_path: None,
            default_branch: "main".into(),
        };
        let cx = PipelineContext::new(git, project);
        crate::plan(&pipeline, &cx, &PlanOptions::default()).unwrap()
    }

    /// A runner that runs nothing: fails the named jobs, records how many ran at once.
    #[derive(Default)]
    struct Fake {
        fail: Vec<&'static str>,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        ran: Arc<Mutex<Vec<String>>>,
    }

    impl JobRunner for Fake {
        async fn run(
            &self,
            job: &PlannedJob,
            _cx: &JobContext,
            _out: &JobOutput,
        ) -> Result<JobOutcome> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.ran.lock().unwrap().push(job.name.clone());
            let failed = self.fail.contains(&job.name.as_str());
            Ok(JobOutcome {
                exit_code: Some(i32::from(failed)),
            })
        }
    }

    #[tokio::test]
    async fn stages_bound_concurrency_and_when_decides_after_a_failure() {
        let project = tempfile::tempdir().unwrap();
        let plan = plan_of(
            "stages: [one, two, three]\n\
             a: {stage: one, script: [x]}\n\
             b: {stage: one, script: [x]}\n\
             c: {stage: one, script: [x]}\n\
             bad: {stage: one, script: [x]}\n\
             next: {stage: two, script: [x]}\n\
             cleanup: {stage: two, script: [x], when: on_failure}\n\
             last: {stage: three, script: [x], when: always}\n",
            project.path(),
        );
        let fake = Fake {
            fail: vec!["bad"],
            ..Fake::default()
        };
        let (most, ran) = (fake.most.clone(), fake.ran.clone());
        let runner = Runner::new(fake, RunOptions::new(project.path()).concurrency(2));
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let report = runner
            .run(&plan, move |e: &Event| sink.lock().unwrap().push(e.clone()))
            .await
            .unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 2, "the bound is 2");
        let status = |name: &str| report.job(name).unwrap().status;
        assert_eq!(status("bad"), JobStatus::Failed);
        assert_eq!(status("a"), JobStatus::Passed);
        assert_eq!(status("next"), JobStatus::Skipped);
        assert_eq!(status("cleanup"), JobStatus::Passed);
        assert_eq!(status("last"), JobStatus::Passed);
        assert!(!report.success());
        let ran = ran.lock().unwrap().clone();
        assert!(!ran.contains(&"next".to_owned()), "{ran:?}");
        // Stage two starts only after every job of stage one finished.
        let events = events.lock().unwrap();
        let pos = |want: &Event| events.iter().position(|e| e == want).unwrap();
        let stage_two = pos(&Event::StageStarted {
            stage: "two".into(),
        });
        for job in ["a", "b", "c", "bad"] {
            let finished = events
                .iter()
                .position(|e| matches!(e, Event::JobFinished { job: j, .. } if j == job))
                .unwrap();
            assert!(finished < stage_two, "{job} finished after stage two began");
        }
    }

    /// A runner that records when each job started and ended (milliseconds since creation),
    /// taking each job's `SLEEP_MS` variable as its run time and failing jobs whose `FAIL` is set.
    struct Timed {
        t0: Instant,
        log: Arc<Mutex<Vec<(String, u128, u128)>>>,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Timed {
        fn new() -> Self {
            Self {
                t0: Instant::now(),
                log: Arc::default(),
                running: Arc::default(),
                most: Arc::default(),
            }
        }
    }

    impl JobRunner for Timed {
        async fn run(
            &self,
            job: &PlannedJob,
            _cx: &JobContext,
            _out: &JobOutput,
        ) -> Result<JobOutcome> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let start = self.t0.elapsed().as_millis();
            let ms = job.env.get("SLEEP_MS").map_or(0, |v| v.parse().unwrap());
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let end = self.t0.elapsed().as_millis();
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.log
                .lock()
                .unwrap()
                .push((job.name.clone(), start, end));
            Ok(JobOutcome {
                exit_code: Some(i32::from(job.env.contains_key("FAIL"))),
            })
        }
    }

    #[tokio::test]
    async fn a_job_with_needs_starts_before_its_stage_predecessors_end() {
        let project = tempfile::tempdir().unwrap();
        let plan = plan_of(
            "stages: [build, test]\n\
             slow: {stage: build, script: [x], variables: {SLEEP_MS: '400'}}\n\
             fast: {stage: build, script: [x], variables: {SLEEP_MS: '10'}}\n\
             after-fast: {stage: test, needs: [fast], script: [x]}\n\
             at-once: {stage: test, needs: [], script: [x]}\n\
             staged: {stage: test, script: [x]}\n",
            project.path(),
        );
        let timed = Timed::new();
        let log = timed.log.clone();
        let runner = Runner::new(timed, RunOptions::new(project.path()).concurrency(4));
        let report = runner.run(&plan, |_: &Event| {}).await.unwrap();
        assert!(report.success());
        let log = log.lock().unwrap().clone();
        let at = |name: &str| log.iter().find(|(n, ..)| n == name).unwrap().clone();
        let (_, _, slow_end) = at("slow");
        let (_, _, fast_end) = at("fast");
        let (_, after_fast_start, _) = at("after-fast");
        let (_, at_once_start, _) = at("at-once");
        let (_, staged_start, _) = at("staged");
        // Ordering, not timing goals: each comparison has the 400 ms job as its margin.
        assert!(after_fast_start >= fast_end, "{log:?}");
        assert!(
            after_fast_start < slow_end,
            "needs did not start early: {log:?}"
        );
        assert!(at_once_start < fast_end, "`needs: []` waited: {log:?}");
        assert!(
            staged_start >= slow_end,
            "a stage-ordered job started early: {log:?}"
        );
        // The summary is in plan order whatever the finishing order.
        let names: Vec<_> = report.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["slow", "fast", "after-fast", "at-once", "staged"]);
    }

    #[tokio::test]
    async fn the_bound_holds_across_stages_and_a_failed_need_skips_only_its_dependants() {
        let project = tempfile::tempdir().unwrap();
        let plan = plan_of(
            "stages: [one, two]\n\
             a: {stage: one, script: [x], variables: {SLEEP_MS: '50'}}\n\
             bad: {stage: one, script: [x], variables: {FAIL: '1'}}\n\
             b: {stage: two, needs: [], script: [x], variables: {SLEEP_MS: '50'}}\n\
             c: {stage: two, needs: [], script: [x], variables: {SLEEP_MS: '50'}}\n\
             on-a: {stage: two, needs: [a], script: [x]}\n\
             on-bad: {stage: two, needs: [bad], script: [x]}\n\
             on-on-bad: {stage: two, needs: [on-bad], script: [x]}\n\
             rescue: {stage: two, needs: [bad], script: [x], when: on_failure}\n\
             staged: {stage: two, script: [x]}\n",
            project.path(),
        );
        let timed = Timed::new();
        let most = timed.most.clone();
        let runner = Runner::new(timed, RunOptions::new(project.path()).concurrency(2));
        let report = runner.run(&plan, |_: &Event| {}).await.unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 2, "the bound is 2");
        let status = |name: &str| report.job(name).unwrap().status;
        assert_eq!(status("bad"), JobStatus::Failed);
        assert_eq!(status("on-a"), JobStatus::Passed);
        assert_eq!(status("on-bad"), JobStatus::Skipped);
        assert_eq!(
            status("on-on-bad"),
            JobStatus::Skipped,
            "a skipped need skips"
        );
        assert_eq!(status("rescue"), JobStatus::Passed);
        assert_eq!(status("staged"), JobStatus::Skipped);
        assert_eq!(status("b"), JobStatus::Passed);
        assert!(!report.success());
    }

    #[tokio::test]
    async fn a_hand_made_plan_with_a_needs_cycle_is_an_error_not_a_hang() {
        let project = tempfile::tempdir().unwrap();
        let mut plan = plan_of("a: {script: [x]}\nb: {script: [x]}\n", project.path());
        plan.stages[0].jobs[0].needs = Some(vec!["b".into()]);
        plan.stages[0].jobs[1].needs = Some(vec!["a".into()]);
        let runner = Runner::new(Timed::new(), RunOptions::new(project.path()));
        let err = runner.run(&plan, |_: &Event| {}).await.unwrap_err();
        assert!(err.to_string().contains("\"a\""), "{err}");
    }

    #[test]
    fn the_job_environment_follows_the_directory_it_runs_in() {
        let plan = plan_of(
            "j:\n  variables: {OUT: $CI_PROJECT_DIR/out}\n  script: [x]\n",
            Path::new("/checkout"),
        );
        let job = plan.job("j").unwrap();
        assert_eq!(job.env["OUT"], "/checkout/out");
        let none = Variables::new();
        let env = job_env(job, Path::new("/runner/jobs/1-j"), &none).unwrap();
        assert_eq!(env["CI_PROJECT_DIR"], "/runner/jobs/1-j");
        assert_eq!(env["OUT"], "/runner/jobs/1-j/out");
        // In place, the planned environment is used as is.
        assert_eq!(
            job_env(job, Path::new("/checkout"), &none).unwrap(),
            job.env
        );
    }

    #[test]
    fn secret_values_include_expanded_forms() {
        let project = Path::new("/checkout");
        let pipeline =
            Pipeline::parse("j:\n  script: [x]\n", Path::new(".gitlab-ci.yml"), project).unwrap();
        let git = GitInfo {
            sha: "0".repeat(40),
            git_ref: GitRef::Branch("main".into()),
            project_name: "p".into(),
            project_path: None,
            default_branch: "main".into(),
        };
        let mut secrets = crate::Variables::new();
        secrets.push(Variable::secret("TOKEN", "pre-$CI_COMMIT_REF_NAME-post"));
        let plan = crate::plan(
            &pipeline,
            &PipelineContext::new(git, project),
            &PlanOptions::default().variables(secrets),
        )
        .unwrap();
        let values = secret_values(plan.job("j").unwrap());
        assert!(
            values.contains(&"pre-$CI_COMMIT_REF_NAME-post".to_owned()),
            "{values:?}"
        );
        assert!(values.contains(&"pre-main-post".to_owned()), "{values:?}");
    }

    #[test]
    fn a_private_work_dir_is_0700_even_when_it_existed() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/work");
        private_dir(&dir).unwrap();
        let mode = |d: &Path| std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}
