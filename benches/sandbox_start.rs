//! Per-RUN overhead of the sandbox's hardening: the time of `rbuild_sandbox::run` for
//! `/bin/true` on a busybox rootfs (fork, namespaces, overlay mount, /proc /dev /sys,
//! pivot_root, exec, exit, reap), side by side in one run:
//!
//! - `insecure`: `Profile::insecure()`, i.e. the sandbox without the profile (every
//!   capability, no seccomp, nothing masked) — what a RUN step cost before the profile;
//! - `default`: docker's default profile (bounding set and capset, no_new_privs, two seccomp
//!   filters, 11 masked and 5 read-only paths);
//! - `default+limits`: the profile plus `--memory` and `--pids-limit` (a per-run cgroup in
//!   each controller's hierarchy, created before and removed after).
//!
//! The difference between the first two is the hardening's overhead from sandbox start to
//! exec. Needs root, kernel overlayfs and `/bin/busybox`; prints why and does nothing
//! otherwise.
//!
//! Run: `cargo bench -p rbuild-sandbox --bench sandbox_start`

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rbuild_sandbox::{Limits, Profile, RunSpec};

fn rootfs(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    symlink("busybox", bin.join("true")).unwrap();
}

fn bench(c: &mut Criterion) {
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
    let limits = Limits {
        memory: Some(256 << 20),
        pids: Some(1024),
        ..Limits::default()
    };
    let cases = [
        ("insecure", Profile::insecure(), Limits::default()),
        ("default", Profile::default(), Limits::default()),
        ("default+limits", Profile::default(), limits),
    ];
    let mut group = c.benchmark_group("sandbox_start");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    for (name, profile, limits) in cases {
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                // A fresh upper/work pair per run, as a RUN step gets.
                n += 1;
                let upper = tmp.path().join(format!("{name}-u{n}"));
                let work = tmp.path().join(format!("{name}-w{n}"));
                fs::create_dir(&upper).unwrap();
                fs::create_dir(&work).unwrap();
                let spec = RunSpec::default()
                    .lower_dirs(vec![lower.clone()])
                    .upper_dir(&upper)
                    .work_dir(&work)
                    .args(["/bin/true"])
                    .env(["PATH=/bin"])
                    .security(profile.clone())
                    .limits(limits.clone());
                let outcome = rbuild_sandbox::run(&spec, &mut |_| {}).unwrap();
                assert!(outcome.success());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
