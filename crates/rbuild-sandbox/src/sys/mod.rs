//! The privileged part: fork, namespaces, mounts, `pivot_root`, credentials and exec.
//!
//! Every kernel call that needs root lives here, so that a rootless variant (user namespaces)
//! replaces one module. The process tree of a run is:
//!
//! ```text
//! caller (multi-threaded) ── fork ──► middle: unshare(mnt,pid,uts,ipc[,net]) ── fork ──► init
//!   reads output, waits                 waits, exits with init's status          pid 1: mounts,
//!                                                                                pivot_root, exec
//! ```
//!
//! Like `unshare -f`, the middle process exists because `unshare(CLONE_NEWPID)` only moves the
//! *children* of the caller into the new pid namespace; the command then runs as pid 1 (as with
//! docker/runc), and when it exits the kernel kills and reaps everything left in the namespace.
//! All mounts are made in the new mount namespace after making `/` recursively private, so they
//! vanish with it and nothing propagates to the host.
//!
//! After `fork` only async-signal-safe calls are made: raw syscalls on C strings and buffers
//! from [`Plan`], no allocation, no locks. A setup failure is written to a close-on-exec pipe as
//! a fixed-size [`Failure`] record; a successful exec closes the pipe empty.
#![expect(
    unsafe_code,
    reason = "fork/unshare/waitpid/prctl are FFI calls; each block says why it is sound"
)]

use std::convert::Infallible;
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::plan::{Buffers, ExecArrays, Plan};

mod harden;
mod mounts;
mod process;
pub(crate) mod userns;

pub(crate) use mounts::DEVICES;
use mounts::mount;

/// A setup step of the child, reported to the parent on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    Stdio = 1,
    Unshare,
    ForkInit,
    MakePrivate,
    SetHostname,
    Loopback,
    EnterScratch,
    MountOverlay,
    OpenRootfs,
    MountProc,
    MountDev,
    MakeDevice,
    MountDevpts,
    MountShm,
    DevSymlink,
    MountSys,
    OpenBindTarget,
    Bind,
    RemountReadonly,
    PivotRoot,
    DetachOldRoot,
    MakeCwd,
    EnterCwd,
    ReadPasswd,
    ReadGroup,
    ResolveUser,
    SetGroups,
    SetGid,
    SetUid,
    WaitInit,
    JoinCgroup,
    CgroupNamespace,
    Setsid,
    MaskPath,
    ReadonlyPath,
    Rlimit,
    DropBounding,
    SetCapabilities,
    NoNewPrivileges,
    Seccomp,
    IdmapLayer,
    EnterUserNamespace,
}

impl Step {
    const ALL: [Step; 42] = [
        Step::Stdio,
        Step::Unshare,
        Step::ForkInit,
        Step::MakePrivate,
        Step::SetHostname,
        Step::Loopback,
        Step::EnterScratch,
        Step::MountOverlay,
        Step::OpenRootfs,
        Step::MountProc,
        Step::MountDev,
        Step::MakeDevice,
        Step::MountDevpts,
        Step::MountShm,
        Step::DevSymlink,
        Step::MountSys,
        Step::OpenBindTarget,
        Step::Bind,
        Step::RemountReadonly,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::MakeCwd,
        Step::EnterCwd,
        Step::ReadPasswd,
        Step::ReadGroup,
        Step::ResolveUser,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::WaitInit,
        Step::JoinCgroup,
        Step::CgroupNamespace,
        Step::Setsid,
        Step::MaskPath,
        Step::ReadonlyPath,
        Step::Rlimit,
        Step::DropBounding,
        Step::SetCapabilities,
        Step::NoNewPrivileges,
        Step::Seccomp,
        Step::IdmapLayer,
        Step::EnterUserNamespace,
    ];

    fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == n)
    }
}

/// What failed in the child: the step, an index (device, bind mount, cwd component) and the
/// errno (for [`Step::ResolveUser`], a [`UserError`] code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub step: Step,
    pub index: u32,
    pub errno: i32,
}

impl Failure {
    const SIZE: usize = 12;

    fn encode(self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        out[..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        out[4..8].copy_from_slice(&self.index.to_ne_bytes());
        out[8..].copy_from_slice(&self.errno.to_ne_bytes());
        out
    }

    /// Decodes a record read from the failure pipe; `None` when it is not one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Failure> {
        let word = |i: usize| -> Option<[u8; 4]> { bytes.get(i..i + 4)?.try_into().ok() };
        if bytes.len() != Self::SIZE {
            return None;
        }
        Some(Failure {
            step: Step::from_u32(u32::from_ne_bytes(word(0)?))?,
            index: u32::from_ne_bytes(word(4)?),
            errno: i32::from_ne_bytes(word(8)?),
        })
    }
}

