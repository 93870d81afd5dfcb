//! Running jobs in their `image:`, daemonless, through the rbuild engine's sandbox (cargo
//! feature `image-jobs`, on by default).
//!
//! [`ImageExecutor`] is a [`JobRunner`]: a job with `image:` runs in a fresh container of that
//! image (pulled when the store lacks it) with the job's directory bind-mounted at
//! `CI_PROJECT_DIR`, as GitLab Runner's docker executor mounts the build directory; a job
//! without one runs on the host through [`ShellRunner`] (see [`ExecutorKind`]). Every job also
//! gets the [`shim_env`](crate::shim_env) variables, so the `docker`/`deploy` commands a
//! caller puts on its `PATH` find the store, the registry settings and the job's pushes file.
//!
//! ```no_run
//! use std::path::Path;
//! use rbuild_pipeline::image::{ExecutorKind, ImageExecutor, RegistryOptions};
//! use rbuild_pipeline::{RunOptions, Runner};
//!
//! # async fn demo(plan: &rbuild_pipeline::Plan) -> Result<(), Box<dyn std::error::Error>> {
//! let registries = RegistryOptions::default().insecure_registry("registry.ci.internal:5000");
//! let executor = ImageExecutor::new(ExecutorKind::ByJob, Path::new("/var/lib/rbuild"))
//!     .registries(registries);
//! let runner = Runner::new(executor, RunOptions::new("."));
//! let report = runner.run(plan, |event| println!("{event}")).await?;
//! assert!(report.success());
//! # Ok(())
//! # }
//! ```
//!
//! All calls into the engine sit in the private `engine` module.

mod engine;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::plan::PlannedJob;
use crate::run::{JobContext, JobOutcome, JobOutput, JobRunner, ShellRunner, Stream};
use crate::shim_env::{INSECURE_ENV, PUSHES_ENV, ROOT_ENV, TLS_VERIFY_ENV};

/// `PATH` inside the container when neither the image nor the job sets one (docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What can stop a job from running in its image (as opposed to its script failing, which is
/// an exit code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`ExecutorKind::Image`] and a job without `image:`.
    #[error("job {job:?} has no image: give it `image:` or run it with the shell executor")]
    NoImage {
        /// The job.
        job: String,
    },
    /// The job's temporary directory (for its pushes file) could not be created.
    #[error("failed to create the temporary directory of job {job:?}")]
    CreateJobDir {
        /// The job.
        job: String,
        /// The IO cause.
        #[source]
        source: std::io::Error,
    },
    /// The image store could not be opened.
    #[error("failed to open the store at {}", root.display())]
    OpenStore {
        /// The store's root.
        root: PathBuf,
        /// The engine's error.
        #[source]
        source: rbuild::BoxError,
    },
    /// The job's `image:` is not an image reference.
    #[error("invalid image reference `{reference}`")]
    ParseReference {
        /// The reference as planned (variables expanded).
        reference: String,
        /// The parser's error.
        #[source]
        source: rbuild::BoxError,
    },
    /// A registry client could not be built from the [`RegistryOptions`].
    #[error("failed to set up the registry client")]
    CreateClient {
        /// The engine's error.
        #[source]
        source: rbuild::BoxError,
    },
    /// The image could not be pulled.
    #[error("failed to pull {reference}")]
    PullImage {
        /// The image.
        reference: String,
        /// The engine's error.
        #[source]
        source: rbuild::BoxError,
    },
    /// The image is not in the store or cannot be read there.
    #[error("failed to load image {reference} from the store")]
    LoadImage {
        /// The image.
        reference: String,
        /// The engine's error.
        #[source]
        source: rbuild::BoxError,
    },
    /// This machine cannot run containers (no root, no overlayfs or namespaces).
    #[error("the image executor needs the sandbox")]
    SandboxUnsupported {
        /// The sandbox's reason.
        #[source]
        source: rbuild::BoxError,
    },
    /// Locking the store, unpacking the image's layers or preparing the container's upper
    /// directory failed.
    #[error("failed to {action} for image {reference}")]
    PrepareContainer {
        /// The image.
        reference: String,
        /// What was being done.
        action: &'static str,
        /// The engine's error.
        #[source]
        source: rbuild::BoxError,
    },
    /// The container could not be started or waited for.
    #[error("failed to run the container of job {job:?}")]
    RunContainer {
        /// The job.
        job: String,
        /// The sandbox's error.
        #[source]
        source: rbuild::BoxError,
    },
    /// A blocking task (a pull, a container) panicked or was cancelled.
    #[error("the {task} task of job {job:?} failed")]
    Task {
        /// The job.
        job: String,
        /// Which task.
        task: &'static str,
        /// The runtime's error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Which executor a job gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutorKind {
    /// In its image when it has `image:`, on the host otherwise (the default).
    #[default]
    ByJob,
    /// Every job in its image; a job without one fails with [`Error::NoImage`].
    Image,
    /// Every job on the host.
    Shell,
}

