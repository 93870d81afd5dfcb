//! The rest of what a real Dockerfile uses: multi-stage builds (independent stages at the same
//! time), heredocs, `RUN --mount`, ADD of archives, ONBUILD, HEALTHCHECK, reproducible builds,
//! zstd layers, Dockerfiles and contexts on stdin. Images are checked by running them and with
//! skopeo/umoci.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> String {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    ok(&rbuild(root, &args))
}

fn cat(root: &Path, image: &str, file: &str) -> String {
    ok(&rbuild(root, &["run", image, "--", "cat", file]))
}

#[test]
fn independent_stages_run_at_the_same_time_and_unused_ones_are_skipped() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    // Each of a and b waits (up to 10 s) for the other's marker in a shared cache mount: both
    // can only succeed when they run concurrently.
    let wait = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,target=/sync,id=sync-test sh -c 'touch /sync/{me}; i=0; while [ ! -e /sync/{other} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; [ -e /sync/{other} ] && echo {me}-saw-{other} > /{me}.txt'"
        )
    };
    let df = format!(
        "FROM localhost/busybox:test AS a\n{}\nFROM localhost/busybox:test AS b\n{}\n\
         FROM localhost/busybox:test AS unused\nRUN exit 1\n\
         FROM localhost/busybox:test\nCOPY --from=a /a.txt /out/a.txt\nCOPY --from=b /b.txt /out/\n\
         COPY --from=localhost/busybox:test /etc/passwd /out/passwd\n\
         RUN cat /out/a.txt /out/b.txt > /out/both\nCMD [\"cat\", \"/out/both\"]\n",
        wait("a", "b"),
        wait("b", "a")
    );
    let ctx = context_with(work.path(), "multi", &df);
    let out = build(&root, &ctx, &["-t", "localhost/multi:1"]);
    assert!(
        out.contains("[a 2/2] RUN") && out.contains("[b 2/2] RUN"),
        "{out}"
    );
    assert!(
        !out.contains("[unused"),
        "the unused stage is not built: {out}"
    );
    let run = ok(&rbuild(&root, &["run", "localhost/multi:1"]));
    assert_eq!(run, "a-saw-b\nb-saw-a\n");
    assert!(cat(&root, "localhost/multi:1", "/out/passwd").starts_with("root:"));
    // --target builds just that stage.
    let t = build(&root, &ctx, &["--target", "a", "-t", "localhost/multi:a"]);
    assert!(!t.contains("[b "), "{t}");
    assert_eq!(cat(&root, "localhost/multi:a", "/a.txt"), "a-saw-b\n");
}

#[test]
fn heredocs_run_as_scripts_and_become_files() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let df = [
        "FROM localhost/busybox:test",
        "ARG NAME=world",
        "RUN <<EOF",
        "echo \"hello $NAME\" > /greeting",
        "EOF",
        "RUN <<EOF",
        "#!/bin/sh",
        "echo \"from a shebang script: $0\" > /shebang",
        "EOF",
        "COPY <<EOF /etc/app.conf",
        "name=${NAME}",
        "EOF",
        "COPY <<'EOF' /etc/raw.conf",
        "name=${NAME}",
        "EOF",
        "RUN cat <<A > /a.txt && cat <<B > /b.txt",
        "first",
        "A",
        "second",
        "B",
        "",
    ]
    .join("\n");
    let ctx = context_with(work.path(), "heredoc", &df);
    build(&root, &ctx, &["-t", "localhost/heredoc:1"]);
    let img = "localhost/heredoc:1";
    assert_eq!(cat(&root, img, "/greeting"), "hello world\n");
    assert_eq!(
        cat(&root, img, "/shebang"),
        "from a shebang script: /dev/pipes/EOF\n"
    );
    assert_eq!(cat(&root, img, "/etc/app.conf"), "name=world\n");
    assert_eq!(
        cat(&root, img, "/etc/raw.conf"),
        "name=${NAME}\n",
        "a quoted delimiter turns expansion off"
    );
    assert_eq!(cat(&root, img, "/a.txt"), "first\n");
    assert_eq!(cat(&root, img, "/b.txt"), "second\n");
}

