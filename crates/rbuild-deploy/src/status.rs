//! kubectl's rollout status algorithm for Deployments, as a pure function.
//!
//! A transcription of `DeploymentStatusViewer.Status` in
//! `k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go`, including its messages, so that
//! `rbuild deploy` prints what `kubectl rollout status` prints and succeeds or fails with it.

use k8s_openapi::api::apps::v1::Deployment;

/// The `Progressing` condition reason the deployment controller sets once
/// `spec.progressDeadlineSeconds` has passed without progress (upstream
/// `deploymentutil.TimedOutReason`).
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";

/// Where a rollout stands, with kubectl's message for it (without its trailing newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    /// Not finished yet, e.g. `Waiting for deployment "web" rollout to finish: 1 out of 2 new
    /// replicas have been updated...`.
    Waiting(String),
    /// Finished: `deployment "web" successfully rolled out`.
    Complete(String),
}

impl RolloutState {
    /// kubectl's message for this state.
    pub fn message(&self) -> &str {
        match self {
            Self::Waiting(m) | Self::Complete(m) => m,
        }
    }

    /// Whether the rollout is complete.
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::Complete(_))
    }
}

/// Why a rollout wait failed; the `Display` text is exactly what kubectl prints after
/// `error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutFailure {
    /// The controller reported `ProgressDeadlineExceeded`.
    #[error("deployment {} exceeded its progress deadline", go_quote(.deployment))]
    ProgressDeadlineExceeded {
        /// The deployment name.
        deployment: String,
    },
    /// The wait's own timeout passed first (client-go `wait.ErrWaitTimeout`).
    #[error("timed out waiting for the condition")]
    TimedOut,
    /// The Deployment was deleted while waiting (kubectl aborts rather than watch a recreated
    /// object).
    #[error("object has been deleted")]
    Deleted,
}

/// Evaluates a Deployment the way `kubectl rollout status` does (revision unpinned).
///
/// The order matters and is upstream's: nothing counts before the controller has observed the
/// current generation; then a progress-deadline condition fails the rollout; then updated
/// replicas, old replicas pending termination, and available replicas are checked in turn.
///
/// # Errors
///
/// [`RolloutFailure::ProgressDeadlineExceeded`] when the observed status carries the
/// `Progressing` condition with reason `ProgressDeadlineExceeded`.
pub fn rollout_state(deployment: &Deployment) -> Result<RolloutState, RolloutFailure> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let quoted = go_quote(&name);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if generation > observed {
        return Ok(RolloutState::Waiting(
            "Waiting for deployment spec update to be observed...".to_owned(),
        ));
    }
    let timed_out = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing") && c.reason.as_deref() == Some(TIMED_OUT_REASON)
    });
    if timed_out {
        return Err(RolloutFailure::ProgressDeadlineExceeded { deployment: name });
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    // `spec.replicas` is nil-checked upstream: an unset count skips the first test.
    if let Some(wanted) = deployment.spec.replicas
        && updated < wanted
    {
        return Ok(RolloutState::Waiting(format!(
            "Waiting for deployment {quoted} rollout to finish: {updated} out of {wanted} new replicas have been updated..."
        )));
    }
    if replicas > updated {
        return Ok(RolloutState::Waiting(format!(
            "Waiting for deployment {quoted} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        )));
    }
    if available < updated {
        return Ok(RolloutState::Waiting(format!(
            "Waiting for deployment {quoted} rollout to finish: {available} of {updated} updated replicas are available..."
        )));
    }
    Ok(RolloutState::Complete(format!(
        "deployment {quoted} successfully rolled out"
    )))
}

/// Go's `%q` for the strings a Deployment name can hold (DNS-1123 subdomains are printable
/// ASCII, so quoting `"` and `\` is all `strconv.Quote` would do to them).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn deployment(
        generation: i64,
        observed: i64,
        wanted: i32,
        (replicas, updated, available): (i32, i32, i32),
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".to_owned()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: DeploymentSpec {
                replicas: Some(wanted),
                ..DeploymentSpec::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn message(d: &Deployment) -> String {
        rollout_state(d).unwrap().message().to_owned()
    }

    #[test]
    fn generation_not_observed_comes_first() {
        // Even with a deadline condition, an unobserved spec only waits.
        let mut d = deployment(3, 2, 2, (2, 2, 2));
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: Some("Progressing".to_owned()),
            status: Some("False".to_owned()),
            reason: Some(TIMED_OUT_REASON.to_owned()),
            ..DeploymentCondition::default()
        }]);
        assert_eq!(
            message(&d),
            "Waiting for deployment spec update to be observed..."
        );
        d.status.as_mut().unwrap().observed_generation = Some(3);
        let failure = rollout_state(&d).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
    }

    #[test]
    fn kubectl_messages_in_order() {
        assert_eq!(
            message(&deployment(2, 2, 2, (3, 1, 2))),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated..."
        );
        assert_eq!(
            message(&deployment(2, 2, 2, (3, 2, 2))),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            message(&deployment(2, 2, 2, (2, 2, 1))),
            "Waiting for deployment \"web\" rollout to finish: 1 of 2 updated replicas are available..."
        );
        let done = rollout_state(&deployment(2, 2, 2, (2, 2, 2))).unwrap();
        assert!(done.is_complete());
        assert_eq!(done.message(), "deployment \"web\" successfully rolled out");
    }

    #[test]
    fn missing_status_waits_for_observation() {
        let mut d = deployment(1, 0, 1, (0, 0, 0));
        d.status = None;
        assert_eq!(
            message(&d),
            "Waiting for deployment spec update to be observed..."
        );
    }

    #[test]
    fn go_quote_escapes_like_strconv_quote() {
        assert_eq!(go_quote("web"), "\"web\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
