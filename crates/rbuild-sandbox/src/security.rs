//! The security profile of a sandbox, as data: capabilities, the seccomp filter, masked and
//! read-only paths. [`Profile::default`] is what `docker run` gives a container (moby's
//! `oci/caps/defaults.go`, `profiles/seccomp/default.json` and runc's default spec); every
//! caller (RUN steps, `rbuild run`, pipeline jobs in their image) gets it unless it asks for
//! [`Profile::insecure`].
//!
//! # Why seccompiler
//!
//! The filter is compiled to classic BPF in the parent with [`seccompiler`] (rust-vmm, used by
//! Firecracker): pure Rust, no C library to install or link, syscall tables for x86_64 and
//! aarch64 generated from the kernel, and it produces a plain `Vec<sock_filter>` that the
//! child installs with one `seccomp(2)` call after `fork` (libseccomp generates the program
//! inside `seccomp_load`, which allocates, which a child of a multi-threaded process must
//! not do). Its one gap, the x32 ABI on x86_64, is closed by three hand-written instructions
//! in front of the program (see [`compile_seccomp`]).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, TargetArch};
use serde_json::json;

use crate::error::{Error, Result};

/// A Linux capability: its number (`linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(pub u32);

/// Every capability the kernel headers of 6.x name, by number.
const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

impl Capability {
    /// The capability named `CAP_NAME` or `NAME` (case-insensitive), as docker's `--cap-add`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Capability> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        CAPABILITY_NAMES
            .iter()
            .position(|n| *n == bare)
            .map(|i| Capability(i as u32))
    }

    /// `CAP_NAME`, or `CAP_<number>` for a capability newer than this table.
    #[must_use]
    pub fn name(self) -> String {
        match CAPABILITY_NAMES.get(self.0 as usize) {
            Some(n) => format!("CAP_{n}"),
            None => format!("CAP_{}", self.0),
        }
    }
}

/// Docker's default capabilities (moby `oci/caps/defaults.go`, the same list as containerd's
/// `oci.WithDefaultCapabilities`): everything else, notably `SYS_ADMIN`, `NET_ADMIN`,
/// `DAC_READ_SEARCH` (the "shocker" `open_by_handle_at` escape) and `SYS_MODULE`, is dropped.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// runc's default masked paths (`libcontainer/specconv/example.go`, also moby's
/// `oci/defaults.go`): files get `/dev/null` bound over them, directories an empty read-only
/// tmpfs. `/proc/kcore` is kernel memory, `/proc/keys` the host's keyrings, `/proc/timer_list`
/// and `/proc/sched_debug` leak host tasks, `/sys/firmware` holds ACPI tables and EFI variables.
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths: `/proc/sys` holds `kernel.core_pattern` and
/// `kernel.modprobe` (each a way to run a program as root on the host), `/proc/sysrq-trigger`
/// reboots it.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The namespace flags of `clone(2)`/`unshare(2)` moby's profile refuses without
/// `CAP_SYS_ADMIN` (its mask 2114060288): NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
/// NEWNET. `unshare` also gets `CLONE_NEWTIME` (0x80), which for `clone` is a signal number.
pub const NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const CLONE_NEWTIME: u64 = 0x80;

/// Syscalls that fail with `EPERM`, on every architecture: what moby's default profile leaves
/// out of its allow list for a container without `CAP_SYS_ADMIN`, `CAP_SYS_MODULE`,
/// `CAP_SYS_BOOT`, `CAP_SYS_TIME`, `CAP_SYS_PTRACE`, `CAP_SYSLOG`, `CAP_SYS_PACCT`,
/// `CAP_SYS_NICE` and `CAP_BPF`/`CAP_PERFMON` (the capabilities [`DEFAULT_CAPABILITIES`]
/// drops), plus the new mount API and io_uring, which moby added to the list in 2023.
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "userfaultfd",
    "vhangup",
];

/// Syscalls only x86_64 has (aarch64 never had the legacy calls), denied the same way.
pub const DENIED_SYSCALLS_X86_64: &[&str] = &[
    "create_module",
    "get_kernel_syms",
    "ioperm",
    "iopl",
    "query_module",
    "_sysctl",
    "sysfs",
    "uselib",
    "ustat",
];

/// Syscalls that fail with `ENOSYS`: `clone3` passes its flags in memory, which a seccomp
/// filter cannot read, so moby and containerd answer "not implemented" and glibc (2.34+)
/// falls back to `clone`, whose flags the filter checks.
pub const ENOSYS_SYSCALLS: &[&str] = &["clone3"];

