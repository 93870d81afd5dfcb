//! Multi-platform images end to end: `build --platform linux/amd64,linux/arm64` with RUN steps
//! of the arm64 image emulated through binfmt_misc and QEMU, the index read back by skopeo
//! (`inspect --raw`, `copy --all`), `pull --platform`, `run --platform`, and a
//! `FROM --platform=$BUILDPLATFORM` stage that runs once, natively, for both targets.
//!
//! Needs, besides what every build test needs: Debian's `qemu-user-static` registered with
//! binfmt_misc (the `F` flag), and an arm64 static busybox from Debian's
//! `busybox-static:arm64` (`scripts/test` prepares both).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Where `scripts/test` extracts `busybox-static:arm64`'s binary (override with
/// `RBUILD_ARM64_BUSYBOX`).
const ARM64_BUSYBOX: &str = "/usr/local/lib/rbuild-tests/busybox-arm64";

fn arm64_busybox() -> PathBuf {
    std::env::var_os("RBUILD_ARM64_BUSYBOX")
        .map_or_else(|| PathBuf::from(ARM64_BUSYBOX), PathBuf::from)
}

/// Whether arm64 binaries run here (QEMU registered with the F flag) and the arm64 busybox is
/// there; prints why not (fails instead under CI).
fn can_emulate_arm64() -> bool {
    if !can_build() {
        return false;
    }
    let entry = fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").unwrap_or_default();
    let registered = entry.starts_with("enabled")
        && entry
            .lines()
            .any(|l| l.starts_with("flags: ") && l.contains('F'));
    let busybox = arm64_busybox().is_file();
    if std::env::consts::ARCH == "x86_64" && registered && busybox {
        return true;
    }
    let why = format!(
        "skipped: needs an x86_64 host ({}), qemu-aarch64 registered with binfmt_misc and the F flag ({registered}; scripts/test registers it) and an arm64 busybox at {} ({busybox})",
        std::env::consts::ARCH,
        arm64_busybox().display()
    );
    assert!(
        std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
        "{why}"
    );
    eprintln!("{why}");
    false
}

/// Builds `localhost/busybox:multi`, an index of an amd64 and an arm64 busybox image (the
/// arm64 one's applet links made by the emulated arm64 busybox). Returns its digest.
fn build_multi_base(root: &Path, work: &Path) -> String {
    let ctx = work.join("multi-base");
    fs::create_dir_all(ctx.join("etc")).unwrap();
    fs::copy(rbuild_testkit::busybox::BUSYBOX, ctx.join("busybox-amd64")).unwrap();
    fs::copy(arm64_busybox(), ctx.join("busybox-arm64")).unwrap();
    fs::write(ctx.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(ctx.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        r#"FROM scratch
ARG TARGETARCH
COPY busybox-${TARGETARCH} /bin/busybox
COPY etc/ /etc/
RUN ["/bin/busybox", "sh", "-c", "for a in $(/bin/busybox --list); do [ -e /bin/$a ] || /bin/busybox ln -s busybox /bin/$a; done; /bin/busybox mkdir -p /tmp /root"]
CMD ["/bin/sh"]
"#,
    )
    .unwrap();
    let out = ok(&rbuild(
        root,
        &[
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "localhost/busybox:multi",
            ctx.to_str().unwrap(),
        ],
    ));
    last_line(&out)
}

/// `rbuild inspect REF` of an index: its platforms and their manifest digests.
fn index_platforms(root: &Path, reference: &str) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&rbuild(root, &["inspect", reference]))).unwrap();
    v["platforms"]
        .as_array()
        .expect("an index")
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap().to_owned(),
                p["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn run_in(root: &Path, platform: &str, reference: &str, cmd: &str) -> String {
    ok(&rbuild(
        root,
        &["run", "--platform", platform, reference, "sh", "-c", cmd],
    ))
}

#[test]
fn two_platform_build_runs_each_architecture_and_expands_targetarch() {
    if !can_emulate_arm64() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_multi_base(&root, work.path());
    let ctx = context_with(
        work.path(),
        "app",
        "FROM localhost/busybox:multi\nARG TARGETARCH\nRUN uname -m > /arch && echo $TARGETARCH > /targetarch\n",
    );
    // `--no-cache`: the second build runs every step again.
    let build = |root: &Path| {
        ok(&rbuild(
            root,
            &[
                "build",
                "--no-cache",
                "--progress",
                "plain",
                "--source-date-epoch",
                "1700000000",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                "localhost/app:multi",
                ctx.to_str().unwrap(),
            ],
        ))
    };
    let out = build(&root);
    let digest = last_line(&out);
    assert!(out.contains("[linux/arm64 3/3] RUN uname -m"), "{out}");
    let platforms = index_platforms(&root, "localhost/app:multi");
    let names: Vec<&str> = platforms.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        run_in(
            &root,
            "linux/amd64",
            "localhost/app:multi",
            "cat /arch /targetarch"
        ),
        "x86_64\namd64\n"
    );
    assert_eq!(
        run_in(
            &root,
            "linux/arm64",
            "localhost/app:multi",
            "cat /arch /targetarch"
        ),
        "aarch64\narm64\n"
    );
    // Each image's config names its platform.
    let v: serde_json::Value = serde_json::from_str(&ok(&rbuild(
        &root,
        &[
            "inspect",
            "--platform",
            "linux/arm64",
            "localhost/app:multi",
        ],
    )))
    .unwrap();
    assert_eq!(v["config"]["architecture"], "arm64");
    assert_eq!(v["digest"], platforms[1].1.as_str());
    // Reproducible: every step run again, the same index.
    assert_eq!(last_line(&build(&root)), digest);
    // `images` lists the index with the size of both platforms.
    let images = ok(&rbuild(&root, &["images"]));
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("localhost/app") && !l.contains("N/A")),
        "{images}"
    );
}

