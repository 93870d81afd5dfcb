//! Everything the sandbox child needs, prepared in the parent before `fork`.
//!
//! After `fork` in a multi-threaded process only async-signal-safe calls are allowed, so every
//! C string, pointer array and buffer the child uses is built here. This module also lays out
//! the per-run scratch directory:
//!
//! ```text
//! <scratch>/l/0 … l/N-1   symlinks to the lower dirs (short lowerdir= paths)
//! <scratch>/u, w          symlinks to the caller's upper and work dirs
//! <scratch>/s             the "skeleton": bottom-most lower layer holding the mountpoints
//! <scratch>/root          where the overlay is mounted
//! <scratch>/hosts …       files bind-mounted over /etc/hosts, /etc/hostname, /etc/resolv.conf
//! ```
//!
//! Why symlinks: overlayfs takes its options as one page (4096 bytes), and 60 layer paths under
//! a store root do not fit. containers-storage solves this with short symlinks under `l/` and
//! relative paths resolved from the mounting process's working directory; so do we.
//!
//! Why a skeleton lower instead of creating mountpoints in the overlay: whatever is created
//! through the overlay lands in the upperdir, i.e. in the RUN step's layer. A directory or
//! empty file in the bottom-most lower shows only where no image layer has that path, needs
//! no cleanup, and never reaches the upperdir unless the process itself changes it.

use std::ffi::{CString, c_char};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use std::sync::OnceLock;

use seccompiler::BpfProgram;

use crate::cgroup::StepCgroup;
use crate::error::{Error, Result};
use crate::security::{self, SeccompRules};
use crate::spec::{Network, RunSpec};
use crate::user;

/// Room for `/etc/passwd` and `/etc/group` of the image (read by the child into these).
const DATABASE_BUFFER: usize = 4 << 20;
/// Supplementary groups the child can set (NGROUPS_MAX is larger, images never are).
const MAX_GROUPS: usize = 1024;

/// One bind mount, ready for the child.
#[derive(Debug)]
pub(crate) struct Bind {
    /// Absolute host path.
    pub source: CString,
    /// Path relative to the rootfs (no leading `/`), resolved with `RESOLVE_IN_ROOT`.
    pub target: CString,
    pub readonly: bool,
    /// Skip silently when the target does not resolve (an image whose `/etc/hosts` is a
    /// dangling symlink); build mounts are never optional.
    pub optional: bool,
}

