//! `rbuild run`.

use std::path::Path;
use std::process::ExitCode;

use rbuild::container::{self, RunOptions};

/// Arguments of `rbuild run`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Set an environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Run as this user.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Replace the image's ENTRYPOINT.
    #[arg(long)]
    entrypoint: Option<String>,
    /// No network.
    #[arg(long)]
    no_network: bool,
    /// The platform to run from a multi-platform image [default: this machine's]; a foreign
    /// architecture runs through QEMU registered with binfmt_misc.
    #[arg(long)]
    platform: Option<rbuild::Platform>,
    /// Image reference or manifest digest.
    reference: String,
    /// Command and arguments (replace the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs `rbuild run`, passing the container's exit status through.
pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::open_store(root)?;
    let img = super::load_image_for(&store, &args.reference, args.platform.as_ref())?;
    if let Some(p) = &args.platform {
        use rbuild::executor::Executor as _;
        if let Some(reason) = rbuild::executor::SandboxExecutor.missing_emulator(p) {
            anyhow::bail!(
                "cannot run {p} programs here: {reason}; install qemu-user-static and register it with binfmt_misc"
            );
        }
    }
    let opts = RunOptions {
        command: args.command,
        entrypoint: args
            .entrypoint
            .map(|e| if e.is_empty() { vec![] } else { vec![e] }),
        env: args.env,
        user: args.user,
        no_network: args.no_network,
    };
    let status = container::run(&store, &img, &opts)?;
    Ok(ExitCode::from(
        u8::try_from(status.clamp(0, 255)).unwrap_or(1),
    ))
}
