//! Multi-call: invoked as `docker` or `deploy` (a symlink to the `rbuild` binary), rbuild
//! speaks the subset of those commands that CI scripts written for Docker use, so that such a
//! pipeline runs unchanged with no daemon.
//!
//! `docker login|build|tag|pull|run|images` become the matching rbuild commands; `docker
//! push` and `docker inspect` and `deploy` go through the hidden `rbuild shim …` commands
//! below, because they do a little more than rbuild's own: a push is recorded in the file
//! named by [`PUSHES_ENV`] so that `deploy NAME` knows the image this job pushed last, and
//! `docker inspect` prints docker's JSON shape and `--format` fields.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use rbuild::registry::PullEvent;

use crate::commands::deploy::{self, ClusterArgs, Style, WaitArgs};
use crate::commands::{self, RegistryFlags};

/// The environment variable naming the file where `docker push` appends each pushed image
/// (`repo:tag@sha256:…`, one a line); the pipeline runner sets it per job.
pub const PUSHES_ENV: &str = "RBUILD_JOB_PUSHES";

/// Comma-separated registries the shims speak plain HTTP to (the pipeline's
/// `--insecure-registry` flags, passed down to its jobs).
pub const INSECURE_ENV: &str = "RBUILD_INSECURE_REGISTRIES";

/// `false` when the pipeline ran with `--tls-verify=false`.
pub const TLS_VERIFY_ENV: &str = "RBUILD_TLS_VERIFY";

/// The global flags a shim passes on from the environment the pipeline runner set.
fn inherited_flags() -> Vec<String> {
    let mut flags = Vec::new();
    if let Ok(list) = std::env::var(INSECURE_ENV) {
        for h in list.split(',').filter(|h| !h.is_empty()) {
            flags.push(format!("--insecure-registry={h}"));
        }
    }
    if std::env::var(TLS_VERIFY_ENV).is_ok_and(|v| v == "false") {
        flags.push("--tls-verify=false".to_owned());
    }
    flags
}