#[test]
fn the_index_pushes_and_pulls_by_platform() {
    if !can_emulate_arm64() || !have_tool("docker-registry") || !have_tool("skopeo") {
        return;
    }
    let reg = rbuild_testkit::registry::Registry::start(Default::default()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_multi_base(&root, work.path());
    let ctx = context_with(
        work.path(),
        "app",
        "FROM localhost/busybox:multi\nRUN uname -m > /arch\n",
    );
    let index = last_line(&ok(&rbuild(
        &root,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "localhost/app:multi",
            ctx.to_str().unwrap(),
        ],
    )));
    let platforms = index_platforms(&root, "localhost/app:multi");
    let dest = format!("{}/app:multi", reg.host());
    let pushed = ok(&rbuild(&root, &["push", "localhost/app:multi", &dest]));
    assert!(pushed.contains(&index), "{pushed}");
    // skopeo reads the index as pushed, and copies every platform.
    let raw = sh(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    let listed: Vec<(String, String)> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, platforms);
    let copied = work.path().join("copied");
    sh(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:x", copied.display()),
    ]));
    // A second push finds every blob and the index in place.
    let again = ok(&rbuild(&root, &["push", "localhost/app:multi", &dest]));
    assert!(again.contains(&index), "{again}");
    // A fresh store pulls the arm64 image: the same manifest digest as in the index.
    let fresh = work.path().join("fresh");
    let pulled = ok(&rbuild(
        &fresh,
        &["pull", "--platform", "linux/arm64", &dest],
    ));
    let digest_line = format!("Digest: {}", platforms[1].1);
    assert!(pulled.lines().any(|l| l == digest_line), "{pulled}");
    assert_eq!(
        run_in(&fresh, "linux/arm64", &dest, "cat /arch"),
        "aarch64\n"
    );
    // The other platform was not pulled: running it says how to get it.
    let o = rbuild(&fresh, &["run", "--platform", "linux/amd64", &dest, "true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("rbuild pull --platform linux/amd64"),
        "{}",
        stderr(&o)
    );
    // A platform the index does not have is named with those it has.
    let o = rbuild(&fresh, &["pull", "--platform", "linux/s390x", &dest]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no manifest for linux/s390x (it has: linux/amd64, linux/arm64)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_buildplatform_stage_runs_once_natively_for_both_targets() {
    if !can_emulate_arm64() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_multi_base(&root, work.path());
    let ctx = context_with(
        work.path(),
        "cross",
        "FROM --platform=$BUILDPLATFORM localhost/busybox:multi AS tools\n\
         RUN uname -m > /built-on\n\
         FROM localhost/busybox:multi\n\
         ARG TARGETARCH\n\
         COPY --from=tools /built-on /built-on\n\
         RUN echo $TARGETARCH-$(uname -m) > /target\n",
    );
    let o = rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "localhost/cross:1",
            ctx.to_str().unwrap(),
        ],
    );
    let log = format!("{}{}", ok(&o), stderr(&o));
    let tools_runs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RUN uname -m > /built-on"))
        .collect();
    let ran: Vec<&&str> = tools_runs
        .iter()
        .filter(|l| !l.starts_with("CACHED"))
        .collect();
    assert_eq!(ran.len(), 1, "the native stage ran once:\n{log}");
    assert!(ran[0].contains("[linux/amd64 tools 2/2]"), "{log}");
    for (platform, target) in [
        ("linux/amd64", "amd64-x86_64"),
        ("linux/arm64", "arm64-aarch64"),
    ] {
        assert_eq!(
            run_in(
                &root,
                platform,
                "localhost/cross:1",
                "cat /built-on /target"
            ),
            format!("x86_64\n{target}\n")
        );
    }
}

#[test]
fn bad_platforms_are_refused_before_anything_is_written() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context_with(work.path(), "c", "FROM scratch\nCOPY Dockerfile /\n");
    for (platform, message) in [
        (
            "linux/sparc",
            "unknown architecture `sparc` in platform `linux/sparc`",
        ),
        (
            "linux/amd64,linux",
            "invalid platform `linux` (expected os/arch[/variant]",
        ),
        ("windows/amd64", "only linux images can be built"),
    ] {
        let o = rbuild(
            &root,
            &[
                "build",
                "--platform",
                platform,
                "-t",
                "localhost/bad:1",
                ctx.to_str().unwrap(),
            ],
        );
        assert!(!o.status.success(), "{platform}");
        assert!(stderr(&o).contains(message), "{platform}: {}", stderr(&o));
    }
    let images = rbuild(&root, &["images"]);
    assert!(
        !stdout(&images).contains("localhost/bad"),
        "{}",
        stdout(&images)
    );
}