pub(crate) const USER_ERROR_UNKNOWN_USER: i32 = 1;
pub(crate) const USER_ERROR_UNKNOWN_GROUP: i32 = 2;
pub(crate) const USER_ERROR_TOO_MANY_GROUPS: i32 = 3;

/// A started sandbox: the middle process and the parent's pipe ends.
pub(crate) struct Launched {
    pub pid: libc::pid_t,
    /// Merged stdout/stderr (with capture).
    pub output: Option<OwnedFd>,
    /// Receives a [`Failure`] record, or EOF when the command was executed.
    pub failure: OwnedFd,
    /// Receives init's pid (4 bytes, native order) once the middle process forked it; EOF
    /// without it when the middle process failed before.
    pub init_pid: OwnedFd,
}

pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so `fds[0]` is open and owned by nobody else.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: likewise for `fds[1]`, a different descriptor.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((read, write))
}

/// Forks the sandbox. Pipes are close-on-exec so that processes spawned concurrently by other
/// threads do not hold them open (which would delay EOF).
pub(crate) fn launch(plan: &Plan, buffers: &mut Buffers) -> io::Result<Launched> {
    let (failure_r, failure_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    let output = if plan.capture { Some(pipe()?) } else { None };
    let arrays = plan.exec_arrays();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let out_w = output.as_ref().map(|(_, w)| w.as_raw_fd());
    let failure_w_raw = failure_w.as_raw_fd();
    let pid_w_raw = pid_w.as_raw_fd();
    // SAFETY: the child only runs `middle`, which makes async-signal-safe syscalls on data
    // prepared above and never returns (it ends in `_exit`), so no Rust state that another
    // thread might have locked is touched.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => middle(
            plan,
            buffers,
            &arrays,
            failure_w_raw,
            out_w,
            pid_w_raw,
            parent,
        ),
        pid => Ok(Launched {
            pid,
            output: output.map(|(r, _w)| r),
            failure: failure_r,
            init_pid: pid_r,
        }),
    }
}

