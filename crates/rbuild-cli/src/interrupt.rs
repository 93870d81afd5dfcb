//! Ctrl-C and `kill`: SIGINT or SIGTERM stops a build cleanly and exits with status 130.
//!
//! What has to go, and how each goes:
//!
//! - the RUN process tree: every sandbox is a child of this process (the "middle" process of
//!   `rbuild-sandbox`) whose pid-namespace init has `PR_SET_PDEATHSIG = SIGKILL` towards it.
//!   Killing our direct children kills each init, and the kernel kills every process of a pid
//!   namespace when its init dies (pid_namespaces(7)), so the whole tree goes;
//! - the overlay and bind mounts: they exist only in the sandbox's mount namespace, which the
//!   kernel tears down when its last process exits; nothing is mounted in ours;
//! - staging and temp entries: the store names them `<kind>-<pid>-<random>` under
//!   `<root>/tmp`; once the children are gone we delete ours (a later open or prune would also
//!   delete them, as their pid is dead, but not before someone runs rbuild again);
//! - locks: `flock(2)` locks are released when the process exits.
//!
//! Everything a build already committed (blobs, layer directories, cache entries, tags) is
//! complete by construction (temp + rename), so stopping between any two syscalls is safe; the
//! crash-consistency tests kill builds with SIGKILL to prove it.
//!
//! Both signals exit with 130 (128 + SIGINT), so a CI script sees one "interrupted" status.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

/// The exit status of an interrupted command.
pub(crate) const EXIT_INTERRUPTED: i32 = 130;

/// Starts a task that, on SIGINT or SIGTERM, kills this process's children, removes its temp
/// entries under `<root>/tmp` and exits with [`EXIT_INTERRUPTED`]. Call inside the runtime.
///
/// When the handlers cannot be installed, the signals keep their default action (terminate),
/// which is still safe for the store; a message says so.
pub(crate) fn install(root: &Path) {
    let tmp = root.join("tmp");
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!(
                "warning: cannot handle Ctrl-C ({e}); an interrupt will not clean up temp files"
            );
            return;
        }
    };
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        eprintln!("interrupted ({name}): stopping");
        // Blocking work: this is the last thing the process does.
        stop(&tmp);
        std::process::exit(EXIT_INTERRUPTED);
    });
}

/// Kills our children, waits (bounded) until they are gone, removes our temp entries.
fn stop(tmp: &Path) {
    let me = std::process::id();
    let children = children_of(me);
    for &pid in &children {
        // ESRCH (already gone) is fine.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // A killed child stays a zombie until the sandbox thread reaps it; either way it runs no
    // more code. Wait for that so no RUN command still writes into a staging upperdir.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && children.iter().any(|&p| is_running(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    remove_own_temps(tmp, me);
}

/// Removes the temp entries of process `pid`, best effort (a leftover is removed by the next
/// open or prune, its pid being dead).
fn remove_own_temps(tmp: &Path, pid: u32) {
    for path in own_temps(tmp, pid) {
        let _ = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
    }
}

/// Direct children of `parent`, from `/proc/<pid>/stat` (field 4 is the parent pid).
fn children_of(parent: u32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|(_, ppid)| ppid == parent as i32))
        .collect()
}

/// Whether `pid` exists and is not a zombie.
fn is_running(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// (state, ppid) of a process. The command name (field 2) may contain spaces and parentheses,
/// so parse after the last `)` as proc(5) advises.
fn stat_fields(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Entries of the store's temp area made by process `pid` (`<kind>-<pid>-<random>`).
fn own_temps(tmp: &Path, pid: u32) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(tmp) else {
        return Vec::new();
    };
    let pid = pid.to_string();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.split('-').nth(1) == Some(pid.as_str()))
        })
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_kills_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert!(children_of(std::process::id()).contains(&pid));
        assert!(is_running(pid));
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!is_running(pid));
    }

    #[test]
    fn own_temps_are_only_ours() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        fs::create_dir(dir.path().join(format!("staging-{me}-abc"))).unwrap();
        fs::write(dir.path().join(format!("blob-{me}-x")), b"").unwrap();
        fs::write(dir.path().join("blob-1-x"), b"").unwrap();
        fs::write(dir.path().join(format!("blob-{me}0-x")), b"").unwrap();
        let mut found = own_temps(dir.path(), me);
        found.sort();
        assert_eq!(found.len(), 2, "{found:?}");
        remove_own_temps(dir.path(), me);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2);
    }

    #[test]
    fn stat_parses_names_with_parentheses() {
        let me = i32::try_from(std::process::id()).unwrap();
        let (state, ppid) = stat_fields(me).unwrap();
        // The main thread waits for the test threads: running or sleeping, never a zombie.
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert!(ppid > 0);
        assert!(is_running(me));
    }
}
