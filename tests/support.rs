//! Helpers shared by the integration tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `rbuild` binary under test.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rbuild"))
}

/// Runs `rbuild --root ROOT ARGS…`.
pub(crate) fn rbuild(root: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("spawn rbuild")
}

/// stdout as text.
pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub(crate) fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "rbuild failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// The last line of stdout: the digest a build prints.
pub(crate) fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or_default().trim().to_owned()
}

/// Whether this machine can run RUN steps (root + overlay). When not, prints why; fails instead
/// when `RBUILD_REQUIRE_SANDBOX` is set (CI).
pub(crate) fn can_build() -> bool {
    let root = nix_is_root();
    let overlay = fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay"));
    let busybox = rbuild_testkit::busybox::available();
    if root && overlay && busybox {
        return true;
    }
    let why = format!(
        "skipped: needs root ({root}), overlayfs ({overlay}) and /bin/busybox from busybox-static ({busybox})"
    );
    assert!(
        std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
        "{why}"
    );
    eprintln!("{why}");
    false
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether an external tool is on PATH; prints a skip reason (or fails under CI) when not.
pub(crate) fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let why = format!("skipped: `{name}` is not installed");
        assert!(
            std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
            "{why}"
        );
        eprintln!("{why}");
    }
    found
}

/// Builds the busybox base image into `root` as `localhost/busybox:test`; returns its digest.
pub(crate) fn build_base(root: &Path, work: &Path) -> String {
    let ctx = work.join("base-ctx");
    rbuild_testkit::busybox::write_context(&ctx).expect("write the base context");
    let out = ok(&rbuild(
        root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "localhost/busybox:test",
            ctx.to_str().unwrap(),
        ],
    ));
    last_line(&out)
}

/// Runs a command, asserting success; returns stdout.
#[track_caller]
pub(crate) fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A work directory and a store with the busybox base image, or `None` (with the reason
/// printed) when this machine cannot build.
pub(crate) fn setup_with_base() -> Option<(tempfile::TempDir, PathBuf)> {
    if !can_build() {
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_base(&root, work.path());
    Some((work, root))
}

/// A build context `work/name` holding `dockerfile` as its Dockerfile.
pub(crate) fn context_with(work: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = work.join(name);
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// `git init -b BRANCH` in `dir`, then one commit of everything in it, as a CI user.
pub(crate) fn git_commit_all(dir: &Path, branch: &str, message: &str) {
    let git = |args: &[&str]| {
        sh(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=CI", "-c", "user.email=ci@example.com"])
            .args(args))
    };
    git(&["init", "-q", "-b", branch]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", message]);
}

/// `rbuild --root WORK/root pipeline ARGS --project PROJECT`, with `HOME` at `work` and no
/// cluster or registry settings inherited from the environment.
pub(crate) fn rbuild_pipeline(work: &Path, project: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--root")
        .arg(work.join("root"))
        .arg("pipeline")
        .args(args)
        .arg("--project")
        .arg(project)
        .env("HOME", work)
        .env_remove("KUBECONFIG")
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_HOST")
        .output()
        .expect("spawn rbuild")
}
