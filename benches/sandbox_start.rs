//! Per-RUN overhead of the sandbox's hardening: the time of `rbuild_sandbox::run` for
//! `/bin/true` on a busybox rootfs (fork, namespaces, overlay mount, /proc /dev /sys,
//! pivot_root, exec, exit, reap), side by side in one run:
//!
//! - `insecure`: `Profile::insecure()`, i.e. the sandbox without the profile (every
//!   capability, no seccomp, nothing masked) — what a RUN step cost before the profile;
//! - `default`: docker's default profile (bounding set and capset, no_new_privs, two seccomp
//!   filters, 11 masked and 5 read-only paths);
//! - `paths-only` and `process-only`: the two halves of the profile apart (mounts over
//!   masked and read-only paths; capabilities, no_new_privs and seccomp);
//! - `default+limits`: the profile plus `--memory` and `--pids-limit` (a per-run cgroup in
//!   each controller's hierarchy, created before and removed after).
//!
//! The difference between the first two is the hardening's overhead from sandbox start to
//! exec. The cases are interleaved (one run of each per round, 60 rounds after 5 warm-up
//! rounds) so that a busy machine slows them all alike; medians and 90th percentiles are
//! printed. Needs root, kernel overlayfs and `/bin/busybox`; prints why and does nothing
//! otherwise.
//!
//! Run: `cargo bench -p rbuild-sandbox --bench sandbox_start`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use rbuild_sandbox::{Limits, Profile, RunSpec};

const WARMUP: usize = 5;
const ROUNDS: usize = 60;

fn rootfs(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    symlink("busybox", bin.join("true")).unwrap();
}

fn once(tmp: &Path, lower: &Path, n: usize, profile: &Profile, limits: &Limits) -> Duration {
    // A fresh upper/work pair per run, as a RUN step gets (made outside the timing).
    let upper = tmp.join(format!("u{n}"));
    let work = tmp.join(format!("w{n}"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let spec = RunSpec::default()
        .lower_dirs(vec![lower.to_owned()])
        .upper_dir(&upper)
        .work_dir(&work)
        .args(["/bin/true"])
        .env(["PATH=/bin"])
        .security(profile.clone())
        .limits(limits.clone());
    let start = Instant::now();
    let outcome = rbuild_sandbox::run(&spec, &mut |_| {}).unwrap();
    let elapsed = start.elapsed();
    assert!(outcome.success());
    fs::remove_dir_all(&upper).unwrap();
    fs::remove_dir_all(&work).unwrap();
    elapsed
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of benchmarks
    }
    if !nix::unistd::geteuid().is_root() || !Path::new("/bin/busybox").exists() {
        eprintln!("sandbox_start: needs root and /bin/busybox; nothing measured");
        return;
    }
    if let Err(e) = rbuild_sandbox::check_support() {
        eprintln!("sandbox_start: {e}; nothing measured");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    rootfs(&lower);
    // The profile's two halves apart: the masked/read-only mounts, and the process
    // restrictions (capabilities, no_new_privs, seccomp).
    let paths_only = Profile {
        masked_paths: Profile::default().masked_paths,
        readonly_paths: Profile::default().readonly_paths,
        ..Profile::insecure()
    };
    let process_only = Profile {
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
        ..Profile::default()
    };
    let limits = Limits {
        memory: Some(256 << 20),
        pids: Some(1024),
        ..Limits::default()
    };
    let cases = [
        ("insecure", Profile::insecure(), Limits::default()),
        ("paths-only", paths_only, Limits::default()),
        ("process-only", process_only, Limits::default()),
        ("default", Profile::default(), Limits::default()),
        ("default+limits", Profile::default(), limits),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let mut n = 0;
    for round in 0..WARMUP + ROUNDS {
        for (i, (_, profile, limits)) in cases.iter().enumerate() {
            n += 1;
            let t = once(tmp.path(), &lower, n, profile, limits);
            if round >= WARMUP {
                times[i].push(t);
            }
        }
    }
    println!("sandbox_start: {ROUNDS} interleaved runs of /bin/true per case");
    for ((name, _, _), mut t) in cases.iter().zip(times) {
        t.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:>16}: median {:6.2} ms   p90 {:6.2} ms   min {:6.2} ms",
            ms(t[t.len() / 2]),
            ms(t[t.len() * 9 / 10]),
            ms(t[0])
        );
    }
}
