//! Deploys an image to a Kubernetes Deployment through the `rbuild-deploy` API alone, and waits
//! for the rollout like `kubectl rollout status`.
//!
//! ```text
//! cargo run -p rbuild-deploy --example deploy -- \
//!     web registry.example.com/shop/web:1.4.2 \
//!     registry.example.com/shop/web:1.4.2@sha256:<digest> [NAMESPACE]
//! ```
//!
//! The second argument is the reference as a user writes it; the third is the same image
//! pinned to the digest the registry resolved it to (`rbuild deploy` does that resolution with
//! the registry client). The cluster comes from `$KUBECONFIG`, `~/.kube/config` or the
//! in-cluster service account. On a failed rollout the previous image is put back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::time::Duration;

use anyhow::{Context, bail};
use rbuild_deploy::{ConnectOptions, DeployOptions, Deployer, Progress, check_not_latest};
use rbuild_oci::Reference;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [deployment, requested, pinned, rest @ ..] = args.as_slice() else {
        bail!("usage: deploy DEPLOYMENT REFERENCE PINNED-IMAGE [NAMESPACE]");
    };
    let requested: Reference = requested
        .parse()
        .with_context(|| format!("invalid image reference {requested:?}"))?;
    check_not_latest(&requested, false)?;

    let deployer = Deployer::connect(&ConnectOptions::default()).await?;
    let mut options = DeployOptions::default()
        .timeout(Duration::from_secs(300))
        .rollback_on_failure(true);
    if let Some(namespace) = rest.first() {
        options = options.namespace(namespace);
    }
    let deployed = deployer
        .deploy(
            deployment,
            pinned,
            &requested,
            &options,
            rbuild_oci::Events::new(|event| match event {
                Progress::ImageUpdated {
                    deployment,
                    previous,
                    image,
                    ..
                } => println!("deployment.apps/{deployment} image updated ({previous} -> {image})"),
                Progress::Status(message) => println!("{message}"),
                Progress::RollingBack { image, failure, .. } => {
                    eprintln!("error: {failure}; rolling back to {image}");
                }
                _ => {}
            }),
        )
        .await
        .with_context(|| format!("failed to deploy {} to {deployment}", requested.familiar()))?;
    println!(
        "{}/{} container {} runs {}",
        deployed.namespace, deployed.deployment, deployed.container, deployed.image
    );
    Ok(())
}
