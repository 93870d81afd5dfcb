//! Forking this process into a new user namespace (rootless builds).
//!
//! ```text
//! rbuild (single-threaded) ── fork ──► child: unshare(CLONE_NEWUSER) ─ "ready" ─►
//!   parent: writes the child's uid_map/gid_map (newuidmap/newgidmap, or a single id)
//!   ─ "go" ─► child: setresgid/setresuid(0), PDEATHSIG, returns and runs the command
//!   parent: waits, exits with the child's status
//! ```
//!
//! The maps of a user namespace can only be written from its parent namespace, so the process
//! that stays outside writes them (or `newuidmap`, which it spawns). The fork happens before
//! any thread exists (checked), so the child is a complete copy and continues as a normal Rust
//! program.
#![expect(
    unsafe_code,
    reason = "fork/unshare/setresuid/prctl are FFI calls; each block says why it is sound"
)]

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

/// Which side of the fork this is.
pub(crate) enum Side {
    /// The original process, after the child exited: its exit code (128 + N for a signal).
    Parent(i32),
    /// The child, now root in its own user namespace.
    Child,
}

/// A close-on-exec pipe as files (the forked sides read and write them with `std::io`).
fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let (read, write) = super::pipe()?;
    Ok((read.into(), write.into()))
}

/// The number of threads of this process, from `/proc/self/status`.
fn threads() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Threads: line"))
}

/// Forks; the child unshares a user namespace, `write_maps(child_pid)` runs in the parent,
/// then the child becomes uid/gid 0 of the namespace. The parent waits for the child and
/// returns [`Side::Parent`] with its status; the child returns [`Side::Child`].
pub(crate) fn fork_into_user_namespace(
    write_maps: impl FnOnce(libc::pid_t) -> io::Result<()>,
) -> io::Result<Side> {
    if threads()? != 1 {
        return Err(io::Error::other(
            "a user namespace can only be entered before any thread is started",
        ));
    }
    let (mut ready_r, mut ready_w) = pipe()?;
    let (mut go_r, mut go_w) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the process is single-threaded (checked above), so the child is a complete
    // copy in which every lock is free; it goes on running ordinary Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(ready_r);
            drop(go_w);
            // SAFETY: unshare(2) takes a flag word; this process is single-threaded, as
            // CLONE_NEWUSER requires.
            let errno = if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                0
            } else {
                super::errno()
            };
            let _ = ready_w.write_all(&errno.to_ne_bytes());
            drop(ready_w);
            if errno != 0 {
                super::exit(125);
            }
            let mut go = [0u8; 1];
            if go_r.read_exact(&mut go).is_err() || go[0] != 1 {
                // The parent reported the failure; nothing to add.
                super::exit(125);
            }
            become_root()?;
            // Set after the credential change, which clears it (prctl(2)); the getppid check
            // closes the race with a parent that died before.
            // SAFETY: prctl(2) with integer arguments, on this process only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } != parent {
                super::exit(125);
            }
            Ok(Side::Child)
        }
        pid => {
            drop(ready_w);
            drop(go_r);
            let result = (|| {
                let mut errno = [0u8; 4];
                ready_r.read_exact(&mut errno)?;
                match i32::from_ne_bytes(errno) {
                    0 => write_maps(pid),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                }
            })();
            let _ = go_w.write_all(&[u8::from(result.is_ok())]);
            drop(go_w);
            // Ctrl-C reaches the whole process group: the child handles it and exits, and we
            // report what it did instead of dying first.
            ignore_terminal_signals();
            let code = super::wait(pid)?;
            result.map(|()| Side::Parent(code))
        }
    }
}

/// uid and gid 0 of the new namespace (the user's own ids map there).
fn become_root() -> io::Result<()> {
    // SAFETY: setresgid(2) with integer ids.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setresuid(2) with integer ids; after setresgid, which it would otherwise forbid.
    if unsafe { libc::setresuid(0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ignore_terminal_signals() {
    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTSTP] {
        // SAFETY: sets the disposition to SIG_IGN; no handler code is installed.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// A user namespace whose maps are `uid_map` and `gid_map` (as written to `/proc/PID/*_map`),
/// held by a descriptor of its `/proc/PID/ns/user`: made by a forked child that unshares it and
/// waits while this process (root) writes the maps, then exits. Safe to call from a
/// multi-threaded process: the child only makes async-signal-safe calls.
pub(crate) fn namespace_fd(uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    let (mut ready_r, ready_w) = pipe()?;
    let (go_r, mut go_w) = pipe()?;
    let ready_w_raw = std::os::fd::AsRawFd::as_raw_fd(&ready_w);
    let go_r_raw = std::os::fd::AsRawFd::as_raw_fd(&go_r);
    // SAFETY: the child only calls unshare, write, read and _exit, which are
    // async-signal-safe, on descriptors and a stack buffer, and never returns.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: unshare(2) takes a flag word; the forked child is single-threaded.
            let status: u8 = if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                0
            } else {
                1
            };
            // SAFETY: writes one byte from the stack to our pipe end.
            unsafe { libc::write(ready_w_raw, (&raw const status).cast(), 1) };
            let mut byte = 0u8;
            // SAFETY: reads at most one byte into the stack; returns at EOF when the parent
            // is done (or gone).
            unsafe { libc::read(go_r_raw, (&raw mut byte).cast(), 1) };
            super::exit(0)
        }
        pid => {
            drop(ready_w);
            drop(go_r);
            let result = (|| {
                let mut status = [1u8];
                ready_r.read_exact(&mut status)?;
                if status[0] != 0 {
                    return Err(io::Error::other("cannot create a user namespace"));
                }
                let proc = format!("/proc/{pid}");
                std::fs::write(format!("{proc}/uid_map"), uid_map)?;
                std::fs::write(format!("{proc}/gid_map"), gid_map)?;
                let ns = std::fs::File::open(format!("{proc}/ns/user"))?;
                Ok(OwnedFd::from(ns))
            })();
            let _ = go_w.write_all(&[1]);
            drop(go_w);
            super::wait(pid)?;
            result
        }
    }
}
