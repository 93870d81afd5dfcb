//! The security profile and limits, seen from inside real sandbox runs on a busybox rootfs:
//! capabilities, no_new_privs, seccomp, masked and read-only paths, session, cgroups. Needs
//! root, kernel overlayfs and `/bin/busybox`; the probe tests also `cc` with a static libc.
//! Each test skips with a printed reason when something is missing, and fails instead when
//! `RBUILD_REQUIRE_SANDBOX` is set (CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild_sandbox::{Limits, Network, Outcome, Profile, RunSpec, Ulimit};

mod common;
use common::{Fixture, busybox_bin, skip};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\n";
/// Docker's default 14 capabilities as `/proc/PID/status` shows them.
const DOCKER_CAPS: u64 = 0xa804_25fb;

fn fixture() -> Option<Fixture> {
    let f = Fixture::new()?;
    busybox_bin(&f.lower);
    let etc = f.lower.join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("passwd"), PASSWD).unwrap();
    fs::write(etc.join("group"), GROUP).unwrap();
    fs::create_dir_all(f.lower.join("mnt")).unwrap();
    Some(f)
}

impl Fixture {
    fn spec(&self, script: &str) -> RunSpec {
        RunSpec::default()
            .lower_dirs(vec![self.lower.clone()])
            .upper_dir(&self.upper)
            .work_dir(&self.work)
            .args(["/bin/sh", "-c", script])
            .env(["PATH=/bin"])
    }

    /// Compiles the probe into the rootfs as `/probe`; `false` (skipped) without a compiler.
    fn with_probe(&self) -> bool {
        let out = self.dir.path().join("probe");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.c");
        let built = Command::new("cc")
            .args(["-static", "-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
        if !built {
            skip("`cc -static` cannot build the probe (install gcc and libc6-dev)");
            return false;
        }
        fs::copy(&out, self.lower.join("probe")).unwrap();
        true
    }
}

fn run(spec: &RunSpec) -> (Outcome, String) {
    let mut seen = Vec::new();
    let outcome = rbuild_sandbox::run(spec, &mut |chunk| seen.extend_from_slice(chunk)).unwrap();
    (outcome, String::from_utf8_lossy(&seen).into_owned())
}

/// `Key:\tvalue` lines of `/proc/self/status`.
fn status_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn hex(fields: &BTreeMap<String, String>, key: &str) -> u64 {
    u64::from_str_radix(&fields[key], 16).unwrap_or_else(|_| panic!("{key}: {:?}", fields[key]))
}

#[test]
fn default_profile_is_dockers_capabilities_no_new_privs_and_seccomp() {
    let Some(f) = fixture() else { return };
    let (outcome, output) = run(&f.spec("cat /proc/self/status"));
    assert!(outcome.success(), "{output}");
    let s = status_fields(&output);
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(hex(&s, key), DOCKER_CAPS, "{key}");
    }
    assert_eq!(hex(&s, "CapInh"), 0);
    assert_eq!(hex(&s, "CapAmb"), 0);
    assert_eq!(s["NoNewPrivs"], "1");
    assert_eq!(s["Seccomp"], "2");
}

#[test]
fn non_root_user_has_no_effective_capabilities() {
    let Some(f) = fixture() else { return };
    let (outcome, output) = run(&f.spec("cat /proc/self/status").user("app"));
    assert!(outcome.success(), "{output}");
    let s = status_fields(&output);
    assert!(s["Uid"].starts_with("1000"), "{}", s["Uid"]);
    assert_eq!(hex(&s, "CapEff"), 0);
    assert_eq!(hex(&s, "CapPrm"), 0);
    assert_eq!(hex(&s, "CapBnd"), DOCKER_CAPS);
    assert_eq!(s["Seccomp"], "2");
}

#[test]
fn proc_sys_is_read_only_and_host_files_are_masked() {
    let Some(f) = fixture() else { return };
    // domainname is per UTS namespace: harmless should the write ever succeed.
    let script = "echo x > /proc/sys/kernel/domainname; echo rc=$?; \
                  echo timers=$(wc -c < /proc/timer_list); echo keys=$(wc -c < /proc/keys); \
                  echo firmware=$(ls -A /sys/firmware | wc -l); \
                  grep -E ' /proc/(sys|sysrq-trigger) ' /proc/self/mountinfo";
    let (outcome, output) = run(&f.spec(script));
    assert!(outcome.success(), "{output}");
    assert!(output.contains("Read-only file system"), "{output}");
    assert!(output.contains("rc=1"), "{output}");
    // (/proc/kcore and /proc/sched_debug exist on fewer kernels; the same code masks them.)
    assert!(output.contains("timers=0\n"), "{output}");
    assert!(fs::metadata("/proc/timer_list").is_ok());
    assert!(output.contains("keys=0\n"), "{output}");
    assert!(output.contains("firmware=0\n"), "{output}");
    let ro_lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains(" /proc/sys") && l.contains(" - "))
        .collect();
    assert!(!ro_lines.is_empty(), "{output}");
    for line in ro_lines {
        let opts = line.split(' ').nth(5).unwrap();
        assert!(opts.split(',').any(|o| o == "ro"), "{line}");
    }
}

