//! Set-up shared by the sandbox's integration tests: the machine checks, the overlay
//! directories, and a busybox `/bin`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A lower, upper and work directory in one temporary directory.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) lower: PathBuf,
    pub(crate) upper: PathBuf,
    pub(crate) work: PathBuf,
}

impl Fixture {
    /// Empty overlay directories, or `None` (after saying why) when this machine cannot run the
    /// sandbox: not root, no `/bin/busybox`, or the kernel refuses what it needs.
    pub(crate) fn new() -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            skip("sandbox tests need root");
            return None;
        }
        if !Path::new("/bin/busybox").exists() {
            skip("/bin/busybox (busybox-static) is not installed");
            return None;
        }
        if let Err(e) = rbuild_sandbox::check_support() {
            skip(&e.to_string());
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = Self {
            lower: dir.path().join("lower"),
            upper: dir.path().join("upper"),
            work: dir.path().join("work"),
            dir,
        };
        for d in [&f.lower, &f.upper, &f.work] {
            fs::create_dir(d).unwrap();
        }
        Some(f)
    }
}

/// `ROOT/bin` with busybox and relative applet symlinks (never `busybox --install -s`, whose
/// links point at /proc/self/exe).
pub(crate) fn busybox_bin(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            symlink("busybox", bin.join(applet)).unwrap();
        }
    }
}

/// Skips with the reason, or fails when `RBUILD_REQUIRE_SANDBOX` is set (CI).
pub(crate) fn skip(why: &str) {
    assert!(
        std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
        "skipped: {why}"
    );
    eprintln!("skipped: {why}");
}
