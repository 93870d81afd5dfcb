//! Real sandbox runs on a busybox rootfs: needs root, kernel overlayfs and `/bin/busybox`
//! (busybox-static). Each test skips with a printed reason when one of them is missing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rbuild_sandbox::{BindMount, CancelHandle, Error, Network, Outcome, RunSpec, Stdio};

mod common;
use common::{Fixture, busybox_bin};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:\n";

impl Fixture {
    fn spec(&self, script: &str) -> RunSpec {
        RunSpec::default()
            .lower_dirs(vec![self.lower.clone()])
            .upper_dir(&self.upper)
            .work_dir(&self.work)
            .args(["/bin/sh", "-c", script])
            .env(["PATH=/usr/bin:/bin"])
    }

    fn layer(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}

/// A rootfs with busybox and relative applet symlinks (never `busybox --install -s`, whose
/// links point at /proc/self/exe), `/etc/passwd`, `/etc/group` and `/etc/motd`; no /proc,
/// /dev or /sys so that leftovers of their mountpoints would show.
fn busybox_rootfs(root: &Path, with_etc: bool) {
    busybox_bin(root);
    if with_etc {
        let etc = root.join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("passwd"), PASSWD).unwrap();
        fs::write(etc.join("group"), GROUP).unwrap();
        fs::write(etc.join("motd"), "welcome\n").unwrap();
    }
}

fn fixture_with(with_etc: bool) -> Option<Fixture> {
    let f = Fixture::new()?;
    busybox_rootfs(&f.lower, with_etc);
    Some(f)
}

fn fixture() -> Option<Fixture> {
    fixture_with(true)
}

/// Runs and returns the outcome and the captured output, checking that the callback saw
/// exactly what the tail kept.
fn run(spec: &RunSpec) -> (Outcome, String) {
    let mut seen = Vec::new();
    let outcome = rbuild_sandbox::run(spec, &mut |chunk| seen.extend_from_slice(chunk)).unwrap();
    assert_eq!(seen, outcome.output_tail);
    let output = String::from_utf8_lossy(&seen).into_owned();
    (outcome, output)
}

fn upper_entries(f: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = walk(&f.upper)
        .iter()
        .map(|p| p.strip_prefix(&f.upper).unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

#[test]
fn stdout_is_captured_and_exit_code_propagated() {
    let Some(f) = fixture() else { return };
    let (outcome, output) = run(&f.spec("echo hello; echo oops >&2; exit 3"));
    assert_eq!(outcome.status, 3);
    assert_eq!(output, "hello\noops\n");
}

#[test]
fn killed_by_signal_is_128_plus_signal() {
    let Some(f) = fixture() else { return };
    // The command is pid 1 of its namespace, which ignores signals sent from inside it
    // (pid_namespaces(7)); the kernel's SIGKILL at the hard RLIMIT_CPU still applies.
    let (outcome, _) = run(&f.spec("ulimit -t 1; while :; do :; done"));
    assert_eq!(outcome.status, 128 + libc::SIGKILL);
}

#[test]
fn command_is_pid_1_with_hostname() {
    let Some(f) = fixture() else { return };
    let spec = f
        .spec("echo $$; hostname; grep -c box /etc/hosts; cat /etc/hostname")
        .hostname("box");
    let (outcome, output) = run(&spec);
    assert_eq!(outcome.status, 0, "{output}");
    assert_eq!(output, "1\nbox\n1\nbox\n");
}

#[test]
fn missing_cwd_is_created_root_owned_0755() {
    let Some(f) = fixture() else { return };
    let spec = f.spec("pwd").cwd("/srv/app/../work/dir").user("app");
    let (outcome, output) = run(&spec);
    assert_eq!(outcome.status, 0, "{output}");
    assert_eq!(output, "/srv/work/dir\n");
    let meta = fs::metadata(f.upper.join("srv/work/dir")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
}

#[test]
fn environment_is_exactly_the_given_one() {
    let Some(f) = fixture() else { return };
    let spec = f
        .spec("")
        .args(["env"])
        .env(["PATH=/bin", "FOO=bar baz", "EMPTY="]);
    let (outcome, output) = run(&spec);
    assert_eq!(outcome.status, 0, "{output}");
    let mut lines: Vec<&str> = output.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, vec!["EMPTY=", "FOO=bar baz", "PATH=/bin"]);
}

#[test]
fn user_by_uid_and_by_name_from_the_rootfs() {
    let Some(f) = fixture() else { return };
    let (_, output) = run(&f.spec("id -u; id -g").user("1000"));
    assert_eq!(output, "1000\n1000\n");
    let (_, output) = run(&f.spec("id -u; id -g; id -G").user("app"));
    assert_eq!(output, "1000\n1000\n1000 10\n");
    let (_, output) = run(&f.spec("id -u; id -g; id -G").user("app:staff"));
    assert_eq!(output, "1000\n50\n50\n");
    let (_, output) = run(&f.spec("id -u; id -g").user("4242:4343"));
    assert_eq!(output, "4242\n4343\n");
    let (_, output) = run(&f.spec("id -u; id -G"));
    assert_eq!(output, "0\n0 10\n");
}

#[test]
fn unknown_user_is_an_error_naming_it() {
    let Some(f) = fixture() else { return };
    let err = rbuild_sandbox::run(&f.spec("true").user("nobody"), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownUser { user } if user == "nobody"),
        "{err}"
    );
    let err = rbuild_sandbox::run(&f.spec("true").user("app:nogroup"), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownGroup { group } if group == "nogroup"),
        "{err}"
    );
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    let Some(f) = fixture() else { return };
    let spec = f
        .spec("cat /proc/net/dev; cat /sys/class/net/lo/flags; ls /etc")
        .network(Network::None);
    let (outcome, output) = run(&spec);
    assert_eq!(outcome.status, 0, "{output}");
    let interfaces: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{output}");
    let flags = output
        .lines()
        .find(|l| l.starts_with("0x"))
        .expect("lo flags");
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & libc::IFF_UP as u32, 1, "lo is down");
    assert!(!output.contains("resolv.conf"), "{output}");
}

