//! `rbuild deploy|rollback|history` end to end: images pushed to the registry process, tags
//! resolved to digests, Deployments on the fake API server (which kubectl also accepts).
//!
//! The images are `FROM scratch` + COPY, so these tests need neither root nor the sandbox.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use rbuild_testkit::kube::{FakeKube, Scenario};
use rbuild_testkit::registry::{Registry, RegistryOptions};

use crate::support::*;

/// A registry with `app:1` and `app:2` (distinct images), a cluster with Deployment `web`
/// running `app:0`, and the kubeconfig for it.
struct Fixture {
    work: tempfile::TempDir,
    registry: Registry,
    kube: FakeKube,
    kubeconfig: PathBuf,
    /// Manifest digests of `app:1` and `app:2`.
    digests: [String; 2],
}

impl Fixture {
    fn start() -> Option<Self> {
        if !have_tool("docker-registry") {
            return None;
        }
        let work = tempfile::tempdir().unwrap();
        let registry = Registry::start(RegistryOptions::default()).expect("start the registry");
        let root = work.path().join("root");
        let mut digests = Vec::new();
        for v in ["1", "2"] {
            let ctx = work.path().join(format!("ctx{v}"));
            fs::create_dir_all(&ctx).unwrap();
            fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY version /\n").unwrap();
            fs::write(ctx.join("version"), format!("{v}\n")).unwrap();
            let tag = format!("{}/app:{v}", registry.host());
            let built = ok(&rbuild(
                &root,
                &[
                    "build",
                    "--progress",
                    "plain",
                    "-t",
                    &tag,
                    ctx.to_str().unwrap(),
                ],
            ));
            digests.push(last_line(&built));
            ok(&rbuild(&root, &["push", &tag]));
        }
        let kube = FakeKube::start().expect("start the fake API server");
        let old = format!("{}/app:0", registry.host());
        kube.add_deployment("default", "web", &[("app", &old)], 2);
        let kubeconfig = work.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig, None).unwrap();
        Some(Self {
            work,
            registry,
            kube,
            kubeconfig,
            digests: [digests[0].clone(), digests[1].clone()],
        })
    }

    fn image(&self, tag: &str) -> String {
        format!("{}/app:{tag}", self.registry.host())
    }

    fn pinned(&self, tag: &str, digest: &str) -> String {
        format!("{}@{digest}", self.image(tag))
    }

    /// Runs `rbuild ARGS… --kubeconfig K` with an empty environment for kube and docker
    /// configuration (so nothing of the machine's leaks in).
    fn rbuild(&self, args: &[&str]) -> Output {
        rbuild_env(self.work.path(), args, &self.kubeconfig)
    }

    fn current(&self) -> String {
        self.kube
            .container_image("default", "web", "app")
            .expect("deployment web")
    }
}

