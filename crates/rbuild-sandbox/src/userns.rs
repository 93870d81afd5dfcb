//! Which privilege rbuild builds with, and entering a user namespace as an ordinary user.
//!
//! A sandbox needs root for its mounts and namespaces. An ordinary user gets it the way
//! podman and buildah do: rbuild forks into a new *user namespace* in which the user is root
//! (uid 0 there is the user's own uid), and the user's subordinate ranges from `/etc/subuid`
//! and `/etc/subgid` (mapped by the setuid helpers `newuidmap`/`newgidmap` of the `uidmap`
//! package) give ids 1…N, so an image's `RUN chown 1000` works and the layer records 1000.
//! Everything after that — the store, layer unpacking, the sandbox — runs as root inside that
//! namespace; files land on the host owned by the user or by their subordinate ids.
//!
//! [`detect`] tells which [`Mode`] applies; [`enter`] is what a program calls first thing in
//! `main` (before any thread starts) to switch to it:
//!
//! ```no_run
//! use rbuild_sandbox::userns::{self, Entered};
//!
//! // First thing in `main`, before any thread is started:
//! match userns::enter() {
//!     Ok(Entered::Exited(code)) => std::process::exit(code),
//!     Ok(_) => {} // root: in the host's namespace, or in a user namespace from here on
//!     Err(e) => {
//!         eprintln!("error: {e}");
//!         std::process::exit(1);
//!     }
//! }
//! // … build
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::sys;

/// One line of a uid or gid map: `count` ids from `inside` in the namespace are `outside`…
/// on the host (user_namespaces(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (in the parent namespace).
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}→{}", self.inside, self.outside)?;
        if self.count > 1 {
            write!(f, " ({} ids)", self.count)?;
        }
        Ok(())
    }
}

/// A subordinate id range of `/etc/subuid` or `/etc/subgid` (`NAME:START:COUNT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubordinateRange {
    /// First host id of the range.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// How builds get the privileges a sandbox needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Root in the host's user namespace: every id, overlayfs with `trusted.*` xattrs.
    Rootful,
    /// Root inside a user namespace that already exists: a Kubernetes pod with
    /// `hostUsers: false`, `unshare --user --map-root-user`, or rbuild's own rootless
    /// namespace. Only the ids of the maps exist; overlayfs uses `user.*` xattrs.
    NamespacedRoot {
        /// `/proc/self/uid_map`.
        uids: Vec<IdRange>,
        /// `/proc/self/gid_map`.
        gids: Vec<IdRange>,
    },
    /// An ordinary user with subordinate ranges and `newuidmap`/`newgidmap`: rbuild enters a
    /// user namespace mapping 0 to the user and 1… to the ranges.
    Rootless {
        /// The user's name (how `/etc/subuid` names them).
        user: String,
        /// The user's uid and gid.
        uid: u32,
        /// The user's primary gid.
        gid: u32,
        /// Their `/etc/subuid` ranges.
        subuids: Vec<SubordinateRange>,
        /// Their `/etc/subgid` ranges.
        subgids: Vec<SubordinateRange>,
    },
    /// An ordinary user without usable ranges: rbuild maps only their own id (to 0), so steps
    /// that give files to other owners fail.
    RootlessSingleId {
        /// The user's uid.
        uid: u32,
        /// The user's primary gid.
        gid: u32,
        /// Why the ranges cannot be used, and how to add them.
        reason: String,
    },
    /// No way to get root: user namespaces are disabled or refused.
    Unavailable {
        /// What is missing.
        reason: String,
        /// How to fix it.
        remedy: &'static str,
    },
}

