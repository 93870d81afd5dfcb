//! The deployer: connect, set an image, wait for the rollout, roll back, read the history.

use rbuild_oci::Events;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use rbuild_oci::Reference;
use serde_json::json;

use crate::error::{Error, Result};
use crate::history::{self, Action, HISTORY_ANNOTATION, HistoryEntry};
use crate::options::{ConnectOptions, DeployOptions, Deployed, Progress};
use crate::status::{RolloutFailure, RolloutState, rollout_state};

/// The field manager recorded for rbuild's patches (`metadata.managedFields`).
const FIELD_MANAGER: &str = "rbuild";

/// A connection to one cluster.
#[derive(Clone)]
pub struct Deployer {
    client: kube::Client,
    cluster: String,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Deployer {
    /// Connects using, in order: `--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`, the
    /// in-cluster service account (kube-rs `Config::infer`).
    ///
    /// # Errors
    ///
    /// [`Error::LoadKubeconfig`], [`Error::UseContext`], [`Error::InferConfig`] when no usable
    /// configuration is found; [`Error::CreateClient`] when the client cannot be built.
    pub async fn connect(options: &ConnectOptions) -> Result<Self> {
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            ..KubeConfigOptions::default()
        };
        let (config, kubeconfig) = match (&options.kubeconfig, &options.context) {
            (Some(path), _) => {
                let load = |source| Error::LoadKubeconfig {
                    path: path.clone(),
                    source,
                };
                let kubeconfig = Kubeconfig::read_from(path).map_err(load)?;
                let config =
                    kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &kube_options)
                        .await
                        .map_err(load)?;
                (config, Some(kubeconfig))
            }
            (None, Some(context)) => {
                let config =
                    kube::Config::from_kubeconfig(&kube_options)
                        .await
                        .map_err(|source| Error::UseContext {
                            context: context.clone(),
                            source,
                        })?;
                (config, Kubeconfig::read().ok())
            }
            (None, None) => {
                let config = kube::Config::infer()
                    .await
                    .map_err(|source| Error::InferConfig { source })?;
                (config, Kubeconfig::read().ok())
            }
        };
        let cluster = cluster_label(&config, kubeconfig.as_ref(), options.context.as_deref());
        let client = kube::Client::try_from(config).map_err(|source| Error::CreateClient {
            cluster: cluster.clone(),
            source: Box::new(source),
        })?;
        Ok(Self { client, cluster })
    }

    /// Wraps an existing client; `cluster` names it in messages.
    pub fn new(client: kube::Client, cluster: impl Into<String>) -> Self {
        Self {
            client,
            cluster: cluster.into(),
        }
    }

    /// The cluster as named in messages: the kubeconfig cluster name and server URL.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The namespace used when none is given: the kubeconfig context's, else `default`.
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    fn namespace(&self, options: &DeployOptions) -> String {
        options
            .namespace
            .clone()
            .unwrap_or_else(|| self.default_namespace().to_owned())
    }

    fn api(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Maps an API error to the variant naming cluster, namespace and deployment.
    fn api_error(&self, verb: &'static str, namespace: &str, name: &str, e: kube::Error) -> Error {
        let cluster = self.cluster.clone();
        let namespace = namespace.to_owned();
        let deployment = name.to_owned();
        match e {
            kube::Error::Api(response) if response.code == 404 => Error::NotFound {
                cluster,
                namespace,
                deployment,
            },
            kube::Error::Api(response) if response.code == 401 || response.code == 403 => {
                Error::Forbidden {
                    cluster,
                    namespace,
                    deployment,
                    verb,
                    message: response.message,
                }
            }
            source @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => Error::Unreachable {
                cluster,
                namespace,
                deployment,
                verb,
                source: Box::new(source),
            },
            source => Error::Api {
                cluster,
                namespace,
                deployment,
                verb,
                source: Box::new(source),
            },
        }
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Deployment> {
        self.api(namespace)
            .get(name)
            .await
            .map_err(|e| self.api_error("get", namespace, name, e))
    }

    /// Sets `image` (already pinned: `repo:tag@sha256:…`, as resolved from `requested`) on a
    /// container of Deployment `name` with a strategic merge patch, records the previous image
    /// in the history annotation, then (unless `wait(false)`) waits like
    /// `kubectl rollout status`, reporting [`Progress`] to `progress`.
    ///
    /// With `rollback_on_failure`, a rollout that fails by deadline or timeout gets the previous
    /// image back (recorded as a rollback in the history) and that rollout is waited for with
    /// the same timeout; a deleted Deployment is not recreated.
    ///
    /// # Errors
    ///
    /// [`Error::LatestRefused`] for `latest`/untagged `requested` without `allow_latest`;
    /// [`Error::NotPinned`]; [`Error::NotFound`], [`Error::Forbidden`], [`Error::Unreachable`],
    /// [`Error::Api`]; [`Error::AmbiguousContainer`], [`Error::UnknownContainer`];
    /// [`Error::Rollout`] when the rollout fails, or with `rollback_on_failure`,
    /// [`Error::RolledBack`] / [`Error::RollbackFailed`].
    pub async fn deploy(
        &self,
        name: &str,
        image: &str,
        requested: &Reference,
        options: &DeployOptions,
        progress: Events<Progress>,
    ) -> Result<Deployed> {
        crate::check_not_latest(requested, options.allow_latest)?;
        let pinned = image.parse::<Reference>().ok();
        if pinned.as_ref().and_then(Reference::digest).is_none() {
            return Err(Error::NotPinned {
                image: image.to_owned(),
            });
        }
        let namespace = self.namespace(options);
        let deployment = self.get(&namespace, name).await?;
        let container = select_container(&deployment, name, options.container.as_deref())?;
        let deployed = self
            .set_image(
                &namespace,
                name,
                &deployment,
                &container,
                image,
                Action::Deploy,
            )
            .await?;
        progress.emit(Progress::ImageUpdated {
            deployment: name.to_owned(),
            container: container.clone(),
            previous: deployed.previous.clone(),
            image: image.to_owned(),
        });
        if !options.wait {
            return Ok(deployed);
        }
        match self
            .wait_for_rollout(&namespace, name, options.timeout, &progress)
            .await
        {
            Ok(message) => Ok(Deployed {
                rolled_out: Some(message),
                ..deployed
            }),
            Err(Error::Rollout {
                source: failure, ..
            }) if options.rollback_on_failure && failure != RolloutFailure::Deleted => {
                self.roll_back_after(&namespace, name, deployed, failure, options, &progress)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    async fn roll_back_after(
        &self,
        namespace: &str,
        name: &str,
        deployed: Deployed,
        failure: RolloutFailure,
        options: &DeployOptions,
        progress: &Events<Progress>,
    ) -> Result<Deployed> {
        progress.emit(Progress::RollingBack {
            deployment: name.to_owned(),
            image: deployed.previous.clone(),
            failure: failure.clone(),
        });
        let restore = async {
            let current = self.get(namespace, name).await?;
            self.set_image(
                namespace,
                name,
                &current,
                &deployed.container,
                &deployed.previous,
                Action::Rollback,
            )
            .await?;
            self.wait_for_rollout(namespace, name, options.timeout, progress)
                .await
        };
        match restore.await {
            Ok(_) => Err(Error::RolledBack {
                namespace: namespace.to_owned(),
                deployment: name.to_owned(),
                previous: deployed.previous,
                source: failure,
            }),
            Err(e) => Err(Error::RollbackFailed {
                deployment: name.to_owned(),
                previous: deployed.previous,
                failure,
                source: Box::new(e),
            }),
        }
    }

    /// Puts back the image the last deploy replaced (`to = None`), or the image of the history
    /// whose tag or digest is `to`, then waits unless `wait(false)`.
    ///
    /// The container is `options.container`, else the one the last history entry changed. Two
    /// rollbacks in a row toggle between the last two images, like `kubectl rollout undo`. The
    /// rollback is itself recorded in the history.
    ///
    /// # Errors
    ///
    /// [`Error::NoHistory`], [`Error::NotInHistory`], [`Error::ReadHistory`], the API errors of
    /// [`Deployer::deploy`], [`Error::Rollout`] when the rollback's rollout fails.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<&str>,
        options: &DeployOptions,
        progress: Events<Progress>,
    ) -> Result<Deployed> {
        let namespace = self.namespace(options);
        let deployment = self.get(&namespace, name).await?;
        let history = read_history(&deployment, name)?;
        let container = match &options.container {
            Some(c) => select_container(&deployment, name, Some(c))?,
            // The container the last deploy changed, else the only one.
            None => match history.last() {
                Some(entry) => entry.container.clone(),
                None => select_container(&deployment, name, None)?,
            },
        };
        let Some(image) = history::rollback_target(&history, &container, to) else {
            return Err(match to {
                Some(wanted) => Error::NotInHistory {
                    deployment: name.to_owned(),
                    container,
                    wanted: wanted.to_owned(),
                },
                None => Error::NoHistory {
                    namespace,
                    deployment: name.to_owned(),
                    container,
                },
            });
        };
        let deployed = self
            .set_image(
                &namespace,
                name,
                &deployment,
                &container,
                &image,
                Action::Rollback,
            )
            .await?;
        progress.emit(Progress::ImageUpdated {
            deployment: name.to_owned(),
            container,
            previous: deployed.previous.clone(),
            image,
        });
        if !options.wait {
            return Ok(deployed);
        }
        let message = self
            .wait_for_rollout(&namespace, name, options.timeout, &progress)
            .await?;
        Ok(Deployed {
            rolled_out: Some(message),
            ..deployed
        })
    }

    /// The deploy history of Deployment `name` in `namespace` (default namespace if `None`),
    /// oldest first.
    ///
    /// # Errors
    ///
    /// The API errors of [`Deployer::deploy`]; [`Error::ReadHistory`].
    pub async fn history(&self, name: &str, namespace: Option<&str>) -> Result<Vec<HistoryEntry>> {
        let namespace = namespace
            .unwrap_or_else(|| self.default_namespace())
            .to_owned();
        let deployment = self.get(&namespace, name).await?;
        read_history(&deployment, name)
    }

    /// Sets the image with one strategic merge patch that also appends to the history.
    async fn set_image(
        &self,
        namespace: &str,
        name: &str,
        deployment: &Deployment,
        container: &str,
        image: &str,
        action: Action,
    ) -> Result<Deployed> {
        let previous = container_image(deployment, container).unwrap_or_default();
        let history = read_history(deployment, name)?;
        let annotation = history::append(
            history,
            HistoryEntry {
                container: container.to_owned(),
                image: image.to_owned(),
                previous: previous.clone(),
                action,
                at: history::now(),
            },
        );
        // Containers merge on `name` in a strategic merge patch (core/v1 PodSpec
        // `patchMergeKey:"name"`), so this touches only the one container, as
        // `kubectl set image` does.
        let patch = json!({
            "metadata": {"annotations": {HISTORY_ANNOTATION: annotation}},
            "spec": {"template": {"spec": {"containers": [
                {"name": container, "image": image}
            ]}}},
        });
        tracing::debug!(
            cluster = %self.cluster, namespace, deployment = name, container, image, %previous,
            "patching deployment image"
        );
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api(namespace)
            .patch(name, &params, &Patch::Strategic(&patch))
            .await
            .map_err(|e| self.api_error("patch", namespace, name, e))?;
        Ok(Deployed {
            namespace: namespace.to_owned(),
            deployment: name.to_owned(),
            container: container.to_owned(),
            previous,
            image: image.to_owned(),
            rolled_out: None,
        })
    }

    /// Waits for the rollout of Deployment `name` like `kubectl rollout status`: a list+watch
    /// on `metadata.name=<name>`, each event judged by [`rollout_state`], each distinct message
    /// passed once to `progress` as [`Progress::Status`]. Returns the final message.
    ///
    /// # Errors
    ///
    /// [`Error::Rollout`] with [`RolloutFailure::ProgressDeadlineExceeded`],
    /// [`RolloutFailure::TimedOut`] after `timeout`, or [`RolloutFailure::Deleted`];
    /// [`Error::NotFound`] when the Deployment does not exist when the wait starts; the API
    /// errors of [`Deployer::deploy`] when the watch fails.
    pub async fn wait_for_rollout(
        &self,
        namespace: &str,
        name: &str,
        timeout: Option<Duration>,
        progress: &Events<Progress>,
    ) -> Result<String> {
        let failed = |source| Error::Rollout {
            cluster: self.cluster.clone(),
            namespace: namespace.to_owned(),
            deployment: name.to_owned(),
            source,
        };
        let wait = self.watch_until_done(namespace, name, progress);
        let outcome = match timeout {
            // kubectl's `--timeout=0` means no timeout, as here.
            Some(limit) if !limit.is_zero() => match tokio::time::timeout(limit, wait).await {
                Ok(outcome) => outcome,
                Err(_) => Err(WaitError::Failure(RolloutFailure::TimedOut)),
            },
            _ => wait.await,
        };
        outcome.map_err(|e| match e {
            WaitError::Failure(failure) => failed(failure),
            WaitError::Other(e) => e,
        })
    }

    async fn watch_until_done(
        &self,
        namespace: &str,
        name: &str,
        progress: &Events<Progress>,
    ) -> Result<String, WaitError> {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(self.api(namespace), config).boxed();
        let mut last_message = String::new();
        let mut seen = false;
        let mut listed = false;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                // `410 Gone` (history compacted) and a dropped stream make the watcher relist
                // or rewatch on the next poll, as client-go's reflector does: not a failure.
                Err(watcher::Error::WatchError(response)) if response.code == 410 => continue,
                Err(watcher::Error::WatchFailed(_)) => continue,
                Err(watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e)) => {
                    return Err(WaitError::Other(
                        self.api_error("watch", namespace, name, e),
                    ));
                }
                Err(watcher::Error::WatchError(response)) => {
                    let e = kube::Error::Api(response);
                    return Err(WaitError::Other(
                        self.api_error("watch", namespace, name, e),
                    ));
                }
                Err(other) => {
                    let e = kube::Error::Service(Box::new(other));
                    return Err(WaitError::Other(
                        self.api_error("watch", namespace, name, e),
                    ));
                }
            };
            let deployment = match event {
                watcher::Event::Init => {
                    listed = false;
                    continue;
                }
                watcher::Event::InitApply(d) => {
                    listed = true;
                    d
                }
                watcher::Event::InitDone => {
                    // The object missing from a (re)list: absent from the start is kubectl's
                    // NotFound precondition; gone later is a deletion.
                    if !listed {
                        if seen {
                            return Err(WaitError::Failure(RolloutFailure::Deleted));
                        }
                        return Err(WaitError::Other(Error::NotFound {
                            cluster: self.cluster.clone(),
                            namespace: namespace.to_owned(),
                            deployment: name.to_owned(),
                        }));
                    }
                    continue;
                }
                watcher::Event::Apply(d) => d,
                watcher::Event::Delete(_) => {
                    // kubectl aborts instead of silently watching a recreated object.
                    return Err(WaitError::Failure(RolloutFailure::Deleted));
                }
            };
            seen = true;
            tracing::trace!(
                deployment = name,
                generation = ?deployment.metadata.generation,
                status = ?deployment.status,
                "deployment event"
            );
            let state = rollout_state(&deployment).map_err(WaitError::Failure)?;
            if state.message() != last_message {
                last_message = state.message().to_owned();
                progress.emit(Progress::Status(last_message.clone()));
            }
            if let RolloutState::Complete(message) = state {
                return Ok(message);
            }
        }
        // The watcher stream never ends on its own; treat an end like a dropped connection.
        Err(WaitError::Failure(RolloutFailure::TimedOut))
    }
}

