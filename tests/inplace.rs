//! Building inside an unprivileged container (kaniko's model): `rbuild executor` in a container
//! of a private Docker engine, without `--privileged` or added capabilities (docker's default
//! capabilities and seccomp profile: no mount, no namespaces), on the host network to reach the
//! test registry on loopback. The in-place executor is picked by detection, and the image must
//! be the one a rootful build makes.
//!
//! The test image holds this build's (dynamically linked) rbuild with the libraries `ldd` lists,
//! started through their own loader, and a busybox; `scripts/executor-image` makes the static
//! product images the same way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testkit::docker::Dockerd;
use rbuild_testkit::registry::{Registry, RegistryOptions};

use crate::support::*;

const IMAGE: &str = "localhost/rbuild/executor-test:1";

/// The context of the test image: rbuild, its libraries, busybox.
fn write_executor_context(ctx: &Path) {
    fs::create_dir_all(ctx.join("lib")).unwrap();
    fs::copy(bin(), ctx.join("rbuild")).unwrap();
    let ldd = sh(Command::new("ldd").arg(bin()));
    let mut loader = None;
    for line in ldd.lines() {
        // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        let Some(path) = path else { continue };
        let name = path.file_name().unwrap().to_owned();
        fs::copy(&path, ctx.join("lib").join(&name)).unwrap();
        if name.to_string_lossy().starts_with("ld-linux") {
            loader = Some(name.to_string_lossy().into_owned());
        }
    }
    let loader = loader.expect("ldd names the dynamic loader");
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             COPY rbuild /rbuild/rbuild\n\
             COPY lib/ /rbuild/lib/\n\
             COPY busybox /busybox/busybox\n\
             RUN [\"/busybox/busybox\", \"--install\", \"/busybox\"]\n\
             ENV RBUILD_ROOT=/rbuild/store PATH=/busybox:/rbuild HOME=/root\n\
             VOLUME [\"/rbuild/store\"]\n\
             ENTRYPOINT [\"/rbuild/lib/{loader}\", \"--library-path\", \"/rbuild/lib\", \"/rbuild/rbuild\"]\n"
        ),
    )
    .unwrap();
}

/// The multi-stage app: a chown, a deleted file (whiteout), a directory replaced by a file, an
/// opaque directory, COPY --from, a context file.
fn write_app(ctx: &Path, base: &str) {
    fs::create_dir_all(ctx).unwrap();
    fs::write(ctx.join("app.txt"), "from the context\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS build\n\
             RUN mkdir -p /out && echo built > /out/artifact && chown 1000:1000 /out/artifact\n\
             RUN rm /etc/group && mkdir -p /data/sub && echo x > /data/sub/f\n\
             RUN rm -rf /data && echo now-a-file > /data\n\
             FROM {base}\n\
             COPY --from=build /out/artifact /srv/artifact\n\
             COPY --from=build /data /srv/data\n\
             COPY app.txt /srv/app.txt\n\
             RUN rm -rf /home && mkdir /home && echo fresh > /home/only\n\
             RUN cat /srv/data /srv/app.txt > /srv/combined\n"
        ),
    )
    .unwrap();
}

