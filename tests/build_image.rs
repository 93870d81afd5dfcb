//! `rbuild build` end to end: a busybox base made by rbuild, an app image on it, checked with
//! skopeo and umoci; cache, errors, save formats, run, rmi and prune.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::support::*;

const APP_DOCKERFILE: &str = r#"FROM localhost/busybox:test
ARG GREETING=hello
RUN mkdir -p /app && echo "$GREETING from rbuild" > /app/greeting && echo temp > /app/scratch.txt
COPY --chown=1000:1000 . /src
COPY --chmod=0750 tool.sh /usr/local/bin/tool
RUN find /src -type f | wc -l > /app/count && rm /app/scratch.txt
ENV APP_MODE=production PATH=/usr/local/bin:/usr/bin:/bin
WORKDIR /app
LABEL org.example.team=build
EXPOSE 8080
USER app
CMD ["sh", "-c", "cat /app/greeting; echo mode=$APP_MODE; pwd; id -u"]
"#;

fn write_app(ctx: &Path) {
    fs::create_dir_all(ctx.join("sub/deep")).unwrap();
    fs::write(ctx.join("Dockerfile"), APP_DOCKERFILE).unwrap();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(ctx.join("sub/b.txt"), "b\n").unwrap();
    fs::write(ctx.join("sub/deep/c.txt"), "c\n").unwrap();
    fs::write(ctx.join("secret.key"), "do not ship\n").unwrap();
    fs::write(ctx.join("tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "*.key\n").unwrap();
}

/// Unpacks a saved OCI layout with umoci (after skopeo normalises it) and returns the rootfs.
fn unpack_with_umoci(layout: &Path, work: &Path) -> std::path::PathBuf {
    let norm = work.join("norm");
    sh(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}", layout.display()),
        &format!("oci:{}:x", norm.display()),
    ]));
    let bundle = work.join("bundle");
    sh(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:x", norm.display()),
        bundle.to_str().unwrap(),
    ]));
    bundle.join("rootfs")
}

#[test]
fn builds_an_app_image_that_skopeo_and_umoci_read() {
    if !can_build() || !have_tool("skopeo") || !have_tool("umoci") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_base(&root, work.path());
    let ctx = work.path().join("app");
    write_app(&ctx);

    let out = ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "localhost/app:1",
            ctx.to_str().unwrap(),
        ],
    ));
    let digest = last_line(&out);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "last line is the digest: {out}"
    );
    assert!(
        out.contains("[3/12] RUN mkdir -p /app"),
        "step lines: {out}"
    );

    // The image runs, with the config applied (CMD, Env, WorkingDir, User).
    let run = ok(&rbuild(&root, &["run", "localhost/app:1"]));
    assert_eq!(run, "hello from rbuild\nmode=production\n/app\n1000\n");
    // Exit codes pass through.
    let failing = rbuild(
        &root,
        &["run", "localhost/app:1", "--", "sh", "-c", "exit 7"],
    );
    assert_eq!(failing.status.code(), Some(7));

    // skopeo reads the store itself as an OCI layout, by the full reference name.
    let raw: serde_json::Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        &format!("oci:{}:localhost/app:1", root.display()),
    ])))
    .unwrap();
    assert_eq!(raw["Digest"], digest.as_str());
    let saved = work.path().join("saved");
    ok(&rbuild(
        &root,
        &["save", "localhost/app:1", "-o", saved.to_str().unwrap()],
    ));
    let cfg: serde_json::Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci:{}:1", saved.display()),
    ])))
    .unwrap();
    let c = &cfg["config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "app");
    assert_eq!(c["Labels"]["org.example.team"], "build");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some());
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "APP_MODE=production")
    );
    assert_eq!(c["Cmd"][0], "sh");
    // Steps that change no files add history but no layer.
    let history = cfg["history"].as_array().unwrap();
    let layers = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(layers, cfg["rootfs"]["diff_ids"].as_array().unwrap().len());
    assert!(history.iter().any(|h| {
        h["created_by"]
            .as_str()
            .unwrap_or("")
            .starts_with("ENV APP_MODE")
            && h["empty_layer"] == true
    }));

    // umoci sees exactly the expected files.
    let rootfs = unpack_with_umoci(&saved, work.path());
    assert_eq!(
        fs::read_to_string(rootfs.join("app/greeting")).unwrap(),
        "hello from rbuild\n"
    );
    assert!(
        !rootfs.join("app/scratch.txt").exists(),
        "a file deleted in a later step is absent"
    );
    assert!(
        !rootfs.join("src/secret.key").exists(),
        ".dockerignore'd files are absent"
    );
    assert!(rootfs.join("src/sub/deep/c.txt").is_file());
    // Dockerfile, .dockerignore, a.txt, sub/b.txt, sub/deep/c.txt, tool.sh
    assert_eq!(
        fs::read_to_string(rootfs.join("app/count")).unwrap().trim(),
        "6"
    );
    let md = fs::symlink_metadata(rootfs.join("src/a.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000), "--chown applied");
    let tool = fs::metadata(rootfs.join("usr/local/bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o750, "--chmod applied");
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    // A rebuild with nothing changed reuses every step and gives the same digest.
    let again = ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "localhost/app:1",
            ctx.to_str().unwrap(),
        ],
    ));
    assert_eq!(last_line(&again), digest);
    assert!(
        !again
            .lines()
            .any(|l| l.starts_with('[') && !l.contains("] FROM ")),
        "every step cached: {again}"
    );
    assert!(again.contains("CACHED [3/12] RUN"), "{again}");

    // A changed build arg invalidates from the first step that sees it.
    let arg = ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "--build-arg",
            "GREETING=hi",
            "-t",
            "localhost/app:2",
            ctx.to_str().unwrap(),
        ],
    ));
    assert!(arg.contains("CACHED [2/12] ARG"), "{arg}");
    assert!(arg.lines().any(|l| l.starts_with("[3/12] RUN")), "{arg}");
    assert_ne!(last_line(&arg), digest);

    // --no-cache runs everything again.
    let nc = ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "--no-cache",
            "-t",
            "localhost/app:3",
            ctx.to_str().unwrap(),
        ],
    ));
    assert!(!nc.contains("CACHED"), "{nc}");
}