#[test]
fn blocked_operations_fail_with_eperm_and_clone3_with_enosys() {
    let Some(f) = fixture() else { return };
    if !f.with_probe() {
        return;
    }
    let probes = [
        ("mount", "EPERM"),
        ("unshare-user", "EPERM"),
        ("unshare-mount", "EPERM"),
        ("clone-newuser", "EPERM"),
        ("open_by_handle_at", "EPERM"),
        ("keyctl", "EPERM"),
        ("init_module", "EPERM"),
        ("clone3", "ENOSYS"),
        // An ordinary fork still works: only namespace flags are refused.
        ("fork", "ok"),
    ];
    let script: Vec<String> = probes.iter().map(|(p, _)| format!("/probe {p}")).collect();
    let (outcome, output) = run(&f.spec(&script.join("; ")));
    assert!(outcome.success(), "{output}");
    for (probe, expected) in probes {
        assert!(
            output.contains(&format!("{probe}: {expected}\n")),
            "{probe}: expected {expected} in\n{output}"
        );
    }
    // busybox's applets see the same refusals (its mount words EPERM its own way).
    let (outcome, output) = run(&f.spec("mount -t tmpfs none /mnt"));
    assert_ne!(outcome.status, 0);
    assert!(output.contains("permission denied"), "{output}");
}

#[test]
fn insecure_profile_keeps_full_root() {
    let Some(f) = fixture() else { return };
    let have_probe = f.with_probe();
    let mut script = "cat /proc/self/status; mount -t tmpfs none /mnt && echo mounted".to_owned();
    if have_probe {
        script.push_str("; /probe unshare-user");
    }
    let (outcome, output) = run(&f.spec(&script).security(Profile::insecure()));
    assert!(outcome.success(), "{output}");
    let s = status_fields(&output);
    // Everything the caller has (which may itself be less than every capability).
    let ours = status_fields(&fs::read_to_string("/proc/self/status").unwrap());
    assert_eq!(hex(&s, "CapEff"), hex(&ours, "CapBnd"));
    assert_eq!(hex(&s, "CapBnd"), hex(&ours, "CapBnd"));
    assert_eq!(s["NoNewPrivs"], "0");
    assert_eq!(s["Seccomp"], "0");
    assert!(output.contains("mounted\n"), "{output}");
    if have_probe {
        assert!(output.contains("unshare-user: ok\n"), "{output}");
    }
}

#[test]
fn new_session_without_terminal_and_own_cgroup_namespace() {
    let Some(f) = fixture() else { return };
    // /proc/self/stat: pid (comm) state ppid pgrp session tty_nr …
    let (outcome, output) = run(&f.spec("cat /proc/1/stat; echo; cat /proc/self/cgroup"));
    assert!(outcome.success(), "{output}");
    let stat = output.lines().next().unwrap();
    let after_comm: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(after_comm[3], "1", "session of pid 1: {stat}");
    assert_eq!(after_comm[4], "0", "tty_nr of pid 1: {stat}");
    for line in output.lines().skip(1).filter(|l| l.contains(':')) {
        assert!(line.ends_with(":/"), "cgroup namespace root: {line}");
    }
}

#[test]
fn host_network_cannot_be_reconfigured() {
    let Some(f) = fixture() else { return };
    // Setting lo's MTU to the value it has changes nothing even if it were allowed.
    let mtu = fs::read_to_string("/sys/class/net/lo/mtu").unwrap();
    let script = format!("ip link set dev lo mtu {}", mtu.trim());
    let (outcome, output) = run(&f.spec(&script).network(Network::Host));
    assert_ne!(outcome.status, 0, "{output}");
    assert!(output.contains("Operation not permitted"), "{output}");
}

#[test]
fn ulimits_apply() {
    let Some(f) = fixture() else { return };
    let limits = Limits {
        ulimits: vec!["nofile=256:512".parse::<Ulimit>().unwrap()],
        ..Limits::default()
    };
    let (outcome, output) = run(&f.spec("ulimit -n; ulimit -Hn").limits(limits));
    assert!(outcome.success(), "{output}");
    assert_eq!(output, "256\n512\n");
}

/// The cgroup tests look for leftovers by this process's prefix: they must not overlap.
static CGROUP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The run's cgroups, found by the name prefix the sandbox gives them.
fn leftover_cgroups() -> Vec<PathBuf> {
    let prefix = format!("rbuild-{}-", std::process::id());
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    found
}

fn limits_supported(limits: &Limits, f: &Fixture) -> bool {
    match rbuild_sandbox::run(&f.spec("true").limits(limits.clone()), &mut |_| {}) {
        Ok(_) => true,
        Err(rbuild_sandbox::Error::Unsupported { what, .. }) => {
            skip(&what);
            false
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn memory_limit_stops_an_allocation_loop_and_is_cleaned_up() {
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = fixture() else { return };
    let limits = Limits {
        memory: Some(32 << 20),
        ..Limits::default()
    };
    if !limits_supported(&limits, &f) {
        return;
    }
    // A shell variable of 256 MiB, far above the limit.
    let (outcome, output) = run(&f
        .spec("x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived ${#x}")
        .limits(limits));
    assert_ne!(outcome.status, 0, "{output}");
    assert!(outcome.oom_killed, "status {} {output}", outcome.status);
    assert!(!output.contains("survived"), "{output}");
    assert!(leftover_cgroups().is_empty(), "{:?}", leftover_cgroups());
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = fixture() else { return };
    let limits = Limits {
        pids: Some(16),
        ..Limits::default()
    };
    if !limits_supported(&limits, &f) {
        return;
    }
    let (outcome, output) = run(&f
        .spec("i=0; while [ $i -lt 64 ]; do sleep 30 & i=$((i+1)); done; echo all started")
        .limits(limits));
    assert_ne!(outcome.status, 0, "{output}");
    assert!(!output.contains("all started"), "{output}");
    assert!(output.contains("can't fork"), "{output}");
    assert!(leftover_cgroups().is_empty(), "{:?}", leftover_cgroups());
    // Without the limit the same loop completes (the sleeps die with the pid namespace).
    let (outcome, output) =
        run(&f.spec("i=0; while [ $i -lt 64 ]; do sleep 30 & i=$((i+1)); done; echo all started"));
    assert!(outcome.success(), "{output}");
}