/// `docker run` of the executor image, unprivileged, on the host network, with the context
/// and an output directory mounted.
fn run_executor(daemon: &Dockerd, ctx: &Path, out: &Path, args: &[&str]) -> Output {
    daemon
        .docker()
        .args(["run", "--rm", "--network", "host"])
        .arg("-v")
        .arg(format!("{}:/workspace:ro", ctx.display()))
        .arg("-v")
        .arg(format!("{}:/results", out.display()))
        .arg(IMAGE)
        .arg("executor")
        .args(["--context", "dir:///workspace", "--ignore-path", "/rbuild"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_executor_builds_in_an_unprivileged_container_the_image_a_rootful_build_makes() {
    if !can_build() || !have_tool("dockerd") || !have_tool("docker-registry") || !have_tool("ldd") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let registry = Registry::start(RegistryOptions::default()).expect("start the registry");
    let host = registry.host();
    let root = w.join("root");
    build_base(&root, w);
    let base = format!("{host}/base/busybox:1");
    ok(&rbuild(&root, &["push", "localhost/busybox:test", &base]));

    // The executor image, loaded into a private engine.
    let image_ctx = w.join("image-ctx");
    write_executor_context(&image_ctx);
    ok(&rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            IMAGE,
            image_ctx.to_str().unwrap(),
        ],
    ));
    let tar = w.join("executor.tar");
    ok(&rbuild(
        &root,
        &[
            "save",
            IMAGE,
            "-o",
            tar.to_str().unwrap(),
            "--format",
            "docker-archive",
        ],
    ));
    let daemon = Dockerd::start().expect("start a private dockerd");
    sh(daemon.docker().args(["load", "-i"]).arg(&tar));

    let ctx = w.join("app");
    write_app(&ctx, &base);
    let out = w.join("out");
    fs::create_dir_all(&out).unwrap();
    let dest = format!("{host}/app/pod:1");
    let run = run_executor(
        &daemon,
        &ctx,
        &out,
        &[
            "--destination",
            &dest,
            "--reproducible",
            "--digest-file",
            "/results/digest",
        ],
    );
    let text = format!("{}{}", stdout(&run), stderr(&run));
    assert!(run.status.success(), "executor failed:\n{text}");
    let pod_digest = fs::read_to_string(out.join("digest")).unwrap();

    // The rootful build of the same Dockerfile, same base bytes.
    let rootful = last_line(&ok(&rbuild(
        &w.join("rootful-root"),
        &[
            "build",
            "--progress",
            "plain",
            "--source-date-epoch",
            "0",
            ctx.to_str().unwrap(),
        ],
    )));
    if pod_digest != rootful {
        let pod_layout = w.join("pod-layout");
        sh(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{dest}"),
            &format!("oci:{}:pod", pod_layout.display()),
        ]));
        panic!(
            "pod {pod_digest} and rootful {rootful} differ:\n--- pod\n{}\n--- rootful\n{}\n{text}",
            layer_listing(&pod_layout),
            layer_listing(&w.join("rootful-root"))
        );
    }
    let inspect = sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ]));
    assert!(inspect.contains(&pod_digest), "{inspect}");

    // With a cache repository, a second pod executes no RUN.
    let cache = format!("{host}/app/cache");
    let cached = [
        "--no-push",
        "--cache=true",
        "--cache-repo",
        cache.as_str(),
        "--reproducible",
    ];
    let first = run_executor(&daemon, &ctx, &out, &cached);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = run_executor(&daemon, &ctx, &out, &cached);
    let text = format!("{}{}", stdout(&second), stderr(&second));
    assert!(second.status.success(), "{text}");
    let ran: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("] RUN "))
        .collect();
    assert!(ran.is_empty(), "steps ran again: {ran:?}\n{text}");
    assert!(text.contains("CACHED"), "{text}");
}

/// Every layer of every image in an OCI layout, as `tar -tv` lists it (for a failure message).
fn layer_listing(layout: &Path) -> String {
    let mut out = String::new();
    let blobs = layout.join("blobs/sha256");
    let mut names: Vec<_> = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for blob in names {
        let list = Command::new("tar")
            .arg("-tvzf")
            .arg(&blob)
            .arg("--full-time")
            .output()
            .unwrap();
        if list.status.success() {
            out.push_str(&format!(
                "{}\n{}",
                blob.display(),
                String::from_utf8_lossy(&list.stdout)
            ));
        }
    }
    out
}

#[test]
fn the_gitlab_kubernetes_example_is_a_valid_pipeline_and_job() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("proj");
    fs::create_dir_all(&project).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gitlab-kubernetes");
    fs::copy(
        example.join(".gitlab-ci.yml"),
        project.join(".gitlab-ci.yml"),
    )
    .unwrap();
    git_commit_all(&project, "main", "example");
    let plan = ok(&rbuild_pipeline(work.path(), &project, &["plan"]));
    assert!(plan.contains("build-image"), "{plan}");
    // The Job manifest reads as a batch/v1 Job, unprivileged as the example says.
    let text = fs::read_to_string(example.join("job.yaml")).unwrap();
    let job: k8s_openapi::api::batch::v1::Job = serde_yaml::from_str(&text).unwrap();
    let spec = job.spec.unwrap().template.spec.unwrap();
    let container = &spec.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, None);
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let caps = security.capabilities.as_ref().unwrap();
    assert!(!caps.add.as_ref().unwrap().iter().any(|c| c == "SYS_ADMIN"));
    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/rbuild/store"), "{mounts:?}");
}