#[test]
fn run_mounts_cache_secret_bind_tmpfs_and_no_network() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let secret_value = "s3cr3t-value-not-in-layers";
    let secret_file = work.path().join("token.txt");
    fs::write(&secret_file, secret_value).unwrap();
    let df = [
        "FROM localhost/busybox:test",
        "RUN --mount=type=cache,target=/cache sh -c 'echo run >> /cache/log; wc -l < /cache/log > /cache-count'",
        "RUN --mount=type=secret,id=tok,required=true wc -c < /run/secrets/tok > /secret-len",
        "RUN --mount=type=secret,id=tok,env=TOKEN sh -c 'echo ${#TOKEN} > /secret-env-len'",
        "RUN --mount=type=bind,source=data,target=/data cat /data/x > /copied",
        "RUN --mount=type=tmpfs,target=/scratch sh -c 'touch /scratch/f && ls /scratch > /tmpfs-list'",
        "RUN --network=none sh -c 'grep -c : /proc/net/dev > /netdevs'",
        "",
    ]
    .join("\n");
    let ctx = context_with(work.path(), "mounts", &df);
    fs::create_dir_all(ctx.join("data")).unwrap();
    fs::write(ctx.join("data/x"), "bound\n").unwrap();
    let secret_arg = format!("id=tok,src={}", secret_file.display());
    let out = build(
        &root,
        &ctx,
        &["--secret", &secret_arg, "-t", "localhost/mounts:1"],
    );
    assert!(!out.contains(secret_value), "secret printed: {out}");
    let img = "localhost/mounts:1";
    assert_eq!(cat(&root, img, "/cache-count").trim(), "1");
    assert_eq!(
        cat(&root, img, "/secret-len").trim(),
        secret_value.len().to_string()
    );
    assert_eq!(
        cat(&root, img, "/secret-env-len").trim(),
        secret_value.len().to_string()
    );
    assert_eq!(cat(&root, img, "/copied"), "bound\n");
    assert_eq!(cat(&root, img, "/tmpfs-list"), "f\n");
    assert_eq!(
        cat(&root, img, "/netdevs").trim(),
        "1",
        "only lo without a network"
    );
    let leak = ok(&rbuild(
        &root,
        &[
            "run",
            img,
            "--",
            "sh",
            "-c",
            "ls /run/secrets /scratch /cache 2>&1; true",
        ],
    ));
    assert!(!leak.contains("tok"), "no secret file in the image: {leak}");
    // The secret is in no file of the store: layers, configs, history, cache entries.
    let grep = Command::new("grep")
        .args(["-rl", secret_value])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "secret found in {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    // The cache mount persists across builds: a --no-cache rebuild sees the first run's line.
    build(
        &root,
        &ctx,
        &[
            "--no-cache",
            "--secret",
            &secret_arg,
            "-t",
            "localhost/mounts:2",
        ],
    );
    assert_eq!(cat(&root, "localhost/mounts:2", "/cache-count").trim(), "2");
    // A required secret that is missing is a clear error that names it.
    let o = rbuild(&root, &["build", "--no-cache", ctx.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("secret tok is required"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn add_extracts_local_archives_and_copies_other_files() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "add",
        "FROM localhost/busybox:test\nADD app.tar.gz /opt/\nADD notes.txt /opt/notes.txt\n",
    );
    let src = work.path().join("tree");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    sh(Command::new("tar")
        .arg("-czf")
        .arg(ctx.join("app.tar.gz"))
        .arg("-C")
        .arg(&src)
        .arg("."));
    fs::write(ctx.join("notes.txt"), "plain\n").unwrap();
    build(&root, &ctx, &["-t", "localhost/add:1"]);
    let ls = ok(&rbuild(
        &root,
        &[
            "run",
            "localhost/add:1",
            "--",
            "sh",
            "-c",
            "cat /opt/bin/tool /opt/notes.txt; ls /opt",
        ],
    ));
    assert_eq!(ls, "#!/bin/sh\necho tool\nplain\nbin\nnotes.txt\n");
}

#[test]
fn onbuild_triggers_run_in_the_child_and_healthcheck_needs_the_docker_format() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let parent = context_with(
        work.path(),
        "parent",
        "FROM localhost/busybox:test\nONBUILD RUN echo triggered > /onbuild\nHEALTHCHECK --interval=5s CMD [\"true\"]\n",
    );
    build(
        &root,
        &parent,
        &["--format", "docker", "-t", "localhost/parent:1"],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&rbuild(&root, &["inspect", "localhost/parent:1"]))).unwrap();
    assert_eq!(
        inspect["manifest"]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let c = &inspect["config"]["config"];
    assert_eq!(c["Healthcheck"]["Test"][0], "CMD");
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(c["OnBuild"][0], "RUN echo triggered > /onbuild");
    let child = context_with(
        work.path(),
        "child",
        "FROM localhost/parent:1\nRUN cat /onbuild\n",
    );
    let out = build(&root, &child, &["-t", "localhost/child:1"]);
    assert!(out.contains("triggered"), "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&rbuild(&root, &["inspect", "localhost/child:1"]))).unwrap();
    assert!(
        inspect["config"]["config"].get("OnBuild").is_none(),
        "triggers are not inherited"
    );
    // OCI format: HEALTHCHECK dropped with buildah's warning.
    let o = rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "localhost/parent:oci",
            parent.to_str().unwrap(),
        ],
    );
    assert!(
        stderr(&o).contains("HEALTHCHECK is not supported for OCI image format"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn reproducible_builds_give_the_same_digest_in_two_roots() {
    if !can_build() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let df = "FROM localhost/busybox:test\nRUN echo built > /built && mkdir -p /var/app\nCOPY . /src\nCMD [\"cat\", \"/built\"]\n";
    let mut digests = Vec::new();
    for name in ["one", "two"] {
        let root = work.path().join(name);
        let base = work.path().join(format!("base-{name}"));
        rbuild_testkit::busybox::write_context(&base).unwrap();
        let epoch = ["--source-date-epoch", "1700000000"];
        build(
            &root,
            &base,
            &[epoch[0], epoch[1], "-t", "localhost/busybox:test"],
        );
        let ctx = context_with(work.path(), &format!("ctx-{name}"), df);
        fs::write(ctx.join("file.txt"), "same content\n").unwrap();
        let out = build(
            &root,
            &ctx,
            &[epoch[0], epoch[1], "-t", "localhost/repro:1"],
        );
        digests.push(last_line(&out));
    }
    eprintln!("reproducible digests: {} {}", digests[0], digests[1]);
    assert_eq!(digests[0], digests[1], "same inputs, same digest");
}

#[test]
fn zstd_layers_are_readable_by_skopeo_and_umoci() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    if !have_tool("skopeo") || !have_tool("umoci") {
        return;
    }
    let ctx = context_with(
        work.path(),
        "zstd",
        "FROM localhost/busybox:test\nRUN echo zstd > /z.txt\n",
    );
    build(
        &root,
        &ctx,
        &["--compression", "zstd", "-t", "localhost/zstd:1"],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&rbuild(&root, &["inspect", "localhost/zstd:1"]))).unwrap();
    let layers = inspect["manifest"]["layers"].as_array().unwrap();
    assert_eq!(
        layers.last().unwrap()["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let saved = work.path().join("saved");
    ok(&rbuild(
        &root,
        &["save", "localhost/zstd:1", "-o", saved.to_str().unwrap()],
    ));
    sh(Command::new("skopeo").args(["inspect", &format!("oci:{}:1", saved.display())]));
    // umoci 0.4.7 predates zstd layers ("blob is not correct mediatype"): skopeo reads them and
    // recompresses to gzip, and umoci then unpacks that — both tools see the same files.
    let norm = work.path().join("norm");
    sh(Command::new("skopeo").args([
        "copy",
        "--dest-compress",
        "--dest-compress-format",
        "gzip",
        &format!("oci:{}:1", saved.display()),
        &format!("oci:{}:x", norm.display()),
    ]));
    let bundle = work.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:x", norm.display())])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/z.txt")).unwrap(),
        "zstd\n"
    );
}