#[test]
fn a_dockerfile_error_names_file_and_line_and_leaves_the_store_alone() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY a /a\nFROBNICATE now\n",
    )
    .unwrap();
    let o = rbuild(
        &root,
        &["build", "-t", "localhost/bad:1", ctx.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.to_lowercase().contains("frobnicate"), "{err}");
    let blobs = root.join("blobs/sha256");
    assert!(
        !blobs.exists() || fs::read_dir(&blobs).unwrap().count() == 0,
        "nothing new in the store"
    );
    assert!(!ok(&rbuild(&root, &["images"])).contains("localhost/bad"));
}

#[test]
fn copy_of_a_missing_or_ignored_source_names_it() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("present.txt"), "x").unwrap();
    fs::write(ctx.join("hidden.txt"), "x").unwrap();
    fs::write(ctx.join(".dockerignore"), "hidden.txt\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY present.txt /p\nCOPY nothere.txt /n\n",
    )
    .unwrap();
    let o = rbuild(&root, &["build", ctx.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Dockerfile:3") && stderr(&o).contains("nothere.txt"),
        "{}",
        stderr(&o)
    );
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY hidden.txt /h\n").unwrap();
    let o = rbuild(&root, &["build", ctx.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("hidden.txt") && stderr(&o).contains(".dockerignore"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_failing_run_shows_command_status_and_output_and_keeps_earlier_steps_cached() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "ctx",
        "FROM localhost/busybox:test\nRUN echo first > /first\nRUN echo 'about to fail'; exit 3\n",
    );
    let o = rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "localhost/fail:1",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(
        err.contains("exit 3") && err.contains("exit code 3"),
        "{err}"
    );
    assert!(err.contains("about to fail"), "{err}");
    assert!(
        !ok(&rbuild(&root, &["images"])).contains("localhost/fail"),
        "no tag on failure"
    );
    let again = rbuild(
        &root,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    assert!(
        stdout(&again).contains("CACHED [2/3] RUN echo first"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn save_formats_rmi_and_prune() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "ctx",
        "FROM localhost/busybox:test\nRUN echo hi > /hi\n",
    );
    let digest = last_line(&ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "localhost/s:1",
            ctx.to_str().unwrap(),
        ],
    )));

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&rbuild(&root, &["inspect", "localhost/s:1"]))).unwrap();
    assert_eq!(inspect["digest"], digest.as_str());
    assert_eq!(inspect["manifest"]["layers"].as_array().unwrap().len(), 4);
    assert_eq!(
        inspect["config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    for format in ["oci-archive", "docker-archive"] {
        let out = work.path().join(format!("img.{format}.tar"));
        ok(&rbuild(
            &root,
            &[
                "save",
                "localhost/s:1",
                "-o",
                out.to_str().unwrap(),
                "--format",
                format,
            ],
        ));
        let listing = sh(Command::new("tar").arg("-tf").arg(&out));
        assert!(
            listing.contains("index.json") && listing.contains("oci-layout"),
            "{listing}"
        );
        assert_eq!(
            listing.contains("manifest.json"),
            format == "docker-archive",
            "{listing}"
        );
        if format == "oci-archive" && have_tool("skopeo") {
            sh(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", out.display())]));
        }
        if format == "docker-archive" && have_tool("skopeo") {
            sh(Command::new("skopeo")
                .args(["inspect", &format!("docker-archive:{}", out.display())]));
        }
    }

    let images = ok(&rbuild(&root, &["images"]));
    assert!(
        images.contains("localhost/s") && images.contains("REPOSITORY"),
        "{images}"
    );
    let blob_count = || fs::read_dir(root.join("blobs/sha256")).unwrap().count();
    let before = blob_count();
    ok(&rbuild(&root, &["rmi", "localhost/s:1"]));
    assert!(!ok(&rbuild(&root, &["images"])).contains("localhost/s "));
    ok(&rbuild(&root, &["prune"]));
    assert!(
        blob_count() < before,
        "prune removed the untagged image's blobs"
    );
    // The base image is still whole: it builds on.
    let o = ok(&rbuild(
        &root,
        &["run", "localhost/busybox:test", "--", "echo", "still here"],
    ));
    assert_eq!(o, "still here\n");
}
