//! The registry commands end to end against the CNCF registry (`docker-registry` 2.8), with
//! skopeo as the independent reader and writer: push, a second push that uploads nothing,
//! mounts between repositories, pull into a fresh store and run, `build --push`, tags,
//! remote inspect and delete, login with htpasswd and logout.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use rbuild_testkit::registry::{Registry, RegistryOptions};

use crate::support::*;

/// Starts a registry, or says why the test is skipped.
fn registry(options: RegistryOptions) -> Option<Registry> {
    if !have_tool("docker-registry") {
        return None;
    }
    Some(Registry::start(options).expect("start docker-registry"))
}

/// Runs `rbuild --root ROOT ARGS…` with extra environment and optional stdin.
fn rbuild_with(root: &Path, args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn rbuild");
    if let Some(mut pipe) = child.stdin.take()
        && let Some(input) = stdin
    {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for rbuild")
}

/// Asserts failure and returns stderr.
#[track_caller]
fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "rbuild should have failed:\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

/// The manifest digest skopeo reads from the registry.
fn skopeo_digest(reference: &str) -> String {
    let out = sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("skopeo prints JSON");
    v["Digest"].as_str().expect("Digest field").to_owned()
}

/// The digest of `rbuild pull`'s `Digest: sha256:…` line.
fn pulled_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no Digest line in:\n{out}"))
        .trim()
        .to_owned()
}

/// Lines of a push that are about blobs (`<12 hex>: <status>`), without `Preparing`.
fn blob_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| {
            l.len() > 14
                && l.as_bytes()[12] == b':'
                && l[..12].bytes().all(|b| b.is_ascii_hexdigit())
                && !l.ends_with("Preparing")
        })
        .map(str::to_owned)
        .collect()
}

const APP: &str = "FROM localhost/busybox:test\nRUN echo pushed > /msg\nCMD [\"cat\", \"/msg\"]\n";