fn build_with_stdin(root: &Path, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn dockerfile_and_context_from_stdin_and_foreign_platforms_refused() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = work.path().join("stdin-ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "from stdin context\n").unwrap();
    // -f -
    let o = build_with_stdin(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-f",
            "-",
            "-t",
            "localhost/stdin:1",
            ctx.to_str().unwrap(),
        ],
        b"FROM localhost/busybox:test\nCOPY hello.txt /\n",
    );
    ok(&o);
    assert_eq!(
        cat(&root, "localhost/stdin:1", "/hello.txt"),
        "from stdin context\n"
    );
    // `rbuild build -` with a tar of the context on stdin.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:test\nCOPY hello.txt /tarred.txt\n",
    )
    .unwrap();
    let tar = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(&ctx)
        .arg(".")
        .output()
        .unwrap();
    let o = build_with_stdin(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "localhost/stdin:2",
            "-",
        ],
        &tar.stdout,
    );
    ok(&o);
    assert_eq!(
        cat(&root, "localhost/stdin:2", "/tarred.txt"),
        "from stdin context\n"
    );
    // Another platform whose base image is single-platform amd64: a clear refusal before any
    // step (no s390x emulator, or the base has no s390x image).
    let o = rbuild(
        &root,
        &["build", "--platform", "linux/s390x", ctx.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("RUN for linux/s390x needs an emulator")
            || err.contains("is for linux/amd64, not linux/s390x"),
        "{err}"
    );
}

