//! `rbuild pipeline run|plan`: a `.gitlab-ci.yml` run locally, daemonless.
//!
//! The plan and the executors (host shell, or the job's `image:` through the sandbox) come
//! from `rbuild-pipeline`; this module turns flags into their options and puts `docker` and
//! `deploy` on every job's `PATH`: symlinks to this binary, which then speaks those commands
//! (see `crate::shim`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::ValueEnum;
use rbuild_pipeline::image::{ExecutorKind, ImageExecutor, RegistryOptions};
use rbuild_pipeline::{
    GitInfo, GitRef, Pipeline, PipelineContext, Plan, PlanOptions, RunOptions, Runner, Variable,
    Variables, parse_var_file, plan,
};

use super::RegistryFlags;

/// `rbuild pipeline` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run the pipeline: a job with `needs:` once its needs finished, others stage by stage,
    /// concurrently up to `--jobs`.
    Run(RunArgs),
    /// Show which jobs run, stage by stage, and why each other job does not.
    Plan(Selection),
}

/// What to run: the file, the ref, variables and job selection.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Selection {
    /// The pipeline file [default: PROJECT/.gitlab-ci.yml].
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The project checkout (a git repository).
    #[arg(long = "project", value_name = "DIR", default_value = ".")]
    pub project: PathBuf,
    /// Run for this branch [default: the checked-out one].
    #[arg(long, value_name = "B", conflicts_with = "tag")]
    pub branch: Option<String>,
    /// Run for this tag.
    #[arg(long, value_name = "T")]
    pub tag: Option<String>,
    /// A secret variable (repeatable; masked in job output).
    #[arg(long = "var", value_name = "K=V")]
    pub vars: Vec<String>,
    /// A file of `KEY=VALUE` secret variables (dotenv syntax).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_file: Option<PathBuf>,
    /// Run only this job (repeatable; manual jobs included).
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
    /// Run `when: manual` jobs too.
    #[arg(long)]
    pub manual: bool,
    /// What `rules:changes` compares `HEAD` with [default: the previous commit on the default
    /// branch, else the merge base with the default branch].
    #[arg(long = "compare-to", value_name = "REF")]
    pub compare_to: Option<String>,
}

/// Arguments of `rbuild pipeline run`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Where scripts run [default: in the job's `image:` when it has one, else on the host].
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<ExecutorArg>,
    /// At most this many jobs at once [default: the number of cores].
    #[arg(long = "jobs", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// The summary as a table after the log, or as JSON on stdout (the log then goes to
    /// stderr).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    pub format: SummaryFormat,
}

/// `--format` of `pipeline run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SummaryFormat {
    /// The job log, then a table.
    Text,
    /// One JSON document: the pipeline's status and duration and one entry per job.
    Json,
}

/// `--executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExecutorArg {
    /// Inside the job's image, through the rbuild sandbox.
    Image,
    /// On the host (`sh -e`).
    Shell,
}

/// Runs `rbuild pipeline …`.
///
/// # Errors
///
/// An unreadable or invalid pipeline, a bad variable, git failures, job directory IO.
pub(crate) async fn run(
    root: &Path,
    flags: &RegistryFlags,
    command: Command,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plan(selection) => {
            let (_, _, planned) = load_and_plan(&selection)?;
            print!("{planned}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_pipeline(root, flags, args).await,
    }
}

/// Secret variables, lowest precedence first: the environment (only names the file uses but
/// does not define), `--var-file`, then `--var`.
fn secret_variables(pipeline: &Pipeline, selection: &Selection) -> anyhow::Result<Variables> {
    let mut vars = pipeline.secrets_from(|n| std::env::var(n).ok());
    vars.extend(&explicit_variables(selection)?);
    Ok(vars)
}

/// `--var-file`, then `--var`.
fn explicit_variables(selection: &Selection) -> anyhow::Result<Variables> {
    let mut vars = Variables::new();
    if let Some(path) = &selection.var_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let file_vars = parse_var_file(&text, path)?;
        vars.extend(&file_vars);
    }
    for kv in &selection.vars {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("invalid --var `{kv}`: expected KEY=VALUE"))?;
        vars.push(Variable::secret(k, v));
    }
    Ok(vars)
}

