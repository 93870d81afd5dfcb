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
#![allow(unsafe_code)] // fork/unshare/mount/pivot_root/execve are FFI calls; each block says why it is sound

use std::convert::Infallible;
use std::ffi::{CStr, c_char, c_int};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::plan::{Buffers, ExecArrays, Plan};
use crate::user::{self, UserError};

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
}

impl Step {
    const ALL: [Step; 30] = [
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
    pub fn decode(bytes: &[u8]) -> Option<Failure> {
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

/// Host devices bind-mounted into the sandbox's `/dev` (the OCI runtime spec's default
/// devices, minus `console`). The index of a [`Step::MakeDevice`] failure points here.
pub(crate) const DEVICES: [&CStr; 6] = [c"null", c"zero", c"full", c"random", c"urandom", c"tty"];
const HOST_DEVICES: [&CStr; 6] = [
    c"/dev/null",
    c"/dev/zero",
    c"/dev/full",
    c"/dev/random",
    c"/dev/urandom",
    c"/dev/tty",
];
/// `/dev/fd`, `/dev/stdin`… symlinks, as in the OCI runtime spec ("Default Devices").
const DEV_SYMLINKS: [(&CStr, &CStr); 5] = [
    (c"/proc/self/fd", c"fd"),
    (c"/proc/self/fd/0", c"stdin"),
    (c"/proc/self/fd/1", c"stdout"),
    (c"/proc/self/fd/2", c"stderr"),
    (c"pts/ptmx", c"ptmx"),
];

/// A started sandbox: the middle process and the parent's pipe ends.
pub(crate) struct Launched {
    pub pid: libc::pid_t,
    /// Merged stdout/stderr (with capture).
    pub output: Option<OwnedFd>,
    /// Receives a [`Failure`] record, or EOF when the command was executed.
    pub failure: OwnedFd,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks the sandbox. Pipes are close-on-exec so that processes spawned concurrently by other
/// threads do not hold them open (which would delay EOF).
pub(crate) fn launch(plan: &Plan, buffers: &mut Buffers) -> io::Result<Launched> {
    let (failure_r, failure_w) = pipe()?;
    let output = if plan.capture { Some(pipe()?) } else { None };
    let arrays = plan.exec_arrays();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let out_w = output.as_ref().map(|(_, w)| w.as_raw_fd());
    let failure_w_raw = failure_w.as_raw_fd();
    // SAFETY: the child only runs `middle`, which makes async-signal-safe syscalls on data
    // prepared above and never returns (it ends in `_exit`), so no Rust state that another
    // thread might have locked is touched.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => middle(plan, buffers, &arrays, failure_w_raw, out_w, parent),
        pid => Ok(Launched {
            pid,
            output: output.map(|(r, _w)| r),
            failure: failure_r,
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

/// The shell's convention: exit code, or 128 + signal number.
fn status_code(status: c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Turns a `-1` return into a [`Failure`] of `step`.
fn check(ret: c_int, step: Step, index: u32) -> Result<c_int, Failure> {
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

fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and skips atexit handlers and Rust destructors,
    // which belong to the parent's copy of the process state.
    unsafe { libc::_exit(code) }
}

/// `/proc/self/fd/<fd><suffix>` in a stack buffer: mounting through the magic link of a
/// descriptor opened with `RESOLVE_IN_ROOT` is how runc keeps mount targets inside the rootfs
/// (CVE-2019-19921 class of symlink races).
struct FdPath {
    buf: [u8; 128],
}

impl FdPath {
    fn new(fd: RawFd, suffix: &CStr) -> FdPath {
        let mut buf = [0u8; 128];
        let prefix = b"/proc/self/fd/";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut len = prefix.len();
        let mut digits = [0u8; 10];
        let mut n = fd.unsigned_abs();
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for d in digits[..count].iter().rev() {
            buf[len] = *d;
            len += 1;
        }
        let suffix = suffix.to_bytes();
        let room = buf.len() - len - 1;
        let take = suffix.len().min(room);
        buf[len..len + take].copy_from_slice(&suffix[..take]);
        FdPath { buf }
    }

    fn as_ptr(&self) -> *const c_char {
        self.buf.as_ptr().cast()
    }
}

/// `openat2(dirfd, path, flags, RESOLVE_IN_ROOT)`: `path` resolved as if `dirfd` were `/`, so
/// an image's absolute or `..` symlinks cannot point a mount at the host.
fn open_in_root(dirfd: RawFd, path: &CStr, flags: c_int) -> Result<RawFd, i32> {
    // SAFETY: open_how is a plain C struct; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `path` is NUL-terminated and `how` is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd as RawFd)
    }
}

fn close(fd: RawFd) {
    // SAFETY: `fd` was opened by this child and is closed once.
    unsafe { libc::close(fd) };
}

fn mount(
    source: *const c_char,
    target: *const c_char,
    fstype: *const c_char,
    flags: libc::c_ulong,
    data: *const c_char,
) -> c_int {
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    unsafe { libc::mount(source, target, fstype, flags, data.cast()) }
}

/// The middle process: signals, stdio, namespaces, then forks init and forwards its status.
fn middle(
    plan: &Plan,
    buffers: &mut Buffers,
    arrays: &ExecArrays,
    failure_w: RawFd,
    out_w: Option<RawFd>,
    parent: libc::pid_t,
) -> ! {
    let result = (|| -> Result<i32, Failure> {
        // SAFETY (this block): prctl/getppid/sigprocmask/sigaction/dup2/open/unshare/fork are
        // async-signal-safe syscalls on values owned by this single-threaded child.
        unsafe {
            // Die with the caller (a killed build must not leave sandboxes behind); the
            // getppid check closes the race with a parent that died before prctl.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                exit(1);
            }
            // Signal state is inherited through exec: the Rust runtime ignores SIGPIPE and
            // tokio blocks nothing, but a caller may; give the command a clean slate like
            // std::process::Command does.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for sig in 1..libc::SIGRTMIN() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            if let Some(out) = out_w {
                let null = check(
                    libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY),
                    Step::Stdio,
                    0,
                )?;
                check(libc::dup2(null, 0), Step::Stdio, 0)?;
                check(libc::dup2(out, 1), Step::Stdio, 1)?;
                check(libc::dup2(out, 2), Step::Stdio, 2)?;
                close(null);
                close(out);
            }
            let mut flags =
                libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
            if plan.network_none {
                flags |= libc::CLONE_NEWNET;
            }
            check(libc::unshare(flags), Step::Unshare, 0)?;
            let pid = check(libc::fork(), Step::ForkInit, 0)?;
            if pid == 0 {
                // No getppid() check here: the parent is outside the new pid namespace, so
                // getppid() is 0 either way. The middle process only dies early when killed,
                // and then only after its own PDEATHSIG fired, i.e. the caller is gone.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let Err(failure) = init(plan, buffers, arrays);
                report(failure_w, failure);
                exit(1);
            }
            // Only init writes output from now on; our copies would not delay EOF (we exit
            // with init) but there is no reason to keep them.
            if out_w.is_some() {
                close(1);
                close(2);
            }
            let mut status = 0;
            loop {
                if libc::waitpid(pid, &mut status, 0) == pid {
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

/// Pid 1 of the sandbox: builds the rootfs, switches to it, drops to the user and executes
/// the command. Returns only on failure.
fn init(plan: &Plan, buffers: &mut Buffers, arrays: &ExecArrays) -> Result<Infallible, Failure> {
    // SAFETY: umask cannot fail; modes below are then exactly what is asked.
    unsafe { libc::umask(0) };
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
    // SAFETY: pointer and length describe `plan.hostname`.
    check(
        unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) },
        Step::SetHostname,
        0,
    )?;
    if plan.network_none {
        loopback_up()?;
    }
    // The overlay options use paths relative to the scratch directory (see plan.rs).
    // SAFETY: NUL-terminated path.
    check(
        unsafe { libc::chdir(plan.scratch_c.as_ptr()) },
        Step::EnterScratch,
        0,
    )?;
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
    // SAFETY: NUL-terminated path; the descriptor is ours.
    let root = check(
        unsafe { libc::open(c"root".as_ptr(), libc::O_DIRECTORY | libc::O_CLOEXEC) },
        Step::OpenRootfs,
        0,
    )?;
    mount_kernel_filesystems(root)?;
    for (i, bind) in plan.binds.iter().enumerate() {
        let index = i as u32;
        let fail = |step, errno| Failure { step, index, errno };
        let target = match open_in_root(root, &bind.target, libc::O_PATH) {
            Ok(fd) => fd,
            Err(libc::ENOENT) if bind.optional => continue,
            Err(errno) => return Err(fail(Step::OpenBindTarget, errno)),
        };
        let path = FdPath::new(target, c"");
        check(
            mount(
                bind.source.as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
            Step::Bind,
            index,
        )?;
        close(target);
        if bind.readonly {
            // MS_RDONLY is ignored on the initial bind (mount(2) "Creating a bind mount");
            // remount the new mount, reached by resolving the target again.
            let top = open_in_root(root, &bind.target, libc::O_PATH)
                .map_err(|errno| fail(Step::RemountReadonly, errno))?;
            let path = FdPath::new(top, c"");
            check(
                mount(
                    std::ptr::null(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ),
                Step::RemountReadonly,
                index,
            )?;
            close(top);
        }
    }
    pivot(root)?;
    enter_cwd(plan)?;
    set_user(plan, buffers)?;
    exec(plan, arrays)
}

/// Brings up `lo` in a new network namespace (it starts down), with `SIOCSIFFLAGS` like
/// `ip link set lo up`.
fn loopback_up() -> Result<(), Failure> {
    let fail = || Failure {
        step: Step::Loopback,
        index: 0,
        errno: errno(),
    };
    // SAFETY: socket/ioctl on a zeroed ifreq whose name is "lo"; the descriptor is ours.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(fail());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as c_char;
        ifr.ifr_name[1] = b'o' as c_char;
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(fail());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(fail());
        }
        close(sock);
    }
    Ok(())
}

/// `/proc` (of the new pid namespace: this is pid 1 in it), a tmpfs `/dev` with the default
/// devices, `/dev/pts`, `/dev/shm`, and a read-only `/sys`, as in the OCI runtime spec's
/// default mounts.
fn mount_kernel_filesystems(root: RawFd) -> Result<(), Failure> {
    let open = |path: &CStr, flags, step| {
        open_in_root(root, path, flags | libc::O_DIRECTORY).map_err(|errno| Failure {
            step,
            index: 0,
            errno,
        })
    };
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

    let proc = open(c"proc", libc::O_PATH, Step::MountProc)?;
    check(
        mount(
            c"proc".as_ptr(),
            FdPath::new(proc, c"").as_ptr(),
            c"proc".as_ptr(),
            nosuid_nodev_noexec,
            std::ptr::null(),
        ),
        Step::MountProc,
        0,
    )?;
    close(proc);

    let dev = open(c"dev", libc::O_PATH, Step::MountDev)?;
    check(
        mount(
            c"tmpfs".as_ptr(),
            FdPath::new(dev, c"").as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            c"mode=755,size=65536k".as_ptr(),
        ),
        Step::MountDev,
        0,
    )?;
    close(dev);
    // Reopen: the new descriptor is the tmpfs root, which we just created and fully control.
    let dev = open(c"dev", libc::O_PATH, Step::MountDev)?;
    for (i, (name, host)) in DEVICES.iter().zip(HOST_DEVICES).enumerate() {
        let index = i as u32;
        // SAFETY: NUL-terminated name relative to our descriptor; mode is a plain integer.
        let fd = check(
            unsafe {
                libc::openat(
                    dev,
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o666,
                )
            },
            Step::MakeDevice,
            index,
        )?;
        close(fd);
        let mut suffix = [0u8; 16];
        suffix[0] = b'/';
        suffix[1..=name.to_bytes().len()].copy_from_slice(name.to_bytes());
        let suffix = CStr::from_bytes_until_nul(&suffix).unwrap_or(c"");
        check(
            mount(
                host.as_ptr(),
                FdPath::new(dev, suffix).as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ),
            Step::MakeDevice,
            index,
        )?;
    }
    // SAFETY: NUL-terminated names relative to our descriptor.
    check(
        unsafe { libc::mkdirat(dev, c"pts".as_ptr(), 0o755) },
        Step::MountDevpts,
        0,
    )?;
    check(
        mount(
            c"devpts".as_ptr(),
            FdPath::new(dev, c"/pts").as_ptr(),
            c"devpts".as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            c"newinstance,ptmxmode=0666,mode=0620,gid=5".as_ptr(),
        ),
        Step::MountDevpts,
        0,
    )?;
    // SAFETY: as above.
    check(
        unsafe { libc::mkdirat(dev, c"shm".as_ptr(), 0o1777) },
        Step::MountShm,
        0,
    )?;
    check(
        mount(
            c"shm".as_ptr(),
            FdPath::new(dev, c"/shm").as_ptr(),
            c"tmpfs".as_ptr(),
            nosuid_nodev_noexec,
            c"mode=1777,size=65536k".as_ptr(),
        ),
        Step::MountShm,
        0,
    )?;
    for (i, (target, name)) in DEV_SYMLINKS.iter().enumerate() {
        // SAFETY: NUL-terminated strings; the link is created under our descriptor.
        check(
            unsafe { libc::symlinkat(target.as_ptr(), dev, name.as_ptr()) },
            Step::DevSymlink,
            i as u32,
        )?;
    }
    close(dev);

    let sys = open(c"sys", libc::O_PATH, Step::MountSys)?;
    check(
        mount(
            c"sysfs".as_ptr(),
            FdPath::new(sys, c"").as_ptr(),
            c"sysfs".as_ptr(),
            nosuid_nodev_noexec | libc::MS_RDONLY,
            std::ptr::null(),
        ),
        Step::MountSys,
        0,
    )?;
    close(sys);
    Ok(())
}

/// `pivot_root(".", ".")` then lazily unmount the old root stacked on top, as runc does
/// (`libcontainer/rootfs_linux.go` `pivotRoot`): no `put_old` directory is needed, so nothing
/// is created in the rootfs.
fn pivot(root: RawFd) -> Result<(), Failure> {
    // SAFETY: plain syscalls on NUL-terminated literals and descriptors we own.
    unsafe {
        let old = check(
            libc::open(
                c"/".as_ptr(),
                libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
            ),
            Step::PivotRoot,
            0,
        )?;
        check(libc::fchdir(root), Step::PivotRoot, 1)?;
        check(
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as c_int,
            Step::PivotRoot,
            2,
        )?;
        check(libc::fchdir(old), Step::DetachOldRoot, 0)?;
        check(
            mount(
                std::ptr::null(),
                c".".as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ),
            Step::DetachOldRoot,
            1,
        )?;
        check(
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
            Step::DetachOldRoot,
            2,
        )?;
        check(libc::chdir(c"/".as_ptr()), Step::DetachOldRoot, 3)?;
        close(old);
        close(root);
    }
    Ok(())
}

/// `mkdir -p` of the working directory as root with mode 0755 (docker creates a missing
/// WORKDIR the same way), then `chdir`. Runs inside the new root, so symlinks resolve there.
fn enter_cwd(plan: &Plan) -> Result<(), Failure> {
    // SAFETY: umask cannot fail; the command gets the conventional 022.
    unsafe { libc::umask(0o022) };
    for (i, prefix) in plan.cwd_prefixes.iter().enumerate() {
        // SAFETY: NUL-terminated path.
        if unsafe { libc::mkdir(prefix.as_ptr(), 0o755) } == -1 && errno() != libc::EEXIST {
            return Err(Failure {
                step: Step::MakeCwd,
                index: i as u32,
                errno: errno(),
            });
        }
    }
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::chdir(plan.cwd.as_ptr()) }, Step::EnterCwd, 0)?;
    Ok(())
}

/// Reads a whole file into `buf`; `Ok(None)` when it does not exist. `EFBIG` when it does not
/// fit (the buffer was sized before fork).
fn read_file<'a>(path: &CStr, buf: &'a mut [u8], step: Step) -> Result<Option<&'a [u8]>, Failure> {
    // SAFETY: NUL-terminated path; the descriptor is ours.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return match errno() {
            libc::ENOENT | libc::ENOTDIR => Ok(None),
            errno => Err(Failure {
                step,
                index: 0,
                errno,
            }),
        };
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            close(fd);
            return Err(Failure {
                step,
                index: 0,
                errno: libc::EFBIG,
            });
        }
        // SAFETY: reading into the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        match n {
            0 => break,
            n if n > 0 => len += n as usize,
            _ if errno() == libc::EINTR => {}
            _ => {
                let errno = errno();
                close(fd);
                return Err(Failure {
                    step,
                    index: 0,
                    errno,
                });
            }
        }
    }
    close(fd);
    Ok(Some(&buf[..len]))
}