/// How to reach registries when pulling job images, and what the `docker` shims of the job
/// are told through [`INSECURE_ENV`] and [`TLS_VERIFY_ENV`].
///
/// Loopback registries are spoken to over plain HTTP without being listed, as docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Verify registries' TLS certificates (default true).
    pub tls_verify: bool,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            tls_verify: true,
            insecure_registries: Vec::new(),
        }
    }
}

impl RegistryOptions {
    /// Sets whether TLS certificates are verified.
    #[must_use]
    pub fn tls_verify(mut self, yes: bool) -> Self {
        self.tls_verify = yes;
        self
    }

    /// Adds a registry spoken to over plain HTTP.
    #[must_use]
    pub fn insecure_registry(mut self, host: impl Into<String>) -> Self {
        self.insecure_registries.push(host.into());
        self
    }

    /// The [`shim_env`](crate::shim_env) variables that pass these settings to a job's shims.
    fn export(&self, env: &mut BTreeMap<String, String>) {
        for h in &self.insecure_registries {
            let list = env.entry(INSECURE_ENV.to_owned()).or_default();
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(h);
        }
        if !self.tls_verify {
            env.insert(TLS_VERIFY_ENV.to_owned(), "false".to_owned());
        }
    }
}

/// Runs jobs on the host or in their image, using the image store at a root; gives each job a
/// temporary directory whose `pushes` file (named by [`PUSHES_ENV`]) records what its `docker
/// push` commands pushed.
#[derive(Debug)]
pub struct ImageExecutor {
    kind: ExecutorKind,
    root: PathBuf,
    registries: RegistryOptions,
    shell: ShellRunner,
}

impl ImageExecutor {
    /// An executor using the store at `root` (created when missing), default registry options.
    pub fn new(kind: ExecutorKind, root: &Path) -> Self {
        Self {
            kind,
            root: root.to_owned(),
            registries: RegistryOptions::default(),
            shell: ShellRunner::new(),
        }
    }

    /// Sets how registries are reached.
    #[must_use]
    pub fn registries(mut self, options: RegistryOptions) -> Self {
        self.registries = options;
        self
    }