/// The seccomp rules of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompRules {
    /// Syscalls refused with `EPERM` wherever the architecture has them.
    pub denied: Vec<&'static str>,
    /// Syscalls refused with `EPERM` on x86_64 only.
    pub denied_x86_64: Vec<&'static str>,
    /// Syscalls refused with `ENOSYS`.
    pub enosys: Vec<&'static str>,
    /// `clone` with any of these flags, and `unshare` with any of these or `CLONE_NEWTIME`,
    /// is refused with `EPERM`.
    pub namespace_flags: u64,
}

impl Default for SeccompRules {
    fn default() -> Self {
        Self {
            denied: DENIED_SYSCALLS.to_vec(),
            denied_x86_64: DENIED_SYSCALLS_X86_64.to_vec(),
            enosys: ENOSYS_SYSCALLS.to_vec(),
            namespace_flags: NAMESPACE_FLAGS,
        }
    }
}

/// What a sandboxed process may do. [`Profile::default`] is docker's default; [`Profile::insecure`]
/// is BuildKit's `RUN --security=insecure` (all capabilities, no filter, nothing masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The bounding set, and the permitted and effective sets of a root process; `None` keeps
    /// every capability. A non-root user gets none effective or permitted (docker ≥ 20.10);
    /// the inheritable and ambient sets are always empty (CVE-2022-24769).
    pub capabilities: Option<Vec<Capability>>,
    /// `PR_SET_NO_NEW_PRIVS`: setuid bits and file capabilities no longer raise privileges at
    /// exec (a root process keeps what it has). The kernel installs a seccomp filter for a
    /// process without `CAP_SYS_ADMIN` only with it set (seccomp(2)), so a profile with a filter
    /// and without `SYS_ADMIN` needs it.
    pub no_new_privileges: bool,
    /// The seccomp filter; `None` for no filter.
    pub seccomp: Option<SeccompRules>,
    /// Paths made unreadable (missing ones are skipped, as runc does).
    pub masked_paths: Vec<String>,
    /// Paths made read-only (missing ones are skipped).
    pub readonly_paths: Vec<String>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            capabilities: Some(
                DEFAULT_CAPABILITIES
                    .iter()
                    .filter_map(|n| Capability::from_name(n))
                    .collect(),
            ),
            no_new_privileges: true,
            seccomp: Some(SeccompRules::default()),
            masked_paths: DEFAULT_MASKED_PATHS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            readonly_paths: DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

impl Profile {
    /// Today's full-root behaviour, for `RUN --security=insecure` with `--allow
    /// security.insecure`: every capability, no seccomp filter, no masked or read-only paths.
    #[must_use]
    pub fn insecure() -> Self {
        Self {
            capabilities: None,
            no_new_privileges: false,
            seccomp: None,
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
        }
    }

    /// The capabilities as a bit mask (`CapBnd` of `/proc/PID/status`); `None` for all.
    #[must_use]
    pub fn capability_mask(&self) -> Option<u64> {
        self.capabilities
            .as_ref()
            .map(|caps| caps.iter().fold(0u64, |m, c| m | (1u64 << c.0)))
    }
}

/// The architecture this crate was built for, in seccompiler's terms.
pub(crate) fn host_arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| Error::Unsupported {
        what: format!(
            "no seccomp syscall table for {} (x86_64 and aarch64 are supported)",
            std::env::consts::ARCH
        ),
        remedy: "build with RUN --security=insecure and --allow security.insecure",
    })
}