#[test]
fn push_pull_mount_tag_ls_inspect_delete_against_a_real_registry() {
    if !can_build() || !have_tool("skopeo") {
        return;
    }
    let Some(reg) = registry(RegistryOptions::default()) else {
        return;
    };
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_base(&root, work.path());
    let ctx = work.path().join("app");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), APP).unwrap();
    let app = format!("{host}/app:1");
    let digest = last_line(&ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &app,
            ctx.to_str().unwrap(),
        ],
    )));

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&rbuild(&root, &["inspect", &app]))).unwrap();
    let layers = inspect["manifest"]["layers"].as_array().unwrap().len();

    // First push: every layer uploaded; docker's last line.
    let out = ok(&rbuild(&root, &["push", &app]));
    let lines = blob_lines(&out);
    assert_eq!(lines.len(), layers, "one line per layer:\n{out}");
    assert!(lines.iter().all(|l| l.ends_with(": Pushed")), "{out}");
    let last = last_line(&out);
    assert!(
        last.starts_with(&format!("1: digest: {digest} size: ")),
        "{out}"
    );
    assert_eq!(skopeo_digest(&app), digest, "skopeo sees our digest");

    // Second push: one HEAD per blob and one for the manifest, nothing uploaded.
    reg.clear_access_log();
    let out = ok(&rbuild(&root, &["push", &app]));
    let lines = blob_lines(&out);
    assert_eq!(lines.len(), layers, "{out}");
    assert!(
        lines.iter().all(|l| l.ends_with(": Layer already exists")),
        "{out}"
    );
    reg.settle();
    let log = reg.access_log();
    let uploads: Vec<_> = log
        .iter()
        .filter(|l| matches!(l.method.as_str(), "POST" | "PUT" | "PATCH"))
        .collect();
    assert!(uploads.is_empty(), "a no-op push uploaded: {uploads:?}");
    let heads = log.iter().filter(|l| l.method == "HEAD").count();
    assert_eq!(heads, layers + 2, "config + layers + manifest: {log:?}");

    // To another repository of the same registry: mounted, not uploaded.
    reg.clear_access_log();
    let copy = format!("{host}/copy:1");
    let out = ok(&rbuild(&root, &["push", &app, &copy]));
    let lines = blob_lines(&out);
    assert_eq!(lines.len(), layers, "{out}");
    assert!(
        lines.iter().all(|l| l.ends_with(": Mounted from app")),
        "{out}"
    );
    reg.settle();
    assert!(
        !reg.access_log()
            .iter()
            .any(|l| l.method == "PATCH" || (l.method == "PUT" && l.path.contains("/blobs/"))),
        "a mount pushed bytes: {:?}",
        reg.access_log()
    );

    // A fresh store pulls the same digest and runs it.
    let root2 = work.path().join("root2");
    let out = ok(&rbuild(&root2, &["pull", &copy]));
    assert_eq!(pulled_digest(&out), digest, "{out}");
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    assert_eq!(ok(&rbuild(&root2, &["run", &copy])), "pushed\n");
    let again = ok(&rbuild(&root2, &["pull", &copy]));
    assert!(again.contains("Status: Image is up to date"), "{again}");
    assert!(!again.contains("Pull complete"), "{again}");

    // tag + push + ls.
    let app2 = format!("{host}/app:2");
    ok(&rbuild(&root, &["tag", &app, &app2]));
    ok(&rbuild(&root, &["push", &app2]));
    let tags = ok(&rbuild(&root, &["ls", &format!("{host}/app")]));
    assert_eq!(tags, "1\n2\n");

    // inspect --remote reads manifest and config from the registry.
    let out = ok(&rbuild(&root2, &["inspect", "--remote", &app2]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["config"]["config"]["Cmd"][0], "cat");

    // rmi --remote deletes the manifest (every tag on it goes: registries delete by digest).
    let out = ok(&rbuild(&root, &["rmi", "--remote", &app2]));
    assert!(
        out.contains(&format!("Deleted: {host}/app@{digest}")),
        "{out}"
    );
    let err = fails(&rbuild(&root, &["inspect", "--remote", &app]));
    assert!(err.contains("not found"), "{err}");

    // build --push --digest-file: every tag pushed, the digest written.
    let ctx2 = work.path().join("app2");
    fs::create_dir_all(&ctx2).unwrap();
    fs::write(
        ctx2.join("Dockerfile"),
        "FROM localhost/busybox:test\nRUN echo second > /msg\n",
    )
    .unwrap();
    let file = work.path().join("digest.txt");
    let (t1, t2) = (format!("{host}/built:a"), format!("{host}/built:b"));
    let out = ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &t1,
            "-t",
            &t2,
            "--push",
            "--digest-file",
            file.to_str().unwrap(),
            ctx2.to_str().unwrap(),
        ],
    ));
    let built = last_line(&out);
    assert_eq!(fs::read_to_string(&file).unwrap(), built);
    assert!(out.contains(&format!("a: digest: {built}")), "{out}");
    assert!(out.contains(&format!("b: digest: {built}")), "{out}");
    assert_eq!(skopeo_digest(&t2), built);
}