/// Serves `body` over HTTP on a loopback port for `requests` requests; returns the URL.
fn serve_once(body: &'static [u8], requests: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    format!("http://{addr}/files/tool.txt")
}

#[test]
fn add_downloads_urls_with_checksums_and_copy_excludes_and_keeps_parents() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let body: &'static [u8] = b"downloaded\n";
    let url = serve_once(body, 2);
    let sum = format!("sha256:{}", rbuild::Digest::sha256_of(body).hex());
    let df = format!(
        "FROM localhost/busybox:test\n\
         ADD --checksum={sum} {url} /opt/\n\
         COPY --exclude=*.tmp src/ /app/\n\
         COPY --parents src/deep/x.txt /p/\n"
    );
    let ctx = context_with(work.path(), "add-url", &df);
    fs::create_dir_all(ctx.join("src/deep")).unwrap();
    fs::write(ctx.join("src/keep.txt"), "keep\n").unwrap();
    fs::write(ctx.join("src/drop.tmp"), "drop\n").unwrap();
    fs::write(ctx.join("src/deep/x.txt"), "x\n").unwrap();
    build(&root, &ctx, &["-t", "localhost/addurl:1"]);
    let img = "localhost/addurl:1";
    assert_eq!(cat(&root, img, "/opt/tool.txt"), "downloaded\n");
    let mode = ok(&rbuild(
        &root,
        &["run", img, "--", "stat", "-c", "%a", "/opt/tool.txt"],
    ));
    assert_eq!(mode.trim(), "600", "downloaded files are 0600 as in docker");
    let ls = ok(&rbuild(
        &root,
        &[
            "run",
            img,
            "--",
            "sh",
            "-c",
            "ls /app; cat /p/src/deep/x.txt",
        ],
    ));
    assert_eq!(
        ls, "deep\nkeep.txt\nx\n",
        "*.tmp excluded; --parents keeps src/deep"
    );
    // A wrong checksum is refused, naming both digests.
    let bad = df.replace(&sum, &format!("sha256:{}", "0".repeat(64)));
    fs::write(ctx.join("Dockerfile"), bad).unwrap();
    let o = rbuild(
        &root,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
}
