//! The docker CLI subset: `docker …` argv translated into `rbuild …` argv.
//!
//! `docker login|build|tag|pull|images` become the matching rbuild commands; `docker push`,
//! `docker run` and `docker inspect` go through the hidden `rbuild shim …` commands, which do
//! a little more than rbuild's own (see the parent module).

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::Parser;
use rbuild_pipeline::shim_env::{INSECURE_ENV, TLS_VERIFY_ENV};

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
pub(crate) fn argv(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
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
        // rbuild's executor image: `/rbuild/executor`, as kaniko's `/kaniko/executor`.
        "executor" => ["rbuild", "executor"]
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
}
