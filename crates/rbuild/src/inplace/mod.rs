//! The in-place executor: builds inside an unprivileged container (kaniko's model), where
//! neither mounts nor user namespaces are allowed, by making the container's own `/` the
//! stage's root filesystem.
//!
//! Before a RUN step, `/` is brought to the step's layer stack: when it already holds a prefix
//! of the stack (the previous step of the same stage), only the missing top layers are applied;
//! otherwise everything but the preserved paths is cleared and every layer applied, bottom
//! first (`apply`). A stat index of `/` is taken, the command runs directly (the sandbox's
//! [`Isolation::InPlace`](rbuild_sandbox::Isolation::InPlace): the step's user, environment,
//! working directory and profile, no namespaces), and the entries whose stat changed are
//! copied into the step's upper directory in overlayfs form (`snapshot`): new and changed
//! entries, a 0/0 character device for each deletion, an opaque directory for a directory that
//! was replaced. The engine then makes the layer from the upper directory exactly as after a
//! sandboxed step, so keys, layers and the cache are the same as with the other executors.
//!
//! Preserved paths are never cleared, written or snapshotted: every mount point below `/`
//! (`/proc`, `/sys`, `/dev`, `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, mounted
//! secrets and volumes — read from `/proc/self/mountinfo`), `/proc`, `/sys`, `/dev`,
//! `/var/run/secrets`, `/busybox` (the debug image's shell), and what the caller adds (the store, the context, rbuild's own
//! directory, `--ignore-path`).
//!
//! It clears `/`: [`InPlaceExecutor::new`] refuses to be made outside a container
//! ([`in_container`]) unless forced. Steps run one at a time (there is one `/`).

mod apply;
mod snapshot;

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::cancel::CancelToken;
use crate::executor::{Executor, ExecutorError, RunOutcome, RunStep};

/// Paths below the root that the executor never clears, writes or snapshots.
#[derive(Debug, Clone, Default)]
pub(crate) struct Preserved {
    /// Relative to the root, without a leading `/`.
    paths: Vec<PathBuf>,
}

impl Preserved {
    fn new(paths: impl IntoIterator<Item = PathBuf>) -> Preserved {
        let mut paths: Vec<PathBuf> = paths
            .into_iter()
            .filter_map(|p| relative(&p))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        paths.sort();
        paths.dedup();
        Preserved { paths }
    }

    /// `rel` is a preserved path or below one.
    pub(crate) fn covers(&self, rel: &Path) -> bool {
        self.paths.iter().any(|p| rel.starts_with(p))
    }

    /// A preserved path lies strictly below `rel` (so `rel` itself cannot be removed whole).
    pub(crate) fn below(&self, rel: &Path) -> bool {
        self.paths.iter().any(|p| p != rel && p.starts_with(rel))
    }
}

/// `p` as a clean path relative to `/`; `None` when it has `..`.
fn relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What the process can see of a container around it: the markers container engines leave.
#[derive(Debug, Clone, Default)]
pub struct ContainerMarkers {
    /// `/.dockerenv` exists.
    pub dockerenv: bool,
    /// `/run/.containerenv` exists (podman, buildah).
    pub containerenv: bool,
    /// `KUBERNETES_SERVICE_HOST` is set.
    pub kubernetes: bool,
    /// `/proc/1/cgroup` names a container runtime's cgroup (docker, containerd, cri-o, kubepods).
    pub container_cgroup: bool,
}

impl ContainerMarkers {
    /// Reads the markers of this process.
    pub fn read() -> ContainerMarkers {
        let cgroup = std::fs::read_to_string("/proc/1/cgroup").unwrap_or_default();
        ContainerMarkers {
            dockerenv: Path::new("/.dockerenv").exists(),
            containerenv: Path::new("/run/.containerenv").exists(),
            kubernetes: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            container_cgroup: ["docker", "containerd", "kubepods", "crio", "libpod"]
                .iter()
                .any(|m| cgroup.contains(m)),
        }
    }
}

/// Whether the markers say this runs in a container (any one of them).
pub fn in_container(markers: &ContainerMarkers) -> bool {
    markers.dockerenv || markers.containerenv || markers.kubernetes || markers.container_cgroup
}