/// `AUDIT_ARCH_X86_64`'s x32 bit: syscall numbers at or above it are the x32 ABI.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Compiles `rules` for `arch` into the filters to install, in order.
///
/// Two filters, because a seccompiler filter has one match action: the `EPERM` list and the
/// `ENOSYS` list. The kernel runs every installed filter and, among equal actions, returns the
/// data of the one installed last (seccomp(2) "Filter return values"), so the order does not
/// matter here: the lists are disjoint. Both start with seccompiler's architecture check,
/// which kills a process that calls in with another ABI (i386 `int 0x80`): a deny list keyed
/// on x86_64 numbers means nothing for those.
///
/// # Errors
///
/// [`Error::Seccomp`] when a syscall name is unknown for `arch` or the program is invalid.
pub fn compile_seccomp(rules: &SeccompRules, arch: TargetArch) -> Result<Vec<BpfProgram>> {
    let mut denied: Vec<serde_json::Value> = Vec::new();
    let names = rules.denied.iter().chain(
        rules
            .denied_x86_64
            .iter()
            .filter(|_| arch == TargetArch::x86_64),
    );
    for name in names {
        denied.push(json!({ "syscall": name }));
    }
    // One rule per flag: a rule's conditions are ANDed, the rules of a syscall ORed, and
    // "any of these bits set" is an OR of single-bit masked comparisons.
    let flag_rules = |mask: u64, name: &str, out: &mut Vec<serde_json::Value>| {
        for bit in 0..64 {
            let flag = 1u64 << bit;
            if mask & flag != 0 {
                out.push(json!({
                    "syscall": name,
                    "args": [{ "index": 0, "type": "qword", "op": { "masked_eq": flag }, "val": flag }],
                }));
            }
        }
    };
    flag_rules(rules.namespace_flags, "clone", &mut denied);
    flag_rules(
        rules.namespace_flags | CLONE_NEWTIME,
        "unshare",
        &mut denied,
    );
    let enosys: Vec<_> = rules
        .enosys
        .iter()
        .map(|name| json!({ "syscall": name }))
        .collect();
    let mut doc = BTreeMap::new();
    doc.insert(
        "eperm",
        json!({ "mismatch_action": "allow", "filter_action": { "errno": libc::EPERM }, "filter": denied }),
    );
    if !enosys.is_empty() {
        doc.insert(
            "enosys",
            json!({ "mismatch_action": "allow", "filter_action": { "errno": libc::ENOSYS }, "filter": enosys }),
        );
    }
    let text = serde_json::to_vec(&doc).map_err(|e| Error::Seccomp {
        reason: format!("cannot encode the rules: {e}"),
    })?;
    let mut map =
        seccompiler::compile_from_json(text.as_slice(), arch).map_err(|e| Error::Seccomp {
            reason: e.to_string(),
        })?;
    let mut programs = Vec::new();
    for name in ["eperm", "enosys"] {
        if let Some(mut program) = map.remove(name) {
            if arch == TargetArch::x86_64 {
                program.splice(0..0, x32_guard());
            }
            programs.push(program);
        }
    }
    Ok(programs)
}

/// `EPERM` for every x32-ABI syscall number: x32 shares `AUDIT_ARCH_X86_64`, so the arch check
/// lets it through, and its numbers (`nr | 0x40000000`) would slip past a list of x86_64
/// numbers (libseccomp and moby do the same). The instructions are prepended, so
/// seccompiler's relative jumps after them stay valid.
fn x32_guard() -> [seccompiler::sock_filter; 3] {
    // Classic BPF opcodes (linux/filter.h): BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JGE|BPF_K,
    // BPF_RET|BPF_K; offset 0 of struct seccomp_data is `nr`.
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    [
        seccompiler::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        seccompiler::sock_filter {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        seccompiler::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capabilities_are_dockers_mask() {
        // `docker run` on this kernel shows CapEff 00000000a80425fb.
        assert_eq!(Profile::default().capability_mask(), Some(0xa804_25fb));
        assert_eq!(Profile::insecure().capability_mask(), None);
    }

    #[test]
    fn capability_names_round_trip() {
        assert_eq!(Capability::from_name("cap_sys_admin"), Some(Capability(21)));
        assert_eq!(Capability::from_name("NET_ADMIN"), Some(Capability(12)));
        assert_eq!(Capability(21).name(), "CAP_SYS_ADMIN");
        assert_eq!(Capability(63).name(), "CAP_63");
        assert_eq!(Capability::from_name("nope"), None);
    }

    #[test]
    fn default_filter_compiles_for_x86_64_and_aarch64() {
        let rules = SeccompRules::default();
        let x86 = compile_seccomp(&rules, TargetArch::x86_64).unwrap();
        let arm = compile_seccomp(&rules, TargetArch::aarch64).unwrap();
        assert_eq!(x86.len(), 2);
        assert_eq!(arm.len(), 2);
        // The x32 guard only on x86_64; the legacy syscalls only there too.
        assert_eq!(x86[0][1].k, X32_SYSCALL_BIT);
        assert_ne!(arm[0][1].k, X32_SYSCALL_BIT);
        assert!(x86[0].len() > arm[0].len());
    }

    #[test]
    fn unknown_syscall_names_are_an_error() {
        let rules = SeccompRules {
            denied: vec!["no_such_call"],
            ..SeccompRules::default()
        };
        let err = compile_seccomp(&rules, TargetArch::x86_64).unwrap_err();
        assert!(err.to_string().contains("seccomp"), "{err}");
        // x86_64-only names are not looked up for aarch64.
        let rules = SeccompRules {
            denied: vec![],
            denied_x86_64: vec!["iopl"],
            ..SeccompRules::default()
        };
        compile_seccomp(&rules, TargetArch::aarch64).unwrap();
    }
}
