//! User-namespaced runs (`--userns=auto`): the command is root of its own user namespace on a
//! subordinate range, while the layer files keep the image's ids.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test stops at the first failed set-up step"
)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::{Fixture, busybox_bin};
use rbuild_sandbox::userns::IdShift;
use rbuild_sandbox::{Network, RunSpec};

const SHIFT: IdShift = IdShift {
    uid: 700_000,
    gid: 800_000,
    count: 65536,
};

fn run_shifted(f: &Fixture, script: &str) -> (i32, String) {
    let spec = RunSpec::default()
        .lower_dirs(vec![f.lower.clone()])
        .upper_dir(&f.upper)
        .work_dir(&f.work)
        .args(["/bin/sh", "-c", script])
        .env(["PATH=/bin"])
        .network(Network::None)
        .user_namespace(Some(SHIFT));
    assert!(f.upper.starts_with(f.dir.path()));
    let mut out = Vec::new();
    let outcome = rbuild_sandbox::run(&spec, &mut |c| out.extend_from_slice(c))
        .unwrap_or_else(|e| panic!("run failed: {e:?}"));
    (outcome.status, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn a_user_namespaced_run_is_not_host_root_and_writes_the_image_ids() {
    let Some(f) = Fixture::new() else { return };
    if !rbuild_sandbox::userns::in_initial_user_namespace() {
        common::skip("a user-namespaced run needs root on the host");
        return;
    }
    busybox_bin(&f.lower);
    fs::create_dir(f.lower.join("etc")).unwrap();
    fs::write(f.lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(f.lower.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(f.lower.join("owned-by-1000"), "x").unwrap();
    std::os::unix::fs::chown(f.lower.join("owned-by-1000"), Some(1000), Some(1000)).unwrap();
    let (status, out) = run_shifted(
        &f,
        "id -u; cat /proc/self/uid_map; stat -c '%u:%g' /bin/busybox /owned-by-1000; \
         echo new > /new && chown 1234:4321 /new && mkdir -p /d && rm /owned-by-1000",
    );
    assert_eq!(status, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, ["0", "700000", "65536"], "{out}");
    // The lower layer's files show with their own ids inside (idmapped), not as nobody.
    assert_eq!(&lines[2..4], ["0:0", "1000:1000"], "{out}");
    // What the step wrote is stored with the image's ids, not the shifted host ids.
    let new = fs::metadata(f.upper.join("new")).expect(&out);
    assert_eq!((new.uid(), new.gid()), (1234, 4321));
    assert_eq!(fs::metadata(f.upper.join("d")).expect(&out).uid(), 0);
    let whiteout = fs::symlink_metadata(f.upper.join("owned-by-1000")).unwrap();
    assert_eq!(whiteout.rdev(), 0, "a whiteout");
}

#[test]
fn a_user_namespaced_root_cannot_use_host_root_privileges() {
    let Some(f) = Fixture::new() else { return };
    if !rbuild_sandbox::userns::in_initial_user_namespace() {
        common::skip("a user-namespaced run needs root on the host");
        return;
    }
    busybox_bin(&f.lower);
    // Host files that host root could read are out of reach: /proc/1/root is the host's `/`
    // only for host root; the step's root is an unprivileged id outside.
    let (status, out) = run_shifted(
        &f,
        "cat /proc/sys/kernel/hostname >/dev/null; \
         if echo x > /proc/sys/kernel/hostname 2>/dev/null; then echo wrote-sysctl; fi; \
         if mknod /dev-null-copy c 1 3 2>/dev/null; then echo made-device; fi; echo done",
    );
    assert_eq!(status, 0, "{out}");
    assert!(!out.contains("wrote-sysctl"), "{out}");
    assert!(!out.contains("made-device"), "{out}");
    assert!(out.contains("done"), "{out}");
}
