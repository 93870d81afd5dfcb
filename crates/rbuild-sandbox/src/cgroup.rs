//! A per-run cgroup for [`Limits`](crate::Limits): created under this process's own cgroup, in
//! the hierarchy that owns each controller (cgroup v1, v2, or both on a hybrid host), joined by
//! the sandbox's pid 1 before anything else, removed when the run is over.
//!
//! On a hybrid host (v1 controllers plus a cgroup2 mount, systemd's "hybrid" layout) a
//! controller bound to a v1 hierarchy is not available in v2 (cgroups(7) "Cgroups version 1
//! and version 2 coexistence"), so each controller is looked up on its own: its v1 mount if it
//! has one, else the v2 hierarchy if `cgroup.controllers` lists it. A limit that neither offers
//! is an error naming it, never silently dropped.

use std::fs;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits::Limits;

/// One mounted hierarchy from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// The cgroup path mounted at `mountpoint` (usually `/`).
    root: String,
    mountpoint: PathBuf,
    /// v1 controllers (super options); empty for v2.
    controllers: Vec<String>,
    v2: bool,
}

/// The cgroup hierarchies of this process: mounts and memberships.
#[derive(Debug, Default)]
struct Hierarchies {
    mounts: Vec<Mount>,
    /// `/proc/self/cgroup`: (controllers, path); v2 has empty controllers.
    membership: Vec<(Vec<String>, String)>,
}

/// Parses `/proc/self/mountinfo` (proc(5)) for `cgroup` and `cgroup2` mounts.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mountpoint), Some(fstype)) =
            (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let v2 = *fstype == "cgroup2";
        if *fstype != "cgroup" && !v2 {
            continue;
        }
        let controllers = if v2 {
            Vec::new()
        } else {
            right
                .get(2)
                .map(|opts| {
                    opts.split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        mounts.push(Mount {
            root: (*root).to_owned(),
            mountpoint: PathBuf::from(mountpoint.replace("\\040", " ")),
            controllers,
            v2,
        });
    }
    mounts
}

/// Parses `/proc/self/cgroup`: `ID:CONTROLLERS:PATH` lines.
fn parse_membership(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some((controllers, path.to_owned()))
        })
        .collect()
}

impl Hierarchies {
    fn read() -> Result<Hierarchies> {
        let read = |path: &str| {
            fs::read_to_string(path).map_err(|source| Error::Cgroup {
                op: format!("read {path}"),
                source,
            })
        };
        Ok(Hierarchies {
            mounts: parse_mountinfo(&read("/proc/self/mountinfo")?),
            membership: parse_membership(&read("/proc/self/cgroup")?),
        })
    }

    /// Our cgroup directory in the hierarchy that has `controller`: (dir, is v2).
    fn locate(&self, controller: &str) -> Option<(PathBuf, bool)> {
        let join = |mount: &Mount, path: &str| {
            let rel = path
                .strip_prefix(mount.root.as_str())
                .unwrap_or(path)
                .trim_start_matches('/');
            mount.mountpoint.join(rel)
        };
        if let Some(mount) = self
            .mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
        {
            let (_, path) = self
                .membership
                .iter()
                .find(|(cs, _)| cs.iter().any(|c| c == controller))?;
            return Some((join(mount, path), false));
        }
        let mount = self.mounts.iter().find(|m| m.v2)?;
        let (_, path) = self.membership.iter().find(|(cs, _)| cs.is_empty())?;
        let dir = join(mount, path);
        let available = fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
        available
            .split_whitespace()
            .any(|c| c == controller)
            .then_some((dir, true))
    }
}

/// The cgroup(s) of one run. Dropping it removes them (the run's processes are gone by then:
/// they all died with the pid namespace).
#[derive(Debug)]
pub(crate) struct StepCgroup {
    /// Created directories, one per hierarchy.
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each, open for the child to write `0` (itself) into.
    pub procs: Vec<OwnedFd>,
    /// The memory cgroup and whether it is v2, for the OOM count.
    memory: Option<(PathBuf, bool)>,
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| Error::Cgroup {
        op: format!("write {value:?} to {}", path.display()),
        source,
    })
}

fn unavailable(flag: &str, controller: &str) -> Error {
    Error::Unsupported {
        what: format!(
            "cannot apply {flag}: this host offers no {controller} cgroup controller to this \
             process (neither a cgroup v1 hierarchy nor cgroup v2's cgroup.controllers has it)"
        ),
        remedy: "enable the controller (cgroup_enable= on the kernel command line, or mount \
                 its hierarchy), or build without the limit",
    }
}

