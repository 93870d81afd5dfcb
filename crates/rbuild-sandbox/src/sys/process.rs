//! The sandbox process itself: working directory, credentials from the image's databases,
//! and exec. Runs in pid 1 of the sandbox after `pivot_root`, after `fork`.
#![expect(
    unsafe_code,
    reason = "mkdir/setgroups/setuid/execve are FFI calls; each block says why it is sound"
)]

use std::ffi::CStr;

use super::{
    Failure, Step, USER_ERROR_TOO_MANY_GROUPS, USER_ERROR_UNKNOWN_GROUP, USER_ERROR_UNKNOWN_USER,
    check, close, errno, exit,
};
use crate::plan::{Buffers, ExecArrays, Plan};
use crate::user::{self, UserError};

/// `mkdir -p` of the working directory as root with mode 0755 (docker creates a missing
/// WORKDIR the same way), then `chdir`. Runs inside the new root, so symlinks resolve there.
pub(super) fn enter_cwd(plan: &Plan) -> Result<(), Failure> {
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

/// Joins the user namespace of a `--userns=auto` run and becomes its root (`setns` keeps
/// the host ids, which have no mapping there, until `setresuid`).
pub(super) fn enter_user_namespace(userns: libc::c_int) -> Result<(), Failure> {
    check(
        // SAFETY: setns(2) with a namespace descriptor the process holds open.
        unsafe { libc::setns(userns, libc::CLONE_NEWUSER) },
        Step::EnterUserNamespace,
        0,
    )?;
    check(
        // SAFETY: setresgid(2) with integer ids.
        unsafe { libc::setresgid(0, 0, 0) },
        Step::EnterUserNamespace,
        1,
    )?;
    check(
        // SAFETY: setresuid(2) with integer ids, after setresgid.
        unsafe { libc::setresuid(0, 0, 0) },
        Step::EnterUserNamespace,
        2,
    )?;
    Ok(())
}

/// Resolves the user in the image's `/etc/passwd` and `/etc/group` and switches to it:
/// `setgroups`, then `setgid`, then `setuid` (the order that keeps the privilege to do all
/// three).
pub(super) fn set_user(plan: &Plan, buffers: &mut Buffers) -> Result<(), Failure> {
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
    if !plan.setgroups_denied {
        check(
            // SAFETY: setgroups(2) reads `ngroups` ids from `groups`, whose first `ngroups`
            // entries `resolve` initialised.
            unsafe { libc::setgroups(ids.ngroups, groups.as_ptr()) },
            Step::SetGroups,
            0,
        )?;
    }
    // The failure's index carries the id, for the message (an id outside a user namespace's
    // map gives EINVAL).
    // SAFETY: setgid(2) takes a plain integer id.
    check(unsafe { libc::setgid(ids.gid) }, Step::SetGid, ids.gid)?;
    // SAFETY: setuid(2) takes a plain integer id; it comes after setgid, which needs root.
    check(unsafe { libc::setuid(ids.uid) }, Step::SetUid, ids.uid)?;
    Ok(())
}

/// execvp over the candidates prepared from the spec's `PATH` (glibc's `__execvpe` logic:
/// ENOENT/ENOTDIR try the next one, EACCES is remembered, anything else stops), then the
/// docker/runc-style message and 127 (not found) or 126 (not executable).
pub(super) fn exec(plan: &Plan, arrays: &ExecArrays) -> ! {
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