    /// Whether `job` runs in its image under this executor.
    ///
    /// # Errors
    ///
    /// [`Error::NoImage`] for [`ExecutorKind::Image`] and a job without `image:`.
    fn image_of<'j>(&self, job: &'j PlannedJob) -> Result<Option<&'j str>, Error> {
        match (self.kind, job.image.as_deref()) {
            (ExecutorKind::Shell, _) | (ExecutorKind::ByJob, None) => Ok(None),
            (_, Some(image)) => Ok(Some(image)),
            (ExecutorKind::Image, None) => Err(Error::NoImage {
                job: job.name.clone(),
            }),
        }
    }

    /// The job's environment plus the [`shim_env`](crate::shim_env) variables.
    fn shim_env(&self, cx: &JobContext, pushes: &Path) -> JobContext {
        let mut cx = cx.clone();
        cx.env.insert(
            ROOT_ENV.to_owned(),
            self.root.to_string_lossy().into_owned(),
        );
        cx.env
            .insert(PUSHES_ENV.to_owned(), pushes.to_string_lossy().into_owned());
        self.registries.export(&mut cx.env);
        cx
    }

    async fn run_job(
        &self,
        job: &PlannedJob,
        cx: &JobContext,
        out: &JobOutput,
    ) -> crate::Result<JobOutcome> {
        let executor = |source: Error| crate::Error::Executor {
            job: job.name.clone(),
            source: source.into(),
        };
        let image = self.image_of(job).map_err(executor)?;
        let temp = tempfile::Builder::new()
            .prefix("rbuild-job-")
            .tempdir()
            .map_err(|source| {
                executor(Error::CreateJobDir {
                    job: job.name.clone(),
                    source,
                })
            })?;
        let cx = self.shim_env(cx, &temp.path().join("pushes"));
        match image {
            None => self.shell.run(job, &cx, out).await,
            Some(image) => self
                .run_in_image(job, image, &cx, out)
                .await
                .map_err(executor),
        }
    }

    async fn run_in_image(
        &self,
        job: &PlannedJob,
        image: &str,
        cx: &JobContext,
        out: &JobOutput,
    ) -> Result<JobOutcome, Error> {
        let store = engine::open_store(&self.root)?;
        if !engine::has_image(&store, image) {
            out.line(Stream::System, &format!("pulling image {image}"));
            engine::pull(&store, &self.registries, image).await?;
        }
        out.line(Stream::System, &format!("using image {image}"));
        let mut main = job.before_script.clone();
        main.extend(job.script.iter().cloned());
        let code = self
            .session(&store, job, image, &main, cx, None, out)
            .await?;
        if !job.after_script.is_empty() {
            out.line(Stream::System, "running after_script");
            // GitLab: after_script's failure is reported but does not change the job status.
            match self
                .session(
                    &store,
                    job,
                    image,
                    &job.after_script,
                    cx,
                    Some(code == 0),
                    out,
                )
                .await
            {
                Ok(0) => {}
                Ok(c) => out.line(
                    Stream::System,
                    &format!("WARNING: after_script failed (exit {c})"),
                ),
                Err(e) => out.line(
                    Stream::System,
                    &format!("WARNING: after_script could not run: {}", error_chain(&e)),
                ),
            }
        }
        Ok(JobOutcome {
            exit_code: Some(code),
        })
    }

    /// One `sh -e -c` session in a fresh container of `image`: the image's environment under
    /// the job's variables, the job's directory bind-mounted at `CI_PROJECT_DIR`.
    #[expect(
        clippy::too_many_arguments,
        reason = "private; each argument is a distinct input of a session"
    )]
    async fn session(
        &self,
        store: &rbuild::Store,
        job: &PlannedJob,
        image: &str,
        lines: &[String],
        cx: &JobContext,
        job_status: Option<bool>,
        out: &JobOutput,
    ) -> Result<i32, Error> {
        let loaded = engine::load(store, image)?;
        engine::check_sandbox()?;
        let project_dir = cx
            .env
            .get("CI_PROJECT_DIR")
            .cloned()
            .unwrap_or_else(|| cx.workdir.to_string_lossy().into_owned());
        let env = container_env(&loaded.env, &cx.env, job_status);
        let session = engine::Session {
            job: job.name.clone(),
            image: image.to_owned(),
            script: script_text(lines),
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            workdir: cx.workdir.clone(),
            project_dir,
        };
        engine::run_session(store, loaded, session, out.clone()).await
    }
}

impl JobRunner for ImageExecutor {
    /// Host jobs run through the shell runner (which kills its process group); image jobs'
    /// containers are cancelled through the sandbox when their future is dropped.
    fn stops_when_dropped(&self) -> bool {
        true
    }

    async fn run(
        &self,
        job: &PlannedJob,
        cx: &JobContext,
        out: &JobOutput,
    ) -> crate::Result<JobOutcome> {
        self.run_job(job, cx, out).await
    }
}

