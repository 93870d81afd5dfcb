//! Reliability: kill -9 at many points of a build, Ctrl-C, concurrent builds on one root, prune
//! during a build, hostile layer tars and Dockerfiles, and secrets that must not leak. After
//! each, `rbuild check` must find the store clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use crate::support::{context_with as context, setup_with_base as setup};

const EPOCH: &str = "1700000000";

/// An app with a context to hash, a RUN, a COPY and a layer of a few MiB to write and ingest.
const APP: &str = "FROM localhost/busybox:test\n\
RUN mkdir -p /data && head -c 24000000 /dev/zero | tr \"\\\\0\" z > /data/blob && echo ran > /ran\n\
COPY . /src\n\
RUN sha256sum /src/big.bin > /src.sum\n\
CMD [\"cat\", \"/ran\"]\n";

fn build_cmd(root: &Path, ctx: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--root")
        .arg(root)
        .args(["build", "--progress", "plain", "--source-date-epoch", EPOCH])
        .args(extra)
        .arg(ctx)
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> String {
    let o = build_cmd(root, ctx, extra).output().unwrap();
    last_line(&ok(&o))
}

/// `rbuild check` exits 0 and says the store is clean.
#[track_caller]
fn assert_clean(root: &Path) {
    let o = rbuild(root, &["check"]);
    assert!(
        o.status.success() && stdout(&o).contains("store is clean"),
        "check found damage:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
}

/// Mount points under `path` in this (the host's) mount namespace.
fn mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&p))
        .map(str::to_owned)
        .collect()
}

fn temps(root: &Path) -> Vec<String> {
    fs::read_dir(root.join("tmp"))
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose argv is exactly `args`.
fn processes_with_argv(args: &[&str]) -> usize {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
        .count()
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn write_app(work: &Path, name: &str) -> PathBuf {
    let ctx = context(work, name, APP);
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(ctx.join("big.bin"), big).unwrap();
    ctx
}

/// Brings the root back to "only the base image": untag the app, drop its cache and content.
fn reset_to_base(root: &Path) {
    let _ = rbuild(root, &["rmi", "localhost/app:crash"]);
    ok(&rbuild(root, &["prune", "--cache"]));
}

#[test]
fn kill_9_at_many_points_leaves_a_clean_store_and_the_next_build_gives_the_same_digest() {
    use std::os::unix::process::ExitStatusExt;
    let Some((work, root)) = setup() else { return };
    let ctx = write_app(work.path(), "app");
    let tag = ["-t", "localhost/app:crash"];
    let start = Instant::now();
    let reference = build(&root, &ctx, &tag);
    let full = start.elapsed();
    assert_clean(&root);

    // Spread the kill points over the whole build: context hashing, the first RUN (sandbox,
    // overlay), the layer write and blob ingest, COPY, the second RUN, config/manifest, tag.
    let points = 24u32;
    let mut killed = 0;
    let mut survived = 0;
    for i in 0..points {
        reset_to_base(&root);
        let delay = full.mul_f64(f64::from(i) / f64::from(points) * 0.95);
        let mut child = build_cmd(&root, &ctx, &tag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let was_killed = status.signal() == Some(9);
        killed += u32::from(was_killed);
        // The sandbox dies with the build (PDEATHSIG); give the kernel a moment to reap it.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            mounts_under(&root).is_empty(),
            "mounts left after kill at {delay:?}"
        );
        assert_clean(&root);
        let again = build(&root, &ctx, &tag);
        assert_eq!(again, reference, "digest after a kill at {delay:?} differs");
        assert_clean(&root);
        survived += 1;
    }
    eprintln!(
        "kill points: {survived}/{points} survived ({killed} of them killed mid-build, build takes {full:?})"
    );
    assert!(
        killed >= points / 2,
        "too few kills landed mid-build: {killed}"
    );
}

#[test]
fn sigint_kills_the_run_tree_removes_temps_and_exits_130() {
    let Some((work, root)) = setup() else { return };
    let ctx = context(
        work.path(),
        "sleepy",
        "FROM localhost/busybox:test\nRUN sleep 4242\n",
    );
    let mut child = build_cmd(&root, &ctx, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the RUN command runs.
    let start = Instant::now();
    while processes_with_argv(&["sleep", "4242"]) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "RUN never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!temps(&root).is_empty(), "a RUN has a staging directory");
    nix_kill(child.id(), "INT");
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("build did not stop");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "stderr: {err}");
    assert!(err.contains("interrupted"), "{err}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        processes_with_argv(&["sleep", "4242"]),
        0,
        "RUN process survived"
    );
    assert!(mounts_under(&root).is_empty());
    assert_eq!(temps(&root), Vec::<String>::new());
    assert_clean(&root);
}

fn nix_kill(pid: u32, sig: &str) {
    sh(Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]));
}