/// Resolves the user in the image's `/etc/passwd` and `/etc/group` and switches to it:
/// `setgroups`, then `setgid`, then `setuid` (the order that keeps the privilege to do all
/// three).
fn set_user(plan: &Plan, buffers: &mut Buffers) -> Result<(), Failure> {
    // The buffers were allocated before fork; the child writes its own copy-on-write pages.
    let passwd = read_file(c"/etc/passwd", &mut buffers.passwd, Step::ReadPasswd)?;
    let group_file = read_file(c"/etc/group", &mut buffers.group, Step::ReadGroup)?;
    let groups = &mut buffers.groups;
    let ids = user::resolve(
        &plan.user,
        plan.group.as_deref(),
        passwd,
        group_file,
        groups,
    )
    .map_err(|e| Failure {
        step: Step::ResolveUser,
        index: 0,
        errno: match e {
            UserError::UnknownUser => USER_ERROR_UNKNOWN_USER,
            UserError::UnknownGroup => USER_ERROR_UNKNOWN_GROUP,
            UserError::TooManyGroups => USER_ERROR_TOO_MANY_GROUPS,
        },
    })?;
    // SAFETY: `groups[..ngroups]` is initialised; the ids are plain integers.
    unsafe {
        check(
            libc::setgroups(ids.ngroups, groups.as_ptr()),
            Step::SetGroups,
            0,
        )?;
        check(libc::setgid(ids.gid), Step::SetGid, 0)?;
        check(libc::setuid(ids.uid), Step::SetUid, 0)?;
    }
    Ok(())
}

