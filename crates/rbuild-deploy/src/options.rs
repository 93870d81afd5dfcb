//! Options and reports of the deployer: what the CLI flags map to, and what it shows.

use std::path::PathBuf;
use std::time::Duration;

use crate::status::RolloutFailure;

/// Where to find the cluster: `--kubeconfig` and `--context`.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) context: Option<String>,
}

impl ConnectOptions {
    /// Reads this kubeconfig file instead of `$KUBECONFIG` / `~/.kube/config`.
    #[must_use]
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Uses this kubeconfig context instead of `current-context`.
    #[must_use]
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }
}

/// Options of [`Deployer::deploy`](crate::Deployer::deploy) and [`Deployer::rollback`](crate::Deployer::rollback).
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub(crate) namespace: Option<String>,
    pub(crate) container: Option<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) allow_latest: bool,
    pub(crate) rollback_on_failure: bool,
    pub(crate) wait: bool,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            container: None,
            timeout: None,
            allow_latest: false,
            rollback_on_failure: false,
            wait: true,
        }
    }
}

impl DeployOptions {
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The container to update (needed when the pod template has several).
    #[must_use]
    pub fn container(mut self, container: impl Into<String>) -> Self {
        self.container = Some(container.into());
        self
    }

    /// Gives up waiting after `timeout` (default: wait until the rollout ends).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Accepts `latest` and untagged references.
    #[must_use]
    pub fn allow_latest(mut self, allow: bool) -> Self {
        self.allow_latest = allow;
        self
    }

    /// Puts the previous image back, and waits for that, when the rollout fails.
    #[must_use]
    pub fn rollback_on_failure(mut self, rollback: bool) -> Self {
        self.rollback_on_failure = rollback;
        self
    }

    /// Whether to wait for the rollout (default `true`; `--no-wait` sets `false`).
    #[must_use]
    pub fn wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }
}

/// What the deployer reports while it works, for the caller to display (through an
/// [`Events`](rbuild_oci::Events) sink, as build, push and pull events are).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The image was set: kubectl says `deployment.apps/<name> image updated`.
    ImageUpdated {
        /// The deployment.
        deployment: String,
        /// The container.
        container: String,
        /// The image replaced.
        previous: String,
        /// The image set.
        image: String,
    },
    /// A rollout status message, each distinct one once, exactly as `kubectl rollout status`
    /// prints it (e.g. `deployment "web" successfully rolled out`).
    Status(String),
    /// The rollout failed and the previous image is being put back.
    RollingBack {
        /// The deployment.
        deployment: String,
        /// The image being restored.
        image: String,
        /// Why.
        failure: RolloutFailure,
    },
}

/// The result of a successful deploy or rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The namespace.
    pub namespace: String,
    /// The deployment.
    pub deployment: String,
    /// The container updated.
    pub container: String,
    /// The image before.
    pub previous: String,
    /// The image now.
    pub image: String,
    /// kubectl's final message when the rollout was waited for.
    pub rolled_out: Option<String>,
}