#[test]
fn host_network_sees_a_copy_of_the_host_resolv_conf() {
    let Some(f) = fixture() else { return };
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (outcome, output) = run(&f.spec("cat /etc/resolv.conf; echo changed >> /etc/resolv.conf"));
    assert_eq!(outcome.status, 0, "{output}");
    assert_eq!(output, host);
    assert_eq!(
        fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        host
    );
}

#[test]
fn written_file_lands_in_upper_and_lower_is_untouched() {
    let Some(f) = fixture() else { return };
    let (outcome, _) = run(&f.spec("echo data > /new; echo more >> /etc/motd"));
    assert_eq!(outcome.status, 0);
    assert_eq!(fs::read_to_string(f.upper.join("new")).unwrap(), "data\n");
    assert_eq!(
        fs::read_to_string(f.upper.join("etc/motd")).unwrap(),
        "welcome\nmore\n"
    );
    assert!(!f.lower.join("new").exists());
    assert_eq!(
        fs::read_to_string(f.lower.join("etc/motd")).unwrap(),
        "welcome\n"
    );
}

#[test]
fn deleted_lower_file_is_a_whiteout_in_upper() {
    let Some(f) = fixture() else { return };
    let (outcome, _) = run(&f.spec("rm /etc/motd"));
    assert_eq!(outcome.status, 0);
    let meta = fs::symlink_metadata(f.upper.join("etc/motd")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    assert!(f.lower.join("etc/motd").exists());
}

#[test]
fn no_mountpoint_traces_in_upper_when_rootfs_lacks_them() {
    let Some(f) = fixture_with(false) else { return };
    let (outcome, output) =
        run(&f
            .spec("ls -d /proc/1 /dev/null /sys/kernel /etc/hosts /etc/resolv.conf /etc/hostname"));
    assert_eq!(outcome.status, 0, "{output}");
    assert!(upper_entries(&f).is_empty(), "{:?}", upper_entries(&f));
    let (outcome, _) = run(&f
        .spec("echo x > /dev/shm/x; mkdir /etc/app")
        .network(Network::None));
    assert_eq!(outcome.status, 0);
    assert_eq!(upper_entries(&f), vec!["etc", "etc/app"]);
}

#[test]
fn sixty_lower_layers_mount_top_most_first() {
    let Some(f) = fixture() else { return };
    let mut lowers = Vec::new();
    for i in 0..60 {
        let layer = f.layer(&format!(
            "layers/sha256-{i:064}-with-a-long-directory-name-to-overflow-the-page"
        ));
        fs::write(layer.join("which"), format!("{i}\n")).unwrap();
        fs::write(layer.join(format!("f{i}")), "").unwrap();
        lowers.push(layer);
    }
    lowers.push(f.lower.clone());
    let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(
        total > 4096,
        "the absolute lowerdir list must exceed a page"
    );
    let spec = f.spec("cat /which; ls / | grep -c '^f'").lower_dirs(lowers);
    let (outcome, output) = run(&spec);
    assert_eq!(outcome.status, 0, "{output}");
    assert_eq!(output, "0\n60\n");
}

#[test]
fn missing_binary_is_127_with_docker_message() {
    let Some(f) = fixture() else { return };
    let (outcome, output) = run(&f.spec("").args(["nope", "arg"]));
    assert_eq!(outcome.status, 127);
    assert_eq!(
        output,
        "exec: \"nope\": executable file not found in $PATH\n"
    );
    let (outcome, output) = run(&f.spec("").args(["/bin/nope"]));
    assert_eq!(outcome.status, 127);
    assert_eq!(output, "exec: \"/bin/nope\": no such file or directory\n");
    let (outcome, output) = run(&f.spec("").args(["/etc/motd"]));
    assert_eq!(outcome.status, 126, "{output}");
}

#[test]
fn exec_searches_the_container_path() {
    let Some(f) = fixture() else { return };
    // `busybox` is only in /bin of the rootfs: found through the spec's PATH, not the host's.
    let (outcome, output) = run(&f.spec("").args(["busybox", "echo", "found"]));
    assert_eq!((outcome.status, output.as_str()), (0, "found\n"));
}

#[test]
fn readonly_bind_mount_and_scratch_rootfs() {
    let Some(f) = fixture() else { return };
    let data = f.layer("data");
    fs::write(data.join("file"), "shared\n").unwrap();
    // FROM scratch: no lower dirs; busybox comes in through a bind mount.
    let spec = RunSpec::default()
        .upper_dir(&f.upper)
        .work_dir(&f.work)
        .args([
            "/bin/sh",
            "-c",
            "cat /mnt/data/file; touch /mnt/data/new; echo $?",
        ])
        .env(["PATH=/bin"])
        .mount(BindMount {
            source: "/bin/busybox".into(),
            target: "/bin/sh".into(),
            readonly: true,
        })
        .mount(BindMount {
            source: data.clone(),
            target: "/mnt/data".into(),
            readonly: true,
        });
    let (outcome, output) = run(&spec);
    assert_eq!(outcome.status, 0, "{output}");
    assert!(output.starts_with("shared\n"), "{output}");
    assert!(output.ends_with("1\n"), "{output}");
    assert!(!data.join("new").exists());
    assert!(upper_entries(&f).is_empty(), "{:?}", upper_entries(&f));
}

#[test]
fn inherited_stdio_captures_nothing() {
    let Some(f) = fixture() else { return };
    let spec = f.spec("exit 0").stdio(Stdio::Inherit);
    let outcome = rbuild_sandbox::run(&spec, &mut |_| panic!("no output expected")).unwrap();
    assert_eq!(outcome.status, 0);
    assert!(outcome.output_tail.is_empty());
}

#[test]
fn concurrent_runs_share_lower_layers() {
    let Some(f) = fixture() else { return };
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let up = f.layer(&format!("c{i}/upper"));
            let wk = f.layer(&format!("c{i}/work"));
            let spec = f
                .spec(&format!("echo {i} > /id; cat /id"))
                .upper_dir(up.clone())
                .work_dir(wk);
            std::thread::spawn(move || (run(&spec).1, fs::read_to_string(up.join("id")).unwrap()))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (output, file) = h.join().unwrap();
        assert_eq!(
            (output.as_str(), file.as_str()),
            (&*format!("{i}\n"), &*format!("{i}\n"))
        );
    }
    assert!(!f.lower.join("id").exists());
}