/// The prepared run: owns the scratch directory (removed on drop) and the child's inputs.
#[derive(Debug)]
pub(crate) struct Plan {
    /// None for an in-place run, which needs none (and must not leave one in the root it
    /// snapshots). Held for its `Drop`, which removes the directory.
    #[cfg_attr(not(test), expect(dead_code, reason = "held for its Drop"))]
    pub scratch: Option<tempfile::TempDir>,
    pub scratch_c: CString,
    pub overlay_options: CString,
    /// No namespaces or mounts: the command runs in this process's own root (a container's
    /// `/`, the in-place executor), only with its user, working directory and limits.
    pub in_place: bool,
    pub hostname: CString,
    pub network_none: bool,
    /// Running as root inside a user namespace: `/sys` is bind-mounted (sysfs can only be
    /// mounted by the owner of the network namespace) unless the run has its own network.
    pub user_namespace: bool,
    /// `setgroups(2)` is denied here (a single-id user namespace): keep the groups we have.
    pub setgroups_denied: bool,
    /// gid 5 (`tty`, owner of `/dev/pts` entries) exists here; not in a single-id namespace.
    pub tty_gid_mapped: bool,
    /// `--userns=auto`: (source, target) pairs relative to the scratch directory to mount
    /// idmapped with `userns_fd` before the overlay, which the command then joins.
    pub idmaps: Vec<(CString, CString)>,
    /// The user namespace of a user-namespaced run (kept open by the process).
    pub userns_fd: Option<std::os::fd::RawFd>,
    /// The host uid and gid the overlay is mounted as in a user-namespaced run (the step's
    /// root), so that overlayfs can write through the idmapped layers.
    pub mounter_ids: Option<(u32, u32)>,
    pub capture: bool,
    pub binds: Vec<Bind>,
    /// `/a`, `/a/b`, … for `mkdir -p` of the working directory after `pivot_root`.
    pub cwd_prefixes: Vec<CString>,
    pub cwd: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Where `argv[0]` is tried, in order (execvp semantics over the spec's `PATH`).
    pub exec_candidates: Vec<CString>,
    /// `exec: "prog": ` for the child's error message.
    pub exec_message_prefix: Vec<u8>,
    /// Whether `argv[0]` was searched in `PATH` (changes the not-found message).
    pub exec_searched: bool,
    pub user: Vec<u8>,
    pub group: Option<Vec<u8>>,
    pub buffers: Buffers,
    pub security: SecurityPlan,
    /// The run's cgroups (with limits), removed when the plan is dropped.
    pub cgroup: Option<StepCgroup>,
}

/// The profile and limits, ready for the child (see `sys::harden`).
#[derive(Debug, Default)]
pub(crate) struct SecurityPlan {
    /// Capabilities kept (bit mask); `None` keeps all.
    pub capabilities: Option<u64>,
    /// The highest capability number of this kernel (`/proc/sys/kernel/cap_last_cap`).
    pub last_cap: u32,
    pub no_new_privileges: bool,
    /// Filters to install, in order (empty: none).
    pub seccomp: Vec<BpfProgram>,
    pub masked_paths: Vec<CString>,
    pub readonly_paths: Vec<CString>,
    /// `(RLIMIT_*, limit)` pairs for `setrlimit`.
    pub rlimits: Vec<(u32, libc::rlimit)>,
}

/// The compiled filters of `rules` for this machine; the default profile's are compiled once.
fn seccomp_programs(rules: &SeccompRules) -> Result<Vec<BpfProgram>> {
    static DEFAULT: OnceLock<Vec<BpfProgram>> = OnceLock::new();
    if *rules == SeccompRules::default() {
        if let Some(programs) = DEFAULT.get() {
            return Ok(programs.clone());
        }
        let programs = security::compile_seccomp(rules, security::host_arch()?)?;
        let _ = DEFAULT.set(programs.clone());
        return Ok(programs);
    }
    security::compile_seccomp(rules, security::host_arch()?)
}

/// Prepares the profile and limits of `spec` for the child.
fn security_plan(spec: &RunSpec) -> Result<SecurityPlan> {
    let profile = &spec.security;
    let paths = |what, list: &[String]| -> Result<Vec<CString>> {
        list.iter()
            .map(|p| {
                if p.starts_with('/') {
                    cstring(what, p.as_bytes())
                } else {
                    Err(Error::InvalidSpec {
                        what,
                        value: p.clone(),
                        reason: "must be absolute",
                    })
                }
            })
            .collect()
    };
    let last_cap = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    let infinity = |v: Option<u64>| v.unwrap_or(libc::RLIM_INFINITY);
    Ok(SecurityPlan {
        capabilities: profile.capability_mask(),
        last_cap,
        no_new_privileges: profile.no_new_privileges,
        seccomp: match &profile.seccomp {
            Some(rules) => seccomp_programs(rules)?,
            None => Vec::new(),
        },
        masked_paths: paths("masked path", &profile.masked_paths)?,
        readonly_paths: paths("read-only path", &profile.readonly_paths)?,
        rlimits: spec
            .limits
            .ulimits
            .iter()
            .map(|u| {
                (
                    u.resource.resource(),
                    libc::rlimit {
                        rlim_cur: infinity(u.soft),
                        rlim_max: infinity(u.hard),
                    },
                )
            })
            .collect(),
    })
}

/// Buffers the child fills after `fork` (it cannot allocate): taken out of the [`Plan`] so
/// that the child gets them as `&mut` while the rest of the plan is shared.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    pub passwd: Vec<u8>,
    pub group: Vec<u8>,
    pub groups: Vec<u32>,
}