/// The error and its causes on one line, as the runner prints executor errors.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// The container's environment: the image's `Env`, overridden by the job's variables, docker's
/// default `PATH` when neither sets one, and `CI_JOB_STATUS` for `after_script`.
fn container_env(
    image_env: &[String],
    job_env: &BTreeMap<String, String>,
    job_status: Option<bool>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    env.extend(job_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    if let Some(ok) = job_status {
        env.insert(
            "CI_JOB_STATUS".to_owned(),
            if ok { "success" } else { "failed" }.to_owned(),
        );
    }
    env
}

/// The script: each command echoed (`$ cmd`, as GitLab Runner prints it) then run.
fn script_text(lines: &[String]) -> String {
    let mut s = String::new();
    for line in lines {
        let quoted = line.replace('\'', r"'\''");
        s.push_str(&format!("printf '%s\\n' '$ {quoted}'\n{line}\n"));
    }
    s
}

/// Cuts a byte stream into lines (the sandbox delivers output in arbitrary chunks).
#[derive(Debug, Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            emit(text.trim_end_matches(['\n', '\r']));
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            emit(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_rejoined_across_chunks() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.push(b"hel", |l| got.push(l.to_owned()));
        s.push(b"lo\nwor", |l| got.push(l.to_owned()));
        s.push(b"ld\r\nlast", |l| got.push(l.to_owned()));
        s.finish(|l| got.push(l.to_owned()));
        assert_eq!(got, ["hello", "world", "last"]);
    }

    #[test]
    fn script_echoes_each_command() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script_text(&["echo 'a b'".into(), "true".into()]))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "$ echo 'a b'\na b\n$ true\n"
        );
    }

    #[test]
    fn job_variables_override_the_image_env() {
        let image = [
            "PATH=/image/bin".to_owned(),
            "A=image".to_owned(),
            "B=image".to_owned(),
        ];
        let job = BTreeMap::from([("A".to_owned(), "job".to_owned())]);
        let env = container_env(&image, &job, None);
        assert_eq!(env["A"], "job");
        assert_eq!(env["B"], "image");
        assert_eq!(env["PATH"], "/image/bin");
        assert!(!env.contains_key("CI_JOB_STATUS"));
        let env = container_env(&[], &job, Some(false));
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["CI_JOB_STATUS"], "failed");
    }

    fn planned(image: Option<&str>) -> PlannedJob {
        let pipeline = crate::Pipeline::parse(
            "j:\n  script: [x]\n",
            Path::new(".gitlab-ci.yml"),
            Path::new("."),
        )
        .unwrap();
        let git = crate::GitInfo {
            sha: "0".repeat(40),
            git_ref: crate::GitRef::Branch("main".into()),
            project_name: "p".into(),
            project_path: None,
            default_branch: "main".into(),
        };
        let cx = crate::PipelineContext::new(git, "/project");
        let plan = crate::plan(&pipeline, &cx, &crate::PlanOptions::default()).unwrap();
        let mut job = plan.job("j").unwrap().clone();
        job.image = image.map(str::to_owned);
        job
    }

    #[test]
    fn the_kind_decides_where_a_job_runs() {
        let root = Path::new("/nonexistent");
        let by_job = ImageExecutor::new(ExecutorKind::ByJob, root);
        let image = ImageExecutor::new(ExecutorKind::Image, root);
        let shell = ImageExecutor::new(ExecutorKind::Shell, root);
        let with = planned(Some("alpine:3"));
        let without = planned(None);
        assert_eq!(by_job.image_of(&with).unwrap(), Some("alpine:3"));
        assert_eq!(by_job.image_of(&without).unwrap(), None);
        assert_eq!(shell.image_of(&with).unwrap(), None);
        assert_eq!(image.image_of(&with).unwrap(), Some("alpine:3"));
        let err = image.image_of(&without).unwrap_err();
        assert_eq!(
            err.to_string(),
            "job \"j\" has no image: give it `image:` or run it with the shell executor"
        );
    }

    #[test]
    fn shims_get_the_store_pushes_file_and_registry_settings() {
        let executor = ImageExecutor::new(ExecutorKind::Shell, Path::new("/var/lib/rbuild"))
            .registries(
                RegistryOptions::default()
                    .tls_verify(false)
                    .insecure_registry("a:5000")
                    .insecure_registry("b"),
            );
        let cx = JobContext {
            env: BTreeMap::new(),
            workdir: PathBuf::from("/project"),
            path_prepend: Vec::new(),
            job_status: None,
        };
        let env = executor.shim_env(&cx, Path::new("/tmp/job/pushes")).env;
        assert_eq!(env[ROOT_ENV], "/var/lib/rbuild");
        assert_eq!(env[PUSHES_ENV], "/tmp/job/pushes");
        assert_eq!(env[INSECURE_ENV], "a:5000,b");
        assert_eq!(env[TLS_VERIFY_ENV], "false");
        let plain = ImageExecutor::new(ExecutorKind::Shell, Path::new("/r"));
        let env = plain.shim_env(&cx, Path::new("/p")).env;
        assert!(!env.contains_key(INSECURE_ENV) && !env.contains_key(TLS_VERIFY_ENV));
    }
}