#[test]
fn two_and_four_concurrent_builds_on_one_root_are_all_correct() {
    let Some((work, root)) = setup() else { return };
    let a = write_app(work.path(), "a");
    let b = context(
        work.path(),
        "b",
        "FROM localhost/busybox:test\nRUN echo b > /b && sleep 1\nCOPY Dockerfile /Dockerfile\n",
    );
    let mut correct = 0;
    let mut run = 0;
    for (round, ctxs) in [vec![&a, &a], vec![&a, &b, &a, &b]].into_iter().enumerate() {
        ok(&rbuild(&root, &["prune", "--cache"]));
        let children: Vec<Child> = ctxs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let tag = format!("localhost/conc:{round}-{i}");
                build_cmd(&root, c, &["-t", &tag])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let digests: Vec<String> = children
            .into_iter()
            .map(|c| last_line(&ok(&c.wait_with_output().unwrap())))
            .collect();
        assert_clean(&root);
        // Sequential, uncached rebuilds are the reference: same inputs, same digest.
        for (c, d) in ctxs.iter().zip(&digests) {
            run += 1;
            let expected = build(&root, c, &["--no-cache"]);
            assert_eq!(
                *d,
                expected,
                "a concurrent build of {} differs",
                c.display()
            );
            correct += 1;
        }
    }
    eprintln!("concurrent builds: {correct}/{run} correct");
}