impl StepCgroup {
    /// Creates and configures the cgroups `limits` need; `None` when it needs none.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when a controller is missing, [`Error::Cgroup`] when a directory
    /// or a limit cannot be written (e.g. cgroup v2's "no internal processes" rule).
    pub(crate) fn create(limits: &Limits) -> Result<Option<StepCgroup>> {
        if !limits.needs_cgroup() {
            return Ok(None);
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "rbuild-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let hierarchies = Hierarchies::read()?;
        let mut cgroup = StepCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            memory: None,
        };
        let wanted = [
            ("memory", "--memory", limits.memory),
            ("pids", "--pids-limit", limits.pids),
        ];
        for (controller, flag, value) in wanted {
            let Some(value) = value else { continue };
            let (parent, v2) = hierarchies
                .locate(controller)
                .ok_or_else(|| unavailable(flag, controller))?;
            let dir = parent.join(&name);
            if !cgroup.dirs.contains(&dir) {
                if v2 {
                    // cgroup v2 hands a controller to children only through the parent's
                    // subtree_control, which the kernel refuses (EBUSY) while the parent
                    // itself holds processes, unless it is the root.
                    write(
                        &parent.join("cgroup.subtree_control"),
                        &format!("+{controller}"),
                    )?;
                }
                fs::create_dir(&dir).map_err(|source| Error::Cgroup {
                    op: format!("create {}", dir.display()),
                    source,
                })?;
                cgroup.dirs.push(dir.clone());
            } else if v2 {
                write(
                    &parent.join("cgroup.subtree_control"),
                    &format!("+{controller}"),
                )?;
            }
            match (controller, v2) {
                ("memory", true) => {
                    write(&dir.join("memory.max"), &value.to_string())?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), "0")?;
                    }
                }
                ("memory", false) => {
                    write(&dir.join("memory.limit_in_bytes"), &value.to_string())?;
                    // Only present with swap accounting; must not be below the memory limit.
                    if dir.join("memory.memsw.limit_in_bytes").exists() {
                        write(&dir.join("memory.memsw.limit_in_bytes"), &value.to_string())?;
                    }
                }
                _ => write(&dir.join("pids.max"), &value.to_string())?,
            }
            if controller == "memory" {
                cgroup.memory = Some((dir, v2));
            }
        }
        for dir in &cgroup.dirs {
            let path = dir.join("cgroup.procs");
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| Error::Cgroup {
                    op: format!("open {}", path.display()),
                    source,
                })?;
            cgroup.procs.push(OwnedFd::from(file));
        }
        Ok(Some(cgroup))
    }

    /// Whether the kernel's OOM killer killed a process of the run (`oom_kill` in v2's
    /// `memory.events`, v1's `memory.oom_control`).
    pub(crate) fn oom_killed(&self) -> bool {
        let Some((dir, v2)) = &self.memory else {
            return false;
        };
        let file = if *v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(dir.join(file)).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    }
}

impl StepCgroup {
    /// Kills every process in the run's cgroups where the kernel offers `cgroup.kill`
    /// (cgroup v2, Linux 5.14). Best effort: the pid namespace's end kills them anyway.
    pub(crate) fn kill_all(&self) {
        for dir in &self.dirs {
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                let _ = fs::write(kill, "1");
            }
        }
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        self.procs.clear();
        for dir in &self.dirs {
            // A cgroup whose last process just exited can stay "populated" for a moment
            // while the kernel finishes tearing it down: retry EBUSY briefly.
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Err(e) if e.kind() == ErrorKind::ResourceBusy => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_hosts_use_v1_for_v1_controllers() {
        let h = Hierarchies {
            mounts: parse_mountinfo(HYBRID_MOUNTINFO),
            membership: parse_membership("9:name=systemd:/\n8:pids:/\n4:memory:/ci/job-1\n0::/\n"),
        };
        assert_eq!(h.mounts.len(), 5);
        assert_eq!(
            h.locate("memory"),
            Some((PathBuf::from("/sys/fs/cgroup/memory/ci/job-1"), false))
        );
        assert_eq!(
            h.locate("pids"),
            Some((PathBuf::from("/sys/fs/cgroup/pids"), false))
        );
        // Not a v1 controller here, and (in this test) no readable v2 directory either.
        assert_eq!(h.locate("io"), None);
    }

    #[test]
    fn v2_paths_are_relative_to_the_mount_root() {
        let h = Hierarchies {
            mounts: parse_mountinfo(
                "30 23 0:26 /ci /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            ),
            membership: parse_membership("0::/ci/job\n"),
        };
        assert!(h.mounts[0].v2);
        // cgroup.controllers is not readable at this made-up path: the controller is unknown.
        assert_eq!(h.locate("memory"), None);
    }

    #[test]
    fn no_limits_need_no_cgroup() {
        assert!(StepCgroup::create(&Limits::default()).unwrap().is_none());
    }
}