#[test]
fn missing_lower_dir_is_an_error_naming_it() {
    let Some(f) = fixture() else { return };
    let spec = f.spec("true").lower_dirs(vec![f.dir.path().join("absent")]);
    let err = rbuild_sandbox::run(&spec, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, Error::OverlayDir { what: "lower", .. }),
        "{err}"
    );
}

#[test]
fn setup_failure_names_the_step_and_keeps_the_cause() {
    let Some(f) = fixture() else { return };
    // overlayfs needs upperdir and workdir on one filesystem ("workdir and upperdir must
    // reside under the same mount"): put the work dir on another one.
    let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm to put the work dir on another filesystem");
        return;
    };
    if fs::metadata(other.path()).unwrap().dev() == fs::metadata(&f.upper).unwrap().dev() {
        eprintln!("skipped: /dev/shm is on the same filesystem as the upper dir");
        return;
    }
    let err = rbuild_sandbox::run(&f.spec("true").work_dir(other.path()), &mut |_| {}).unwrap_err();
    let Error::Setup { step, source } = &err else {
        panic!("expected a setup error, got {err:?}");
    };
    assert!(step.starts_with("mount the overlay"), "{step}");
    assert!(source.raw_os_error().is_some(), "{source}");
    assert!(rbuild_sandbox::check_support().is_ok());
}

