//! Run a process in a root filesystem: namespaces and an overlay mount.
//!
//! [`run`] executes one command (a Dockerfile `RUN` step, or `rbuild run IMAGE -- cmd`) in
//! new mount, pid, uts and ipc namespaces (and a new network namespace with
//! [`Network::None`]), on an overlay of the image's unpacked layers with a fresh upper
//! directory. When it returns, the upper directory holds exactly the command's changes (the
//! mountpoints for `/proc`, `/dev`, `/sys`, `/etc/hosts`, `/etc/hostname` and
//! `/etc/resolv.conf` never reach it), ready to become a layer: a deleted lower file is a
//! character device 0/0, an opaque directory carries `trusted.overlay.opaque=y`.
//!
//! The command is pid 1 of its pid namespace, sees `/proc`, a tmpfs `/dev` with the usual
//! devices, a read-only `/sys`, and runs as the user resolved from the image's own
//! `/etc/passwd` and `/etc/group`, with exactly the environment given. Every mount lives in
//! the sandbox's mount namespace, so nothing on the host changes.
//!
//! Every run gets, by default, what `docker run` gives a container ([`Profile::default`]):
//! the bounding, permitted and effective capability sets reduced to docker's 14 (none
//! effective for a non-root user), empty inheritable and ambient sets, `no_new_privs`, a
//! seccomp filter refusing what docker's default profile refuses (`mount`, `unshare`/`clone`
//! of namespaces, `open_by_handle_at`, `keyctl`, module loading, `kexec`, `bpf`, … with
//! `EPERM`; `clone3` with `ENOSYS`), runc's masked and read-only `/proc` and `/sys` paths, a
//! new session without a controlling terminal, and its own cgroup namespace. [`Limits`] adds
//! a per-run cgroup (memory, pids; cgroup v1, v2 or hybrid) and `ulimit`s;
//! [`Profile::insecure`] is the explicit escape hatch. The profile is data (see `security`),
//! compiled before `fork` and applied by pid 1 of the sandbox in the order runc uses.
//!
//! The seccomp filter is compiled with [`seccompiler`] (rust-vmm): pure Rust, so nothing to
//! link or install, x86_64 and aarch64 syscall tables, and its output is a plain BPF program
//! the child installs with one `seccomp(2)` call — `libseccomp` builds the program inside
//! `seccomp_load`, which allocates, and a child forked from a multi-threaded process must not.
//!
//! Synchronous and blocking: async callers use `tokio::task::spawn_blocking`, and stop a run
//! in progress with a [`CancelHandle`] given to [`run_cancellable`]. Root is
//! required for now (kernel overlayfs and namespaces); [`check_support`] says what is missing.
//!
//! ```no_run
//! use rbuild_sandbox::{Limits, Network, RunSpec, Stdio};
//!
//! # fn main() -> Result<(), rbuild_sandbox::Error> {
//! rbuild_sandbox::check_support()?;
//! let spec = RunSpec::default()
//!     // top-most first, like overlayfs's lowerdir=
//!     .lower_dirs(vec![
//!         "/var/lib/rbuild/layers/sha256-2c1b…".into(),
//!         "/var/lib/rbuild/layers/sha256-a3ed…".into(),
//!     ])
//!     .upper_dir("/var/lib/rbuild/tmp/run-1/upper")
//!     .work_dir("/var/lib/rbuild/tmp/run-1/work")
//!     .args(["/bin/sh", "-c", "apk add --no-cache curl"])
//!     .env(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
//!     .cwd("/src")
//!     .user("app")
//!     .network(Network::Host)
//!     .limits(Limits { memory: Some(512 << 20), pids: Some(1024), ..Limits::default() })
//!     .stdio(Stdio::Capture);
//! let outcome = rbuild_sandbox::run(&spec, &mut |chunk| {
//!     eprint!("{}", String::from_utf8_lossy(chunk));
//! })?;
//! if !outcome.success() {
//!     eprintln!("RUN failed with status {}", outcome.status);
//! }
//! # Ok(())
//! # }
//! ```

mod cancel;
mod cgroup;
mod error;
mod limits;
mod plan;
mod run;
mod security;
mod spec;
mod support;
mod sys;
mod user;
pub mod userns;

pub use cancel::CancelHandle;
pub use error::{Error, Result};
pub use limits::{Limits, ParseLimitError, Ulimit, UlimitResource, parse_size};
pub use run::{run, run_cancellable};
pub use seccompiler::TargetArch;
pub use security::{
    Capability, DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS,
    DENIED_SYSCALLS, DENIED_SYSCALLS_X86_64, ENOSYS_SYSCALLS, NAMESPACE_FLAGS, Profile,
    SeccompRules, compile_seccomp,
};
pub use spec::{BindMount, Isolation, Network, OUTPUT_TAIL_LIMIT, Outcome, RunSpec, Stdio};
pub use support::check_support;