enum WaitError {
    Failure(RolloutFailure),
    Other(Error),
}

fn read_history(deployment: &Deployment, name: &str) -> Result<Vec<HistoryEntry>> {
    let annotation = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HISTORY_ANNOTATION));
    history::parse(annotation.map(String::as_str)).map_err(|source| Error::ReadHistory {
        deployment: name.to_owned(),
        source,
    })
}

fn container_names(deployment: &Deployment) -> Vec<String> {
    deployment
        .spec
        .template
        .spec
        .as_ref()
        .map(|p| p.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

fn container_image(deployment: &Deployment, container: &str) -> Option<String> {
    deployment
        .spec
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?
        .image
        .clone()
}

/// The named container, or the only one.
fn select_container(deployment: &Deployment, name: &str, wanted: Option<&str>) -> Result<String> {
    let names = container_names(deployment);
    match wanted {
        Some(w) if names.iter().any(|n| n == w) => Ok(w.to_owned()),
        Some(w) => Err(Error::UnknownContainer {
            deployment: name.to_owned(),
            container: w.to_owned(),
            names,
        }),
        None if names.len() == 1 => Ok(names[0].clone()),
        None => Err(Error::AmbiguousContainer {
            deployment: name.to_owned(),
            names,
        }),
    }
}

/// `fake (http://127.0.0.1:6443/)`: the kubeconfig cluster name when known, and the URL.
fn cluster_label(
    config: &kube::Config,
    kubeconfig: Option<&Kubeconfig>,
    context: Option<&str>,
) -> String {
    let url = config.cluster_url.to_string();
    let name = kubeconfig.and_then(|kc| {
        let context = context
            .map(str::to_owned)
            .or_else(|| kc.current_context.clone())?;
        kc.contexts
            .iter()
            .find(|c| c.name == context)?
            .context
            .as_ref()
            .map(|c| c.cluster.clone())
    });
    match name {
        Some(n) if !n.is_empty() => format!("{n:?} ({url})"),
        _ => url,
    }
}
