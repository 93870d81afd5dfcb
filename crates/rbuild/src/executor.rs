//! The seam between the engine and whatever runs a RUN step (docs/ARCHITECTURE.md,
//! "Executors").
//!
//! The engine prepares everything a step needs — the image's layer directories, an empty upper
//! directory for the step's changes, the argv, environment, user, mounts — and hands it to an
//! [`Executor`]. The executor runs the command so that its view is the layers with the upper
//! directory on top and every change lands in the upper directory (overlayfs semantics:
//! whiteouts for deletions, opaque directories for replaced ones); the engine then turns the
//! upper directory into a layer. [`SandboxExecutor`] (namespaces + overlayfs, the default) is
//! one implementation; tests and embedders can supply their own.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use rbuild_sandbox::{BindMount, Limits, Network};

use crate::cancel::CancelToken;

/// A boxed cause.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a RUN step needs; built by the engine.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunStep {
    /// The image's layer directories, top first.
    pub lower_dirs: Vec<PathBuf>,
    /// Where the step's changes must land (empty, on the same filesystem as the store).
    pub upper_dir: PathBuf,
    /// Scratch directory on the same filesystem (overlayfs's workdir).
    pub work_dir: PathBuf,
    /// argv.
    pub args: Vec<String>,
    /// Environment, `KEY=value`.
    pub env: Vec<String>,
    /// Working directory inside the image.
    pub cwd: String,
    /// `USER` (`name`, `uid`, `uid:gid`, ...), resolved against the image's passwd/group.
    pub user: Option<String>,
    /// Network access.
    pub network: Network,
    /// Host directories bound into the step (`RUN --mount`, heredoc scripts).
    pub mounts: Vec<BindMount>,
    /// `RUN --security=insecure`, allowed by the person running the build.
    pub insecure: bool,
    /// Resource limits.
    pub limits: Limits,
    /// Run as root of a user namespace on these host ids (`--userns=auto`); `None` runs with
    /// the builder's own ids.
    pub user_namespace: Option<rbuild_sandbox::userns::IdShift>,
}

pub use crate::inplace::{
    ContainerMarkers, InPlaceExecutor, in_container, time_unchanged_snapshot,
};

/// How a RUN step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// Exit status; 128 + N when killed by signal N.
    pub status: i32,
    /// The end of the step's output, for error messages.
    pub output_tail: Vec<u8>,
    /// Whether the step was killed for exceeding its memory limit.
    pub oom_killed: bool,
}

impl RunOutcome {
    /// An outcome with exit status `status` and no output.
    pub fn exited(status: i32) -> Self {
        Self {
            status,
            output_tail: Vec::new(),
            oom_killed: false,
        }
    }

    /// The same outcome with `tail` as the end of its output.
    #[must_use]
    pub fn with_output(mut self, tail: impl Into<Vec<u8>>) -> Self {
        self.output_tail = tail.into();
        self
    }
}