fn load_and_plan(selection: &Selection) -> anyhow::Result<(PathBuf, Pipeline, Plan)> {
    let project = std::fs::canonicalize(&selection.project).with_context(|| {
        format!(
            "project directory {} not found",
            selection.project.display()
        )
    })?;
    let file = selection
        .file
        .clone()
        .unwrap_or_else(|| project.join(".gitlab-ci.yml"));
    let mut git = GitInfo::discover(&project)?;
    if let Some(b) = &selection.branch {
        git = git.with_ref(GitRef::Branch(b.clone()));
    } else if let Some(t) = &selection.tag {
        git = git.with_ref(GitRef::Tag(t.clone()));
    }
    let mut cx = PipelineContext::new(git, &project);
    cx.changed_files = rbuild_pipeline::changed_files(
        &project,
        &cx.git.git_ref,
        &cx.git.default_branch,
        selection.compare_to.as_deref(),
    )?;
    // `include:rules` see the predefined variables and the ones given on the command line
    // (GitLab: pipeline variables, never the file's own `variables:`).
    let mut include_vars = cx.variables();
    include_vars.extend(&explicit_variables(selection)?);
    let pipeline = Pipeline::load(&file, &project, &include_vars.expand_all()?)?;
    for w in &pipeline.warnings {
        eprintln!("warning: {w}");
    }
    let options = PlanOptions::default()
        .jobs(selection.jobs.iter().cloned())
        .manual(selection.manual)
        .variables(secret_variables(&pipeline, selection)?);
    let planned = plan(&pipeline, &cx, &options)?;
    Ok((project, pipeline, planned))
}

/// A temporary directory holding `docker` and `deploy`, symlinks to this binary.
fn shim_dir() -> anyhow::Result<tempfile::TempDir> {
    let exe = std::env::current_exe().context("failed to find the rbuild binary")?;
    let dir = tempfile::Builder::new()
        .prefix("rbuild-shims-")
        .tempdir()
        .context("failed to create the shim directory")?;
    for name in ["docker", "deploy"] {
        std::os::unix::fs::symlink(&exe, dir.path().join(name))
            .with_context(|| format!("failed to create the `{name}` command"))?;
    }
    Ok(dir)
}

