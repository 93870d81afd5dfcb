//! A private Docker engine (`dockerd` from Debian's `docker.io`) for differential tests.
//!
//! [`Dockerd::start`] runs a daemon of its own: data root, exec root, pid file and API socket in
//! a temp dir, no bridge and no iptables/ip-masquerade rules (so it creates no network and
//! touches no firewall), and waits until `docker version` answers. [`Dockerd::docker`] gives a
//! `docker` command bound to that socket with the classic builder (`DOCKER_BUILDKIT=0`: Debian
//! ships no buildx, so its BuildKit mode cannot be driven from the CLI). Dropping the fixture
//! stops the daemon (SIGTERM, then SIGKILL), unmounts what it left mounted and removes the dir.
//!
//! A test process killed with SIGKILL cannot run that clean-up, so every daemon lives under
//! one well-known parent ([`STATE_PARENT`] in the temp dir) with the pid and start time of the
//! process that started it; [`Dockerd::start`] first reaps the daemons whose owner is gone.
//!
//! ```no_run
//! use rbuild_testkit::docker::Dockerd;
//!
//! let daemon = Dockerd::start()?;
//! let out = daemon.docker().args(["image", "ls", "-q"]).output()?;
//! assert!(out.status.success());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The engine binary of Debian's `docker.io`.
pub const DOCKERD: &str = "dockerd";

/// Name of the directory (under the system temp dir) holding one sub-directory per daemon.
pub const STATE_PARENT: &str = "rbuild-testkit-dockerd";

/// The `docker` client of Debian's `docker.io`: preferred over another `docker` on `PATH`, so
/// that client and engine are the same release.
const DEBIAN_DOCKER: &str = "/usr/bin/docker";

/// A running private `dockerd`; stopped and cleaned up on drop.
pub struct Dockerd {
    child: Option<Child>,
    dir: PathBuf,
}

impl std::fmt::Debug for Dockerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dockerd")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Whether `dockerd` and a `docker` client are installed.
pub fn available() -> bool {
    which(DOCKERD).is_some() && client().is_some()
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn client() -> Option<PathBuf> {
    let debian = Path::new(DEBIAN_DOCKER);
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    which("docker")
}

impl Dockerd {
    /// Reaps daemons left by killed test runs, starts a new one and waits (up to 60 s) until
    /// it answers.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when `dockerd` or `docker` is not installed (Debian's
    /// `docker.io`); IO errors of the state dir or the process; `TimedOut` when the daemon never
    /// answers (its log is in the message).
    pub fn start() -> io::Result<Self> {
        let Some(dockerd) = which(DOCKERD) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "dockerd is not installed (Debian package docker.io)",
            ));
        };
        if client().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the docker client is not installed (Debian package docker.io)",
            ));
        }
        let parent = std::env::temp_dir().join(STATE_PARENT);
        fs::create_dir_all(&parent)?;
        reap_orphans(&parent);
        // Short names: containerd's sockets live under the exec root and a unix socket path
        // must fit in 108 bytes.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = parent.join(format!(
            "d{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if dir.exists() {
            // Left by an earlier process that had the same pid (its owner file does not
            // match us, so reap_orphans stopped what ran there).
            cleanup_dir(&dir);
        }
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("owner"),
            owner_id(std::process::id()).unwrap_or_default(),
        )?;
        let log = fs::File::create(dir.join("dockerd.log"))?;
        let child = Command::new(dockerd)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
            ])
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut daemon = Self {
            child: Some(child),
            dir,
        };
        daemon.wait_ready(Duration::from_secs(60))?;
        Ok(daemon)
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "dockerd exited with {status}: {}",
                    self.log()
                )));
            }
            if self.socket().exists()
                && self
                    .docker()
                    .args(["version", "--format", "{{.Server.Version}}"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(200));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("dockerd did not answer in time: {}", self.log()),
        ))
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix://SOCKET`, the value for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The daemon's state dir (data root, exec root, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's log so far, for diagnostics.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// A `docker` command talking to this daemon with the classic builder; the caller's own
    /// docker configuration and contexts are ignored (a private config dir).
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(client().unwrap_or_else(|| PathBuf::from("docker")));
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_pid(child.id());
            let _ = child.wait();
        }
        cleanup_dir(&self.dir);
    }
}