/// Host pids of the processes whose command line is exactly `args` and that live in another
/// pid namespace than this test (so a stray process of the same name elsewhere never counts).
fn sandboxed_pids(args: &[&str]) -> Vec<u32> {
    let own_ns = fs::read_link("/proc/self/ns/pid").unwrap();
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(cmdline), Ok(ns)) = (
            fs::read(entry.path().join("cmdline")),
            fs::read_link(entry.path().join("ns/pid")),
        ) else {
            continue;
        };
        if cmdline == want && ns != own_ns {
            pids.push(pid);
        }
    }
    pids
}

/// Whether the host's mount table mentions `path` (an overlay of the run left behind).
fn host_mounts_mention(path: &Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(path.to_str().unwrap())
}

fn cancel_while_running(stdio: Stdio, seconds: &str) {
    let Some(f) = fixture() else { return };
    // Pid 1 (the shell) and two children: the whole tree must go, not only pid 1.
    let script = format!("sleep {seconds} & sleep {seconds} & echo started; wait");
    let spec = f.spec(&script).stdio(stdio);
    let cancel = CancelHandle::new();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let runner = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            let mut output = Vec::new();
            let result = rbuild_sandbox::run_cancellable(&spec, &cancel, &mut |c| {
                output.extend_from_slice(c)
            });
            done_tx.send((result, output)).unwrap();
        })
    };
    let started = std::time::Instant::now();
    let sleepers = loop {
        let pids = sandboxed_pids(&["sleep", seconds]);
        if pids.len() == 2 {
            break pids;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the step never started its two sleeps: {pids:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };

    let cancelled_at = std::time::Instant::now();
    cancel.cancel();
    let (result, output) = done_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("run_cancellable returned within 10 s of the cancel");
    let took = cancelled_at.elapsed();
    runner.join().unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    eprintln!("{stdio:?}: cancelled in {took:?}");
    if stdio == Stdio::Capture {
        assert_eq!(String::from_utf8_lossy(&output), "started\n");
    }
    // No process of the step is left: the two sleeps (and so their pid namespace) are gone.
    for pid in sleepers {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !cmdline.starts_with(b"sleep\0"),
            "pid {pid} of the step survived the cancel"
        );
    }
    assert_eq!(sandboxed_pids(&["sleep", seconds]), Vec::<u32>::new());
    // Cleaned up as after a normal exit: no overlay of the run is left mounted on the host.
    assert!(!host_mounts_mention(&f.upper));
    assert!(!host_mounts_mention(&f.work));

    // The handle stays cancelled: the next run with it does not start.
    let again = rbuild_sandbox::run_cancellable(&f.spec("touch /late"), &cancel, &mut |_| {});
    assert!(matches!(again, Err(Error::Cancelled)), "{again:?}");
    assert!(!f.upper.join("late").exists());
}

#[test]
fn cancel_kills_the_whole_step_with_captured_output() {
    cancel_while_running(Stdio::Capture, "987651");
}

#[test]
fn cancel_kills_the_whole_step_with_inherited_stdio() {
    cancel_while_running(Stdio::Inherit, "987652");
}

#[test]
fn a_handle_that_is_never_cancelled_changes_nothing() {
    let Some(f) = fixture() else { return };
    let cancel = CancelHandle::new();
    let mut seen = Vec::new();
    let outcome = rbuild_sandbox::run_cancellable(
        &f.spec("echo hello; touch /made; exit 3"),
        &cancel,
        &mut |c| seen.extend_from_slice(c),
    )
    .unwrap();
    assert_eq!(outcome.status, 3);
    assert_eq!(seen, b"hello\n");
    assert!(f.upper.join("made").exists());
    assert!(!cancel.is_cancelled());
}

/// Needs no root: a cancelled handle stops the run before anything is prepared or started.
#[test]
fn a_cancelled_handle_returns_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancelHandle::new();
    cancel.cancel();
    let spec = RunSpec::default()
        .upper_dir(dir.path().join("upper"))
        .work_dir(dir.path().join("work"))
        .args(["/bin/sh", "-c", "touch /x"]);
    let result = rbuild_sandbox::run_cancellable(&spec, &cancel, &mut |_| {});
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_eq!(result.unwrap_err().to_string(), "the run was cancelled");
    // Nothing was created: not even the directories that a run would have failed on.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