impl Mode {
    /// A short name: `rootful`, `user-namespaced root`, `rootless`, `rootless (single id)`,
    /// `unavailable`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Rootful => "rootful",
            Mode::NamespacedRoot { .. } => "user-namespaced root",
            Mode::Rootless { .. } => "rootless",
            Mode::RootlessSingleId { .. } => "rootless (single id)",
            Mode::Unavailable { .. } => "unavailable",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges = |f: &mut fmt::Formatter<'_>, list: &[IdRange]| -> fmt::Result {
            let text: Vec<String> = list.iter().map(ToString::to_string).collect();
            write!(f, "{}", text.join(", "))
        };
        match self {
            Mode::Rootful => write!(f, "rootful: root in the host's user namespace"),
            Mode::NamespacedRoot { uids, gids } => {
                write!(f, "user-namespaced root: uid map ")?;
                ranges(f, uids)?;
                write!(f, "; gid map ")?;
                ranges(f, gids)
            }
            Mode::Rootless {
                user,
                uid,
                gid,
                subuids,
                subgids,
            } => {
                let total =
                    |r: &[SubordinateRange]| r.iter().map(|r| u64::from(r.count)).sum::<u64>();
                write!(
                    f,
                    "rootless: user {user} (uid {uid}, gid {gid}) as root in a user namespace, \
                     with {} subordinate uids and {} gids (newuidmap/newgidmap)",
                    total(subuids),
                    total(subgids)
                )
            }
            Mode::RootlessSingleId { uid, gid, reason } => write!(
                f,
                "rootless (single id): uid {uid} and gid {gid} map to root, no other ids: \
                 {reason}"
            ),
            Mode::Unavailable { reason, remedy } => {
                write!(f, "unavailable: {reason}; {remedy}")
            }
        }
    }
}

/// Whether this process is in the host's (initial) user namespace, where `uid_map` is the
/// identity over all ids. Cached: a process does not change namespaces under its code's feet
/// except through [`enter`], which runs before anything asks.
pub fn in_initial_user_namespace() -> bool {
    static INITIAL: OnceLock<bool> = OnceLock::new();
    // No /proc: assume the classic case.
    *INITIAL.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map").map_or(true, |map| is_identity(&map))
    })
}

/// Parses `/proc/PID/uid_map` text.
fn parse_map(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(str::parse::<u32>);
            Some(IdRange {
                inside: f.next()?.ok()?,
                outside: f.next()?.ok()?,
                count: f.next()?.ok()?,
            })
        })
        .collect()
}

/// The ranges of `user` (name or uid) in a `/etc/subuid`-format text.
pub fn parse_subordinate(text: &str, user: &str, uid: u32) -> Vec<SubordinateRange> {
    let uid = uid.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut f = line.trim().splitn(3, ':');
            let owner = f.next()?;
            if owner != user && owner != uid {
                return None;
            }
            let start = f.next()?.parse().ok()?;
            let count: u32 = f.next()?.parse().ok()?;
            (count > 0).then_some(SubordinateRange { start, count })
        })
        .collect()
}

/// The mode this process would build with, and why.
pub fn detect() -> Mode {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let euid = nix::unistd::geteuid().as_raw();
    // Read, not the cached `in_initial_user_namespace`: `enter` asks before it changes
    // namespaces, and a forked child must not inherit the answer.
    let uid_map = read("/proc/self/uid_map");
    let mut facts = Facts {
        euid,
        egid: nix::unistd::getegid().as_raw(),
        initial_namespace: uid_map.as_deref().is_none_or(is_identity),
        uid_map: uid_map.unwrap_or_default(),
        gid_map: read("/proc/self/gid_map").unwrap_or_default(),
        max_user_namespaces: None,
        unprivileged_userns_clone: None,
        user: String::new(),
        subuid: String::new(),
        subgid: String::new(),
        newuidmap: false,
        newgidmap: false,
    };
    // Root (every build command's start) needs none of what an ordinary user's mode depends on.
    if euid != 0 {
        facts.max_user_namespaces = read("/proc/sys/user/max_user_namespaces");
        facts.unprivileged_userns_clone = read("/proc/sys/kernel/unprivileged_userns_clone");
        facts.user = nix::unistd::User::from_uid(euid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| euid.to_string());
        facts.subuid = read("/etc/subuid").unwrap_or_default();
        facts.subgid = read("/etc/subgid").unwrap_or_default();
        facts.newuidmap = find_program("newuidmap").is_some();
        facts.newgidmap = find_program("newgidmap").is_some();
    }
    classify(&facts)
}

/// Whether a `uid_map` is the host's: the identity over every id.
fn is_identity(map: &str) -> bool {
    parse_map(map)
        == [IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }]
}

/// What [`detect`] reads, so that [`classify`] is a pure function of it.
struct Facts {
    euid: u32,
    egid: u32,
    initial_namespace: bool,
    uid_map: String,
    gid_map: String,
    max_user_namespaces: Option<String>,
    unprivileged_userns_clone: Option<String>,
    user: String,
    subuid: String,
    subgid: String,
    newuidmap: bool,
    newgidmap: bool,
}

