//! Multi-call: invoked as `docker` or `deploy` (a symlink to the `rbuild` binary), rbuild
//! speaks the subset of those commands that CI scripts written for Docker use, so that such a
//! pipeline runs unchanged with no daemon.
//!
//! [`docker`] translates the argv; `docker push`, `docker run`, `docker inspect` and `deploy`
//! go through the hidden `rbuild shim …` commands below, because they do a little more than
//! rbuild's own: a push is recorded in the file named by [`PUSHES_ENV`] so that `deploy NAME`
//! knows the image this job pushed last, and `docker inspect` prints docker's JSON shape and
//! `--format` fields ([`template`]). `deploy` reads `$KUBECONFIG` as a path or as the file's
//! content ([`kubeconfig`]).

mod docker;
mod kubeconfig;
mod template;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use rbuild::registry::Events;
use rbuild_pipeline::shim_env::PUSHES_ENV;

use crate::commands::deploy::{self, ClusterArgs, Style, WaitArgs};
use crate::commands::{self, RegistryFlags};

pub(crate) use docker::argv;
use template::format_template;

/// The hidden `rbuild shim` commands behind the `docker` and `deploy` names.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Shim {
    /// `docker push`: push, then record the pushed image for `deploy`.
    Push {
        /// The image in the store.
        reference: String,
    },
    /// `docker run`: pull the image if the store lacks it, then run it.
    Run {
        /// Environment (repeatable).
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// User.
        #[arg(long)]
        user: Option<String>,
        /// Entrypoint.
        #[arg(long)]
        entrypoint: Option<String>,
        /// No network.
        #[arg(long)]
        no_network: bool,
        /// The image.
        image: String,
        /// Command and arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// `docker inspect`: docker's JSON array, or the `--format` fields.
    Inspect {
        /// A Go-template subset: `{{.Field.Sub}}` and `{{json .Field}}`.
        #[arg(short = 'f', long)]
        format: Option<String>,
        /// Images in the store.
        references: Vec<String>,
    },
    /// `deploy NAME [--image REF]`: the deployer with the image this job pushed last.
    Deploy {
        /// The Deployment.
        deployment: String,
        /// The image [default: the last `docker push` of this job].
        #[arg(long, value_name = "REF")]
        image: Option<String>,
        /// The container to update.
        #[arg(long)]
        container: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// Runs a shim command.
///
/// # Errors
///
/// The failure of the command it stands for.
pub(crate) async fn run(
    root: &Path,
    flags: &RegistryFlags,
    shim: Shim,
) -> anyhow::Result<ExitCode> {
    match shim {
        Shim::Push { reference } => push(root, flags, &reference).await,
        Shim::Run {
            env,
            user,
            entrypoint,
            no_network,
            image,
            command,
        } => {
            let mut args = Vec::new();
            for e in env {
                args.extend(["-e".to_owned(), e]);
            }
            if let Some(u) = user {
                args.extend(["--user".to_owned(), u]);
            }
            if let Some(e) = entrypoint {
                args.extend(["--entrypoint".to_owned(), e]);
            }
            if no_network {
                args.push("--no-network".to_owned());
            }
            args.push(image.clone());
            args.extend(command);
            run_container(root, flags, &image, args).await
        }
        Shim::Inspect { format, references } => inspect(root, format.as_deref(), &references),
        Shim::Deploy {
            deployment,
            image,
            container,
            wait,
        } => deploy_last(flags, deployment, image, container, wait).await,
    }
}

async fn push(root: &Path, flags: &RegistryFlags, reference: &str) -> anyhow::Result<ExitCode> {
    let dest = commands::parse_reference(reference)?;
    let store = commands::open_store(root)?;
    let client = flags.client()?;
    let result = commands::push::push_one(&store, &client, reference, &dest).await?;
    if let Some(file) = std::env::var_os(PUSHES_ENV).filter(|f| !f.is_empty()) {
        let pinned = dest.with_digest(result.digest);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .with_context(|| format!("failed to record the push in {}", file.to_string_lossy()))?;
        writeln!(f, "{pinned}").context("failed to record the push")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `rbuild run`'s arguments, parsed as `rbuild run` would.
#[derive(Debug, Parser)]
struct RunCommand {
    #[command(flatten)]
    args: commands::run::Args,
}

async fn run_container(
    root: &Path,
    flags: &RegistryFlags,
    image: &str,
    args: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let parsed = RunCommand::try_parse_from(std::iter::once("run".to_owned()).chain(args))?;
    let store = commands::open_store(root)?;
    if rbuild::image::resolve(&store, image).is_err() {
        // docker's behaviour: `Unable to find image '…' locally`, then a pull.
        eprintln!("Unable to find image '{image}' locally");
        let reference = commands::parse_reference(image)?;
        let client = flags.client()?;
        rbuild::registry::pull(&store, &client, &reference, None, Events::none())
            .await
            .with_context(|| format!("failed to pull {reference}"))?;
    }
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || commands::run::run(&root, parsed.args))
        .await
        .context("the container task failed")?
}

/// docker's `inspect` object for an image in the store.
fn docker_object(store: &rbuild::Store, reference: &str) -> anyhow::Result<serde_json::Value> {
    let img = commands::load_image(store, reference)?;
    let tags: Vec<String> = store
        .images()?
        .into_iter()
        .filter(|(_, d)| d.digest().to_string() == img.digest.to_string())
        .map(|(r, _)| r.familiar())
        .collect();
    let config = serde_json::to_value(&img.config)?;
    Ok(serde_json::json!({
        "Id": img.manifest["config"]["digest"],
        "RepoTags": tags,
        "RepoDigests": [],
        "Created": config["created"],
        "Author": config["author"],
        "Architecture": config["architecture"],
        "Os": config["os"],
        "Config": config["config"],
        "RootFS": config["rootfs"],
        "Size": img.layers.iter().map(|l| l.size).sum::<u64>(),
        "ManifestDigest": img.digest.to_string(),
    }))
}

fn inspect(root: &Path, format: Option<&str>, references: &[String]) -> anyhow::Result<ExitCode> {
    let store = commands::open_store(root)?;
    let mut objects = Vec::new();
    for r in references {
        objects.push(docker_object(&store, r)?);
    }
    match format {
        Some(f) => {
            for o in &objects {
                println!("{}", format_template(f, o)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&objects)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// The last line of the pushes file: the image this job pushed last.
fn last_push() -> anyhow::Result<String> {
    let file = std::env::var_os(PUSHES_ENV)
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .with_context(|| {
            format!("no image given and ${PUSHES_ENV} is not set: use deploy NAME --image REF")
        })?;
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .context("no image given and this job pushed none: push one first or use --image REF")
}

async fn deploy_last(
    flags: &RegistryFlags,
    deployment: String,
    image: Option<String>,
    container: Option<String>,
    wait: WaitArgs,
) -> anyhow::Result<ExitCode> {
    let image = match image {
        Some(i) => i,
        None => last_push()?,
    };
    // Keep the temporary kubeconfig alive until the deploy is done.
    let kubeconfig = kubeconfig::from_env()?;
    let cluster = ClusterArgs {
        namespace: std::env::var("KUBE_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty()),
        kubeconfig: kubeconfig.as_ref().map(|k| k.path.clone()),
        context: None,
    };
    let args = deploy::Args {
        deployment,
        image,
        container,
        cluster,
        wait,
        allow_latest: false,
        rollback_on_failure: false,
    };
    let code = deploy::deploy(flags, args, Style::Legacy).await;
    drop(kubeconfig);
    code
}
