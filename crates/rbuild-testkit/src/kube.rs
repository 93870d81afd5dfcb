//! A stateful fake Kubernetes API server that kubectl and kube-rs accept, for tests.
//!
//! No real API server can run on the test machines, so this stands in for one, serving only
//! what a deployer touches, the way the real one does:
//!
//! - discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/apps`, `/apis/apps/v1`;
//! - `apps/v1` Deployments: get, list (JSON or the `meta.k8s.io/v1` Table of `kubectl get`),
//!   watch with `resourceVersion`, `fieldSelector`/`labelSelector`, `timeoutSeconds` and
//!   `sendInitialEvents`, create, strategic-merge / merge / JSON patch, put (with the
//!   resourceVersion conflict check), delete;
//! - `generation` bumps on spec changes only, and a simulated deployment controller moves
//!   `status` forward once per tick according to each Deployment's [`Scenario`];
//! - optional tokens (bearer, or the `Impersonate-User` header, which is what kubectl sends to
//!   an `http://` server): an unknown token gets `401`, a read-only one `403` on writes.
//!
//! Not served: OpenAPI documents (`kubectl apply`/`replace` need `--validate=false`),
//! ReplicaSets and Pods, server-side apply, `/status` and `/scale` subresources.
//!
//! The real `kubectl` (`get deploy`, `set image`, `rollout status`, `patch`, `replace`,
//! `get --watch`) is run against it in this module's tests.
//!
//! ```no_run
//! use rbuild_testkit::kube::{FakeKube, Scenario};
//!
//! let server = FakeKube::start().expect("start the fake API server");
//! server.add_deployment("default", "web", &[("app", "registry.example/web:1")], 2);
//! server.set_scenario("default", "web", Scenario::ProgressDeadlineExceeded);
//! let dir = tempfile::tempdir().expect("temp dir");
//! let kubeconfig = dir.path().join("config");
//! server.write_kubeconfig(&kubeconfig, None).expect("write kubeconfig");
//! // `kubectl --kubeconfig <kubeconfig> rollout status deploy/web` now talks to it.
//! ```

mod discovery;
pub mod patch;
mod server;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use server::Shared;

/// How the simulated deployment controller treats a Deployment's next rollouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scenario {
    /// The spec is observed, new replicas come up one per tick, old ones terminate, all become
    /// available: `kubectl rollout status` succeeds.
    #[default]
    Healthy,
    /// The controller never observes the new generation: waiting ends only by timeout.
    Stuck,
    /// The rollout starts, then the `Progressing` condition turns `False` with reason
    /// `ProgressDeadlineExceeded`.
    ProgressDeadlineExceeded,
    /// The rollout starts, then the Deployment is deleted.
    DeletedMidWait,
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything.
    Admin,
    /// Reads only: writes are answered `403 Forbidden`.
    ReadOnly,
}

/// Options for [`FakeKube::start_with`].
#[derive(Debug, Clone)]
pub struct FakeKubeOptions {
    tick: Duration,
    tokens: HashMap<String, Access>,
}

impl Default for FakeKubeOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            tokens: HashMap::new(),
        }
    }
}

impl FakeKubeOptions {
    /// The controller's tick (default 100 ms).
    #[must_use]
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Requires bearer tokens, and accepts `token` with `access`. Without any token the server
    /// accepts everyone as admin.
    #[must_use]
    pub fn token(mut self, token: &str, access: Access) -> Self {
        self.tokens.insert(token.to_owned(), access);
        self
    }
}