#[test]
fn prune_during_a_build_waits_and_removes_nothing_the_build_uses() {
    let Some((work, root)) = setup() else { return };
    let ctx = context(
        work.path(),
        "slow",
        "FROM localhost/busybox:test\nRUN echo one > /one && sleep 2\nRUN cat /one /bin/sh > /two\n",
    );
    let child = build_cmd(&root, &ctx, &["-t", "localhost/slow:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    ok(&rbuild(&root, &["prune", "--cache"]));
    let digest = last_line(&ok(&child.wait_with_output().unwrap()));
    assert!(digest.starts_with("sha256:"));
    assert_clean(&root);
    let out = ok(&rbuild(
        &root,
        &["run", "localhost/slow:1", "--", "cat", "/one"],
    ));
    assert_eq!(out.trim(), "one");
}

#[test]
fn a_damaged_store_is_reported_repaired_and_rebuilt() {
    let Some((work, root)) = setup() else { return };
    let ctx = write_app(work.path(), "app");
    let reference = build(&root, &ctx, &["-t", "localhost/app:crash"]);
    // Tamper with an unpacked layer directory and with a blob.
    let layers: Vec<PathBuf> = fs::read_dir(root.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let with_ran = layers
        .iter()
        .find(|l| l.join("ran").exists())
        .expect("RUN layer dir");
    fs::write(with_ran.join("ran"), "tampered\n").unwrap();
    let o = rbuild(&root, &["check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("layer directory"), "{}", stdout(&o));
    ok(&rbuild(&root, &["check", "--repair"]));
    assert_clean(&root);
    assert_eq!(
        build(&root, &ctx, &["-t", "localhost/app:crash"]),
        reference
    );
    assert_clean(&root);
}

// ---- hostile inputs ------------------------------------------------------------------------

/// One ustar header + data (padded), as a hostile tar writer would make it.
fn tar_entry(name: &str, kind: u8, link: &str, data: &[u8], size_field: Option<&str>) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    let size = size_field.map_or_else(|| format!("{:011o}\0", data.len()), str::to_owned);
    h[124..136].copy_from_slice(size.as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if kind == b'3' {
        h[329..337].copy_from_slice(b"0000001\0");
        h[337..345].copy_from_slice(b"0000003\0");
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut t: Vec<u8> = entries.concat();
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// Builds `ADD evil.tar /x/` from a context holding `archive`; asserts nothing appeared outside
/// the root and the store is clean; returns whether the build was refused (with its stderr).
fn add_hostile(name: &str, archive: &[u8]) -> Option<(bool, String)> {
    let (work, root) = setup()?;
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("canary"), "canary").unwrap();
    let ctx = context(
        work.path(),
        name,
        "FROM localhost/busybox:test\nADD evil.tar /x/\n",
    );
    fs::write(ctx.join("evil.tar"), archive).unwrap();
    let o = build_cmd(&root, &ctx, &["-t", "localhost/evil:1"])
        .output()
        .unwrap();
    assert!(o.status.code().is_some(), "{name}: rbuild died of a signal");
    let refused = !o.status.success();
    let listing: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        listing.len(),
        1,
        "{name}: something was written next to the canary"
    );
    assert_eq!(
        fs::read(outside.join("canary")).unwrap(),
        b"canary",
        "{name}: canary changed"
    );
    for escaped in ["/escaped-by-rbuild-test", "/tmp/escaped-by-rbuild-test"] {
        assert!(
            !Path::new(escaped).exists(),
            "{name}: {escaped} was written"
        );
    }
    assert!(mounts_under(&root).is_empty());
    assert_clean(&root);
    eprintln!(
        "hostile {name}: {}",
        if refused { "rejected" } else { "contained" }
    );
    Some((refused, stderr(&o)))
}

#[test]
fn hostile_tar_with_dot_dot() {
    let t = tar_of(&[tar_entry(
        "../../../../../../../escaped-by-rbuild-test",
        b'0',
        "",
        b"x",
        None,
    )]);
    add_hostile("dotdot", &t);
}

#[test]
fn hostile_tar_with_absolute_path() {
    let t = tar_of(&[tar_entry(
        "/tmp/escaped-by-rbuild-test",
        b'0',
        "",
        b"x",
        None,
    )]);
    add_hostile("absolute", &t);
}

#[test]
fn hostile_tar_with_symlink_then_file_through_it() {
    let t = tar_of(&[
        tar_entry("link", b'2', "/tmp", b"", None),
        tar_entry("link/escaped-by-rbuild-test", b'0', "", b"x", None),
    ]);
    add_hostile("symlink-then-file", &t);
}

#[test]
fn hostile_tar_with_hardlink_to_outside() {
    let t = tar_of(&[tar_entry(
        "hl",
        b'1',
        "../../../../../../etc/passwd",
        b"",
        None,
    )]);
    let before = fs::read("/etc/passwd").unwrap();
    add_hostile("hardlink-outside", &t);
    assert_eq!(fs::read("/etc/passwd").unwrap(), before);
}

#[test]
fn hostile_tar_with_device_nodes() {
    // A char device 1/3 (/dev/null) in a layer is legal in images; it must land inside.
    let t = tar_of(&[tar_entry("null2", b'3', "", b"", None)]);
    add_hostile("device-node", &t);
}

#[test]
fn hostile_tar_with_a_huge_header_size() {
    let t = tar_of(&[tar_entry("huge", b'0', "", b"", Some("77777777777\0"))]);
    if let Some((refused, err)) = add_hostile("huge-size", &t) {
        assert!(refused, "a truncated 8 GiB entry was accepted");
        assert!(!err.is_empty());
    }
}

#[test]
fn hostile_gzip_bomb_has_bounded_output() {
    // 64 MiB of zeros compress to ~64 KiB; as a tar, zero blocks mean end of archive, so
    // nothing may be written however much the stream inflates to.
    let Some(gz) = gzip(&vec![0u8; 64 << 20]) else {
        return;
    };
    let start = Instant::now();
    add_hostile("gzip-bomb", &gz);
    assert!(start.elapsed() < Duration::from_secs(120));
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    if !have_tool("gzip") {
        return None;
    }
    let mut c = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let data = data.to_vec();
    let w = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
    let out = c.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    Some(out.stdout)
}

/// Builds each Dockerfile; rbuild must not die of a signal, and a refusal must be a short error.
fn hostile_dockerfiles(cases: &[(&str, String)]) {
    let Some((work, root)) = setup() else { return };
    for (name, df) in cases {
        let ctx = context(work.path(), name, df);
        let o = build_cmd(&root, &ctx, &[]).output().unwrap();
        let err = stderr(&o);
        assert!(
            o.status.code().is_some(),
            "{name}: rbuild died of a signal: {}",
            &err[..err.len().min(2000)]
        );
        if !o.status.success() {
            assert!(err.contains("error"), "{name}: unclear failure: {err}");
            assert!(
                err.len() < 64 << 10,
                "{name}: the error echoes the whole input"
            );
        }
        eprintln!(
            "hostile dockerfile {name}: {}",
            if o.status.success() {
                "accepted"
            } else {
                "rejected"
            }
        );
        assert_clean(&root);
    }
}

#[test]
fn hostile_dockerfile_with_huge_lines() {
    hostile_dockerfiles(&[
        (
            "huge-label",
            format!(
                "FROM localhost/busybox:test\nLABEL big={}\n",
                "y".repeat(8 << 20)
            ),
        ),
        (
            "brackets",
            format!("FROM localhost/busybox:test\nCMD {}\n", "[".repeat(100_000)),
        ),
        (
            "continuations",
            format!(
                "FROM localhost/busybox:test\nRUN true {}\n",
                "\\\n".repeat(200_000)
            ),
        ),
    ]);
}

#[test]
fn hostile_dockerfile_with_deep_variable_nesting() {
    hostile_dockerfiles(&[(
        "deep",
        format!(
            "FROM localhost/busybox:test\nARG A=x\nENV B={}{}\n",
            "${A:-".repeat(20_000),
            "}".repeat(20_000)
        ),
    )]);
}

#[test]
fn secrets_never_reach_output_layers_history_or_cache_keys() {
    let Some((work, root)) = setup() else { return };
    let value = "s3cr3t-9f1c2b7e-token";
    let ctx = context(
        work.path(),
        "secret",
        "FROM localhost/busybox:test\n\
         RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len && test -s /run/secrets/tok\n\
         RUN --mount=type=secret,id=env wc -c < /run/secrets/env > /len2\n",
    );
    let file = work.path().join("tok.txt");
    fs::write(&file, value).unwrap();
    let o = build_cmd(
        &root,
        &ctx,
        &[
            "-t",
            "localhost/secret:1",
            "--secret",
            &format!("id=tok,src={}", file.display()),
            "--secret",
            "id=env,env=RBUILD_TEST_SECRET",
        ],
    )
    .env("RBUILD_TEST_SECRET", value)
    .output()
    .unwrap();
    ok(&o);
    assert!(
        !stdout(&o).contains(value) && !stderr(&o).contains(value),
        "secret in build output"
    );
    let inspect = ok(&rbuild(&root, &["inspect", "localhost/secret:1"]));
    assert!(
        !inspect.contains(value),
        "secret in manifest/config/history"
    );
    let len = ok(&rbuild(
        &root,
        &["run", "localhost/secret:1", "--", "cat", "/len"],
    ));
    assert_eq!(len.trim(), value.len().to_string());
    // The whole store: blobs (configs, manifests), unpacked layers, cache entries and keys.
    let hits = Command::new("grep")
        .args(["-r", "-l", "-a", value])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        hits.stdout.is_empty(),
        "secret found in {}",
        String::from_utf8_lossy(&hits.stdout)
    );
    // And the compressed layer blobs, decompressed.
    for blob in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let path = blob.unwrap().path();
        let out = Command::new("sh")
            .arg("-c")
            .arg("gzip -dc \"$1\" 2>/dev/null | grep -c -a \"$2\" || true")
            .args(["sh", path.to_str().unwrap(), value])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "secret inside {}",
            path.display()
        );
    }
    assert_clean(&root);
}
