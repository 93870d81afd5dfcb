//! The `rbuild` command line: build, store, run and ship OCI images without a daemon.

mod commands;
mod interrupt;
mod progress;
mod shim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Daemonless OCI image builder and registry client.
#[derive(Debug, Parser)]
#[command(name = "rbuild", version, about)]
struct Cli {
    /// The store directory [default: $RBUILD_ROOT, else $XDG_DATA_HOME/rbuild, else ~/.local/share/rbuild].
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,

    #[command(flatten)]
    registry: commands::RegistryFlags,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<commands::build::Args>),
    /// List the images in the store.
    Images(commands::images::Args),
    /// Print an image's digest, manifest and config as JSON.
    Inspect(commands::inspect::Args),
    /// Write an image to a directory or archive.
    Save(commands::save::Args),
    /// Run a command in an image.
    Run(commands::run::Args),
    /// Remove image tags.
    Rmi(commands::rmi::Args),
    /// Remove blobs, unpacked layers and cache entries that no image refers to.
    Prune(commands::prune::Args),
    /// Verify the store: blob digests, tags, manifests, layer directories, cache entries.
    Check(commands::check::Args),
    /// Parse a Dockerfile and print it.
    Parse(commands::parse::Args),
    /// Pull an image from a registry into the store.
    Pull(commands::pull::Args),
    /// Push an image from the store to a registry.
    Push(commands::push::Args),
    /// Give an image in the store another name.
    Tag(commands::tag::Args),
    /// Log in to a registry (verifies, then stores the credentials in config.json).
    Login(commands::login::Args),
    /// Remove a registry's credentials from config.json.
    Logout(commands::logout::Args),
    /// List the tags of a repository in a registry.
    Ls(commands::ls::Args),
    /// Set a Kubernetes Deployment's image (pinned to its digest) and wait for the rollout.
    Deploy(commands::deploy::Args),
    /// Put back a Deployment's previous image (or one named with --to) from the deploy history.
    Rollback(commands::rollback::Args),
    /// Show the deploys and rollbacks recorded on a Deployment.
    History(commands::history::Args),
    /// Run or plan a `.gitlab-ci.yml` pipeline locally.
    #[command(subcommand)]
    Pipeline(commands::pipeline::Command),
    /// Registry tools: `conformance` checks a registry against the OCI distribution spec.
    #[command(subcommand)]
    Registry(commands::registry::Command),
    /// What the `docker` and `deploy` names of this binary run.
    #[command(subcommand, hide = true)]
    Shim(shim::Shim),
    /// Build like kaniko's executor (its flags), in place inside an unprivileged container.
    Executor(Box<commands::executor::Args>),
    /// Say how builds would run here: rootful, rootless (user namespace), and what is missing.
    Info(commands::info::Args),
    /// Run a command (default: a shell) as root in the user namespace rootless builds use.
    Unshare(commands::unshare::Args),
}

impl Command {
    /// Whether the command reads or writes the store or runs sandboxes, and so needs root or a
    /// user namespace (files in a rootless store belong to the user's subordinate ids).
    fn needs_root(&self) -> bool {
        !matches!(
            self,
            Command::Parse(_)
                | Command::Login(_)
                | Command::Logout(_)
                | Command::Ls(_)
                | Command::Deploy(_)
                | Command::Rollback(_)
                | Command::History(_)
                | Command::Registry(_)
                | Command::Info(_)
        )
    }
}

/// As an ordinary user, continues in a user namespace where this process is root (see
/// `rbuild_sandbox::userns`); must run before any thread is started. `Some(code)` in the
/// original process once the namespaced one is done.
fn enter_user_namespace() -> Option<ExitCode> {
    use rbuild::sandbox::userns::{self, Entered};
    match userns::enter() {
        Ok(Entered::Exited(code)) => Some(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        Ok(Entered::SingleId { warning }) => {
            eprintln!("warning: {warning}");
            None
        }
        Ok(_) => None,
        Err(e) => {
            eprintln!("error: cannot build as this user: {e}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// Where the store lives when `--root` is not given.
fn default_root() -> PathBuf {
    if let Some(r) = std::env::var_os("RBUILD_ROOT").filter(|v| !v.is_empty()) {
        return PathBuf::from(r);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("rbuild");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/rbuild")
}

/// Shows the libraries' `tracing` events (registry retries, the deployer's watch events…) on
/// stderr when `RUST_LOG` asks for them, with `EnvFilter`'s syntax (`RUST_LOG=rbuild_registry=debug`).
///
/// Off by default: without `RUST_LOG` no subscriber is installed, so the events cost a check of
/// a static and nothing is printed between the build's own lines. An unparsable `RUST_LOG` is
/// reported and logging stays off: a typo in a log setting must not fail a CI build.
fn init_logging() {
    use std::io::IsTerminal;

    let Some(value) = std::env::var_os(tracing_subscriber::EnvFilter::DEFAULT_ENV) else {
        return;
    };
    if value.is_empty() {
        return;
    }
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "warning: ignoring RUST_LOG={}: {e}",
                value.to_string_lossy()
            );
            return;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    // Multi-call: invoked as `docker` or `deploy`, the arguments are translated first.
    let argv = match shim::argv(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let cli = Cli::parse_from(argv);
    if cli.command.needs_root()
        && let Some(code) = enter_user_namespace()
    {
        return code;
    }
    init_logging();
    let root = cli.root.clone().unwrap_or_else(default_root);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if matches!(
            cli.command,
            Command::Build(_) | Command::Pull(_) | Command::Push(_)
        ) {
            interrupt::install(&root);
        }
        match cli.command {
            Command::Build(a) => commands::build::run(&root, &cli.registry, *a).await,
            Command::Images(a) => commands::images::run(&root, a),
            Command::Inspect(a) => commands::inspect::run(&root, &cli.registry, a).await,
            Command::Save(a) => commands::save::run(&root, a),
            Command::Run(a) => commands::run::run(&root, a),
            Command::Rmi(a) => commands::rmi::run(&root, &cli.registry, a).await,
            Command::Prune(a) => commands::prune::run(&root, a),
            Command::Check(a) => commands::check::run(&root, a),
            Command::Parse(a) => commands::parse::run(a),
            Command::Pull(a) => commands::pull::run(&root, &cli.registry, a).await,
            Command::Push(a) => commands::push::run(&root, &cli.registry, a).await,
            Command::Tag(a) => commands::tag::run(&root, a),
            Command::Login(a) => commands::login::run(&cli.registry, a).await,
            Command::Logout(a) => commands::logout::run(a),
            Command::Ls(a) => commands::ls::run(&cli.registry, a).await,
            Command::Deploy(a) => commands::deploy::run(&cli.registry, a).await,
            Command::Rollback(a) => commands::rollback::run(a).await,
            Command::History(a) => commands::history::run(a).await,
            Command::Pipeline(c) => commands::pipeline::run(&root, &cli.registry, c).await,
            Command::Registry(c) => commands::registry::run(&cli.registry, c).await,
            Command::Shim(s) => shim::run(&root, &cli.registry, s).await,
            Command::Info(a) => commands::info::run(&root, a),
            Command::Executor(a) => commands::executor::run(&root, *a).await,
            Command::Unshare(a) => commands::unshare::run(a),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