/// The name the binary was invoked under (the file name of `argv[0]`).
fn invoked_as(argv0: &OsStr) -> String {
    Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// rbuild's own argv for this process: unchanged when invoked as `rbuild`, translated when
/// invoked as `docker` or `deploy`.
///
/// # Errors
///
/// A docker command or flag outside the supported subset.
pub fn argv(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(argv0) = args.first() else {
        return Ok(args);
    };
    let rest = || args[1..].iter().map(|a| a.to_string_lossy().into_owned());
    let mut translated: Vec<String> = match invoked_as(argv0).as_str() {
        "docker" => translate_docker(&Docker::try_parse_from(
            std::iter::once("docker".to_owned()).chain(rest()),
        )?)?,
        "deploy" => ["rbuild", "shim", "deploy"]
            .into_iter()
            .map(str::to_owned)
            .chain(rest())
            .collect(),
        _ => return Ok(args),
    };
    // Global flags go right after the program name, where `rbuild` takes them too.
    translated.splice(1..1, inherited_flags());
    Ok(translated.into_iter().map(OsString::from).collect())
}

/// The docker CLI subset.
#[derive(Debug, Parser)]
#[command(
    name = "docker",
    about = "rbuild's daemonless stand-in for the docker CLI"
)]
struct Docker {
    #[command(subcommand)]
    command: DockerCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DockerCommand {
    /// Log in to a registry.
    Login {
        #[arg(short = 'u', long)]
        username: Option<String>,
        #[arg(short = 'p', long)]
        password: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        /// [default: Docker Hub]
        server: Option<String>,
    },
    /// Build an image from a Dockerfile.
    Build {
        #[arg(short = 't', long = "tag")]
        tags: Vec<String>,
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
        #[arg(long = "build-arg")]
        build_args: Vec<String>,
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        no_cache: bool,
        /// Accepted; the base image is pulled when the store does not have it.
        #[arg(long)]
        pull: bool,
        /// Accepted: there are no intermediate containers to remove.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        rm: Option<String>,
        #[arg(long)]
        force_rm: bool,
        #[arg(short = 'q', long)]
        quiet: bool,
        context: String,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Push an image.
    Push { reference: String },
    /// Pull an image.
    Pull { reference: String },
    /// Run a command in an image.
    Run {
        #[arg(long)]
        rm: bool,
        #[arg(short = 'i', long)]
        interactive: bool,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(long)]
        entrypoint: Option<String>,
        #[arg(long, alias = "net")]
        network: Option<String>,
        #[arg(long)]
        name: Option<String>,
        image: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List images.
    Images {
        #[arg(long)]
        no_trunc: bool,
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// Print image details as JSON.
    Inspect {
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(required = true)]
        references: Vec<String>,
    },
}

fn translate_docker(d: &Docker) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = vec!["rbuild".into()];
    let mut push = |s: &str| v.push(s.to_owned());
    match &d.command {
        DockerCommand::Login {
            username,
            password,
            password_stdin,
            server,
        } => {
            push("login");
            if let Some(u) = username {
                push("-u");
                push(u);
            }
            if let Some(p) = password {
                push("--password");
                push(p);
            }
            if *password_stdin {
                push("--password-stdin");
            }
            push(server.as_deref().unwrap_or("docker.io"));
        }
        DockerCommand::Build {
            tags,
            file,
            build_args,
            labels,
            target,
            no_cache,
            context,
            ..
        } => {
            push("build");
            push("--progress");
            push("plain");
            for t in tags {
                push("-t");
                push(t);
            }
            if let Some(f) = file {
                push("-f");
                push(f);
            }
            for b in build_args {
                push("--build-arg");
                push(b);
            }
            for l in labels {
                push("--label");
                push(l);
            }
            if let Some(t) = target {
                push("--target");
                push(t);
            }
            if *no_cache {
                push("--no-cache");
            }
            push(context);
        }
        DockerCommand::Tag { source, target } => {
            push("tag");
            push(source);
            push(target);
        }
        DockerCommand::Push { reference } => {
            push("shim");
            push("push");
            push(reference);
        }
        DockerCommand::Pull { reference } => {
            push("pull");
            push(reference);
        }
        DockerCommand::Run {
            env,
            user,
            entrypoint,
            network,
            image,
            command,
            ..
        } => {
            // Through the shim: docker pulls an image the store does not have.
            push("shim");
            push("run");
            for e in env {
                push("-e");
                // docker: `-e NAME` passes the variable from the caller's environment.
                if e.contains('=') {
                    push(e);
                } else {
                    push(&format!("{e}={}", std::env::var(e).unwrap_or_default()));
                }
            }
            if let Some(u) = user {
                push("--user");
                push(u);
            }
            if let Some(e) = entrypoint {
                push("--entrypoint");
                push(e);
            }
            match network.as_deref() {
                None | Some("host" | "default" | "bridge") => {}
                Some("none") => push("--no-network"),
                Some(other) => anyhow::bail!("docker run --network {other} is not supported"),
            }
            push(image);
            for c in command {
                push(c);
            }
        }
        DockerCommand::Images { no_trunc, .. } => {
            push("images");
            if *no_trunc {
                push("--no-trunc");
            }
        }
        DockerCommand::Inspect { format, references } => {
            push("shim");
            push("inspect");
            if let Some(f) = format {
                push("--format");
                push(f);
            }
            for r in references {
                push(r);
            }
        }
    }
    Ok(v)
}

/// The hidden `rbuild shim` commands behind the `docker` and `deploy` names.
#[derive(Debug, clap::Subcommand)]
pub enum Shim {
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
pub async fn run(root: &Path, flags: &RegistryFlags, shim: Shim) -> anyhow::Result<ExitCode> {
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
        rbuild::registry::pull(&store, &client, &reference, None, &|_: PullEvent| {})
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

/// Expands the `{{.A.B}}` and `{{json .A.B}}` actions of a Go template against `value`;
/// strings print raw, anything else as JSON.
fn format_template(template: &str, value: &serde_json::Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .with_context(|| format!("unclosed `{{{{` in format {template:?}"))?;
        let action = after[..end].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let Some(path) = path.strip_prefix('.') else {
            anyhow::bail!("unsupported format action `{action}`: only .Field and json .Field");
        };
        let mut v = value;
        for field in path.split('.').filter(|f| !f.is_empty()) {
            v = &v[field];
        }
        match v {
            serde_json::Value::String(s) if !json => out.push_str(s),
            other => out.push_str(&serde_json::to_string(other)?),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
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

/// The kubeconfig of `$KUBECONFIG`: a path, or (as a GitLab variable often holds) the file's
/// content, which is written to a private temporary file.
fn kubeconfig_from_env() -> anyhow::Result<Option<(PathBuf, Option<tempfile::TempPath>)>> {
    let Some(value) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    if text.contains('\n') || text.trim_start().starts_with("apiVersion") {
        let mut file = tempfile::Builder::new()
            .prefix("rbuild-kubeconfig-")
            .tempfile()
            .context("failed to write the kubeconfig of $KUBECONFIG")?;
        file.write_all(text.as_bytes())
            .context("failed to write the kubeconfig of $KUBECONFIG")?;
        let path = file.into_temp_path();
        return Ok(Some((path.to_path_buf(), Some(path))));
    }
    Ok(Some((PathBuf::from(value), None)))
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
    let kubeconfig = kubeconfig_from_env()?;
    let cluster = ClusterArgs {
        namespace: std::env::var("KUBE_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty()),
        kubeconfig: kubeconfig.as_ref().map(|(p, _)| p.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(args: &[&str]) -> Vec<String> {
        argv(args.iter().map(OsString::from).collect())
            .unwrap()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_line_definitions_are_consistent() {
        use clap::CommandFactory as _;
        crate::Cli::command().debug_assert();
        Docker::command().debug_assert();
    }

    #[test]
    fn rbuild_argv_is_unchanged() {
        assert_eq!(
            translate(&["/usr/bin/rbuild", "images"]),
            ["/usr/bin/rbuild", "images"]
        );
    }

    #[test]
    fn docker_commands_become_rbuild_commands() {
        assert_eq!(
            translate(&[
                "/x/docker",
                "build",
                "-t",
                "r/a:1",
                "--pull",
                "--build-arg",
                "A=b",
                "."
            ]),
            [
                "rbuild",
                "build",
                "--progress",
                "plain",
                "-t",
                "r/a:1",
                "--build-arg",
                "A=b",
                "."
            ]
        );
        assert_eq!(
            translate(&["docker", "login", "-u", "u", "-p", "pw", "127.0.0.1:5000"]),
            [
                "rbuild",
                "login",
                "-u",
                "u",
                "--password",
                "pw",
                "127.0.0.1:5000"
            ]
        );
        assert_eq!(
            translate(&["docker", "login", "-u", "u", "-p", "pw"])
                .last()
                .map(String::as_str),
            Some("docker.io")
        );
        assert_eq!(
            translate(&["docker", "push", "r/a:1"]),
            ["rbuild", "shim", "push", "r/a:1"]
        );
        assert_eq!(
            translate(&[
                "docker", "run", "--rm", "-it", "-e", "A=1", "r/a:1", "sh", "-c", "echo hi"
            ]),
            [
                "rbuild", "shim", "run", "-e", "A=1", "r/a:1", "sh", "-c", "echo hi"
            ]
        );
        assert_eq!(
            translate(&["docker", "inspect", "--format", "{{.Id}}", "r/a:1"]),
            ["rbuild", "shim", "inspect", "--format", "{{.Id}}", "r/a:1"]
        );
        assert_eq!(
            translate(&["deploy", "web-staging-server"]),
            ["rbuild", "shim", "deploy", "web-staging-server"]
        );
    }

    #[test]
    fn unsupported_docker_commands_are_errors() {
        assert!(argv(["docker", "compose", "up"].map(OsString::from).to_vec()).is_err());
        assert!(
            argv(
                ["docker", "run", "--network", "mynet", "a:1"]
                    .map(OsString::from)
                    .to_vec()
            )
            .is_err()
        );
    }

    #[test]
    fn templates_pick_fields() {
        let v = serde_json::json!({"Id": "sha256:ab", "Config": {"Env": ["A=1"], "User": "app"}});
        assert_eq!(format_template("{{.Id}}", &v).unwrap(), "sha256:ab");
        assert_eq!(
            format_template("user={{.Config.User}} env={{json .Config.Env}}", &v).unwrap(),
            "user=app env=[\"A=1\"]"
        );
        assert!(format_template("{{range .X}}", &v).is_err());
    }
}
