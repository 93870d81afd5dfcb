//! The deployer against the fake API server of `rbuild-testkit`, and rbuild's wait against the
//! real `kubectl rollout status` on the same rollouts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rbuild_deploy::{
    ConnectOptions, DeployOptions, Deployer, Error, HISTORY_ANNOTATION, Progress, RolloutFailure,
    history::Action,
};
use rbuild_oci::Events;
use rbuild_oci::Reference;
use rbuild_testkit::kube::{Access, FakeKube, FakeKubeOptions, Scenario};

const KUBECTL: &str = "/usr/bin/kubectl";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

struct Cluster {
    server: FakeKube,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start(options: FakeKubeOptions, token: Option<&str>) -> Self {
        let server = FakeKube::start_with(options).expect("start the fake API server");
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("config");
        server
            .write_kubeconfig(&kubeconfig, token)
            .expect("write kubeconfig");
        Self {
            server,
            dir,
            kubeconfig,
        }
    }

    fn new() -> Self {
        Self::start(
            FakeKubeOptions::default().tick(Duration::from_millis(50)),
            None,
        )
    }

    async fn deployer(&self) -> Deployer {
        Deployer::connect(&ConnectOptions::default().kubeconfig(&self.kubeconfig))
            .await
            .expect("connect")
    }

    fn image(&self) -> Option<String> {
        self.server.container_image("default", "web", "app")
    }
}

fn pinned(tag: &str, digest: &str) -> (String, Reference) {
    let requested: Reference = format!("localhost:5000/web:{tag}").parse().unwrap();
    (format!("localhost:5000/web:{tag}@{digest}"), requested)
}

fn options() -> DeployOptions {
    DeployOptions::default().timeout(Duration::from_secs(20))
}

#[tokio::test]
async fn deploy_sets_the_pinned_image_and_waits_like_kubectl() {
    let cluster = Cluster::new();
    cluster
        .server
        .add_deployment("default", "web", &[("app", "web:0")], 2);
    let deployer = cluster.deployer().await;
    let (image, requested) = pinned("1", D1);
    let (sink, events) = collect();
    let deployed = deployer
        .deploy("web", &image, &requested, &options(), sink)
        .await
        .unwrap();
    assert_eq!(deployed.previous, "web:0");
    assert_eq!(
        deployed.rolled_out.as_deref(),
        Some("deployment \"web\" successfully rolled out")
    );
    assert_eq!(cluster.image().as_deref(), Some(image.as_str()));

    // The controller's steps, each message once, in kubectl's words.
    let events = events.lock().unwrap().clone();
    let statuses: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Status(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let mut deduped = statuses.clone();
    deduped.dedup();
    assert_eq!(statuses, deduped);
    assert!(matches!(&events[0], Progress::ImageUpdated { previous, .. } if previous == "web:0"));
    assert!(
        statuses.contains(
            &"Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        ),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&"deployment \"web\" successfully rolled out")
    );

    // Patched with a strategic merge patch; history recorded in the annotation.
    assert!(cluster.server.requests().iter().any(|r| {
        r.starts_with("PATCH /apis/apps/v1/namespaces/default/deployments/web")
            && r.ends_with("application/strategic-merge-patch+json")
    }));
    let history = deployer.history("web", None).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].image, image);
    assert_eq!(history[0].previous, "web:0");
    assert_eq!(history[0].action, Action::Deploy);
    let object = cluster.server.deployment("default", "web").unwrap();
    assert!(object["metadata"]["annotations"][HISTORY_ANNOTATION].is_string());
}

