//! What to run and how: [`RunSpec`] and its parts, and the [`Outcome`].

use std::path::PathBuf;

use crate::limits::Limits;
use crate::security::Profile;

/// The network a sandboxed process sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// The host's network namespace (the default for RUN, like `buildah --network host`); the
    /// host's `/etc/resolv.conf` is copied and bind-mounted over the rootfs's.
    #[default]
    Host,
    /// A new, empty network namespace with only the loopback interface, brought up.
    None,
}

/// Where the process's standard streams go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stdio {
    /// stdout and stderr are merged into one pipe and streamed to the `on_output` callback of
    /// [`run`](crate::run); stdin is `/dev/null` (a RUN step, like `docker build`).
    #[default]
    Capture,
    /// The process gets this process's stdin, stdout and stderr (`rbuild run`).
    Inherit,
}

/// A bind mount from the host into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path (file or directory).
    pub source: PathBuf,
    /// Absolute path inside the rootfs; resolved inside the rootfs (symlinks cannot escape).
    pub target: String,
    /// Mount read-only.
    pub readonly: bool,
}

/// Everything needed to run one process in a root filesystem.
///
/// Build it with the `#[must_use]` setters:
///
/// ```
/// use rbuild_sandbox::{Network, RunSpec};
/// let spec = RunSpec::default()
///     .lower_dirs(vec!["/var/lib/rbuild/layers/a".into()])
///     .upper_dir("/var/lib/rbuild/run/1/upper")
///     .work_dir("/var/lib/rbuild/run/1/work")
///     .args(["/bin/sh", "-c", "echo hello"])
///     .env(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
///     .network(Network::None);
/// assert_eq!(spec.cwd, "/");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Overlay lower directories, top-most first (the order of overlayfs's `lowerdir=`). Empty
    /// for `FROM scratch`.
    pub lower_dirs: Vec<PathBuf>,
    /// Overlay upper directory: receives the process's changes. Created by the caller, empty,
    /// on the same filesystem as `work_dir`.
    pub upper_dir: PathBuf,
    /// Overlay work directory: created by the caller, empty.
    pub work_dir: PathBuf,
    /// The argv; `args[0]` is searched in the `PATH` of `env`, inside the rootfs.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs: exactly the process's environment (nothing is added).
    pub env: Vec<String>,
    /// Working directory inside the rootfs; created (root-owned, 0755) if missing, like docker.
    pub cwd: String,
    /// `uid`, `uid:gid`, `name`, `name:group` or `uid:group`…, resolved with the rootfs's
    /// `/etc/passwd` and `/etc/group`; `None` is root.
    pub user: Option<String>,
    /// Host network or none.
    pub network: Network,
    /// Hostname in the new UTS namespace (also written to the sandbox's `/etc/hosts`).
    pub hostname: String,
    /// Where stdout/stderr go.
    pub stdio: Stdio,
    /// More bind mounts (build mounts), applied after the standard ones, in order.
    pub extra_mounts: Vec<BindMount>,
    /// Capabilities, seccomp filter, masked and read-only paths: docker's default unless
    /// [`Profile::insecure`] is asked for.
    pub security: Profile,
    /// Memory, process and `ulimit` limits (none by default).
    pub limits: Limits,
    /// Namespaces and an overlay (the default), or none: the command runs in this process's
    /// own root filesystem (see [`Isolation::InPlace`]).
    pub isolation: Isolation,
    /// Run the command as root of a new user namespace on these host ids (`--userns=auto`),
    /// seeing the layers through idmapped mounts; `None` runs it with the caller's ids.
    pub user_namespace: Option<crate::userns::IdShift>,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            lower_dirs: Vec::new(),
            upper_dir: PathBuf::new(),
            work_dir: PathBuf::new(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: "/".to_owned(),
            user: None,
            network: Network::Host,
            hostname: "rbuild".to_owned(),
            stdio: Stdio::Capture,
            extra_mounts: Vec::new(),
            security: Profile::default(),
            limits: Limits::default(),
            user_namespace: None,
            isolation: Isolation::Namespaces,
        }
    }
}

/// How much a run is isolated from the calling process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// New mount, pid, uts, ipc (and network) namespaces on an overlay of the layers.
    #[default]
    Namespaces,
    /// None: the command runs in this process's own root filesystem and namespaces, with its
    /// user, environment, working directory, limits and security profile — for an
    /// unprivileged container whose own `/` is the image being built (the in-place
    /// executor). The layer, upper and work directories are ignored; bind mounts, a private
    /// network and user namespaces are refused.
    InPlace,
}

impl RunSpec {
    /// Sets the isolation (see [`Isolation`]).
    #[must_use]
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Runs the command in a user namespace on `shift` (see [`RunSpec::user_namespace`]).
    #[must_use]
    pub fn user_namespace(mut self, shift: Option<crate::userns::IdShift>) -> Self {
        self.user_namespace = shift;
        self
    }

    /// Sets the overlay lower directories, top-most first.
    #[must_use]
    pub fn lower_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.lower_dirs = dirs;
        self
    }

    /// Sets the overlay upper directory.
    #[must_use]
    pub fn upper_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.upper_dir = dir.into();
        self
    }

    /// Sets the overlay work directory.
    #[must_use]
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// Sets the argv.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the environment (`KEY=VALUE`).
    #[must_use]
    pub fn env<I, S>(mut self, env: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env = env.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the working directory inside the rootfs.
    #[must_use]
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = cwd.into();
        self
    }

    /// Sets the user (`uid[:gid]` or `name[:group]`).
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the network mode.
    #[must_use]
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Sets the hostname.
    #[must_use]
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Sets where stdout/stderr go.
    #[must_use]
    pub fn stdio(mut self, stdio: Stdio) -> Self {
        self.stdio = stdio;
        self
    }

    /// Sets the security profile.
    #[must_use]
    pub fn security(mut self, profile: Profile) -> Self {
        self.security = profile;
        self
    }

    /// Sets the resource limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds a bind mount.
    #[must_use]
    pub fn mount(mut self, mount: BindMount) -> Self {
        self.extra_mounts.push(mount);
        self
    }
}

/// How a sandboxed process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, or 128 + N when killed by signal N (shell convention); 127 when `args[0]`
    /// was not found, 126 when it could not be executed.
    pub status: i32,
    /// The last [`OUTPUT_TAIL_LIMIT`] bytes of the captured output (empty with
    /// [`Stdio::Inherit`]), for error messages.
    pub output_tail: Vec<u8>,
    /// Whether the kernel's OOM killer killed a process of the run because of
    /// [`Limits::memory`] (then a status of 137 means "out of memory").
    pub oom_killed: bool,
}

impl Outcome {
    /// Whether the process exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// How much of the captured output [`Outcome::output_tail`] keeps.
pub const OUTPUT_TAIL_LIMIT: usize = 64 * 1024;