/// Pointer arrays for `execve`, borrowed from a [`Plan`].
pub(crate) struct ExecArrays {
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
}

impl Plan {
    /// Builds the NULL-terminated pointer arrays (before `fork`).
    pub(crate) fn exec_arrays(&self) -> ExecArrays {
        let terminated = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        ExecArrays {
            argv: terminated(&self.argv),
            envp: terminated(&self.envp),
        }
    }
}

fn cstring(what: &'static str, value: &[u8]) -> Result<CString> {
    CString::new(value).map_err(|_| Error::InvalidSpec {
        what,
        value: String::from_utf8_lossy(value).into_owned(),
        reason: "contains a NUL byte",
    })
}

fn write_file(path: &Path, content: &[u8]) -> Result<()> {
    fs::write(path, content).map_err(|source| Error::PrepareScratch {
        path: path.to_owned(),
        source,
    })
}

fn canonical(what: &'static str, path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(|source| Error::OverlayDir {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Lexically cleans an absolute in-container path into its components (like Go's
/// `filepath.Clean`, which docker applies to WORKDIR): `.` and empty parts dropped, `..`
/// pops, never above `/`.
pub(crate) fn clean_components(path: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts
}

/// The `hosts` file of the sandbox: localhost and the hostname, like buildah's.
pub(crate) fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// Where execvp would try `prog` given the spec's environment: glibc uses `/bin:/usr/bin`
/// when `PATH` is unset; an empty `PATH` element means the working directory.
pub(crate) fn exec_candidates(prog: &str, env: &[String]) -> (Vec<String>, bool) {
    if prog.contains('/') {
        return (vec![prog.to_owned()], false);
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/bin:/usr/bin");
    let candidates = path
        .split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            format!("{}/{prog}", dir.trim_end_matches('/'))
        })
        .collect();
    (candidates, true)
}

