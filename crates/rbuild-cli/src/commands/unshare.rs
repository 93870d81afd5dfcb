//! `rbuild unshare`: run a command in the user namespace rootless builds use (podman's and
//! buildah's `unshare`), e.g. to remove a rootless store whose files belong to subordinate ids.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode};

use anyhow::Context as _;

/// Arguments of `rbuild unshare`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The command and its arguments [default: $SHELL, else /bin/sh].
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

/// Replaces this process (already root, in the namespace when rootless) with the command.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut argv = args.command.into_iter();
    let program = argv
        .next()
        .or_else(|| std::env::var_os("SHELL").filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "/bin/sh".into());
    let err = Command::new(&program).args(argv).exec();
    Err(err).with_context(|| format!("cannot run {}", program.to_string_lossy()))
}