/// Stops the daemons under `parent` whose owning process is gone, and removes their dirs.
fn reap_orphans(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let owner_alive = owner
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .and_then(owner_id)
            .is_some_and(|live| !owner.trim().is_empty() && live == owner.trim());
        if owner_alive {
            continue;
        }
        cleanup_dir(&dir);
    }
}

/// `PID STARTTIME` of a live process (start time in clock ticks since boot, field 22 of
/// `/proc/PID/stat`): unlike the pid alone it does not match a later process reusing the pid.
fn owner_id(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces, start after the last `)`.
    let start = stat.rsplit(')').next()?.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Stops whatever daemon (dockerd and the containerd it started) still runs from `dir`,
/// unmounts everything below it and removes it.
fn cleanup_dir(dir: &Path) {
    for pidfile in [
        dir.join("dockerd.pid"),
        dir.join("exec/containerd/containerd.pid"),
    ] {
        if let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            && runs_from(pid, dir)
        {
            stop_pid(pid);
        }
    }
    // Container shims outlive a SIGKILLed engine too; they carry the exec root in their
    // command line.
    if let Ok(procs) = fs::read_dir("/proc") {
        for p in procs.flatten() {
            if let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && pid != std::process::id()
                && runs_from(pid, dir)
            {
                stop_pid(pid);
            }
        }
    }
    unmount_below(dir);
    let _ = fs::remove_dir_all(dir);
}

/// Whether process `pid` mentions `dir` in its command line (so a recycled pid belonging to
/// something else is never signalled).
fn runs_from(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    cmdline.windows(needle.len()).any(|w| w == needle)
}

/// SIGTERM, up to 20 s for a clean shutdown (dockerd unmounts its layers then), then SIGKILL.
fn stop_pid(pid: u32) {
    let alive = || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            // A zombie has exited already; only its parent's wait is missing.
            .is_some_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
    };
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    if alive() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first (overlay layers, the shm and
/// netns mounts a killed engine leaves behind).
fn unmount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = Command::new("umount")
            .args(["-l", p])
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_matches_only_processes_naming_the_dir() {
        let me = std::process::id();
        assert!(!runs_from(
            me,
            Path::new("/nonexistent/rbuild-testkit-dockerd/x")
        ));
        assert!(!runs_from(u32::MAX, Path::new("/")));
    }

    #[test]
    fn starts_answers_and_leaves_nothing_behind() {
        let is_root = fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        });
        if !available() || !is_root {
            let why = "skipping: needs root and dockerd (Debian package docker.io)";
            assert!(
                std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
                "{why}"
            );
            eprintln!("{why}");
            return;
        }
        let daemon = Dockerd::start().unwrap();
        let out = daemon
            .docker()
            .args(["info", "--format", "{{.DockerRootDir}}"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data_root = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(Path::new(&data_root), daemon.dir().join("data"));
        let dir = daemon.dir().to_path_buf();
        drop(daemon);
        assert!(!dir.exists(), "state dir removed");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(dir.to_str().unwrap()),
            "nothing left mounted"
        );
        let left = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|p| p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
            .filter(|pid| runs_from(*pid, &dir))
            .count();
        assert_eq!(left, 0, "no process of the daemon left");
    }

    #[test]
    fn reaping_removes_dirs_of_dead_owners_and_keeps_live_ones() {
        let parent = tempfile::tempdir().unwrap();
        let dead = parent.path().join("d1");
        fs::create_dir_all(dead.join("data/x")).unwrap();
        // pid_max is at most 2^22: this pid cannot exist.
        fs::write(dead.join("owner"), "99999999 1").unwrap();
        // pid 1 is alive, but this is not its start time: a reused pid.
        let reused = parent.path().join("d2");
        fs::create_dir_all(&reused).unwrap();
        fs::write(reused.join("owner"), "1 123456789012").unwrap();
        let live = parent.path().join("d3");
        fs::create_dir_all(&live).unwrap();
        fs::write(live.join("owner"), owner_id(std::process::id()).unwrap()).unwrap();
        reap_orphans(parent.path());
        assert!(!dead.exists());
        assert!(!reused.exists());
        assert!(live.exists());
    }
}
