//! Running a [`RunSpec`]: prepare, launch, stream the output, wait, report.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};

use crate::cancel::{CancelHandle, Waker};
use crate::error::{Error, Result};
use crate::plan::{self, Plan};
use crate::spec::{OUTPUT_TAIL_LIMIT, Outcome, RunSpec};
use crate::sys::{self, Failure, Step};

/// Runs `spec.args` in a sandbox built from `spec` and waits for it to exit.
///
/// With [`Stdio::Capture`](crate::Stdio::Capture), `on_output` receives the merged
/// stdout/stderr chunks as they arrive (for progress display) and the last
/// [`OUTPUT_TAIL_LIMIT`] bytes are kept in [`Outcome::output_tail`]. The process's exit status
/// is in the outcome, not an error: a RUN step that fails is the caller's to report. A command
/// that cannot be found gives status 127 and `exec: "foo": executable file not found in $PATH`
/// in the output, like docker.
///
/// Blocking: call it through `tokio::task::spawn_blocking` from async code, and use
/// [`run_cancellable`] to be able to stop it from there. Requires root (see
/// [`check_support`](crate::check_support)).
///
/// # Errors
///
/// [`Error::NoCommand`] or [`Error::InvalidSpec`] for an unusable spec,
/// [`Error::OverlayDir`] when a lower/upper/work directory or bind source is missing,
/// [`Error::UnknownUser`]/[`Error::UnknownGroup`] when the user is not in the image,
/// [`Error::Setup`] when a namespace, mount or credential step fails in the child (typically
/// not root, or no overlay support), and [`Error::Spawn`], [`Error::ReadOutput`],
/// [`Error::Wait`], [`Error::PrepareScratch`] for failures of this process.
pub fn run(spec: &RunSpec, on_output: &mut dyn FnMut(&[u8])) -> Result<Outcome> {
    run_inner(spec, None, on_output)
}

/// [`run`], stoppable from another thread or task through `cancel`.
///
/// When [`CancelHandle::cancel`] is called while the command runs, its whole process tree is
/// killed, everything is cleaned up as after a normal exit, and this returns
/// [`Error::Cancelled`] within moments (it never waits for the command). A handle cancelled
/// before the call returns [`Error::Cancelled`] at once, without starting anything. A command
/// that exited before the cancellation was seen returns its [`Outcome`] as usual.
///
/// # Errors
///
/// [`Error::Cancelled`] as above, and every error of [`run`].
pub fn run_cancellable(
    spec: &RunSpec,
    cancel: &CancelHandle,
    on_output: &mut dyn FnMut(&[u8]),
) -> Result<Outcome> {
    run_inner(spec, Some(cancel), on_output)
}

fn run_inner(
    spec: &RunSpec,
    cancel: Option<&CancelHandle>,
    on_output: &mut dyn FnMut(&[u8]),
) -> Result<Outcome> {
    let waker = match cancel {
        Some(handle) => {
            let waker = handle.waker().map_err(|source| Error::Spawn { source })?;
            if waker.cancelled {
                return Err(Error::Cancelled);
            }
            Some(waker)
        }
        None => None,
    };
    let mut plan = plan::prepare(spec)?;
    let mut buffers = std::mem::take(&mut plan.buffers);
    let launched = sys::launch(&plan, &mut buffers).map_err(|source| Error::Spawn { source })?;
    drop(buffers);
    let mut tail = Vec::new();
    let mut watched = Watched {
        output: launched.output.map(File::from),
        init_pid: Some(File::from(launched.init_pid)),
        init: None,
        middle: pidfd_open(launched.pid),
        waker,
    };
    // Wait even if reading failed: the child must be reaped (it dies with its namespace).
    let watch_result = watched.watch(launched.pid, plan.cgroup.as_ref(), on_output, &mut tail);
    let status = sys::wait(launched.pid).map_err(|source| Error::Wait { source })?;
    if watch_result.map_err(|source| Error::ReadOutput { source })? == Watch::Cancelled {
        return Err(Error::Cancelled);
    }
    let mut record = Vec::new();
    File::from(launched.failure)
        .read_to_end(&mut record)
        .map_err(|source| Error::ReadOutput { source })?;
    if !record.is_empty() {
        return Err(match Failure::decode(&record) {
            Some(failure) => failure_error(&plan, spec, failure),
            None => Error::Setup {
                step: "report the setup result".to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidData, "malformed failure record"),
            },
        });
    }
    let oom_killed = plan.cgroup.as_ref().is_some_and(|c| c.oom_killed());
    Ok(Outcome {
        status,
        output_tail: tail,
        oom_killed,
    })
}