#[tokio::test]
async fn deadline_exceeded_fails_and_rollback_on_failure_restores_the_image() {
    let cluster = Cluster::new();
    cluster
        .server
        .add_deployment("default", "web", &[("app", "web:0")], 1);
    cluster
        .server
        .set_scenario("default", "web", Scenario::ProgressDeadlineExceeded);
    let deployer = cluster.deployer().await;
    let (image, requested) = pinned("1", D1);

    let err = deployer
        .deploy("web", &image, &requested, &options(), Events::none())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Rollout { .. }), "{err:?}");
    assert_eq!(
        err.rollout_failure().map(ToString::to_string).as_deref(),
        Some("deployment \"web\" exceeded its progress deadline")
    );
    assert_eq!(cluster.image().as_deref(), Some(image.as_str()));

    // Another deployment, with the previous image put back on failure.
    cluster
        .server
        .add_deployment("default", "api", &[("app", "api:0")], 2);
    cluster
        .server
        .set_scenario("default", "api", Scenario::ProgressDeadlineExceeded);
    let (sink, events) = collect();
    let err = deployer
        .deploy(
            "api",
            &image,
            &requested,
            &options().rollback_on_failure(true),
            sink,
        )
        .await
        .unwrap_err();
    match &err {
        Error::RolledBack {
            previous, source, ..
        } => {
            assert_eq!(previous, "api:0");
            assert!(matches!(
                source,
                RolloutFailure::ProgressDeadlineExceeded { .. }
            ));
        }
        other => panic!("expected RolledBack, got {other:?}"),
    }
    // The previous image is back and rolled out.
    let api_image = cluster.server.container_image("default", "api", "app");
    assert_eq!(api_image.as_deref(), Some("api:0"));
    let events = events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::RollingBack { image, .. } if image == "api:0"))
    );
    assert_eq!(
        events.last(),
        Some(&Progress::Status(
            "deployment \"api\" successfully rolled out".to_owned()
        ))
    );
    let history = deployer.history("api", None).await.unwrap();
    let actions: Vec<Action> = history.iter().map(|h| h.action).collect();
    assert_eq!(actions, [Action::Deploy, Action::Rollback]);
}

#[tokio::test]
async fn rollback_to_previous_and_to_a_tag() {
    let cluster = Cluster::new();
    cluster
        .server
        .add_deployment("default", "web", &[("app", "web:0")], 1);
    let deployer = cluster.deployer().await;
    let (one, r1) = pinned("1", D1);
    let (two, r2) = pinned("2", D2);
    deployer
        .deploy("web", &one, &r1, &options(), Events::none())
        .await
        .unwrap();
    deployer
        .deploy("web", &two, &r2, &options(), Events::none())
        .await
        .unwrap();

    let back = deployer
        .rollback("web", None, &options(), Events::none())
        .await
        .unwrap();
    assert_eq!(back.image, one);
    assert_eq!(back.previous, two);
    assert_eq!(cluster.image().as_deref(), Some(one.as_str()));

    let to_tag = deployer
        .rollback("web", Some("2"), &options(), Events::none())
        .await
        .unwrap();
    assert_eq!(to_tag.image, two);
    let to_first = deployer
        .rollback("web", Some("0"), &options().wait(false), Events::none())
        .await
        .unwrap();
    assert_eq!(to_first.image, "web:0");

    let err = deployer
        .rollback("web", Some("9"), &options(), Events::none())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotInHistory { .. }), "{err:?}");
}

#[tokio::test]
async fn rollback_without_history_is_an_error() {
    let cluster = Cluster::new();
    cluster
        .server
        .add_deployment("default", "web", &[("app", "web:0")], 1);
    let err = cluster
        .deployer()
        .await
        .rollback("web", None, &options(), Events::none())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoHistory { .. }), "{err:?}");
}

#[tokio::test]
async fn latest_and_unpinned_images_are_refused_before_any_request() {
    let cluster = Cluster::new();
    cluster
        .server
        .add_deployment("default", "web", &[("app", "web:0")], 1);
    let deployer = cluster.deployer().await;
    let requested: Reference = "localhost:5000/web".parse().unwrap();
    let image = format!("localhost:5000/web:latest@{D1}");
    let before = cluster.server.requests().len();
    let err = deployer
        .deploy("web", &image, &requested, &options(), Events::none())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LatestRefused { .. }), "{err:?}");
    let err = deployer
        .deploy(
            "web",
            "localhost:5000/web:1",
            &pinned("1", D1).1,
            &options(),
            Events::none(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotPinned { .. }), "{err:?}");
    assert_eq!(cluster.server.requests().len(), before);
    assert_eq!(cluster.image().as_deref(), Some("web:0"));

    // --allow-latest lets it through.
    deployer
        .deploy(
            "web",
            &image,
            &requested,
            &options().allow_latest(true),
            Events::none(),
        )
        .await
        .unwrap();
    assert_eq!(cluster.image().as_deref(), Some(image.as_str()));
}

