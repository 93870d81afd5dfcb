//! Applying the security profile and limits in pid 1 of the sandbox, after `fork`: only
//! async-signal-safe syscalls on data prepared in [`SecurityPlan`].
//!
//! The order follows runc's `libcontainer/standard_init_linux.go`, because each step needs a
//! privilege that a later one takes away:
//!
//! 1. join the run's cgroups and unshare the cgroup namespace (root writes `cgroup.procs`);
//! 2. `setsid`: no controlling terminal;
//! 3. (mounts, `pivot_root`), then the masked and read-only paths — `mount` needs
//!    `CAP_SYS_ADMIN` and is refused by the filter;
//! 4. `setrlimit` (raising a hard limit needs `CAP_SYS_RESOURCE`);
//! 5. drop the bounding set (`PR_CAPBSET_DROP` needs `CAP_SETPCAP`);
//! 6. (switch to the user: `setgroups`/`setgid`/`setuid` need `CAP_SETGID`/`CAP_SETUID`);
//! 7. `capset` the permitted/effective/inheritable sets, clear the ambient set;
//! 8. `PR_SET_NO_NEW_PRIVS` — without `CAP_SYS_ADMIN` it is what allows step 9;
//! 9. the seccomp filters, last, so that none of the calls above has to be allowed by them
//!    (only `execve` follows).
#![expect(
    unsafe_code,
    reason = "prctl/capset/seccomp/setrlimit are FFI calls; each block says why it is sound"
)]

use std::ffi::c_int;

use super::mounts::mount;
use super::{Failure, Step, check, errno};
use crate::plan::{Plan, SecurityPlan};

/// Step 1: writes `0` (the writer itself) into each `cgroup.procs` opened by the parent, then
/// enters a new cgroup namespace rooted at the run's cgroup (so `/proc/self/cgroup` shows `/`
/// and the host's hierarchy paths stay hidden, as with docker's default `--cgroupns=private`).
pub(super) fn join_cgroup(plan: &Plan) -> Result<(), Failure> {
    if let Some(cgroup) = &plan.cgroup {
        for (i, fd) in cgroup.procs.iter().enumerate() {
            use std::os::fd::AsRawFd;
            // SAFETY: writing a static two-byte buffer to a descriptor the parent opened.
            let n = unsafe { libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(Failure {
                    step: Step::JoinCgroup,
                    index: i as u32,
                    errno: errno(),
                });
            }
        }
    }
    if plan.in_place {
        // No namespaces for an in-place run (the container cannot make them).
        return Ok(());
    }
    check(
        // SAFETY: unshare takes a flag word.
        unsafe { libc::unshare(libc::CLONE_NEWCGROUP) },
        Step::CgroupNamespace,
        0,
    )?;
    Ok(())
}

/// Step 2: a new session without a controlling terminal (a RUN step must not be able to
/// inject input into the caller's terminal with `TIOCSTI`, CVE-2016-9016 class).
pub(super) fn new_session() -> Result<(), Failure> {
    // SAFETY: setsid has no arguments; this process is not a group leader (freshly forked).
    check(unsafe { libc::setsid() }, Step::Setsid, 0)?;
    Ok(())
}