/// Runs RUN steps in the process's own `/` (see the module documentation).
#[derive(Debug)]
pub struct InPlaceExecutor {
    preserved: Preserved,
    /// The layer directories `/` holds, bottom first, by (device, inode) — a RUN step's upper
    /// directory is renamed into the store, keeping its inode — or `None` when unknown.
    state: Mutex<Option<Vec<(u64, u64)>>>,
    /// Why it must not run here (not in a container, not forced).
    refusal: Option<String>,
}

impl InPlaceExecutor {
    /// An executor that keeps `preserve` (absolute paths: the store, the context, rbuild's own
    /// directory, `--ignore-path`s) besides the standard preserved paths and every mount point.
    /// When `markers` show no container and `force` is false, [`Executor::check`] refuses
    /// (before the first step would clear anything): this executor deletes everything else
    /// under `/`.
    pub fn new(preserve: Vec<PathBuf>, markers: &ContainerMarkers, force: bool) -> InPlaceExecutor {
        let refusal = (!force && !in_container(markers)).then(|| {
            "the in-place executor replaces this machine's own root filesystem with the \
             image's, so it only runs inside a container (none of /.dockerenv, \
             /run/.containerenv, KUBERNETES_SERVICE_HOST or a container cgroup was found); run \
             it in a container, or pass --force if this machine is disposable"
                .to_owned()
        });
        let mut paths = vec![
            PathBuf::from("/proc"),
            PathBuf::from("/sys"),
            PathBuf::from("/dev"),
            PathBuf::from("/etc/hosts"),
            PathBuf::from("/etc/resolv.conf"),
            PathBuf::from("/etc/hostname"),
            PathBuf::from("/var/run/secrets"),
            PathBuf::from("/run/secrets"),
            // The debug images' shell (kaniko's and rbuild's), which the CI job runs in.
            PathBuf::from("/busybox"),
        ];
        paths.extend(mount_points());
        paths.extend(preserve);
        InPlaceExecutor {
            preserved: Preserved::new(paths),
            state: Mutex::new(None),
            refusal,
        }
    }

    /// Brings `/` to `lower_dirs` (top first, as in [`RunStep`]).
    fn prepare_root(
        &self,
        state: &mut Option<Vec<(u64, u64)>>,
        lower_dirs: &[PathBuf],
    ) -> io::Result<()> {
        let wanted: Vec<(PathBuf, (u64, u64))> = lower_dirs
            .iter()
            .rev()
            .map(|d| {
                let m = std::fs::metadata(d)?;
                Ok((d.clone(), (m.dev(), m.ino())))
            })
            .collect::<io::Result<_>>()?;
        let ids: Vec<(u64, u64)> = wanted.iter().map(|(_, id)| *id).collect();
        let root = Path::new("/");
        let start = match state.as_ref() {
            Some(have) if ids.starts_with(have) => have.len(),
            _ => {
                *state = None;
                apply::clear(root, &self.preserved)?;
                0
            }
        };
        for (dir, _) in &wanted[start..] {
            *state = None;
            apply::apply(dir, root, &self.preserved)?;
        }
        *state = Some(ids);
        Ok(())
    }
}

/// Every mount point of this process's mount namespace (`/proc/self/mountinfo`, field 5, with
/// the kernel's octal escapes), except `/`.
fn mount_points() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p != Path::new("/"))
        .collect()
}

fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, b| acc.wrapping_mul(8) + (b - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

impl Executor for InPlaceExecutor {
    fn check(&self) -> Result<(), ExecutorError> {
        match &self.refusal {
            Some(why) => Err(ExecutorError::Unavailable(why.clone().into())),
            None => Ok(()),
        }
    }

    fn run(
        &self,
        step: &RunStep,
        output: &mut dyn FnMut(&[u8]),
        cancel: &CancelToken,
    ) -> Result<RunOutcome, ExecutorError> {
        if cancel.is_cancelled() {
            return Err(ExecutorError::Cancelled);
        }
        self.check()?;
        let failed = |what: &str, e: io::Error| {
            ExecutorError::Failed(format!("in-place executor: {what}: {e}").into())
        };
        if !step.mounts.is_empty() {
            return Err(ExecutorError::Failed(
                "RUN --mount and heredoc scripts need a mount namespace, which this container \
                 cannot create (the in-place executor runs steps directly in its own root)"
                    .into(),
            ));
        }
        if step.user_namespace.is_some() {
            return Err(ExecutorError::Failed(
                "--userns=auto needs user namespaces, which this container cannot create".into(),
            ));
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.prepare_root(&mut state, &step.lower_dirs)
            .map_err(|e| failed("apply the stage's layers to /", e))?;
        let before = snapshot::Index::take(Path::new("/"), &self.preserved)
            .map_err(|e| failed("index / before the step", e))?;
        // Until the snapshot is done `/` holds more than the stack says.
        let applied = state.take();
        let spec = crate::executor::sandbox_spec(step, rbuild_sandbox::Isolation::InPlace);
        let outcome = crate::executor::run_sandboxed(&spec, output, cancel)?;
        if outcome.status != 0 {
            let mut tail = outcome.output_tail;
            let text = String::from_utf8_lossy(&tail);
            if text.contains("Operation not permitted") || text.contains("Permission denied") {
                tail.extend_from_slice(
                    b"\nrbuild: this step ran in place, in a container without privileges \
                      (no CAP_SYS_ADMIN, the runtime's seccomp profile): it cannot mount, make \
                      namespaces or devices, or change kernel settings; build where the sandbox \
                      can run (`rbuild info`) for such steps\n",
                );
            }
            return Ok(RunOutcome {
                status: outcome.status,
                output_tail: tail,
                oom_killed: outcome.oom_killed,
            });
        }
        snapshot::diff(Path::new("/"), &before, &step.upper_dir, &self.preserved)
            .map_err(|e| failed("snapshot the step's changes", e))?;
        // `/` is now the stack plus the upper directory, which the engine renames into the
        // store (same inode) when it is not empty.
        if let (Some(mut ids), Ok(m)) = (applied, std::fs::metadata(&step.upper_dir)) {
            ids.push((m.dev(), m.ino()));
            *state = Some(ids);
        }
        Ok(RunOutcome {
            status: 0,
            output_tail: outcome.output_tail,
            oom_killed: outcome.oom_killed,
        })
    }
}

/// The in-place executor's two walks of an unchanged root, timed: the stat index taken before
/// a step, and the snapshot after it (walk, compare, write nothing). For the benchmark
/// (`benches/inplace_snapshot.rs`); not a stable API.
#[doc(hidden)]
pub fn time_unchanged_snapshot(
    root: &Path,
    upper: &Path,
) -> io::Result<(std::time::Duration, std::time::Duration)> {
    let preserved = Preserved::default();
    let start = std::time::Instant::now();
    let before = snapshot::Index::take(root, &preserved)?;
    let index = start.elapsed();
    let start = std::time::Instant::now();
    snapshot::diff(root, &before, upper, &preserved)?;
    Ok((index, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserved_paths_cover_their_subtrees_and_protect_their_parents() {
        let p = Preserved::new([PathBuf::from("/var/run/secrets"), PathBuf::from("/proc")]);
        assert!(p.covers(Path::new("proc")));
        assert!(p.covers(Path::new("proc/1/root")));
        assert!(p.covers(Path::new("var/run/secrets/token")));
        assert!(!p.covers(Path::new("var/run")));
        assert!(p.below(Path::new("var")));
        assert!(p.below(Path::new("var/run")));
        assert!(!p.below(Path::new("var/run/secrets")));
        assert!(!p.below(Path::new("etc")));
    }

    #[test]
    fn outside_a_container_the_executor_refuses_unless_forced() {
        let none = ContainerMarkers::default();
        let err = InPlaceExecutor::new(Vec::new(), &none, false)
            .check()
            .unwrap_err();
        let why = std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(why.contains("only runs inside a container"), "{why}");
        assert!(
            InPlaceExecutor::new(Vec::new(), &none, true)
                .check()
                .is_ok()
        );
        for markers in [
            ContainerMarkers {
                dockerenv: true,
                ..ContainerMarkers::default()
            },
            ContainerMarkers {
                kubernetes: true,
                ..ContainerMarkers::default()
            },
            ContainerMarkers {
                containerenv: true,
                ..ContainerMarkers::default()
            },
            ContainerMarkers {
                container_cgroup: true,
                ..ContainerMarkers::default()
            },
        ] {
            assert!(
                InPlaceExecutor::new(Vec::new(), &markers, false)
                    .check()
                    .is_ok()
            );
        }
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
    }
}