#[tokio::test]
async fn several_containers_need_container() {
    let cluster = Cluster::new();
    cluster.server.add_deployment(
        "default",
        "web",
        &[("app", "web:0"), ("proxy", "envoy:1")],
        1,
    );
    let deployer = cluster.deployer().await;
    let (image, requested) = pinned("1", D1);
    let err = deployer
        .deploy("web", &image, &requested, &options(), Events::none())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AmbiguousContainer { .. }), "{err:?}");
    assert!(err.to_string().contains("app, proxy"), "{err}");

    let err = deployer
        .deploy(
            "web",
            &image,
            &requested,
            &options().container("db"),
            Events::none(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownContainer { .. }), "{err:?}");

    deployer
        .deploy(
            "web",
            &image,
            &requested,
            &options().container("app"),
            Events::none(),
        )
        .await
        .unwrap();
    assert_eq!(cluster.image().as_deref(), Some(image.as_str()));
    // The other container is untouched by the strategic merge patch.
    assert_eq!(
        cluster
            .server
            .container_image("default", "web", "proxy")
            .as_deref(),
        Some("envoy:1")
    );
}

#[tokio::test]
async fn bad_kubeconfig_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("config");
    std::fs::write(&garbage, "clusters: [this is not: a kubeconfig").unwrap();
    let err = Deployer::connect(&ConnectOptions::default().kubeconfig(&garbage))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LoadKubeconfig { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&garbage.display().to_string()),
        "{err}"
    );

    let missing = dir.path().join("missing");
    let err = Deployer::connect(&ConnectOptions::default().kubeconfig(&missing))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LoadKubeconfig { .. }), "{err:?}");

    let cluster = Cluster::new();
    let err = Deployer::connect(
        &ConnectOptions::default()
            .kubeconfig(&cluster.kubeconfig)
            .context("nope"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::LoadKubeconfig { .. }), "{err:?}");
}

#[tokio::test]
async fn unknown_deployment_names_cluster_namespace_and_deployment() {
    let cluster = Cluster::new();
    let deployer = cluster.deployer().await;
    let (image, requested) = pinned("1", D1);
    let err = deployer
        .deploy(
            "ghost",
            &image,
            &requested,
            &options().namespace("shop"),
            Events::none(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("\"ghost\""), "{message}");
    assert!(message.contains("\"shop\""), "{message}");
    assert!(message.contains("\"fake\""), "{message}");
    assert!(message.contains(&cluster.server.url()), "{message}");
}

#[tokio::test]
async fn forbidden_and_unreachable_are_named() {
    let cluster = Cluster::start(
        FakeKubeOptions::default().token("reader", Access::ReadOnly),
        Some("reader"),
    );
    cluster
        .server
        .add_deployment("default", "web", &[("app", "web:0")], 1);
    let deployer = cluster.deployer().await;
    let (image, requested) = pinned("1", D1);
    let err = deployer
        .deploy("web", &image, &requested, &options(), Events::none())
        .await
        .unwrap_err();
    match &err {
        Error::Forbidden { verb, message, .. } => {
            assert_eq!(*verb, "patch");
            assert!(message.contains("cannot patch resource"), "{message}");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }

    // A server that is gone.
    let url = cluster.server.url();
    drop(cluster.server);
    let err = deployer
        .deploy("web", &image, &requested, &options(), Events::none())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}

/// What `kubectl rollout status` ended with: success and its final line (stdout on success,
/// the stderr line after `error: ` on failure).
fn kubectl_outcome(output: &Output) -> (bool, String) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        (true, stdout.lines().last().unwrap_or("").to_owned())
    } else {
        let line = stderr.lines().last().unwrap_or("");
        (
            false,
            line.strip_prefix("error: ").unwrap_or(line).to_owned(),
        )
    }
}

