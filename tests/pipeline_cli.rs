//! `rbuild pipeline plan|run` end to end: the example project (`examples/pipeline`, the seed's
//! pipeline shape) against the registry process and the fake Kubernetes API server, with the
//! `docker` and `deploy` commands rbuild puts on the jobs' PATH.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use rbuild_testkit::kube::FakeKube;
use rbuild_testkit::registry::{Registry, RegistryOptions};

use crate::support::*;

/// Copies a directory tree (files and directories only: the example has nothing else).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The example project checked into a fresh git repository named `shop` (so
/// `CI_PROJECT_NAME=shop`) on branch `master`; returns its directory.
fn example_project(work: &Path) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline");
    let project = work.join("shop");
    copy_tree(&example, &project);
    git_commit_all(&project, "master", "example");
    project
}

fn pipeline(work: &Path, project: &Path, args: &[&str]) -> Output {
    rbuild_pipeline(work, project, args)
}

#[test]
fn plan_selects_jobs_by_branch_like_gitlab() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let project = example_project(work.path());
    let plan = |branch: &str| {
        ok(&pipeline(
            work.path(),
            &project,
            &[
                "plan",
                "--branch",
                branch,
                "--var",
                "REGISTRY_HOST=r.example:5000",
            ],
        ))
    };
    assert_eq!(
        plan("master"),
        "base:\n  base image: no only: runs for every branch and tag (branch master)\n\
         build:\n  build image: no only: runs for every branch and tag (branch master)\n\
         test:\n  test image: no only: runs for every branch and tag (branch master)\n  \
         check sources: no only: runs for every branch and tag (branch master)\n\
         staging:\n  deploy to staging → env staging (staging): only: `master` matches branch master\n\
         skipped:\n  deploy to production (production): only: `production` does not match branch master\n"
    );
    let production = plan("production");
    assert!(
        production.contains("production:\n  deploy to production → env production (production)"),
        "{production}"
    );
    assert!(
        production.contains("  deploy to staging (staging): only: `master` does not match"),
        "{production}"
    );
    let feature = plan("feature/login");
    assert!(
        feature.contains("skipped:\n  deploy to staging"),
        "{feature}"
    );
    assert!(
        feature.contains("  deploy to production (production)"),
        "{feature}"
    );

    // `--job` selects one job; an unknown one is an error naming it.
    let one = ok(&pipeline(
        work.path(),
        &project,
        &["plan", "--job", "test image", "--var", "REGISTRY_HOST=r:1"],
    ));
    assert!(one.contains("test image"), "{one}");
    assert!(!one.contains("  build image:"), "{one}");
    let unknown = pipeline(work.path(), &project, &["plan", "--job", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no job named \"nope\""),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn failing_jobs_fail_the_pipeline_and_stop_later_stages() {
    if !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("p");
    fs::create_dir_all(&project).unwrap();
    fs::write(
        project.join(".gitlab-ci.yml"),
        "variables:\n  GREETING: hello\n\
         build:\n  stage: build\n  script:\n    - echo \"$GREETING token=$API_TOKEN\"\n    - exit 3\n\
         test:\n  stage: test\n  script:\n    - echo never\n",
    )
    .unwrap();
    sh(Command::new("git")
        .arg("-C")
        .arg(&project)
        .args(["init", "-q", "-b", "main"]));
    sh(Command::new("git").arg("-C").arg(&project).args([
        "-c",
        "user.name=CI",
        "-c",
        "user.email=ci@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    ]));
    let out = pipeline(
        work.path(),
        &project,
        &[
            "run",
            "--executor",
            "shell",
            "--var",
            "API_TOKEN=s3cr3t-value",
        ],
    );
    assert!(!out.status.success());
    let text = stdout(&out);
    // Secrets are masked in job output; the summary lists the skipped stage.
    assert!(text.contains("[build] hello token=[MASKED]"), "{text}");
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(!text.contains("never"), "{text}");
    assert!(text.contains("pipeline failed"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("test ") && l.contains("skipped")),
        "{text}"
    );
}

#[test]
fn example_pipeline_builds_tests_pushes_and_deploys_per_branch() {
    if !can_build() || !have_tool("docker-registry") || !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let project = example_project(work.path());
    let registry = Registry::start(RegistryOptions::default()).expect("start the registry");
    let host = registry.host();
    let kube = FakeKube::start().expect("start the fake API server");
    let old = format!("{host}/shop/shop:old");
    for env in ["staging", "production"] {
        for role in ["worker", "server"] {
            kube.add_deployment(
                "default",
                &format!("shop-{env}-{role}"),
                &[("app", &old)],
                2,
            );
        }
    }
    // As a GitLab secret variable often does, KUBECONFIG holds the file's content.
    let kubeconfig = kube.kubeconfig_yaml(None);
    let registry_var = format!("REGISTRY_HOST={host}");
    let kube_var = format!("KUBECONFIG={kubeconfig}");
    let run = |branch: &str| {
        let started = Instant::now();
        let out = pipeline(
            work.path(),
            &project,
            &[
                "run",
                "--branch",
                branch,
                "--var",
                &registry_var,
                "--var",
                &kube_var,
            ],
        );
        (out, started.elapsed())
    };

    let (first, first_time) = run("master");
    let text = ok(&first);
    let sha = sh(Command::new("git")
        .arg("-C")
        .arg(&project)
        .args(["rev-parse", "HEAD"]));
    let sha = sha.trim();
    for role in ["worker", "server"] {
        let name = format!("shop-staging-{role}");
        assert!(
            text.contains(&format!(
                "[deploy to staging] deployment \"{name}\" image updated"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "[deploy to staging] deployment \"{name}\" successfully rolled out"
            )),
            "{text}"
        );
        let image = kube.container_image("default", &name, "app").unwrap();
        assert!(
            image.starts_with(&format!("{host}/shop/shop-staging:{sha}@sha256:")),
            "{image}"
        );
        assert_eq!(
            kube.container_image("default", &format!("shop-production-{role}"), "app"),
            Some(old.clone()),
            "production is not deployed from master"
        );
    }
    assert!(text.contains("[test image] tests passed"), "{text}");
    assert!(
        text.contains("[check sources] version 1.0.0 on Linux"),
        "{text}"
    );
    assert!(text.contains("pipeline passed"), "{text}");

    // Second run: everything cached, and the push uploads no blob.
    registry.settle();
    registry.clear_access_log();
    let (second, second_time) = run("master");
    let text = ok(&second);
    assert!(text.contains("pipeline passed"), "{text}");
    registry.settle();
    let uploads: Vec<_> = registry
        .access_log()
        .into_iter()
        .filter(|l| l.method == "POST" && l.path.contains("/blobs/uploads/"))
        .collect();
    assert!(uploads.is_empty(), "second run uploaded blobs: {uploads:?}");
    let manifest_puts: Vec<_> = registry
        .access_log()
        .into_iter()
        .filter(|l| l.method == "PUT")
        .collect();
    assert!(
        manifest_puts.is_empty(),
        "second run re-put manifests: {manifest_puts:?}"
    );
    eprintln!(
        "example pipeline on master: first run {:.2}s, second run {:.2}s",
        first_time.as_secs_f64(),
        second_time.as_secs_f64()
    );

    // A feature branch builds and tests only.
    let (feature, _) = run("feature-login");
    let text = ok(&feature);
    assert!(text.contains("[build image] job passed"), "{text}");
    assert!(text.contains("[test image] job passed"), "{text}");
    assert!(!text.contains("[deploy to"), "{text}");
    assert!(!text.contains("deploy to staging  "), "{text}");

    // The production branch deploys production.
    let (production, _) = run("production");
    let text = ok(&production);
    assert!(
        text.contains(
            "[deploy to production] deployment \"shop-production-server\" successfully rolled out"
        ),
        "{text}"
    );
    let image = kube
        .container_image("default", "shop-production-server", "app")
        .unwrap();
    assert!(
        image.starts_with(&format!("{host}/shop/shop-production:{sha}@sha256:")),
        "{image}"
    );
}

#[test]
fn image_jobs_run_inside_an_image_pulled_from_the_registry() {
    if !can_build() || !have_tool("docker-registry") || !have_tool("git") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let registry = Registry::start(RegistryOptions::default()).expect("start the registry");
    // The image exists only in the registry: another store built and pushed it.
    let builder_root = w.join("builder-root");
    build_base(&builder_root, w);
    let image = format!("{}/tools/busybox:1", registry.host());
    ok(&rbuild(
        &builder_root,
        &["push", "localhost/busybox:test", &image],
    ));

    let project = w.join("proj");
    fs::create_dir_all(&project).unwrap();
    fs::write(project.join("input.txt"), "from the checkout\n").unwrap();
    fs::write(
        project.join(".gitlab-ci.yml"),
        format!(
            "image: {image}\n\
             compile:\n  stage: build\n  script:\n    - cat input.txt\n    \
             - echo \"built by $(id -u) in $(pwd)\" > output.txt\n    - echo \"token $DEPLOY_TOKEN\"\n  \
             after_script:\n    - echo \"after=$CI_JOB_STATUS\"\n\
             verify:\n  stage: test\n  script:\n    - grep -q built output.txt\n    - test ! -e /etc/debian_version\n"
        ),
    )
    .unwrap();
    sh(Command::new("git")
        .arg("-C")
        .arg(&project)
        .args(["init", "-q", "-b", "main"]));
    sh(Command::new("git").arg("-C").arg(&project).args([
        "-c",
        "user.name=CI",
        "-c",
        "user.email=ci@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    ]));
    let out = pipeline(
        w,
        &project,
        &["run", "--var", "DEPLOY_TOKEN=very-secret-token"],
    );
    let text = ok(&out);
    assert!(
        text.contains(&format!("[compile] pulling image {image}")),
        "{text}"
    );
    assert!(text.contains("[compile] from the checkout"), "{text}");
    assert!(text.contains("[compile] token [MASKED]"), "{text}");
    assert!(text.contains("[compile] after=success"), "{text}");
    assert!(text.contains("[verify] job passed"), "{text}");
    // The job wrote into the bind-mounted checkout, at the path CI_PROJECT_DIR names.
    let project = fs::canonicalize(&project).unwrap();
    assert_eq!(
        fs::read_to_string(project.join("output.txt")).unwrap(),
        format!("built by 0 in {}\n", project.display())
    );
}

/// Runs the rbuild binary under another name (`docker`, `deploy`), as a job's PATH has it.
fn as_command(work: &Path, name: &str, root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = work.join("shims");
    fs::create_dir_all(&dir).unwrap();
    let link = dir.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(bin(), &link).unwrap();
    }
    Command::new(&link)
        .args(args)
        .env("RBUILD_ROOT", root)
        .env("HOME", work)
        .env_remove("KUBECONFIG")
        .env_remove("DOCKER_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("spawn the shim")
}

#[test]
fn docker_and_deploy_shims_push_pull_inspect_and_deploy_the_last_push() {
    if !have_tool("docker-registry") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let registry = Registry::start(RegistryOptions::default()).expect("start the registry");
    let host = registry.host();
    let ctx = w.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY hello /\nENV GREETING=hi\n",
    )
    .unwrap();
    fs::write(ctx.join("hello"), "hello\n").unwrap();
    let (root, other_root) = (w.join("root"), w.join("other-root"));
    let pushes = w.join("pushes");
    let pushes_env = [("RBUILD_JOB_PUSHES", pushes.to_str().unwrap())];
    let image = format!("{host}/web/web:abc123");
    let docker = |root: &Path, args: &[&str]| ok(&as_command(w, "docker", root, args, &pushes_env));

    let built = docker(
        &root,
        &["build", "--pull", "-t", &image, ctx.to_str().unwrap()],
    );
    let digest = last_line(&built);
    let staging = format!("{host}/web/web-staging:abc123");
    docker(&root, &["tag", &image, &staging]);
    let pushed = docker(&root, &["push", &staging]);
    assert!(
        pushed.contains(&format!("abc123: digest: {digest}")),
        "{pushed}"
    );
    assert_eq!(
        fs::read_to_string(&pushes).unwrap(),
        format!("{staging}@{digest}\n"),
        "the push is recorded pinned"
    );

    // Pulled into another store, inspect shows docker's fields.
    docker(&other_root, &["pull", &staging]);
    let id = docker(&other_root, &["inspect", "--format", "{{.Id}}", &staging]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let env = docker(
        &other_root,
        &["inspect", "-f", "{{json .Config.Env}}", &staging],
    );
    assert!(env.contains("\"GREETING=hi\""), "{env}");
    let full: serde_json::Value =
        serde_json::from_str(&docker(&other_root, &["inspect", &staging])).unwrap();
    assert_eq!(full[0]["Id"], id.trim());
    let images = docker(&other_root, &["images"]);
    assert!(images.contains("web-staging"), "{images}");

    // `deploy NAME` takes the image this job pushed last, the cluster from KUBECONFIG's
    // content and the namespace from KUBE_NAMESPACE.
    let kube = FakeKube::start().expect("start the fake API server");
    kube.add_deployment("shop", "web-staging-server", &[("app", "web:old")], 2);
    let kubeconfig = kube.kubeconfig_yaml(None);
    let out = ok(&as_command(
        w,
        "deploy",
        &root,
        &["web-staging-server"],
        &[
            ("RBUILD_JOB_PUSHES", pushes.to_str().unwrap()),
            ("KUBECONFIG", &kubeconfig),
            ("KUBE_NAMESPACE", "shop"),
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "deployment \"web-staging-server\" image updated",
            "Waiting for deployment..."
        ],
        "{out}"
    );
    assert_eq!(
        lines.last(),
        Some(&"deployment \"web-staging-server\" successfully rolled out")
    );
    assert_eq!(
        kube.container_image("shop", "web-staging-server", "app"),
        Some(format!("{staging}@{digest}"))
    );

    // Without a push there is nothing to deploy: a clear error.
    let none = as_command(w, "deploy", &root, &["web-staging-server"], &[]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("RBUILD_JOB_PUSHES"),
        "{}",
        stderr(&none)
    );
    // And docker commands outside the subset say so.
    let unknown = as_command(w, "docker", &root, &["compose", "up"], &[]);
    assert!(!unknown.status.success());
}