/// Step 3: `/dev/null` over masked files, an empty read-only tmpfs over masked directories;
/// read-only paths bound onto themselves and remounted read-only (runc `maskPath`,
/// `readonlyPath`). Runs after `pivot_root`: the paths are in the sandbox's own `/proc` and
/// `/sys`, freshly mounted, which no image content can redirect. Missing paths are skipped.
pub(super) fn mask_paths(security: &SecurityPlan) -> Result<(), Failure> {
    for (i, path) in security.masked_paths.iter().enumerate() {
        let index = i as u32;
        // SAFETY: `stat` is a plain C struct of integers; all-zero bytes are a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: stat(2) reads the NUL-terminated `path` and writes into `st`, live here.
        if unsafe { libc::stat(path.as_ptr(), &mut st) } == -1 {
            match errno() {
                libc::ENOENT | libc::ENOTDIR => continue,
                errno => {
                    return Err(Failure {
                        step: Step::MaskPath,
                        index,
                        errno,
                    });
                }
            }
        }
        let ret = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            mount(
                c"tmpfs".as_ptr(),
                path.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=0,mode=0555".as_ptr(),
            )
        } else {
            mount(
                c"/dev/null".as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        check(ret, Step::MaskPath, index)?;
    }
    for (i, path) in security.readonly_paths.iter().enumerate() {
        let index = i as u32;
        let bound = mount(
            path.as_ptr(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        );
        if bound == -1 {
            match errno() {
                libc::ENOENT | libc::ENOTDIR => continue,
                errno => {
                    return Err(Failure {
                        step: Step::ReadonlyPath,
                        index,
                        errno,
                    });
                }
            }
        }
        // MS_RDONLY is ignored on the bind itself (mount(2)); /proc's own flags are kept.
        check(
            mount(
                std::ptr::null(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC
                    | super::mounts::kept_flags(path.as_ptr()),
                std::ptr::null(),
            ),
            Step::ReadonlyPath,
            index,
        )?;
    }
    Ok(())
}

/// Step 4: the `--ulimit` values.
pub(super) fn set_rlimits(security: &SecurityPlan) -> Result<(), Failure> {
    for (i, (resource, limit)) in security.rlimits.iter().enumerate() {
        check(
            // SAFETY: a valid rlimit struct for a resource number from the RLIMIT_* table.
            unsafe { libc::setrlimit(*resource as _, limit) },
            Step::Rlimit,
            i as u32,
        )?;
    }
    Ok(())
}

/// Step 5: removes every capability outside the profile from the bounding set, so that no
/// exec (of a setuid-root or file-capability binary) can ever regain it.
pub(super) fn drop_bounding(security: &SecurityPlan) -> Result<(), Failure> {
    let Some(keep) = security.capabilities else {
        return Ok(());
    };
    for cap in 0..=security.last_cap.min(63) {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl(2) PR_CAPBSET_DROP takes integer arguments and touches no memory.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret == -1 {
            if errno() == libc::EINVAL {
                break; // past the kernel's last capability
            }
            return Err(Failure {
                step: Step::DropBounding,
                index: cap,
                errno: errno(),
            });
        }
    }
    Ok(())
}

/// `struct __user_cap_header_struct` (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two (capabilities 0–31, 32–63).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct sock_fprog` (linux/filter.h).
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const seccompiler::sock_filter,
}

/// Makes the effective capability set the permitted one again (after `setfsuid` to a
/// nonzero id cleared the file capabilities from it, capabilities(7)).
pub(super) fn raise_effective(step: Step) -> Result<(), Failure> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    check(
        // SAFETY: header and a two-element data array of the layout capget(2) documents for
        // _LINUX_CAPABILITY_VERSION_3, both live and writable.
        unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                data.as_mut_ptr(),
            ) as c_int
        },
        step,
        0,
    )?;
    for d in &mut data {
        d.effective = d.permitted;
    }
    capset(&data, step, 1)?;
    Ok(())
}

/// `capset(2)` of this process's sets.
fn capset(data: &[CapData; 2], step: Step, index: u32) -> Result<(), Failure> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    check(
        // SAFETY: header and a two-element data array of the layout capset(2) documents for
        // _LINUX_CAPABILITY_VERSION_3; the kernel only reads the data.
        unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            ) as c_int
        },
        step,
        index,
    )?;
    Ok(())
}

/// Steps 7–9, after the user switch: capabilities, no-new-privileges, seccomp.
pub(super) fn restrict(security: &SecurityPlan) -> Result<(), Failure> {
    if let Some(keep) = security.capabilities {
        // docker ≥ 20.10: a non-root user gets no effective (nor permitted) capabilities;
        // its execs would drop them anyway (capabilities(7), "Transformation of capabilities
        // during execve()"). The inheritable set is empty (CVE-2022-24769).
        // SAFETY: getuid cannot fail.
        let sets = if unsafe { libc::getuid() } == 0 {
            keep
        } else {
            0
        };
        let data = [
            CapData {
                effective: sets as u32,
                permitted: sets as u32,
                inheritable: 0,
            },
            CapData {
                effective: (sets >> 32) as u32,
                permitted: (sets >> 32) as u32,
                inheritable: 0,
            },
        ];
        capset(&data, Step::SetCapabilities, 0)?;
        check(
            // SAFETY: prctl(2) PR_CAP_AMBIENT takes integer arguments and touches no memory.
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
            },
            Step::SetCapabilities,
            1,
        )?;
    }
    if security.no_new_privileges {
        check(
            // SAFETY: prctl(2) PR_SET_NO_NEW_PRIVS takes integer arguments and touches no memory.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            Step::NoNewPrivileges,
            0,
        )?;
    }
    for (i, program) in security.seccomp.iter().enumerate() {
        let prog = SockFprog {
            len: program.len() as u16,
            filter: program.as_ptr(),
        };
        check(
            // SAFETY: `prog` points at a live BPF program of `len` instructions; the kernel
            // copies it (seccomp(2)).
            unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const SockFprog,
                ) as c_int
            },
            Step::Seccomp,
            i as u32,
        )?;
    }
    Ok(())
}
