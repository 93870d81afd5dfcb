//! `rbuild deploy`: pin an image to its digest, set it on a Deployment, wait like kubectl.
//!
//! Also the flags `rollback` and `history` share (cluster, namespace) and the `--timeout`
//! duration syntax, which is kubectl's (Go's `time.ParseDuration`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rbuild::Reference;
use rbuild_deploy::{ConnectOptions, DeployOptions, Deployer, Progress};

use super::RegistryFlags;

/// Where the Deployment lives: kubectl's `-n`, `--kubeconfig` and `--context`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ClusterArgs {
    /// The namespace [default: the kubeconfig context's, else `default`].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else in-cluster].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current-context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// Connects to the cluster these flags name.
    ///
    /// # Errors
    ///
    /// When no usable kubeconfig is found or the client cannot be built.
    pub(crate) async fn connect(&self) -> anyhow::Result<Deployer> {
        let mut options = ConnectOptions::default();
        if let Some(k) = &self.kubeconfig {
            options = options.kubeconfig(k);
        }
        if let Some(c) = &self.context {
            options = options.context(c);
        }
        Deployer::connect(&options)
            .await
            .context("failed to connect to the cluster")
    }
}

/// Arguments of `rbuild deploy`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The Deployment to update.
    pub deployment: String,
    /// The image, e.g. `registry.example.com/shop/web:1.4.2`; resolved to its digest.
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// The container to update (needed when the pod template has several).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Accept `latest` or an untagged reference (refused by default: it cannot be rolled back to).
    #[arg(long)]
    pub allow_latest: bool,
    /// When the rollout fails, put the previous image back and wait for that.
    #[arg(long)]
    pub rollback_on_failure: bool,
}

/// `--timeout` and `--no-wait`, as `kubectl rollout status` takes them.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct WaitArgs {
    /// Give up waiting after this long, e.g. `90s`, `5m`, `1h30m` (`0`: no limit, as kubectl).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Do not wait for the rollout.
    #[arg(long)]
    pub no_wait: bool,
}

/// How the image-updated line is worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Today's kubectl: `deployment.apps/web image updated`.
    Kubectl,
    /// The kubectl of the seed's pipeline (1.5): `deployment "web" image updated`, then
    /// `Waiting for deployment...` before the rollout lines.
    Legacy,
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `0`): what kubectl's `--timeout` takes.
///
/// # Errors
///
/// A message naming what is wrong.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration `{s}` (e.g. 90s, 5m)"))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("invalid number in duration `{s}`"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("unknown unit `{unit}` in duration `{s}`")),
        };
        total += value * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

/// Pins `requested` to a digest: a reference that has one is kept as is (it cannot move);
/// otherwise the registry is asked which manifest the tag points at now.
///
/// # Errors
///
/// When the registry cannot be reached or does not know the tag.
pub(crate) async fn pin(flags: &RegistryFlags, requested: &Reference) -> anyhow::Result<Reference> {
    if requested.digest().is_some() {
        return Ok(requested.clone());
    }
    let client = flags.client()?;
    let digest = client
        .resolve_digest(requested)
        .await
        .with_context(|| format!("failed to resolve {requested} to a digest"))?;
    Ok(requested.with_digest(digest))
}

/// Prints the deployer's progress the way kubectl does.
pub(crate) fn printer(style: Style) -> rbuild::Events<Progress> {
    rbuild::Events::new(move |event| match event {
        Progress::ImageUpdated { deployment, .. } => match style {
            Style::Kubectl => println!("deployment.apps/{deployment} image updated"),
            Style::Legacy => {
                println!("deployment \"{deployment}\" image updated");
                println!("Waiting for deployment...");
            }
        },
        Progress::Status(message) => println!("{message}"),
        Progress::RollingBack {
            deployment,
            image,
            failure,
        } => eprintln!(
            "rollout of deployment \"{deployment}\" failed ({failure}): rolling back to {image}"
        ),
        other => println!("{other:?}"),
    })
}

/// The deploy options of these flags.
pub(crate) fn options(
    cluster: &ClusterArgs,
    wait: &WaitArgs,
    container: Option<&str>,
) -> DeployOptions {
    let mut o = DeployOptions::default().wait(!wait.no_wait);
    if let Some(ns) = &cluster.namespace {
        o = o.namespace(ns);
    }
    if let Some(c) = container {
        o = o.container(c);
    }
    if let Some(t) = wait.timeout {
        o = o.timeout(t);
    }
    o
}

/// Runs `rbuild deploy`.
///
/// # Errors
///
/// Latest refused, resolution, connection, API and rollout failures.
pub(crate) async fn run(flags: &RegistryFlags, args: Args) -> anyhow::Result<ExitCode> {
    deploy(flags, args, Style::Kubectl).await
}

/// Deploys with the given output style (the `deploy` command of pipelines uses
/// [`Style::Legacy`]).
///
/// # Errors
///
/// As [`run`].
pub(crate) async fn deploy(
    flags: &RegistryFlags,
    args: Args,
    style: Style,
) -> anyhow::Result<ExitCode> {
    let requested = super::parse_reference(&args.image)?;
    // Refuse before any network round trip: the rule does not depend on the cluster.
    rbuild_deploy::check_not_latest(&requested, args.allow_latest)?;
    let pinned = pin(flags, &requested).await?;
    let deployer = args.cluster.connect().await?;
    let opts = options(&args.cluster, &args.wait, args.container.as_deref())
        .allow_latest(args.allow_latest)
        .rollback_on_failure(args.rollback_on_failure);
    deployer
        .deploy(
            &args.deployment,
            &pinned.to_string(),
            &requested,
            &opts,
            printer(style),
        )
        .await
        .with_context(|| {
            format!(
                "failed to deploy {} to deployment {}",
                requested.familiar(),
                args.deployment
            )
        })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("5d")
                .unwrap_err()
                .contains("unknown unit `d`")
        );
        assert!(parse_duration("").is_err());
    }
}