fn spawn_kubectl(dir: &Path, kubeconfig: &Path, timeout: &str) -> std::process::Child {
    Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args([
            "rollout",
            "status",
            "deployment/web",
            &format!("--timeout={timeout}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kubectl")
}

/// For each scenario: set the image, start both waiters while the controller is paused, resume
/// it, and compare the outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_end_like_kubectl_rollout_status() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} is not installed");
        return;
    }
    let cases = [
        (
            Scenario::Healthy,
            true,
            "deployment \"web\" successfully rolled out",
        ),
        (
            Scenario::Stuck,
            false,
            "timed out waiting for the condition",
        ),
        (
            Scenario::ProgressDeadlineExceeded,
            false,
            "deployment \"web\" exceeded its progress deadline",
        ),
        (Scenario::DeletedMidWait, false, "object has been deleted"),
    ];
    for (scenario, want_success, want_message) in cases {
        let cluster = Cluster::start(
            FakeKubeOptions::default().tick(Duration::from_millis(150)),
            None,
        );
        cluster
            .server
            .add_deployment("default", "web", &[("app", "web:0")], 2);
        cluster.server.set_scenario("default", "web", scenario);
        cluster.server.set_paused(true);
        let deployer = cluster.deployer().await;
        let (image, requested) = pinned("1", D1);
        deployer
            .deploy(
                "web",
                &image,
                &requested,
                &options().wait(false),
                Events::none(),
            )
            .await
            .unwrap();

        let child = spawn_kubectl(cluster.dir.path(), &cluster.kubeconfig, "4s");
        let waiter = {
            let deployer = deployer.clone();
            tokio::spawn(async move {
                let (sink, events) = collect();
                let outcome = deployer
                    .wait_for_rollout("default", "web", Some(Duration::from_secs(4)), &sink)
                    .await;
                let statuses: Vec<String> = events
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|p| match p {
                        Progress::Status(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                (outcome, statuses)
            })
        };
        // Both watch before the controller moves.
        for _ in 0..200 {
            if cluster.server.watch_count() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            cluster.server.watch_count() >= 2,
            "{:?}",
            cluster.server.requests()
        );
        cluster.server.set_paused(false);

        let kubectl = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let (kubectl_ok, kubectl_message) = kubectl_outcome(&kubectl);
        let (ours, our_statuses) = waiter.await.unwrap();
        let (ours_ok, ours_message) = match &ours {
            Ok(message) => (true, message.clone()),
            Err(e) => (
                false,
                e.rollout_failure()
                    .map_or_else(|| e.to_string(), ToString::to_string),
            ),
        };
        assert_eq!(
            (kubectl_ok, kubectl_message.as_str()),
            (want_success, want_message),
            "kubectl, {scenario:?}: {}",
            String::from_utf8_lossy(&kubectl.stderr)
        );
        assert_eq!(
            (ours_ok, ours_message.as_str()),
            (kubectl_ok, kubectl_message.as_str()),
            "rbuild vs kubectl, {scenario:?}"
        );
        // The same progress lines too (kubectl repeats a line per event; rbuild prints each
        // distinct one once).
        let mut kubectl_statuses: Vec<String> = String::from_utf8_lossy(&kubectl.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        kubectl_statuses.dedup();
        assert_eq!(
            our_statuses, kubectl_statuses,
            "progress lines, {scenario:?}"
        );
        assert_eq!(
            our_statuses.first().map(String::as_str),
            Some("Waiting for deployment spec update to be observed..."),
        );
        if scenario == Scenario::Healthy {
            // Observed, each new replica, old ones terminating, availability, done.
            assert!(our_statuses.len() >= 5, "{our_statuses:#?}");
        }
    }
}

/// The `deploy` example, which cargo builds next to this test binary with `cargo test`.
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/deploy-<hash> → target/<profile>/examples/deploy
    let path = exe.parent()?.parent()?.join("examples").join("deploy");
    path.exists().then_some(path)
}

/// The example deploys through the library API alone, finding the cluster through
/// `$KUBECONFIG`, then through `~/.kube/config`.
#[test]
fn example_deploys_with_kubeconfig_from_env_and_home() {
    let Some(example) = example_binary() else {
        eprintln!("skipping: the deploy example is not built (run `cargo test -p rbuild-deploy`)");
        return;
    };
    let cluster = Cluster::new();
    cluster
        .server
        .add_deployment("shop", "web", &[("app", "web:0")], 2);
    let (image, _) = pinned("1", D1);
    let run = |env: &[(&str, &Path)], image: &str| {
        let mut command = Command::new(&example);
        command
            .args(["web", "localhost:5000/web:1", image, "shop"])
            .env_remove("KUBECONFIG");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run the example")
    };

    let output = run(&[("KUBECONFIG", &cluster.kubeconfig)], &image);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("deployment.apps/web image updated"),
        "{stdout}"
    );
    assert!(
        stdout.contains("deployment \"web\" successfully rolled out"),
        "{stdout}"
    );
    let image_now = cluster.server.container_image("shop", "web", "app");
    assert_eq!(image_now.as_deref(), Some(image.as_str()));

    let home = cluster.dir.path().join("home");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    std::fs::copy(&cluster.kubeconfig, home.join(".kube").join("config")).unwrap();
    let (image2, _) = pinned("1", D2);
    let output = run(&[("HOME", &home)], &image2);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let image_now = cluster.server.container_image("shop", "web", "app");
    assert_eq!(image_now.as_deref(), Some(image2.as_str()));

    // A failed rollout exits non-zero and, with the example's rollback-on-failure, restores
    // the previous image.
    cluster
        .server
        .set_scenario("shop", "web", Scenario::ProgressDeadlineExceeded);
    let (image3, _) = pinned(
        "1",
        "sha256:3333333333333333333333333333333333333333333333333333333333333333",
    );
    let output = run(&[("KUBECONFIG", &cluster.kubeconfig)], &image3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("deployment \"web\" exceeded its progress deadline"),
        "{stderr}"
    );
    let image_now = cluster.server.container_image("shop", "web", "app");
    assert_eq!(image_now.as_deref(), Some(image2.as_str()));
}

#[tokio::test]
async fn redeploying_the_same_image_does_not_wait_for_a_new_rollout() {
    let cluster = Cluster::new();
    cluster
        .server
        .add_deployment("default", "web", &[("app", "web:0")], 1);
    // A controller that would never observe a new generation: only a patch that leaves the
    // spec alone (the history annotation is metadata) can finish here.
    let deployer = cluster.deployer().await;
    let (image, requested) = pinned("1", D1);
    deployer
        .deploy("web", &image, &requested, &options(), Events::none())
        .await
        .unwrap();
    cluster
        .server
        .set_scenario("default", "web", Scenario::Stuck);
    let again = deployer
        .deploy(
            "web",
            &image,
            &requested,
            &options().timeout(Duration::from_secs(5)),
            Events::none(),
        )
        .await
        .unwrap();
    assert_eq!(again.previous, image);
    assert_eq!(
        again.rolled_out.as_deref(),
        Some("deployment \"web\" successfully rolled out")
    );
    let generation =
        cluster.server.deployment("default", "web").unwrap()["metadata"]["generation"].clone();
    assert_eq!(generation, 2);
    assert_eq!(deployer.history("web", None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn stuck_rollout_times_out_and_a_stuck_rollback_is_reported() {
    let cluster = Cluster::new();
    cluster
        .server
        .add_deployment("default", "web", &[("app", "web:0")], 1);
    cluster
        .server
        .set_scenario("default", "web", Scenario::Stuck);
    let deployer = cluster.deployer().await;
    let (image, requested) = pinned("1", D1);
    let quick = options().timeout(Duration::from_millis(700));
    let err = deployer
        .deploy("web", &image, &requested, &quick, Events::none())
        .await
        .unwrap_err();
    assert_eq!(err.rollout_failure(), Some(&RolloutFailure::TimedOut));

    let (image2, requested2) = pinned("2", D2);
    let err = deployer
        .deploy(
            "web",
            &image2,
            &requested2,
            &quick.clone().rollback_on_failure(true),
            Events::none(),
        )
        .await
        .unwrap_err();
    match &err {
        Error::RollbackFailed {
            previous, failure, ..
        } => {
            assert_eq!(previous, &image);
            assert_eq!(failure, &RolloutFailure::TimedOut);
        }
        other => panic!("expected RollbackFailed, got {other:?}"),
    }
    // The rollback was applied even though its rollout never finished.
    assert_eq!(cluster.image().as_deref(), Some(image.as_str()));
}

/// A sink that keeps every event, and the events it kept.
fn collect() -> (
    Events<Progress>,
    std::sync::Arc<std::sync::Mutex<Vec<Progress>>>,
) {
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let k = std::sync::Arc::clone(&kept);
    (Events::new(move |e| k.lock().unwrap().push(e)), kept)
}
