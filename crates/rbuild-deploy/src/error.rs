//! Errors of the deployer. Every error about a Deployment names the cluster, the namespace and
//! the deployment, so that a message alone says where to look.

use std::path::PathBuf;

use crate::status::RolloutFailure;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file given explicitly could not be read or used.
    #[error("cannot load kubeconfig {}", path.display())]
    LoadKubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No configuration found: no `$KUBECONFIG`, no `~/.kube/config`, not in a cluster; or the
    /// one found is unusable.
    #[error(
        "cannot find a Kubernetes configuration (tried --kubeconfig, $KUBECONFIG, ~/.kube/config, the in-cluster service account)"
    )]
    InferConfig {
        /// Why.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The kubeconfig has no context of that name, or its context is unusable.
    #[error("cannot use kubeconfig context {context:?}")]
    UseContext {
        /// The requested context.
        context: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The HTTP client could not be built from the configuration.
    #[error("cannot create a client for cluster {cluster}")]
    CreateClient {
        /// The cluster.
        cluster: String,
        /// Why.
        #[source]
        source: Box<kube::Error>,
    },
    /// `latest` or an untagged reference without `--allow-latest`.
    #[error(
        "refusing to deploy {reference}: `latest` is a moving tag; tag the image with a version, or pass --allow-latest"
    )]
    LatestRefused {
        /// The reference as requested.
        reference: String,
    },
    /// The image to set is not pinned to a digest.
    #[error("image {image:?} is not pinned: expected repo:tag@sha256:<digest>")]
    NotPinned {
        /// The image string.
        image: String,
    },
    /// The Deployment does not exist.
    #[error("deployment {deployment:?} not found in namespace {namespace:?} on cluster {cluster}")]
    NotFound {
        /// The cluster.
        cluster: String,
        /// The namespace.
        namespace: String,
        /// The deployment.
        deployment: String,
    },
    /// The credentials may not do this (`403`), or were refused (`401`).
    #[error(
        "not allowed to {verb} deployment {deployment:?} in namespace {namespace:?} on cluster {cluster}: {message}"
    )]
    Forbidden {
        /// The cluster.
        cluster: String,
        /// The namespace.
        namespace: String,
        /// The deployment.
        deployment: String,
        /// `get`, `patch` or `watch`.
        verb: &'static str,
        /// The API server's message.
        message: String,
    },
    /// The API server could not be reached.
    #[error(
        "cannot reach cluster {cluster} to {verb} deployment {deployment:?} in namespace {namespace:?}"
    )]
    Unreachable {
        /// The cluster.
        cluster: String,
        /// The namespace.
        namespace: String,
        /// The deployment.
        deployment: String,
        /// `get`, `patch` or `watch`.
        verb: &'static str,
        /// The transport error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Any other API failure.
    #[error(
        "failed to {verb} deployment {deployment:?} in namespace {namespace:?} on cluster {cluster}"
    )]
    Api {
        /// The cluster.
        cluster: String,
        /// The namespace.
        namespace: String,
        /// The deployment.
        deployment: String,
        /// `get`, `patch` or `watch`.
        verb: &'static str,
        /// The error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The deployment has several containers and none was named.
    #[error(
        "deployment {deployment:?} has several containers ({}): choose one with --container",
        names.join(", ")
    )]
    AmbiguousContainer {
        /// The deployment.
        deployment: String,
        /// Its containers.
        names: Vec<String>,
    },
    /// The named container is not in the pod template.
    #[error(
        "deployment {deployment:?} has no container {container:?} (containers: {})",
        names.join(", ")
    )]
    UnknownContainer {
        /// The deployment.
        deployment: String,
        /// The requested container.
        container: String,
        /// Its containers.
        names: Vec<String>,
    },
    /// The history annotation is not what rbuild writes.
    #[error(
        "deployment {deployment:?} has an unreadable {} annotation",
        crate::HISTORY_ANNOTATION
    )]
    ReadHistory {
        /// The deployment.
        deployment: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Nothing to roll back to.
    #[error(
        "deployment {deployment:?} in namespace {namespace:?} has no deploy history for container {container:?}: nothing to roll back to"
    )]
    NoHistory {
        /// The namespace.
        namespace: String,
        /// The deployment.
        deployment: String,
        /// The container.
        container: String,
    },
    /// `rollback --to` named an image that is not in the history.
    #[error(
        "deployment {deployment:?} never ran an image matching {wanted:?} in container {container:?} (see `rbuild history`)"
    )]
    NotInHistory {
        /// The deployment.
        deployment: String,
        /// The container.
        container: String,
        /// The tag, digest or image asked for.
        wanted: String,
    },
    /// The rollout failed (deadline, timeout, deletion).
    #[error(
        "rollout of deployment {deployment:?} in namespace {namespace:?} on cluster {cluster} failed"
    )]
    Rollout {
        /// The cluster.
        cluster: String,
        /// The namespace.
        namespace: String,
        /// The deployment.
        deployment: String,
        /// kubectl's message for the failure.
        #[source]
        source: RolloutFailure,
    },
    /// The rollout failed, and the previous image was put back and rolled out successfully.
    #[error(
        "rollout of deployment {deployment:?} in namespace {namespace:?} failed; rolled back to {previous}"
    )]
    RolledBack {
        /// The namespace.
        namespace: String,
        /// The deployment.
        deployment: String,
        /// The image restored.
        previous: String,
        /// Why the rollout failed.
        #[source]
        source: RolloutFailure,
    },
    /// The rollout failed, and so did rolling back.
    #[error(
        "rollout of deployment {deployment:?} failed ({failure}) and rolling back to {previous} failed too"
    )]
    RollbackFailed {
        /// The deployment.
        deployment: String,
        /// The image that was to be restored.
        previous: String,
        /// Why the rollout failed.
        failure: RolloutFailure,
        /// Why the rollback failed.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The rollout failure with kubectl's message, if this error is (or wraps) one.
    pub fn rollout_failure(&self) -> Option<&RolloutFailure> {
        match self {
            Self::Rollout { source, .. } | Self::RolledBack { source, .. } => Some(source),
            Self::RollbackFailed { failure, .. } => Some(failure),
            _ => None,
        }
    }
}
