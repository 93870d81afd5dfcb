//! `rbuild rollback`: put back an image from the deploy history.

use std::process::ExitCode;

use anyhow::Context as _;

use super::deploy::{ClusterArgs, Style, WaitArgs, options, printer};

/// Arguments of `rbuild rollback`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The Deployment to roll back.
    pub deployment: String,
    /// The tag or digest (`sha256:…`) of an image in the history [default: the image the last
    /// deploy replaced; two rollbacks in a row toggle, like `kubectl rollout undo`].
    #[arg(long, value_name = "TAG|DIGEST")]
    pub to: Option<String>,
    /// The container [default: the one the last deploy changed].
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Runs `rbuild rollback`: the history annotation says which image to restore, so no
/// ReplicaSet history is needed.
///
/// # Errors
///
/// Connection and API failures, an empty history or a `--to` not in it, a failed rollout.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let deployer = args.cluster.connect().await?;
    let opts = options(&args.cluster, &args.wait, args.container.as_deref());
    deployer
        .rollback(
            &args.deployment,
            args.to.as_deref(),
            &opts,
            printer(Style::Kubectl),
        )
        .await
        .with_context(|| format!("failed to roll back deployment {}", args.deployment))?;
    Ok(ExitCode::SUCCESS)
}