/// Creates the skeleton entry for `rel` (a directory, or an empty file when `file`), with its
/// parent directories, all root-owned 0755 (files 0644) like docker's mountpoints.
fn skeleton_entry(skeleton: &Path, rel: &str, file: bool) -> Result<()> {
    let path = skeleton.join(rel);
    let dir = if file {
        path.parent()
    } else {
        Some(path.as_path())
    };
    if let Some(dir) = dir {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| Error::PrepareScratch {
                path: dir.to_owned(),
                source,
            })?;
    }
    if file && !path.exists() {
        write_file(&path, b"")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(|source| {
            Error::PrepareScratch {
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// What a namespaced run mounts: the overlay options, the bind mounts and, with a user
/// namespace, the idmapped layers.
#[derive(Default)]
struct Rootfs {
    overlay_options: String,
    binds: Vec<Bind>,
    idmaps: Vec<(String, String)>,
    userns_fd: Option<std::os::fd::RawFd>,
}

/// An in-place run has no mount namespace: nothing can be mounted or isolated.
fn check_in_place(spec: &RunSpec) -> Result<()> {
    let refuse = |what: &'static str, reason: &'static str| {
        Err(Error::InvalidSpec {
            what,
            value: String::new(),
            reason,
        })
    };
    if !spec.extra_mounts.is_empty() {
        return refuse(
            "bind mounts",
            "an in-place run cannot mount anything (no mount namespace)",
        );
    }
    if spec.network == Network::None {
        return refuse(
            "network none",
            "an in-place run cannot create a network namespace",
        );
    }
    if spec.user_namespace.is_some() {
        return refuse(
            "user namespace",
            "an in-place run cannot create a user namespace",
        );
    }
    Ok(())
}

/// Prepares the overlay and mounts of a namespaced run in the scratch directory `dir`.
fn prepare_rootfs(spec: &RunSpec, dir: &Path) -> Result<Rootfs> {
    let mkdir = |rel: &str| {
        let path = dir.join(rel);
        fs::create_dir(&path).map_err(|source| Error::PrepareScratch { path, source })
    };
    let link = |target: &Path, rel: &str| {
        let path = dir.join(rel);
        symlink(target, &path).map_err(|source| Error::PrepareScratch { path, source })
    };
    mkdir("l")?;
    mkdir("s")?;
    mkdir("root")?;
    let mut lowers = Vec::with_capacity(spec.lower_dirs.len() + 1);
    for (i, lower) in spec.lower_dirs.iter().enumerate() {
        link(&canonical("lower", lower)?, &format!("l/{i}"))?;
        lowers.push(format!("l/{i}"));
    }
    lowers.push("s".to_owned());
    let upper = canonical("upper", &spec.upper_dir)?;
    let work = canonical("work", &spec.work_dir)?;
    link(&upper, "u")?;
    link(&work, "w")?;
    let (mut upper_opt, mut work_opt) = ("u".to_owned(), "w".to_owned());
    // --userns=auto: every layer is also mounted idmapped under i/ (the child does it: mounts
    // belong to its mount namespace), and the overlay is made of those.
    let mut idmaps = Vec::new();
    let userns_fd = match &spec.user_namespace {
        None => None,
        Some(shift) => {
            if !crate::userns::in_initial_user_namespace() {
                return Err(Error::InvalidSpec {
                    what: "user namespace",
                    value: format!("{shift:?}"),
                    reason: "a user-namespaced run needs root on the host (it is already \
                             rootless here)",
                });
            }
            let (Some(up_parent), Some(up_name), Some(work_name)) =
                (upper.parent(), upper.file_name(), work.file_name())
            else {
                return Err(Error::InvalidSpec {
                    what: "upper directory",
                    value: upper.display().to_string(),
                    reason: "must have a parent directory",
                });
            };
            if work.parent() != Some(up_parent) {
                return Err(Error::InvalidSpec {
                    what: "work directory",
                    value: work.display().to_string(),
                    reason: "must be a sibling of the upper directory for a user-namespaced run",
                });
            }
            link(up_parent, "p")?;
            mkdir("i")?;
            let mut shifted = Vec::with_capacity(lowers.len());
            for (i, lower) in lowers.iter().enumerate() {
                mkdir(&format!("i/{i}"))?;
                idmaps.push((lower.clone(), format!("i/{i}")));
                shifted.push(format!("i/{i}"));
            }
            mkdir("i/p")?;
            idmaps.push(("p".to_owned(), "i/p".to_owned()));
            lowers = shifted;
            upper_opt = format!("i/p/{}", up_name.to_string_lossy());
            work_opt = format!("i/p/{}", work_name.to_string_lossy());
            Some(shift.namespace()?)
        }
    };
    // index=off: the same lower dirs are shared by concurrent mounts with different uppers,
    // which the inodes index would refuse (overlayfs.rst "Sharing and copying layers").
    // Inside a user namespace overlayfs keeps its whiteout and opaque markers in `user.*`
    // xattrs (`trusted.*` needs the host's CAP_SYS_ADMIN); the layer code reads the same.
    // There redirects cannot be followed (`redirect_dir=off` means "follow" to newer kernels,
    // which `userxattr` refuses); none are ever created here either way.
    let redirect = if crate::userns::in_initial_user_namespace() {
        "redirect_dir=off"
    } else {
        "redirect_dir=nofollow,userxattr"
    };
    let overlay_options = format!(
        "lowerdir={},upperdir={upper_opt},workdir={work_opt},{redirect},metacopy=off,index=off",
        lowers.join(":")
    );

    let skeleton = dir.join("s");
    for mountpoint in ["proc", "dev", "sys"] {
        skeleton_entry(&skeleton, mountpoint, false)?;
    }
    let mut binds = Vec::new();
    let mut generated = vec![
        ("hosts", hosts_file(&spec.hostname).into_bytes()),
        ("hostname", format!("{}\n", spec.hostname).into_bytes()),
    ];
    if spec.network == Network::Host {
        // A copy, not the host file itself: the process may edit its resolv.conf (docker
        // allows it) and must not change the host's.
        let resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
        generated.push(("resolv.conf", resolv));
    }
    for (name, content) in generated {
        let source = dir.join(name);
        write_file(&source, &content)?;
        let target = format!("etc/{name}");
        skeleton_entry(&skeleton, &target, true)?;
        binds.push(Bind {
            source: cstring("path", source.as_os_str().as_bytes())?,
            target: cstring("path", target.as_bytes())?,
            readonly: false,
            optional: true,
        });
    }
    for mount in &spec.extra_mounts {
        let source = canonical("bind mount source", &mount.source)?;
        let target = clean_components(&mount.target).join("/");
        if target.is_empty() {
            return Err(Error::InvalidSpec {
                what: "bind mount target",
                value: mount.target.clone(),
                reason: "cannot be the root directory",
            });
        }
        skeleton_entry(&skeleton, &target, !source.is_dir())?;
        binds.push(Bind {
            source: cstring("bind mount source", source.as_os_str().as_bytes())?,
            target: cstring("bind mount target", target.as_bytes())?,
            readonly: mount.readonly,
            optional: false,
        });
    }

    Ok(Rootfs {
        overlay_options,
        binds,
        idmaps,
        userns_fd,
    })
}

/// Whether `setgroups` is denied and gid 5 is mapped in this process's user namespace: read
/// once (the namespace does not change after `userns::enter`, which runs before any plan).
fn namespace_facts() -> (bool, bool) {
    static FACTS: OnceLock<(bool, bool)> = OnceLock::new();
    *FACTS.get_or_init(|| {
        (
            crate::userns::setgroups_denied(),
            crate::userns::gid_mapped(5),
        )
    })
}

/// Validates `spec` and prepares the scratch directory and the child's inputs.
pub(crate) fn prepare(spec: &RunSpec) -> Result<Plan> {
    let Some(prog) = spec.args.first() else {
        return Err(Error::NoCommand);
    };
    if !spec.cwd.starts_with('/') {
        return Err(Error::InvalidSpec {
            what: "working directory",
            value: spec.cwd.clone(),
            reason: "must be absolute",
        });
    }
    let in_place = spec.isolation == crate::Isolation::InPlace;
    let scratch = if in_place {
        check_in_place(spec)?;
        None
    } else {
        Some(
            tempfile::Builder::new()
                .prefix("rbuild-sandbox-")
                .tempdir()
                .map_err(|source| Error::PrepareScratch {
                    path: std::env::temp_dir(),
                    source,
                })?,
        )
    };
    let dir = scratch
        .as_ref()
        .map_or_else(|| PathBuf::from("/"), |s| s.path().to_owned());
    let rootfs = match &scratch {
        None => Rootfs::default(),
        Some(_) => prepare_rootfs(spec, &dir)?,
    };
    let Rootfs {
        overlay_options,
        binds,
        idmaps,
        userns_fd,
    } = rootfs;

    let mut cwd_prefixes = Vec::new();
    let mut cwd = String::new();
    for part in clean_components(&spec.cwd) {
        cwd.push('/');
        cwd.push_str(part);
        cwd_prefixes.push(cstring("working directory", cwd.as_bytes())?);
    }
    if cwd.is_empty() {
        cwd.push('/');
    }

    let (candidates, exec_searched) = exec_candidates(prog, &spec.env);
    let (user, group) = user::split_spec(spec.user.as_deref());
    let security = security_plan(spec)?;
    let cgroup = StepCgroup::create(&spec.limits)?;
    Ok(Plan {
        scratch_c: cstring("path", dir.as_os_str().as_bytes())?,
        scratch,
        overlay_options: cstring("overlay options", overlay_options.as_bytes())?,
        in_place: spec.isolation == crate::Isolation::InPlace,
        hostname: cstring("hostname", spec.hostname.as_bytes())?,
        network_none: spec.network == Network::None,
        user_namespace: !crate::userns::in_initial_user_namespace(),
        setgroups_denied: namespace_facts().0,
        tty_gid_mapped: namespace_facts().1,
        idmaps: idmaps
            .iter()
            .map(|(from, to)| {
                Ok((
                    cstring("path", from.as_bytes())?,
                    cstring("path", to.as_bytes())?,
                ))
            })
            .collect::<Result<_>>()?,
        userns_fd,
        mounter_ids: spec.user_namespace.map(|s| (s.uid, s.gid)),
        capture: spec.stdio == crate::Stdio::Capture,
        binds,
        cwd_prefixes,
        cwd: cstring("working directory", cwd.as_bytes())?,
        argv: spec
            .args
            .iter()
            .map(|a| cstring("argument", a.as_bytes()))
            .collect::<Result<_>>()?,
        envp: spec
            .env
            .iter()
            .map(|e| cstring("environment variable", e.as_bytes()))
            .collect::<Result<_>>()?,
        exec_candidates: candidates
            .iter()
            .map(|c| cstring("argument", c.as_bytes()))
            .collect::<Result<_>>()?,
        exec_message_prefix: format!("exec: \"{prog}\": ").into_bytes(),
        exec_searched,
        user,
        group,
        buffers: Buffers {
            passwd: vec![0; DATABASE_BUFFER],
            group: vec![0; DATABASE_BUFFER],
            groups: vec![0; MAX_GROUPS],
        },
        security,
        cgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_components_is_lexical_and_stays_under_root() {
        assert_eq!(clean_components("/a/./b//c/"), vec!["a", "b", "c"]);
        assert_eq!(clean_components("/a/../../b"), vec!["b"]);
        assert!(clean_components("/").is_empty());
    }

    #[test]
    fn exec_candidates_follow_execvp() {
        let env = vec!["PATH=/usr/bin::/bin/".to_owned()];
        assert_eq!(
            exec_candidates("ls", &env),
            (
                vec!["/usr/bin/ls".into(), "./ls".into(), "/bin/ls".into()],
                true
            )
        );
        assert_eq!(
            exec_candidates("ls", &[]).0,
            vec!["/bin/ls".to_owned(), "/usr/bin/ls".to_owned()]
        );
        assert_eq!(exec_candidates("./x", &env), (vec!["./x".into()], false));
    }

    #[test]
    fn hosts_file_names_the_host() {
        let hosts = hosts_file("box");
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("\tbox\n"));
    }

    #[test]
    fn prepare_lays_out_short_lowerdir_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let mut lowers = Vec::new();
        for i in 0..60 {
            let d = tmp
                .path()
                .join(format!("sha256-{i:064}-a-rather-long-layer-directory-name"));
            fs::create_dir(&d).unwrap();
            lowers.push(d);
        }
        fs::create_dir(tmp.path().join("up")).unwrap();
        fs::create_dir(tmp.path().join("wk")).unwrap();
        let spec = RunSpec::default()
            .lower_dirs(lowers.clone())
            .upper_dir(tmp.path().join("up"))
            .work_dir(tmp.path().join("wk"))
            .args(["true"])
            .cwd("/x/../y/z");
        let plan = prepare(&spec).unwrap();
        let opts = plan.overlay_options.to_str().unwrap();
        assert!(opts.len() < 4096, "{} bytes", opts.len());
        assert!(opts.starts_with("lowerdir=l/0:l/1:"));
        assert!(opts.contains(":l/59:s,upperdir=u,workdir=w,"));
        let scratch = plan.scratch.as_ref().unwrap().path();
        let l59 = fs::read_link(scratch.join("l/59")).unwrap();
        assert_eq!(l59, lowers[59]);
        assert_eq!(plan.cwd.to_str().unwrap(), "/y/z");
        assert_eq!(plan.cwd_prefixes.len(), 2);
        let skeleton = scratch.join("s");
        for entry in ["proc", "dev", "sys", "etc/hosts", "etc/resolv.conf"] {
            assert!(skeleton.join(entry).exists(), "{entry}");
        }
    }

    #[test]
    fn prepare_rejects_empty_argv_and_relative_cwd() {
        assert!(matches!(
            prepare(&RunSpec::default()),
            Err(Error::NoCommand)
        ));
        let spec = RunSpec::default().args(["true"]).cwd("rel");
        assert!(matches!(prepare(&spec), Err(Error::InvalidSpec { .. })));
    }
}