#[test]
fn skopeo_copied_images_pull_with_the_same_digest_oci_and_docker_v2s2() {
    if !can_build() || !have_tool("skopeo") {
        return;
    }
    let Some(reg) = registry(RegistryOptions::default()) else {
        return;
    };
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_base(&root, work.path());
    let layout = work.path().join("layout");
    ok(&rbuild(
        &root,
        &[
            "save",
            "localhost/busybox:test",
            "-o",
            layout.to_str().unwrap(),
        ],
    ));
    for (name, format) in [("oci", "oci"), ("docker", "v2s2")] {
        let dest = format!("{host}/sk-{name}:1");
        sh(Command::new("skopeo").args([
            "copy",
            "--dest-tls-verify=false",
            "--format",
            format,
            &format!("oci:{}:test", layout.display()),
            &format!("docker://{dest}"),
        ]));
        let expected = skopeo_digest(&dest);
        let fresh = work.path().join(format!("pull-{name}"));
        // The registry flags parse as podman's and docker's (loopback is plain HTTP anyway).
        let out = ok(&rbuild(
            &fresh,
            &[
                "pull",
                "--tls-verify=false",
                "--insecure-registry",
                &host,
                &dest,
            ],
        ));
        assert_eq!(pulled_digest(&out), expected, "{format}: {out}");
        let inspect: serde_json::Value =
            serde_json::from_str(&ok(&rbuild(&fresh, &["inspect", &dest]))).unwrap();
        assert_eq!(inspect["digest"], expected.as_str());
        if format == "v2s2" {
            assert_eq!(
                inspect["manifest"]["mediaType"],
                "application/vnd.docker.distribution.manifest.v2+json"
            );
        }
        let run = ok(&rbuild(&fresh, &["run", &dest, "--", "echo", "ran"]));
        assert_eq!(run, "ran\n", "{format}");
    }
}

#[test]
fn login_checks_the_password_keeps_it_secret_and_logout_forgets_it() {
    if !can_build() || !have_tool("htpasswd") {
        return;
    }
    let password = "s3cret-Pa55word";
    let Some(reg) = registry(RegistryOptions::default().htpasswd("tester", password)) else {
        return;
    };
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let docker_config = work.path().join("docker");
    let env: &[(&str, &Path)] = &[("DOCKER_CONFIG", &docker_config), ("HOME", work.path())];
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    fs::write(ctx.join("f"), "x\n").unwrap();
    let image = format!("{host}/private:1");
    ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &image,
            ctx.to_str().unwrap(),
        ],
    ));
    let config = docker_config.join("config.json");
    let secret_free = |o: &Output| {
        assert!(
            !stdout(o).contains(password) && !stderr(o).contains(password),
            "the password was printed:\n{}\n{}",
            stdout(o),
            stderr(o)
        );
    };

    // Not logged in: a clear error naming the registry and what to do.
    let o = rbuild_with(&root, &["push", &image], env, None);
    let err = fails(&o);
    assert!(err.contains("unauthorized"), "{err}");
    assert!(err.contains(&format!("rbuild login {host}")), "{err}");

    // Wrong password: refused, nothing stored, the attempted password not echoed.
    let wrong = "not-the-Pa55word";
    let o = rbuild_with(
        &root,
        &["login", &host, "-u", "tester", "--password-stdin"],
        env,
        Some(&format!("{wrong}\n")),
    );
    let err = fails(&o);
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(!err.contains(wrong) && !stdout(&o).contains(wrong), "{err}");
    assert!(!config.exists(), "a failed login wrote config.json");

    // Right password: verified, stored with mode 0600, never printed.
    let o = rbuild_with(
        &root,
        &["login", &host, "-u", "tester", "--password-stdin"],
        env,
        Some(&format!("{password}\n")),
    );
    assert!(ok(&o).contains("Login Succeeded"));
    secret_free(&o);
    let mode = fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config.json mode");
    let cfg: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(cfg["auths"][host.as_str()]["auth"].is_string(), "{cfg}");

    // The stored credentials are used.
    let o = rbuild_with(&root, &["push", &image], env, None);
    ok(&o);
    secret_free(&o);
    let o = rbuild_with(&root, &["ls", &format!("{host}/private")], env, None);
    assert_eq!(ok(&o), "1\n");

    // Logout forgets them; the registry refuses again.
    let o = rbuild_with(&root, &["logout", &host], env, None);
    assert!(ok(&o).contains(&format!("Removing login credentials for {host}")));
    let cfg: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(cfg["auths"].get(host.as_str()).is_none(), "{cfg}");
    let o = rbuild_with(&root, &["logout", &host], env, None);
    assert!(ok(&o).contains("Not logged in"));
    fails(&rbuild_with(
        &root,
        &["ls", &format!("{host}/private")],
        env,
        None,
    ));
}