async fn run_pipeline(
    root: &Path,
    flags: &RegistryFlags,
    args: RunArgs,
) -> anyhow::Result<ExitCode> {
    let (project, _, planned) = load_and_plan(&args.selection)?;
    if planned.stages.iter().all(|s| s.jobs.is_empty()) {
        print!("{planned}");
        eprintln!("no job to run for {}", ref_label(&args.selection));
        return Ok(ExitCode::SUCCESS);
    }
    let shims = shim_dir()?;
    let kind = match args.executor {
        None => ExecutorKind::ByJob,
        Some(ExecutorArg::Image) => ExecutorKind::Image,
        Some(ExecutorArg::Shell) => ExecutorKind::Shell,
    };
    let registries = RegistryOptions {
        tls_verify: flags.tls_verify,
        insecure_registries: flags.insecure_registries.clone(),
    };
    let executor = ImageExecutor::new(kind, root).registries(registries);
    // `cache:` lives under the rbuild root, shared by every run of every project there. The
    // store is opened (created) first: it refuses a root that has content but no layout.
    super::open_store(root)?;
    let mut options = RunOptions::new(&project)
        .path_prepend(shims.path())
        .cache_dir(root.join("pipeline-cache"));
    if let Some(n) = args.concurrency {
        options = options.concurrency(usize::from(n));
    }
    let runner = Runner::new(executor, options);
    let json = args.format == SummaryFormat::Json;
    let pipeline_id = planned
        .jobs()
        .next()
        .and_then(|j| j.env.get("CI_PIPELINE_ID").cloned())
        .unwrap_or_default();
    let logs = std::sync::Arc::new(JobLogs::new(root.join("pipeline-logs").join(&pipeline_id))?);
    let sink = logs.clone();
    let run = runner.run(&planned, move |event| {
        sink.record(event);
        if json {
            eprintln!("{event}");
        } else {
            println!("{event}");
        }
    });
    // Job shells run in process groups of their own (so a timeout stops all they started),
    // which also keeps the terminal's Ctrl-C from reaching them: on SIGINT, drop the run,
    // which kills every running job's process group, and exit like an interrupted shell.
    let report = tokio::select! {
        report = run => report.context("failed to run the pipeline")?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: running jobs stopped");
            return Ok(ExitCode::from(130));
        }
    };
    eprintln!("job logs: {}", logs.dir.display());
    if json {
        println!("{}", summary_json(&report));
    } else {
        println!();
        print!("{}", report.summary_table());
    }
    Ok(if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One log file per job under the rbuild root (`pipeline-logs/PIPELINE_ID/JOB.log`, mode
/// 0700 directories): the job's lines as printed, secrets already masked.
struct JobLogs {
    dir: PathBuf,
    files: std::sync::Mutex<std::collections::HashMap<String, Option<std::fs::File>>>,
}

impl JobLogs {
    /// A fresh directory for this run's logs: `DIR`, or `DIR.2`, `DIR.3`, ... when an earlier
    /// run (pipeline ids are per second) already has `DIR`, so no run overwrites another's logs.
    fn new(dir: PathBuf) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let failed = |d: &Path| format!("failed to create the job log directory {}", d.display());
        if let Some(parent) = dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| failed(parent))?;
        }
        let mut candidate = dir.clone();
        for n in 2u32.. {
            match std::fs::DirBuilder::new().mode(0o700).create(&candidate) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => {
                    let mut name = dir.as_os_str().to_owned();
                    name.push(format!(".{n}"));
                    candidate = PathBuf::from(name);
                }
                Err(e) => return Err(e).with_context(|| failed(&candidate)),
            }
        }
        Ok(Self {
            dir: candidate,
            files: std::sync::Mutex::default(),
        })
    }

    fn record(&self, event: &rbuild_pipeline::Event) {
        use rbuild_pipeline::Event;
        use std::io::Write as _;
        let job = match event {
            Event::JobStarted { job }
            | Event::Output { job, .. }
            | Event::JobFinished { job, .. } => job,
            _ => return,
        };
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let file = files.entry(job.clone()).or_insert_with(|| {
            let path = self.dir.join(format!("{}.log", log_name(job)));
            match std::fs::File::create(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("warning: cannot write {}: {e}", path.display());
                    None
                }
            }
        });
        if let Some(f) = file {
            // A full disk must not stop the run: the log is a copy of what is printed.
            let _ = writeln!(f, "{event}");
        }
    }
}

/// A job name as a file name: bytes outside `[A-Za-z0-9._-]` escaped as `%XX` (names hold
/// spaces, `/` and `:` — `test 1/3`, `build: [aws, app]`).
fn log_name(job: &str) -> String {
    job.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// The summary as JSON: what the table shows, with durations in seconds.
fn summary_json(report: &rbuild_pipeline::RunReport) -> serde_json::Value {
    let jobs: Vec<serde_json::Value> = report
        .jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "name": j.name,
                "stage": j.stage,
                "status": j.status.to_string(),
                "duration_seconds": j.duration.as_secs_f64(),
                "exit_code": j.exit_code,
                "allow_failure": j.allow_failure,
            })
        })
        .collect();
    serde_json::json!({
        "status": if report.success() { "passed" } else { "failed" },
        "duration_seconds": report.duration.as_secs_f64(),
        "jobs": jobs,
    })
}

fn ref_label(selection: &Selection) -> String {
    match (&selection.branch, &selection.tag) {
        (Some(b), _) => format!("branch {b}"),
        (_, Some(t)) => format!("tag {t}"),
        _ => "the checked-out ref".to_owned(),
    }
}

#[cfg(test)]
mod job_logs_tests {
    use super::*;

    #[test]
    fn a_second_run_with_the_same_id_gets_its_own_log_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pipeline-logs").join("1700000000");
        let first = JobLogs::new(dir.clone()).unwrap();
        let second = JobLogs::new(dir.clone()).unwrap();
        let third = JobLogs::new(dir.clone()).unwrap();
        assert_eq!(first.dir, dir);
        assert_eq!(second.dir, tmp.path().join("pipeline-logs/1700000000.2"));
        assert_eq!(third.dir, tmp.path().join("pipeline-logs/1700000000.3"));
        assert!(second.dir.is_dir() && third.dir.is_dir());
    }
}