/// Waits for the middle process; returns its exit code (it already maps signals to 128+N).
pub(crate) fn wait(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer; `pid` is our child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status_code(status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether our child `pid` has exited, leaving it to [`wait`] to reap (`WNOWAIT`).
pub(crate) fn exited(pid: libc::pid_t) -> io::Result<bool> {
    // SAFETY: siginfo_t is a plain C struct; all-zero bytes are a valid value, and waitid
    // leaves `si_pid` zero when no child changed state (waitid(2), WNOHANG).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is a valid out pointer; `pid` is our child.
    if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info` for a child of ours (SIGCHLD layout), or left it zeroed.
    Ok(unsafe { info.si_pid() } != 0)
}

/// Sends SIGKILL to our child `pid`, which has not been reaped yet (so the pid is its own).
pub(crate) fn kill(pid: libc::pid_t) {
    // SAFETY: kill(2) with integer arguments; an error (the child already exited) is moot.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// The shell's convention: exit code, or 128 + signal number.
fn status_code(status: c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

pub(super) fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Turns a `-1` return into a [`Failure`] of `step`.
pub(super) fn check(ret: c_int, step: Step, index: u32) -> Result<c_int, Failure> {
    if ret == -1 {
        Err(Failure {
            step,
            index,
            errno: errno(),
        })
    } else {
        Ok(ret)
    }
}

fn report(fd: RawFd, failure: Failure) {
    let record = failure.encode();
    // SAFETY: writing a stack buffer to a pipe; 12 bytes < PIPE_BUF, so the write is atomic.
    unsafe { libc::write(fd, record.as_ptr().cast(), record.len()) };
}

pub(super) fn close(fd: RawFd) {
    // SAFETY: `fd` was opened by this child and is closed once.
    unsafe { libc::close(fd) };
}

pub(super) fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and skips atexit handlers and Rust destructors,
    // which belong to the parent's copy of the process state.
    unsafe { libc::_exit(code) }
}

/// The middle process: signals, stdio, namespaces, then forks init and forwards its status.
fn middle(
    plan: &Plan,
    buffers: &mut Buffers,
    arrays: &ExecArrays,
    failure_w: RawFd,
    out_w: Option<RawFd>,
    pid_w: RawFd,
    parent: libc::pid_t,
) -> ! {
    let result = (|| -> Result<i32, Failure> {
        die_with_caller(parent);
        reset_signals();
        if let Some(out) = out_w {
            connect_stdio(out)?;
        }
        let mut flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        if plan.network_none {
            flags |= libc::CLONE_NEWNET;
        }
        if !plan.in_place {
            // SAFETY: unshare(2) takes a flag word; this process is single-threaded (forked),
            // as CLONE_NEWNS requires.
            check(unsafe { libc::unshare(flags) }, Step::Unshare, 0)?;
        }
        // SAFETY: this process is single-threaded, so the child is a complete copy; it runs
        // `init`, which only makes async-signal-safe calls and never returns.
        let pid = check(unsafe { libc::fork() }, Step::ForkInit, 0)?;
        if pid == 0 {
            // No getppid() check here: the parent is outside the new pid namespace, so
            // getppid() is 0 either way. The middle process only dies early when killed,
            // and then only after its own PDEATHSIG fired, i.e. the caller is gone.
            // SAFETY: prctl(2) with integer arguments, on this process only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            close(pid_w);
            let Err(failure) = init(plan, buffers, arrays);
            report(failure_w, failure);
            exit(1);
        }
        // The caller kills init by this pid on cancellation: init is our unreaped child, so
        // the pid cannot be reused until we have waited for it. A short write only happens
        // when the caller is gone, and then nobody needs the pid.
        let bytes = pid.to_ne_bytes();
        // SAFETY: writes a stack buffer to a pipe; 4 bytes < PIPE_BUF, so the write is atomic.
        unsafe { libc::write(pid_w, bytes.as_ptr().cast(), bytes.len()) };
        close(pid_w);
        // Only init writes output from now on; our copies would not delay EOF (we exit
        // with init) but there is no reason to keep them.
        if out_w.is_some() {
            close(1);
            close(2);
        }
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid out pointer; `pid` is our child.
            if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
                if plan.in_place {
                    // No pid namespace ends the step's other processes: init led its own
                    // session and process group, which goes with it.
                    // SAFETY: kill(2) with integer arguments; the group may already be gone.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
                return Ok(status_code(status));
            }
            if errno() != libc::EINTR {
                return Err(Failure {
                    step: Step::WaitInit,
                    index: 0,
                    errno: errno(),
                });
            }
        }
    })();
    match result {
        Ok(code) => exit(code),
        Err(failure) => {
            report(failure_w, failure);
            exit(1)
        }
    }
}

/// Die with the caller (a killed build must not leave sandboxes behind); the getppid check
/// closes the race with a parent that died before prctl.
fn die_with_caller(parent: libc::pid_t) {
    // SAFETY: prctl(2) with integer arguments, on this process only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        exit(1);
    }
}

/// Signal state is inherited through exec: the Rust runtime ignores SIGPIPE and tokio blocks
/// nothing, but a caller may; give the command a clean slate like `std::process::Command`.
fn reset_signals() {
    let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given (sigsetops(3)).
    unsafe { libc::sigemptyset(empty.as_mut_ptr()) };
    // SAFETY: initialised by sigemptyset just above.
    let empty = unsafe { empty.assume_init() };
    // SAFETY: `empty` is an initialised set; the old mask is not asked for (null).
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    for sig in 1..libc::SIGRTMIN() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: restores the default disposition; no handler code is installed.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// stdin from `/dev/null`, stdout and stderr to the output pipe `out` (which is then closed).
fn connect_stdio(out: RawFd) -> Result<(), Failure> {
    let null = check(
        // SAFETY: a NUL-terminated literal path; the descriptor is ours and closed below.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) },
        Step::Stdio,
        0,
    )?;
    // SAFETY: dup2(2) on `null`, opened just above, onto stdin; no Rust object owns fd 0
    // in this forked child.
    check(unsafe { libc::dup2(null, 0) }, Step::Stdio, 0)?;
    // SAFETY: `out` is the pipe's write end inherited from the caller; fd 1 is owned by no
    // Rust object here.
    check(unsafe { libc::dup2(out, 1) }, Step::Stdio, 1)?;
    // SAFETY: likewise for fd 2.
    check(unsafe { libc::dup2(out, 2) }, Step::Stdio, 2)?;
    close(null);
    close(out);
    Ok(())
}

/// Pid 1 of the sandbox: joins its cgroup, builds the rootfs, switches to it, masks what the
/// profile masks, drops to the user and to the profile's privileges (see `harden` for the
/// order) and executes the command. Returns only on failure.
fn init(plan: &Plan, buffers: &mut Buffers, arrays: &ExecArrays) -> Result<Infallible, Failure> {
    harden::join_cgroup(plan)?;
    harden::new_session()?;
    // SAFETY: umask cannot fail; modes below are then exactly what is asked.
    unsafe { libc::umask(0) };
    if plan.in_place {
        // The process's own root is the image: nothing to mount, only the credentials,
        // limits and profile of the step.
        harden::set_rlimits(&plan.security)?;
        process::enter_cwd(plan)?;
        harden::drop_bounding(&plan.security)?;
        process::set_user(plan, buffers)?;
        harden::restrict(&plan.security)?;
        process::exec(plan, arrays)
    }
    // Private first: otherwise the mounts below would propagate to the host's shared `/`
    // (mount_namespaces(7) "MS_SHARED"), and pivot_root refuses shared parents.
    check(
        mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ),
        Step::MakePrivate,
        0,
    )?;
    let hostname = plan.hostname.as_bytes();
    check(
        // SAFETY: pointer and length describe `plan.hostname`.
        unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) },
        Step::SetHostname,
        0,
    )?;
    if plan.network_none {
        mounts::loopback_up()?;
    }
    // The overlay options use paths relative to the scratch directory (see plan.rs).
    check(
        // SAFETY: NUL-terminated path.
        unsafe { libc::chdir(plan.scratch_c.as_ptr()) },
        Step::EnterScratch,
        0,
    )?;
    if let Some(userns) = plan.userns_fd {
        mounts::idmap_layers(plan, userns)?;
    }
    // overlayfs works in its upper layer with the credentials of whoever mounted it; through
    // idmapped layers those must be ids the mapping has, so mount as the step's root (file
    // system ids only: the capabilities stay those of host root).
    if let Some((uid, gid)) = plan.mounter_ids {
        // SAFETY: setfsgid(2)/setfsuid(2) take plain ids and only change this process.
        unsafe { libc::setfsgid(gid) };
        // SAFETY: as above.
        unsafe { libc::setfsuid(uid) };
        harden::raise_effective(Step::MountOverlay)?;
    }
    check(
        mount(
            c"overlay".as_ptr(),
            c"root".as_ptr(),
            c"overlay".as_ptr(),
            0,
            plan.overlay_options.as_ptr(),
        ),
        Step::MountOverlay,
        0,
    )?;
    if plan.mounter_ids.is_some() {
        // Back to 0, which restores the file capabilities to the effective set.
        // SAFETY: as above.
        unsafe { libc::setfsuid(0) };
        // SAFETY: as above.
        unsafe { libc::setfsgid(0) };
    }
    // SAFETY: NUL-terminated path; the descriptor is ours.
    let root = check(
        unsafe { libc::open(c"root".as_ptr(), libc::O_DIRECTORY | libc::O_CLOEXEC) },
        Step::OpenRootfs,
        0,
    )?;
    mounts::mount_kernel_filesystems(
        root,
        plan.user_namespace && !plan.network_none,
        plan.tty_gid_mapped,
    )?;
    mounts::bind_mounts(root, plan)?;
    mounts::pivot(root)?;
    harden::mask_paths(&plan.security)?;
    // Raising a hard limit needs CAP_SYS_RESOURCE on the host: before leaving its namespace.
    harden::set_rlimits(&plan.security)?;
    if let Some(userns) = plan.userns_fd {
        // From here the process is root of the step's user namespace only; writes into the
        // rootfs (the working directory) are made with its ids.
        process::enter_user_namespace(userns)?;
    }
    process::enter_cwd(plan)?;
    harden::drop_bounding(&plan.security)?;
    process::set_user(plan, buffers)?;
    harden::restrict(&plan.security)?;
    process::exec(plan, arrays)
}

/// Forks a child that tries the namespaces a sandbox needs and exits with the errno.
pub(crate) fn probe_namespaces() -> io::Result<Result<(), i32>> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    // SAFETY: the child only calls unshare and _exit, both async-signal-safe.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: unshare(2) takes a flag word; this forked child is single-threaded.
            let ret = unsafe { libc::unshare(flags) };
            exit(if ret == 0 { 0 } else { errno().clamp(1, 255) })
        }
        pid => match wait(pid)? {
            0 => Ok(Ok(())),
            errno => Ok(Err(errno)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip() {
        for step in Step::ALL {
            let f = Failure {
                step,
                index: 7,
                errno: libc::EPERM,
            };
            assert_eq!(Failure::decode(&f.encode()), Some(f));
        }
        assert_eq!(Failure::decode(&[0; 12]), None);
        assert_eq!(Failure::decode(&[1; 5]), None);
    }

    #[test]
    fn status_codes_follow_the_shell() {
        assert_eq!(status_code(3 << 8), 3);
        assert_eq!(status_code(libc::SIGKILL), 128 + 9);
    }
}