fn rbuild_env(work: &Path, args: &[&str], kubeconfig: &Path) -> Output {
    std::process::Command::new(bin())
        .arg("--root")
        .arg(work.join("root"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("HOME", work)
        .env_remove("KUBECONFIG")
        .env_remove("DOCKER_CONFIG")
        .output()
        .expect("spawn rbuild")
}

#[test]
fn deploy_pins_the_tag_to_its_digest_and_prints_kubectls_messages() {
    let Some(f) = Fixture::start() else { return };
    let out = ok(&f.rbuild(&[
        "deploy",
        "web",
        "--image",
        &f.image("1"),
        "--timeout",
        "30s",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"deployment.apps/web image updated"),
        "{out}"
    );
    assert_eq!(
        lines.last(),
        Some(&"deployment \"web\" successfully rolled out"),
        "{out}"
    );
    assert!(
        out.contains("Waiting for deployment \"web\" rollout to finish"),
        "{out}"
    );
    assert_eq!(f.current(), f.pinned("1", &f.digests[0]));

    // The history shows the deploy, and the image it replaced is what rollback restores.
    let history = ok(&f.rbuild(&["history", "web"]));
    assert!(history.starts_with("REVISION"), "{history}");
    assert!(history.contains(&f.pinned("1", &f.digests[0])), "{history}");
    assert!(history.contains("deploy"), "{history}");
}

#[test]
fn rollback_restores_the_previous_image_or_a_named_tag() {
    let Some(f) = Fixture::start() else { return };
    ok(&f.rbuild(&["deploy", "web", "--image", &f.image("1")]));
    ok(&f.rbuild(&["deploy", "web", "--image", &f.image("2")]));
    assert_eq!(f.current(), f.pinned("2", &f.digests[1]));

    let out = ok(&f.rbuild(&["rollback", "web"]));
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(f.current(), f.pinned("1", &f.digests[0]));

    // By tag, and by digest.
    ok(&f.rbuild(&["rollback", "web", "--to", "2"]));
    assert_eq!(f.current(), f.pinned("2", &f.digests[1]));
    ok(&f.rbuild(&["rollback", "web", "--to", &f.digests[0]]));
    assert_eq!(f.current(), f.pinned("1", &f.digests[0]));

    let missing = f.rbuild(&["rollback", "web", "--to", "9"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("failed to roll back deployment web"));

    let history = ok(&f.rbuild(&["history", "web"]));
    assert_eq!(history.lines().count(), 1 + 5, "{history}");
    assert_eq!(history.matches("rollback").count(), 3, "{history}");
}

#[test]
fn a_missed_progress_deadline_fails_and_can_roll_back() {
    let Some(f) = Fixture::start() else { return };
    ok(&f.rbuild(&["deploy", "web", "--image", &f.image("1")]));
    f.kube
        .set_scenario("default", "web", Scenario::ProgressDeadlineExceeded);

    // With --rollback-on-failure the previous image is put back (the fake controller, like a
    // real one, brings the known-good ReplicaSet back), and the command still fails.
    let rolled = f.rbuild(&[
        "deploy",
        "web",
        "--image",
        &f.image("2"),
        "--timeout",
        "30s",
        "--rollback-on-failure",
    ]);
    assert!(
        !rolled.status.success(),
        "{}\n{}",
        stdout(&rolled),
        stderr(&rolled)
    );
    let err = stderr(&rolled);
    assert!(
        err.contains(&format!("rolling back to {}", f.pinned("1", &f.digests[0]))),
        "{err}"
    );
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    assert_eq!(f.current(), f.pinned("1", &f.digests[0]));

    // Without it, the failure is reported and the new image stays.
    let failed = f.rbuild(&[
        "deploy",
        "web",
        "--image",
        &f.image("2"),
        "--timeout",
        "30s",
    ]);
    assert!(!failed.status.success(), "{}", stdout(&failed));
    assert!(
        stderr(&failed).contains("exceeded its progress deadline"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(f.current(), f.pinned("2", &f.digests[1]));
}

#[test]
fn latest_is_refused_unless_allowed() {
    let Some(f) = Fixture::start() else { return };
    let untagged = format!("{}/app", f.registry.host());
    for image in [f.image("latest"), untagged] {
        let out = f.rbuild(&["deploy", "web", "--image", &image]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("--allow-latest"), "{}", stderr(&out));
    }
    assert_eq!(f.current(), f.image("0"), "nothing was deployed");

    // Allowed, it still deploys a digest, not the moving tag.
    let root = f.work.path().join("root");
    ok(&rbuild(&root, &["tag", &f.image("1"), &f.image("latest")]));
    ok(&rbuild(&root, &["push", &f.image("latest")]));
    ok(&f.rbuild(&[
        "deploy",
        "web",
        "--image",
        &f.image("latest"),
        "--allow-latest",
    ]));
    assert_eq!(f.current(), f.pinned("latest", &f.digests[0]));
}

#[test]
fn several_containers_need_container() {
    let Some(f) = Fixture::start() else { return };
    f.kube.add_deployment(
        "default",
        "multi",
        &[("app", &f.image("0")), ("sidecar", "proxy:1")],
        1,
    );
    let out = f.rbuild(&["deploy", "multi", "--image", &f.image("1")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("app") && err.contains("sidecar"), "{err}");

    ok(&f.rbuild(&[
        "deploy",
        "multi",
        "--image",
        &f.image("1"),
        "--container",
        "sidecar",
    ]));
    assert_eq!(
        f.kube.container_image("default", "multi", "sidecar"),
        Some(f.pinned("1", &f.digests[0]))
    );
    assert_eq!(
        f.kube.container_image("default", "multi", "app"),
        Some(f.image("0"))
    );
}

#[test]
fn unknown_deployment_and_bad_kubeconfig_are_clear_errors() {
    let Some(f) = Fixture::start() else { return };
    let out = f.rbuild(&["deploy", "nope", "--image", &f.image("1"), "-n", "shop"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("\"nope\" not found in namespace \"shop\""),
        "{err}"
    );

    let bad = f.work.path().join("bad-kubeconfig");
    fs::write(&bad, "this: [is not a kubeconfig").unwrap();
    let out = rbuild_env(
        f.work.path(),
        &["deploy", "web", "--image", &f.image("1")],
        &bad,
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot load kubeconfig"), "{err}");
    assert!(err.contains("bad-kubeconfig"), "{err}");

    // A tag the registry does not have cannot be pinned.
    let out = f.rbuild(&["deploy", "web", "--image", &f.image("7")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("failed to resolve"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.current(), f.image("0"));
}

#[test]
fn rust_log_shows_the_deployers_events_on_stderr_and_is_off_by_default() {
    let Some(f) = Fixture::start() else { return };
    let deploy = |tag: &str, rust_log: Option<&str>| {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("--root")
            .arg(f.work.path().join("root"))
            .args(["deploy", "web", "--image", &f.image(tag), "--kubeconfig"])
            .arg(&f.kubeconfig)
            .env("HOME", f.work.path())
            .env_remove("KUBECONFIG")
            .env_remove("DOCKER_CONFIG")
            .env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        cmd.output().expect("spawn rbuild")
    };
    // The deployer logs each patch at debug level (`rbuild_deploy::deployer`).
    let event = "patching deployment image";

    let quiet = deploy("1", None);
    ok(&quiet);
    assert!(!stderr(&quiet).contains(event), "{}", stderr(&quiet));

    let logged = deploy("2", Some("rbuild_deploy=debug"));
    let out = ok(&logged);
    let err = stderr(&logged);
    assert!(err.contains(event), "{err}");
    assert!(
        err.contains("deployment=\"web\"") || err.contains("deployment=web"),
        "{err}"
    );
    // Logs never mix into stdout, which scripts read.
    assert!(!out.contains(event), "{out}");
    assert_eq!(f.current(), f.pinned("2", &f.digests[1]));

    // A filter that does not parse is named, and the command still does its work.
    let typo = deploy("1", Some("rbuild_deploy=loud"));
    ok(&typo);
    assert!(
        stderr(&typo).contains("ignoring RUST_LOG=rbuild_deploy=loud"),
        "{}",
        stderr(&typo)
    );
    assert_eq!(f.current(), f.pinned("1", &f.digests[0]));
}