/// Why an executor could not run a step (a non-zero exit is not an error: see [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The machine cannot run steps with this executor (no privileges, a kernel feature off).
    #[error("cannot run RUN steps on this machine")]
    Unavailable(#[source] BoxError),
    /// The step was stopped by its build's [`CancelToken`].
    #[error("the step was cancelled")]
    Cancelled,
    /// Setting the step up or running it failed.
    #[error("failed to run the step")]
    Failed(#[source] BoxError),
}

/// Runs RUN steps. Implementations must be usable from several threads at once (independent
/// stages run in parallel).
pub trait Executor: Send + Sync + fmt::Debug {
    /// Checks that steps can run here; called before the first RUN step that misses the cache.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Unavailable`] saying what is missing.
    fn check(&self) -> Result<(), ExecutorError>;

    /// Why this executor cannot run programs built for `platform` (`None`: it can); asked
    /// before a build starts, for every foreign platform a RUN step will run on. The default
    /// asks the kernel's binfmt_misc, which any executor that execs in Linux namespaces relies
    /// on; an executor that runs no program (a test double) answers `None`.
    fn missing_emulator(&self, platform: &rbuild_oci::Platform) -> Option<String> {
        crate::emulation::missing(platform)
    }

    /// Runs `step`, passing its output to `output` as it comes. Must stop the step's processes
    /// and return [`ExecutorError::Cancelled`] when `cancel` fires (see
    /// [`CancelToken::on_cancel`]).
    ///
    /// # Errors
    ///
    /// When the step could not be run; a command that ran and failed is an `Ok` outcome with a
    /// non-zero status.
    fn run(
        &self,
        step: &RunStep,
        output: &mut dyn FnMut(&[u8]),
        cancel: &CancelToken,
    ) -> Result<RunOutcome, ExecutorError>;
}

/// The default executor: each step in fresh Linux namespaces (mount, pid, ipc, uts, cgroup,
/// network unless `--network host`) on an overlay of the layers, with a reduced capability set,
/// a seccomp filter and no_new_privs ([`rbuild_sandbox`]). Needs root.
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxExecutor;

impl Executor for SandboxExecutor {
    fn check(&self) -> Result<(), ExecutorError> {
        rbuild_sandbox::check_support().map_err(|e| ExecutorError::Unavailable(e.into()))
    }

    fn run(
        &self,
        step: &RunStep,
        output: &mut dyn FnMut(&[u8]),
        cancel: &CancelToken,
    ) -> Result<RunOutcome, ExecutorError> {
        let spec = rbuild_sandbox::RunSpec {
            lower_dirs: step.lower_dirs.clone(),
            upper_dir: step.upper_dir.clone(),
            work_dir: step.work_dir.clone(),
            extra_mounts: step.mounts.clone(),
            user_namespace: step.user_namespace,
            ..sandbox_spec(step, rbuild_sandbox::Isolation::Namespaces)
        };
        run_sandboxed(&spec, output, cancel)
    }
}

/// The sandbox spec of `step`'s command, user, environment, network, limits and profile.
pub(crate) fn sandbox_spec(
    step: &RunStep,
    isolation: rbuild_sandbox::Isolation,
) -> rbuild_sandbox::RunSpec {
    rbuild_sandbox::RunSpec {
        isolation,
        args: step.args.clone(),
        env: step.env.clone(),
        cwd: step.cwd.clone(),
        user: step.user.clone(),
        network: step.network,
        hostname: "rbuild".to_owned(),
        stdio: rbuild_sandbox::Stdio::Capture,
        security: if step.insecure {
            rbuild_sandbox::Profile::insecure()
        } else {
            rbuild_sandbox::Profile::default()
        },
        limits: step.limits.clone(),
        ..rbuild_sandbox::RunSpec::default()
    }
}

/// Runs `spec` in the sandbox; the build's token fires the sandbox's handle, which kills the
/// step's process tree.
pub(crate) fn run_sandboxed(
    spec: &rbuild_sandbox::RunSpec,
    output: &mut dyn FnMut(&[u8]),
    cancel: &CancelToken,
) -> Result<RunOutcome, ExecutorError> {
    if cancel.is_cancelled() {
        return Err(ExecutorError::Cancelled);
    }
    let stop = rbuild_sandbox::CancelHandle::new();
    let hook = stop.clone();
    let _registered = cancel.on_cancel(move || hook.cancel());
    match rbuild_sandbox::run_cancellable(spec, &stop, output) {
        Ok(o) => Ok(RunOutcome {
            status: o.status,
            output_tail: o.output_tail,
            oom_killed: o.oom_killed,
        }),
        Err(rbuild_sandbox::Error::Cancelled) => Err(ExecutorError::Cancelled),
        Err(e) => Err(ExecutorError::Failed(e.into())),
    }
}

/// An executor that runs no process: it calls a function with the step and its upper
/// directory, which may write files there as the command would have. For tests of the engine
/// (cache decisions, layers, configs) on machines where steps cannot run, and for embedders'
/// own tests.
///
/// ```
/// use rbuild::executor::{FnExecutor, RunOutcome};
///
/// // Every RUN "creates" /ran containing its command line.
/// let exec = FnExecutor::new(|step, upper| {
///     std::fs::write(upper.join("ran"), step.args.join(" "))?;
///     Ok(RunOutcome::exited(0))
/// });
/// assert_eq!(exec.runs(), 0);
/// ```
#[derive(Clone)]
pub struct FnExecutor {
    #[expect(clippy::type_complexity, reason = "a plain callback type, named once")]
    f: Arc<dyn Fn(&RunStep, &std::path::Path) -> std::io::Result<RunOutcome> + Send + Sync>,
    runs: Arc<AtomicUsize>,
}

impl fmt::Debug for FnExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnExecutor")
            .field("runs", &self.runs())
            .finish_non_exhaustive()
    }
}

impl FnExecutor {
    /// An executor calling `f(step, upper_dir)` for each step.
    pub fn new(
        f: impl Fn(&RunStep, &std::path::Path) -> std::io::Result<RunOutcome> + Send + Sync + 'static,
    ) -> Self {
        Self {
            f: Arc::new(f),
            runs: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many steps it has run (shared by clones).
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

impl Executor for FnExecutor {
    fn missing_emulator(&self, _platform: &rbuild_oci::Platform) -> Option<String> {
        None
    }

    fn check(&self) -> Result<(), ExecutorError> {
        Ok(())
    }

    fn run(
        &self,
        step: &RunStep,
        _output: &mut dyn FnMut(&[u8]),
        cancel: &CancelToken,
    ) -> Result<RunOutcome, ExecutorError> {
        if cancel.is_cancelled() {
            return Err(ExecutorError::Cancelled);
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
        (self.f)(step, &step.upper_dir).map_err(|e| ExecutorError::Failed(e.into()))
    }
}