fn classify(f: &Facts) -> Mode {
    if f.euid == 0 {
        if f.initial_namespace {
            return Mode::Rootful;
        }
        return Mode::NamespacedRoot {
            uids: parse_map(&f.uid_map),
            gids: parse_map(&f.gid_map),
        };
    }
    let sysctl = |v: &Option<String>| v.as_deref().map(str::trim) == Some("0");
    let disabled = if sysctl(&f.max_user_namespaces) {
        Some("user namespaces are disabled (user.max_user_namespaces is 0)")
    } else if sysctl(&f.unprivileged_userns_clone) {
        Some("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone is 0)")
    } else {
        None
    };
    if let Some(reason) = disabled {
        return Mode::Unavailable {
            reason: reason.to_owned(),
            remedy: "enable user namespaces (`sysctl -w user.max_user_namespaces=15000`, \
                     `kernel.unprivileged_userns_clone=1` on kernels that have it, and \
                     `kernel.apparmor_restrict_unprivileged_userns=0` where AppArmor restricts \
                     them), or run rbuild as root",
        };
    }
    let user = &f.user;
    let subuids = parse_subordinate(&f.subuid, user, f.euid);
    let subgids = parse_subordinate(&f.subgid, user, f.euid);
    let single = |reason: String| Mode::RootlessSingleId {
        uid: f.euid,
        gid: f.egid,
        reason,
    };
    if subuids.is_empty() || subgids.is_empty() {
        let which = match (subuids.is_empty(), subgids.is_empty()) {
            (true, true) => "/etc/subuid and /etc/subgid have",
            (true, false) => "/etc/subuid has",
            _ => "/etc/subgid has",
        };
        return single(format!(
            "{which} no range for {user}; add `{user}:100000:65536` to /etc/subuid and \
             /etc/subgid (as root) for the full range"
        ));
    }
    for (helper, found) in [("newuidmap", f.newuidmap), ("newgidmap", f.newgidmap)] {
        if !found {
            return single(format!(
                "{helper} is not installed; install the `uidmap` package (it also needs \
                 ranges for {user} in /etc/subuid and /etc/subgid)"
            ));
        }
    }
    Mode::Rootless {
        user: user.clone(),
        uid: f.euid,
        gid: f.egid,
        subuids,
        subgids,
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/bin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What [`enter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entered {
    /// Nothing: this process is root already ([`Mode::Rootful`] or
    /// [`Mode::NamespacedRoot`]).
    AlreadyRoot,
    /// This process is now root in a new user namespace with the user's ranges.
    Rootless,
    /// This process is now root in a new user namespace mapping only the user's own ids:
    /// the warning to show (steps that chown to other ids will fail).
    SingleId {
        /// What to tell the user.
        warning: String,
    },
    /// This is the original process and the namespaced one has finished: exit with this code.
    Exited(i32),
}

/// Makes this process root, in a new user namespace when it is not: call it first thing in
/// `main`, before any thread is started (a tokio runtime included). In the original process
/// it returns [`Entered::Exited`] once the namespaced child is done; the child returns
/// [`Entered::Rootless`] or [`Entered::SingleId`] and carries on.
///
/// # Errors
///
/// [`Error::Unsupported`] when user namespaces are unavailable or `newuidmap`/`newgidmap`
/// refuse the ranges (their message is included), [`Error::Spawn`] when the fork fails.
pub fn enter() -> Result<Entered> {
    let mode = detect();
    let single_warning = |reason: &str| {
        format!(
            "building rootless with a single id ({reason}): steps that give files to other \
             users or groups (chown, package installs that create users) will fail"
        )
    };
    let side = match &mode {
        Mode::Rootful | Mode::NamespacedRoot { .. } => return Ok(Entered::AlreadyRoot),
        Mode::Unavailable { reason, remedy } => {
            return Err(Error::Unsupported {
                what: reason.clone(),
                remedy,
            });
        }
        Mode::Rootless {
            uid,
            gid,
            subuids,
            subgids,
            ..
        } => sys::userns::fork_into_user_namespace(|pid| {
            run_map_helper("newuidmap", pid, *uid, subuids)?;
            run_map_helper("newgidmap", pid, *gid, subgids)
        }),
        Mode::RootlessSingleId { uid, gid, .. } => {
            sys::userns::fork_into_user_namespace(|pid| write_single_id(pid, *uid, *gid))
        }
    };
    let side = side.map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::Other => Error::Unsupported {
            what: format!("cannot set up a user namespace: {e}"),
            remedy: "check /etc/subuid and /etc/subgid, that newuidmap and newgidmap are \
                     setuid root (the `uidmap` package), and that user namespaces are allowed",
        },
        _ => Error::Spawn { source: e },
    })?;
    Ok(match (side, mode) {
        (sys::userns::Side::Parent(code), _) => Entered::Exited(code),
        (sys::userns::Side::Child, Mode::RootlessSingleId { reason, .. }) => Entered::SingleId {
            warning: single_warning(&reason),
        },
        (sys::userns::Side::Child, _) => Entered::Rootless,
    })
}

/// `newuidmap PID 0 ID 1 1 START COUNT …` (and newgidmap): the user's id becomes 0, the
/// ranges follow from 1.
fn run_map_helper(
    helper: &str,
    pid: libc::pid_t,
    own: u32,
    ranges: &[SubordinateRange],
) -> io::Result<()> {
    let program = find_program(helper).unwrap_or_else(|| PathBuf::from(helper));
    let mut args = vec![pid.to_string(), "0".into(), own.to_string(), "1".into()];
    let mut next = 1u32;
    for r in ranges {
        args.extend([next.to_string(), r.start.to_string(), r.count.to_string()]);
        next = next.saturating_add(r.count);
    }
    let out = Command::new(&program).args(&args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// The maps an ordinary user may write without helpers: their own uid and gid to 0
/// (`setgroups` denied first, as the kernel requires for an unprivileged gid map).
fn write_single_id(pid: libc::pid_t, uid: u32, gid: u32) -> io::Result<()> {
    let proc = Path::new("/proc").join(pid.to_string());
    let write = |name: &str, text: String| {
        std::fs::write(proc.join(name), text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("writing {}: {e}", proc.join(name).display()),
            )
        })
    };
    write("setgroups", "deny".to_owned())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}

/// Whether `setgroups(2)` is denied in this process's user namespace (a single-id namespace
/// made by an ordinary user): the sandbox then keeps the groups it has.
pub(crate) fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Whether `id` of the image exists in this process's uid map (all do when rootful).
pub fn uid_mapped(id: u32) -> bool {
    mapped("/proc/self/uid_map", id)
}

/// Whether `id` exists in this process's gid map.
pub fn gid_mapped(id: u32) -> bool {
    mapped("/proc/self/gid_map", id)
}

fn mapped(path: &str, id: u32) -> bool {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_map(&text)
            .iter()
            .any(|r| id >= r.inside && u64::from(id) < u64::from(r.inside) + u64::from(r.count)),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_and_the_initial_namespace_is_the_identity() {
        let initial = parse_map("         0          0 4294967295\n");
        assert_eq!(
            initial,
            [IdRange {
                inside: 0,
                outside: 0,
                count: u32::MAX
            }]
        );
        let rootless = parse_map("0 1000 1\n1 100000 65536\n");
        assert_eq!(rootless.len(), 2);
        assert_eq!(
            rootless[1],
            IdRange {
                inside: 1,
                outside: 100000,
                count: 65536
            }
        );
    }

    fn facts() -> Facts {
        Facts {
            euid: 1000,
            egid: 1000,
            initial_namespace: true,
            uid_map: "0 0 4294967295\n".into(),
            gid_map: "0 0 4294967295\n".into(),
            max_user_namespaces: Some("15000\n".into()),
            unprivileged_userns_clone: None,
            user: "alice".into(),
            subuid: "alice:100000:65536\n".into(),
            subgid: "alice:100000:65536\n".into(),
            newuidmap: true,
            newgidmap: true,
        }
    }

    #[test]
    fn each_mode_is_classified_with_what_is_missing() {
        assert!(matches!(classify(&facts()), Mode::Rootless { ref user, .. } if user == "alice"));
        let root = Facts {
            euid: 0,
            egid: 0,
            ..facts()
        };
        assert_eq!(classify(&root), Mode::Rootful);
        let namespaced = Facts {
            euid: 0,
            egid: 0,
            initial_namespace: false,
            uid_map: "0 1000 1\n".into(),
            ..facts()
        };
        assert!(
            matches!(classify(&namespaced), Mode::NamespacedRoot { ref uids, .. }
            if uids == &[IdRange { inside: 0, outside: 1000, count: 1 }])
        );

        let why = |f: Facts| match classify(&f) {
            Mode::RootlessSingleId { reason, .. } => reason,
            Mode::Unavailable { reason, remedy } => format!("unavailable: {reason}; {remedy}"),
            other => panic!("{other:?}"),
        };
        let no_ranges = why(Facts {
            subuid: String::new(),
            ..facts()
        });
        assert!(
            no_ranges.contains("/etc/subuid has no range for alice"),
            "{no_ranges}"
        );
        assert!(
            no_ranges.contains("add `alice:100000:65536`"),
            "{no_ranges}"
        );
        let no_helper = why(Facts {
            newgidmap: false,
            ..facts()
        });
        assert!(
            no_helper.contains("newgidmap is not installed"),
            "{no_helper}"
        );
        assert!(no_helper.contains("`uidmap` package"), "{no_helper}");
        let disabled = why(Facts {
            max_user_namespaces: Some("0\n".into()),
            ..facts()
        });
        assert!(
            disabled.contains("user.max_user_namespaces is 0"),
            "{disabled}"
        );
        assert!(
            disabled.contains("sysctl -w user.max_user_namespaces"),
            "{disabled}"
        );
        let debian_knob = why(Facts {
            unprivileged_userns_clone: Some("0".into()),
            ..facts()
        });
        assert!(
            debian_knob.contains("unprivileged_userns_clone is 0"),
            "{debian_knob}"
        );
    }

    #[test]
    fn subordinate_ranges_match_by_name_or_uid() {
        let text =
            "# comment\nalice:100000:65536\nbob:165536:65536\n1000:300000:10\nalice:400000:0\n";
        assert_eq!(
            parse_subordinate(text, "alice", 1001),
            [SubordinateRange {
                start: 100000,
                count: 65536
            }]
        );
        assert_eq!(
            parse_subordinate(text, "carol", 1000),
            [SubordinateRange {
                start: 300000,
                count: 10
            }]
        );
        assert!(parse_subordinate(text, "dave", 7).is_empty());
    }
}

/// The ids of a user-namespaced RUN (`--userns=auto`): the command runs as root of a new user
/// namespace in which ids `0..count` are host uids `uid..uid+count` and gids `gid..gid+count`,
/// so a step's root is not the host's root. The layers are shown to it through idmapped
/// mounts, so the files it writes land in the layer with the image's ids, as in a rootful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdShift {
    /// First host uid (container uid 0).
    pub uid: u32,
    /// First host gid (container gid 0).
    pub gid: u32,
    /// How many ids (65,536 covers every id images normally use).
    pub count: u32,
}

impl IdShift {
    /// The subordinate ranges of `root` in `/etc/subuid` and `/etc/subgid` (podman's
    /// `--userns=auto` takes its ranges from the same files): the first range of each, up to
    /// 65,536 ids.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when root has no range in one of the files.
    pub fn for_root() -> Result<IdShift> {
        let first = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| parse_subordinate(&text, "root", 0).into_iter().next())
        };
        match (first("/etc/subuid"), first("/etc/subgid")) {
            (Some(u), Some(g)) => Ok(IdShift {
                uid: u.start,
                gid: g.start,
                count: u.count.min(g.count).min(65536),
            }),
            _ => Err(Error::Unsupported {
                what: "--userns=auto needs subordinate ids for root, and /etc/subuid or \
                       /etc/subgid has no `root:` range"
                    .to_owned(),
                remedy: "add a range no user owns, e.g. `root:1000000:65536`, to both /etc/subuid \
                         and /etc/subgid",
            }),
        }
    }

    /// A user namespace with this shift, made once per process and kept open.
    pub(crate) fn namespace(&self) -> Result<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd as _;
        static MADE: std::sync::Mutex<Vec<(IdShift, std::os::fd::OwnedFd)>> =
            std::sync::Mutex::new(Vec::new());
        let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, fd)) = made.iter().find(|(s, _)| s == self) {
            return Ok(fd.as_raw_fd());
        }
        let fd = sys::userns::namespace_fd(
            &format!("0 {} {}\n", self.uid, self.count),
            &format!("0 {} {}\n", self.gid, self.count),
        )
        .map_err(|e| Error::Unsupported {
            what: format!("cannot create the user namespace for --userns=auto: {e}"),
            remedy: "run as root with user namespaces enabled (user.max_user_namespaces)",
        })?;
        let raw = fd.as_raw_fd();
        made.push((*self, fd));
        Ok(raw)
    }
}