/// A running fake API server on `127.0.0.1:<free port>`; stopped on drop.
///
/// It runs on its own thread and runtime, so that both `#[test]` functions that spawn kubectl
/// and `#[tokio::test]` functions can use it.
#[derive(Debug)]
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a server with default options (no authentication, 100 ms ticks).
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound or the runtime cannot start.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(FakeKubeOptions::default())
    }

    /// Starts a server with `options`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound or the runtime cannot start.
    pub fn start_with(options: FakeKubeOptions) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed,
            tokens: options.tokens,
            requests: Mutex::default(),
            addr: addr.to_string(),
            paused: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let tick = options.tick;
        let thread = std::thread::Builder::new()
            .name(format!("fake-kube-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(listener, thread_shared, tick, stopped));
            })?;
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The server URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a Deployment already rolled out: `containers` are `(name, image)` pairs, the
    /// selector and pod labels are `app: <name>`, the scenario [`Scenario::Healthy`].
    pub fn add_deployment(
        &self,
        namespace: &str,
        name: &str,
        containers: &[(&str, &str)],
        replicas: i32,
    ) {
        let containers: Vec<Value> = containers
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i, "imagePullPolicy": "IfNotPresent"}))
            .collect();
        let object = json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": containers},
                },
            },
        });
        self.shared
            .state()
            .create(namespace, object, Scenario::Healthy);
        self.shared.notify();
    }

    /// Sets how the controller treats the Deployment's next rollouts.
    pub fn set_scenario(&self, namespace: &str, name: &str, scenario: Scenario) {
        if let Some(stored) = self
            .shared
            .state()
            .deployments
            .get_mut(&(namespace.to_owned(), name.to_owned()))
        {
            stored.scenario = scenario;
        }
    }

    /// Pauses (`true`) or resumes the simulated controller, so that a test can start its
    /// watchers before a rollout moves.
    pub fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
    }

    /// How many watch requests have been made so far.
    pub fn watch_count(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains("watch=true") || r.contains("watch=1"))
            .count()
    }

    /// The stored Deployment as JSON, if it exists.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .state()
            .deployments
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|s| s.object.clone())
    }

    /// The image of one container of a stored Deployment.
    pub fn container_image(&self, namespace: &str, name: &str, container: &str) -> Option<String> {
        let deployment = self.deployment(namespace, name)?;
        deployment["spec"]["template"]["spec"]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == container)
            .and_then(|c| c["image"].as_str())
            .map(str::to_owned)
    }

    /// Deletes a Deployment (watchers see `DELETED`). Returns whether it existed.
    pub fn delete_deployment(&self, namespace: &str, name: &str) -> bool {
        let deleted = self
            .shared
            .state()
            .delete(&(namespace.to_owned(), name.to_owned()))
            .is_some();
        self.shared.notify();
        deleted
    }

    /// The requests served so far, each `METHOD /path?query [content-type]`.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The kubeconfig YAML for this server: cluster `fake`, user `tester`, context `fake`
    /// (current), namespace `default`. A `token` is written both as the bearer token (kube-rs
    /// sends it over `http://`) and as the impersonated user `as:` (kubectl sends only that to
    /// an `http://` server); the server accepts either as the caller's token.
    pub fn kubeconfig_yaml(&self, token: Option<&str>) -> String {
        let user = match token {
            Some(t) => format!("  user:\n    token: {t}\n    as: {t}\n"),
            None => "  user: {}\n".to_owned(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: tester\n{user}contexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: tester\n    namespace: default\ncurrent-context: fake\n",
            url = self.url(),
        )
    }

    /// Writes [`FakeKube::kubeconfig_yaml`] to `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: &Path, token: Option<&str>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(token))
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tick: Duration,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let controller_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            if controller_shared.paused.load(Ordering::SeqCst) {
                continue;
            }
            let changed = controller_shared.state().tick();
            if changed {
                controller_shared.notify();
            }
        }
    });
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = Arc::clone(&shared);
                        async move {
                            Ok::<_, std::convert::Infallible>(server::handle(shared, request).await)
                        }
                    });
                    // A client that goes away mid-watch is not an error worth reporting.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::{Command, Output};

    use super::*;

    const KUBECTL: &str = "/usr/bin/kubectl";

    /// kubectl against the server, with its own discovery cache; `None` (printed) when kubectl
    /// is not installed.
    fn kubectl(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Option<Output> {
        if !Path::new(KUBECTL).exists() {
            eprintln!("skipping: {KUBECTL} is not installed");
            return None;
        }
        let output = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(args)
            .output()
            .expect("run kubectl");
        Some(output)
    }

    fn setup(server: &FakeKube, token: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("config");
        server.write_kubeconfig(&kubeconfig, token).unwrap();
        (dir, kubeconfig)
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn kubectl_get_set_image_and_rollout_status() {
        let server = FakeKube::start().unwrap();
        server.add_deployment("default", "web", &[("app", "web:1")], 2);
        let (dir, config) = setup(&server, None);

        let Some(get) = kubectl(dir.path(), &config, &["get", "deploy"]) else {
            return;
        };
        let out = text(&get.stdout);
        assert!(get.status.success(), "{}", text(&get.stderr));
        assert!(out.starts_with("NAME"), "{out}");
        let row = out.lines().nth(1).unwrap_or("");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[..4], ["web", "2/2", "2", "2"], "{out}");

        let wide = kubectl(dir.path(), &config, &["get", "deploy", "web", "-o", "wide"]).unwrap();
        assert!(
            text(&wide.stdout).contains("web:1"),
            "{}",
            text(&wide.stdout)
        );

        let set = kubectl(
            dir.path(),
            &config,
            &["set", "image", "deploy/web", "app=web:2"],
        )
        .unwrap();
        assert!(set.status.success(), "{}", text(&set.stderr));
        assert_eq!(
            text(&set.stdout).trim(),
            "deployment.apps/web image updated"
        );
        assert_eq!(
            server.container_image("default", "web", "app").as_deref(),
            Some("web:2")
        );
        let deployment = server.deployment("default", "web").unwrap();
        assert_eq!(deployment["metadata"]["generation"], 2);
        assert!(
            server
                .requests()
                .iter()
                .any(|r| r.starts_with("PATCH")
                    && r.ends_with("application/strategic-merge-patch+json")),
            "{:?}",
            server.requests()
        );

        let status = kubectl(
            dir.path(),
            &config,
            &["rollout", "status", "deploy/web", "--timeout=20s"],
        )
        .unwrap();
        assert!(status.status.success(), "{}", text(&status.stderr));
        let out = text(&status.stdout);
        assert_eq!(
            out.lines().last(),
            Some("deployment \"web\" successfully rolled out"),
            "{out}"
        );
        let done = server.deployment("default", "web").unwrap();
        assert_eq!(done["status"]["observedGeneration"], 2);
        assert_eq!(done["status"]["availableReplicas"], 2);
    }

    #[test]
    fn kubectl_sees_progress_deadline_exceeded() {
        let server = FakeKube::start().unwrap();
        server.add_deployment("default", "web", &[("app", "web:1")], 1);
        server.set_scenario("default", "web", Scenario::ProgressDeadlineExceeded);
        let (dir, config) = setup(&server, None);
        let Some(set) = kubectl(
            dir.path(),
            &config,
            &["set", "image", "deploy/web", "app=web:2"],
        ) else {
            return;
        };
        assert!(set.status.success(), "{}", text(&set.stderr));
        let status = kubectl(
            dir.path(),
            &config,
            &["rollout", "status", "deploy/web", "--timeout=20s"],
        )
        .unwrap();
        assert!(!status.status.success());
        assert_eq!(
            text(&status.stderr).trim(),
            "error: deployment \"web\" exceeded its progress deadline"
        );
    }

    #[test]
    fn tokens_give_401_and_403_to_kubectl() {
        let options = FakeKubeOptions::default()
            .token("admin-token", Access::Admin)
            .token("reader-token", Access::ReadOnly);
        let server = FakeKube::start_with(options).unwrap();
        server.add_deployment("default", "web", &[("app", "web:1")], 1);

        let (dir, reader) = setup(&server, Some("reader-token"));
        let Some(get) = kubectl(dir.path(), &reader, &["get", "deploy", "web"]) else {
            return;
        };
        assert!(get.status.success(), "{}", text(&get.stderr));
        let set = kubectl(
            dir.path(),
            &reader,
            &["set", "image", "deploy/web", "app=web:2"],
        )
        .unwrap();
        assert!(!set.status.success());
        assert!(
            text(&set.stderr).contains("deployments.apps \"web\" is forbidden: User"),
            "{}",
            text(&set.stderr)
        );
        assert_eq!(
            server.container_image("default", "web", "app").as_deref(),
            Some("web:1")
        );

        let stranger = dir.path().join("stranger");
        server.write_kubeconfig(&stranger, Some("wrong")).unwrap();
        let denied = kubectl(dir.path(), &stranger, &["get", "deploy", "web"]).unwrap();
        assert!(!denied.status.success());
        assert!(
            text(&denied.stderr).contains("You must be logged in to the server"),
            "{}",
            text(&denied.stderr)
        );
    }

    #[test]
    fn kubectl_merge_and_json_patches() {
        let server = FakeKube::start().unwrap();
        server.add_deployment("default", "web", &[("app", "web:1"), ("side", "s:1")], 1);
        let (dir, config) = setup(&server, None);
        let Some(merge) = kubectl(
            dir.path(),
            &config,
            &[
                "patch",
                "deploy",
                "web",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":3}}"#,
            ],
        ) else {
            return;
        };
        assert!(merge.status.success(), "{}", text(&merge.stderr));
        assert_eq!(text(&merge.stdout).trim(), "deployment.apps/web patched");
        let json_patch = kubectl(
            dir.path(),
            &config,
            &[
                "patch",
                "deploy",
                "web",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"s:2"}]"#,
            ],
        )
        .unwrap();
        assert!(json_patch.status.success(), "{}", text(&json_patch.stderr));
        let d = server.deployment("default", "web").unwrap();
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["metadata"]["generation"], 3);
        assert_eq!(
            server.container_image("default", "web", "side").as_deref(),
            Some("s:2")
        );
        assert_eq!(
            server.container_image("default", "web", "app").as_deref(),
            Some("web:1")
        );
        let kinds: Vec<String> = server
            .requests()
            .into_iter()
            .filter(|r| r.starts_with("PATCH"))
            .collect();
        assert!(
            kinds[0].ends_with("application/merge-patch+json"),
            "{kinds:?}"
        );
        assert!(
            kinds[1].ends_with("application/json-patch+json"),
            "{kinds:?}"
        );

        // A failing JSON patch `test` is refused and changes nothing.
        let failing = kubectl(
            dir.path(),
            &config,
            &[
                "patch",
                "deploy",
                "web",
                "--type=json",
                "-p",
                r#"[{"op":"test","path":"/spec/replicas","value":7}]"#,
            ],
        )
        .unwrap();
        assert!(!failing.status.success());
        assert_eq!(
            server.deployment("default", "web").unwrap()["metadata"]["generation"],
            3
        );

        let missing = kubectl(dir.path(), &config, &["get", "deploy", "ghost"]).unwrap();
        assert!(!missing.status.success());
        assert_eq!(
            text(&missing.stderr).trim(),
            "Error from server (NotFound): deployments.apps \"ghost\" not found"
        );
    }

    #[test]
    fn kubectl_watch_sees_the_controller_and_deletion() {
        let server = FakeKube::start().unwrap();
        server.add_deployment("default", "web", &[("app", "web:1")], 1);
        server.set_scenario("default", "web", Scenario::DeletedMidWait);
        let (dir, config) = setup(&server, None);
        // Nothing moves until the watch is open.
        server.set_paused(true);
        let Some(set) = kubectl(
            dir.path(),
            &config,
            &["set", "image", "deploy/web", "app=web:2"],
        ) else {
            return;
        };
        assert!(set.status.success(), "{}", text(&set.stderr));
        // `--output-watch-events` prints each watch event's type; the watch ends with the
        // request timeout.
        let watch = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&config)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["get", "deploy", "web", "--watch", "--output-watch-events"])
            .arg("--request-timeout=4s")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while server.watch_count() == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.set_paused(false);
        let watch = watch.wait_with_output().unwrap();
        let out = text(&watch.stdout);
        let events: Vec<(&str, &str)> = out
            .lines()
            .filter(|l| !l.starts_with("EVENT"))
            .filter_map(|l| {
                let mut cells = l.split_whitespace();
                Some((cells.next()?, cells.next()?))
            })
            .collect();
        assert_eq!(events.first(), Some(&("ADDED", "web")), "{out}");
        assert!(events.contains(&("MODIFIED", "web")), "{out}");
        assert_eq!(events.last(), Some(&("DELETED", "web")), "{out}");
        // Watch events are Tables too: the READY column is printed for every event.
        assert!(
            out.lines().filter(|l| l.starts_with("EVENT")).count() == 1,
            "{out}"
        );
        assert!(server.deployment("default", "web").is_none());
    }

    #[test]
    fn kubectl_replace_checks_the_resource_version() {
        let server = FakeKube::start().unwrap();
        server.add_deployment("default", "web", &[("app", "web:1")], 1);
        let (dir, config) = setup(&server, None);
        let Some(get) = kubectl(dir.path(), &config, &["get", "deploy", "web", "-o", "json"])
        else {
            return;
        };
        assert!(get.status.success(), "{}", text(&get.stderr));
        let mut object: Value = serde_json::from_slice(&get.stdout).unwrap();
        object["spec"]["replicas"] = json!(4);
        let file = dir.path().join("web.json");
        std::fs::write(&file, object.to_string()).unwrap();
        let file_arg = file.to_str().unwrap();
        // No OpenAPI document is served, so client-side schema validation is off.
        let replace = kubectl(
            dir.path(),
            &config,
            &["replace", "--validate=false", "-f", file_arg],
        )
        .unwrap();
        assert!(replace.status.success(), "{}", text(&replace.stderr));
        assert_eq!(text(&replace.stdout).trim(), "deployment.apps/web replaced");
        assert_eq!(
            server.deployment("default", "web").unwrap()["spec"]["replicas"],
            4
        );
        // The same body again carries a stale resourceVersion.
        let stale = kubectl(
            dir.path(),
            &config,
            &["replace", "--validate=false", "-f", file_arg],
        )
        .unwrap();
        assert!(!stale.status.success());
        assert!(
            text(&stale.stderr).contains("the object has been modified"),
            "{}",
            text(&stale.stderr)
        );
    }

    #[test]
    fn spec_changes_bump_generation_metadata_changes_do_not() {
        let server =
            FakeKube::start_with(FakeKubeOptions::default().tick(Duration::from_secs(3600)))
                .unwrap();
        server.add_deployment("default", "web", &[("app", "web:1")], 1);
        let key = ("default".to_owned(), "web".to_owned());
        let mut state = server.shared.state();
        let mut object = state.deployments[&key].object.clone();
        object["metadata"]["annotations"] = json!({"a": "b"});
        let after = state.update(&key, object).unwrap();
        assert_eq!(after["metadata"]["generation"], 1);
        let mut object = after.clone();
        object["spec"]["replicas"] = json!(3);
        object["status"] = json!({"replicas": 99});
        let after = state.update(&key, object).unwrap();
        assert_eq!(after["metadata"]["generation"], 2);
        // Status is not writable through the main resource.
        assert_eq!(after["status"]["replicas"], 1);
        // A no-op update writes nothing.
        let rv = state.rv;
        state.update(&key, after).unwrap();
        assert_eq!(state.rv, rv);
    }
}