/// A pidfd for `pid`, `None` where the kernel has none (before Linux 5.3): then a cancelled
/// run without captured output is only seen by polling with a timeout.
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// How watching a run ended.
#[derive(Debug, PartialEq, Eq)]
enum Watch {
    /// The middle process exited and the output (if captured) reached EOF.
    Exited,
    /// The handle was cancelled and the process tree killed.
    Cancelled,
}

/// What the caller polls while the sandbox runs.
struct Watched {
    /// Merged stdout/stderr, until EOF.
    output: Option<File>,
    /// The pipe that brings init's pid, until read.
    init_pid: Option<File>,
    /// A pidfd of init (pid 1 of the sandbox), once known.
    init: Option<OwnedFd>,
    /// A pidfd of the middle process (our child): readable when it exits.
    middle: Option<OwnedFd>,
    /// The cancel handle's eventfd, until the cancellation is acted on.
    waker: Option<Waker>,
}

impl Watched {
    /// Streams the output to `on_output` and `tail` until the middle process has exited and
    /// the output is at EOF, killing the process tree when the handle is cancelled.
    fn watch(
        &mut self,
        middle_pid: libc::pid_t,
        cgroup: Option<&crate::cgroup::StepCgroup>,
        on_output: &mut dyn FnMut(&[u8]),
        tail: &mut Vec<u8>,
    ) -> io::Result<Watch> {
        // Without a waker nothing but the output needs watching: read it to EOF (all writers
        // gone: the namespace is dead), as before cancellation existed.
        if self.waker.is_none() {
            if let Some(output) = self.output.take() {
                stream(output, on_output, tail)?;
            }
            return Ok(Watch::Exited);
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut cancelled = false;
        let mut exited = false;
        // Without a pidfd, the exit of the middle process is checked every 50 ms.
        let tick = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        while !exited || self.output.is_some() {
            // Which descriptors are polled, in this order; `ready` follows the same order.
            let polled = [
                self.waker.as_ref().map(Waker::fd),
                self.output.as_ref().map(AsFd::as_fd),
                self.init_pid.as_ref().map(AsFd::as_fd),
                self.middle.as_ref().filter(|_| !exited).map(AsFd::as_fd),
            ];
            let mut fds: Vec<PollFd<'_>> = polled
                .iter()
                .flatten()
                .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
                .collect();
            let timeout = (self.middle.is_none() && !exited).then_some(&tick);
            match rustix::event::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut revents = fds.iter().map(|p| !p.revents().is_empty());
            let [waker_ready, output_ready, pid_ready, middle_ready] =
                polled.map(|fd| fd.is_some() && revents.next() == Some(true));
            drop(fds);
            if waker_ready {
                self.waker = None;
                cancelled = true;
                self.kill(middle_pid, cgroup);
            }
            let output = self.output.as_mut().filter(|_| output_ready);
            if let Some(output) = output {
                match output.read(&mut buf) {
                    Ok(0) => self.output = None,
                    Ok(n) => {
                        on_output(&buf[..n]);
                        push_tail(tail, &buf[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if pid_ready {
                self.read_init_pid();
            }
            if middle_ready {
                exited = true;
            } else if self.middle.is_none() && !exited {
                exited = sys::exited(middle_pid)?;
            }
        }
        Ok(if cancelled {
            Watch::Cancelled
        } else {
            Watch::Exited
        })
    }

    /// Reads init's pid from its pipe (EOF: the middle process failed before forking it) and
    /// opens a pidfd for it at once. Init stays the middle process's unreaped child until it
    /// dies, and the middle process reaps it and exits right away, so the pid names init for
    /// as long as a kill through it can matter.
    fn read_init_pid(&mut self) {
        let Some(mut pipe) = self.init_pid.take() else {
            return;
        };
        let mut bytes = [0u8; 4];
        if pipe.read_exact(&mut bytes).is_ok() {
            self.init = pidfd_open(libc::pid_t::from_ne_bytes(bytes));
        }
    }

    /// Kills pid 1 of the sandbox (the kernel then kills everything else in its pid
    /// namespace, and init's end ends the middle process), and the run's cgroup.
    fn kill(&mut self, middle_pid: libc::pid_t, cgroup: Option<&crate::cgroup::StepCgroup>) {
        // The middle process writes the pid right after its fork (or exits): a short wait.
        self.read_init_pid();
        let killed_init = self.init.as_ref().is_some_and(|init| {
            rustix::process::pidfd_send_signal(init, rustix::process::Signal::KILL).is_ok()
        });
        if !killed_init {
            // No init (not forked, or already gone): the middle process is our unreaped
            // child, so its pid is still its own.
            sys::kill(middle_pid);
        }
        if let Some(cgroup) = cgroup {
            cgroup.kill_all();
        }
    }
}

/// Reads the output pipe to EOF (all writers gone: the namespace is dead), feeding the
/// callback and keeping the tail.
fn stream(
    mut output: File,
    on_output: &mut dyn FnMut(&[u8]),
    tail: &mut Vec<u8>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match output.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        on_output(&buf[..n]);
        push_tail(tail, &buf[..n]);
    }
}

/// Appends to a buffer that keeps only the last [`OUTPUT_TAIL_LIMIT`] bytes.
fn push_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    tail.extend_from_slice(chunk);
    if tail.len() > OUTPUT_TAIL_LIMIT {
        let excess = tail.len() - OUTPUT_TAIL_LIMIT;
        tail.drain(..excess);
    }
}

/// Turns a child's failure record into an error naming the step and its paths.
fn failure_error(plan: &Plan, spec: &RunSpec, failure: Failure) -> Error {
    let index = failure.index as usize;
    let bind = plan.binds.get(index);
    let bind_desc = |verb: &str| match bind {
        Some(b) => format!(
            "{verb} {} at /{}",
            b.source.to_string_lossy(),
            b.target.to_string_lossy()
        ),
        None => format!("{verb} #{index}"),
    };
    let step = match failure.step {
        Step::ResolveUser => {
            let (user, group) = crate::user::split_spec(spec.user.as_deref());
            let user = String::from_utf8_lossy(&user).into_owned();
            return match failure.errno {
                sys::USER_ERROR_UNKNOWN_GROUP => Error::UnknownGroup {
                    group: String::from_utf8_lossy(&group.unwrap_or_default()).into_owned(),
                },
                sys::USER_ERROR_TOO_MANY_GROUPS => Error::TooManyGroups { user },
                _ => Error::UnknownUser { user },
            };
        }
        Step::Stdio => "connect stdin/stdout/stderr".to_owned(),
        Step::Unshare => "create the mount, pid, uts, ipc (and network) namespaces".to_owned(),
        Step::ForkInit => "fork pid 1 of the new pid namespace".to_owned(),
        Step::MakePrivate => "make / a private mount".to_owned(),
        Step::SetHostname => format!("set the hostname {:?}", spec.hostname),
        Step::Loopback => "bring up the loopback interface".to_owned(),
        Step::EnterScratch => format!("enter {}", plan.scratch_c.to_string_lossy()),
        Step::MountOverlay => format!(
            "mount the overlay (upper {}, work {}, {} lower dirs){}",
            spec.upper_dir.display(),
            spec.work_dir.display(),
            spec.lower_dirs.len(),
            if plan.user_namespace {
                " inside a user namespace, which needs Linux 5.11 or later (overlayfs with \
                 `userxattr`); fuse-overlayfs is not supported as a fallback"
            } else {
                ""
            }
        ),
        Step::OpenRootfs => "open the overlay root".to_owned(),
        Step::MountProc => "mount /proc".to_owned(),
        Step::MountDev => "mount a tmpfs on /dev".to_owned(),
        Step::MakeDevice => format!(
            "bind-mount /dev/{}",
            sys::DEVICES
                .get(index)
                .map_or_else(|| "?".into(), |d| d.to_string_lossy())
        ),
        Step::MountDevpts => "mount /dev/pts".to_owned(),
        Step::MountShm => "mount /dev/shm".to_owned(),
        Step::DevSymlink => "create the /dev symlinks".to_owned(),
        Step::MountSys => "mount /sys read-only".to_owned(),
        Step::OpenBindTarget => bind_desc("resolve the mountpoint to bind-mount"),
        Step::Bind => bind_desc("bind-mount"),
        Step::RemountReadonly => bind_desc("make read-only the bind mount of"),
        Step::PivotRoot => "pivot_root into the overlay".to_owned(),
        Step::DetachOldRoot => "detach the old root".to_owned(),
        Step::MakeCwd => format!(
            "create the working directory {}",
            plan.cwd_prefixes
                .get(index)
                .map_or_else(|| spec.cwd.clone(), |p| p.to_string_lossy().into_owned())
        ),
        Step::EnterCwd => format!("enter the working directory {}", spec.cwd),
        Step::ReadPasswd => "read the image's /etc/passwd".to_owned(),
        Step::ReadGroup => "read the image's /etc/group".to_owned(),
        Step::SetGroups => "set the supplementary groups".to_owned(),
        Step::SetGid | Step::SetUid if plan.user_namespace && failure.errno == libc::EINVAL => {
            let (kind, map) = match failure.step {
                Step::SetUid => ("uid", "/etc/subuid"),
                _ => ("gid", "/etc/subgid"),
            };
            return Error::Unsupported {
                what: format!(
                    "the step runs as {kind} {}, which is not mapped in this user namespace \
                     (only the ids of /proc/self/{kind}_map exist here)",
                    failure.index
                ),
                remedy: if map == "/etc/subuid" {
                    "give the user a range in /etc/subuid (e.g. `USER:100000:65536`) and \
                     install `uidmap`, or build as root"
                } else {
                    "give the user a range in /etc/subgid (e.g. `USER:100000:65536`) and \
                     install `uidmap`, or build as root"
                },
            };
        }
        Step::SetGid => format!("set the group id to {}", failure.index),
        Step::SetUid => format!("set the user id to {}", failure.index),
        Step::WaitInit => "wait for pid 1 of the sandbox".to_owned(),
        Step::JoinCgroup => "join the run's cgroup (for --memory/--pids-limit)".to_owned(),
        Step::CgroupNamespace => "create the cgroup namespace".to_owned(),
        Step::Setsid => "start a new session (setsid)".to_owned(),
        Step::MaskPath => format!("mask {}", path_of(&spec.security.masked_paths, index)),
        Step::ReadonlyPath => format!(
            "make {} read-only",
            path_of(&spec.security.readonly_paths, index)
        ),
        Step::Rlimit => format!(
            "set the ulimit {}",
            spec.limits
                .ulimits
                .get(index)
                .map_or_else(|| "?".to_owned(), ToString::to_string)
        ),
        Step::DropBounding => format!(
            "drop {} from the capability bounding set",
            crate::Capability(failure.index).name()
        ),
        Step::IdmapLayer => format!(
            "mount layer {} idmapped for --userns=auto (needs Linux 5.19 or later and a store \
             on a filesystem that supports idmapped mounts, such as ext4, xfs or btrfs)",
            plan.idmaps
                .get(index)
                .map_or_else(|| "?".into(), |(from, _)| from.to_string_lossy())
        ),
        Step::EnterUserNamespace => "join the step's user namespace (--userns=auto)".to_owned(),
        Step::SetCapabilities => "set the capabilities".to_owned(),
        Step::NoNewPrivileges => "set no_new_privs".to_owned(),
        Step::Seccomp => {
            if matches!(failure.errno, libc::EINVAL | libc::ENOSYS) {
                // Never run without the filter the profile asks for: say what is missing.
                return Error::Unsupported {
                    what: format!(
                        "the kernel refused the seccomp filter ({}): it lacks \
                         CONFIG_SECCOMP_FILTER, or runs on another architecture",
                        io::Error::from_raw_os_error(failure.errno)
                    ),
                    remedy: "use a kernel with seccomp filters, or (for a build you trust) \
                             RUN --security=insecure with --allow security.insecure",
                };
            }
            "install the seccomp filter".to_owned()
        }
    };
    Error::Setup {
        step,
        source: io::Error::from_raw_os_error(failure.errno),
    }
}

fn path_of(paths: &[String], index: usize) -> String {
    paths.get(index).cloned().unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Vec::new();
        push_tail(&mut tail, &vec![b'a'; OUTPUT_TAIL_LIMIT - 1]);
        push_tail(&mut tail, b"bcd");
        assert_eq!(tail.len(), OUTPUT_TAIL_LIMIT);
        assert!(tail.ends_with(b"abcd"));
    }
}