/// execvp over the candidates prepared from the spec's `PATH` (glibc's `__execvpe` logic:
/// ENOENT/ENOTDIR try the next one, EACCES is remembered, anything else stops), then the
/// docker/runc-style message and 127 (not found) or 126 (not executable).
fn exec(plan: &Plan, arrays: &ExecArrays) -> ! {
    // Descriptors the caller leaked without O_CLOEXEC must not reach the command (docker
    // closes everything above stderr). Best effort: kernels before 5.11 lack close_range.
    // SAFETY: close_range only marks descriptors close-on-exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for candidate in &plan.exec_candidates {
        // SAFETY: NUL-terminated path and NULL-terminated arrays of NUL-terminated strings,
        // all prepared before fork.
        unsafe {
            libc::execve(
                candidate.as_ptr(),
                arrays.argv.as_ptr(),
                arrays.envp.as_ptr(),
            )
        };
        last = errno();
        match last {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => saw_eacces = true,
            _ => break,
        }
    }
    let (reason, code): (&[u8], i32) = if saw_eacces || last == libc::EACCES {
        (b"permission denied\n", 126)
    } else {
        match last {
            libc::ENOENT | libc::ENOTDIR if plan.exec_searched => {
                (b"executable file not found in $PATH\n", 127)
            }
            libc::ENOENT | libc::ENOTDIR => (b"no such file or directory\n", 127),
            libc::ENOEXEC => (b"exec format error\n", 126),
            _ => (b"cannot execute\n", 126),
        }
    };
    for part in [plan.exec_message_prefix.as_slice(), reason] {
        // SAFETY: writing a buffer to stderr (the output pipe, or the caller's stderr).
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
    exit(code)
}

/// Forks a child that tries the namespaces a sandbox needs and exits with the errno.
pub(crate) fn probe_namespaces() -> io::Result<Result<(), i32>> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    // SAFETY: the child only calls unshare and _exit, both async-signal-safe.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: see above.
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
    fn fd_paths_are_nul_terminated() {
        let p = FdPath::new(123, c"/null");
        let s = CStr::from_bytes_until_nul(&p.buf).unwrap();
        assert_eq!(s, c"/proc/self/fd/123/null");
        let p = FdPath::new(0, c"");
        assert_eq!(
            CStr::from_bytes_until_nul(&p.buf).unwrap(),
            c"/proc/self/fd/0"
        );
    }

    #[test]
    fn status_codes_follow_the_shell() {
        assert_eq!(status_code(3 << 8), 3);
        assert_eq!(status_code(libc::SIGKILL), 128 + 9);
    }
}
