//! `rbuild logout`.

use std::process::ExitCode;

use anyhow::Context as _;
use rbuild::registry::CredentialsEnv;

/// Arguments of `rbuild logout`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The registry, e.g. `127.0.0.1:5000`.
    server: String,
}

/// Runs `rbuild logout`: removes the server's entry from `config.json`, as `docker logout`.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let server = super::login::normalise_server(&args.server);
    let env = CredentialsEnv::from_process_env();
    let removed = env
        .erase(&server)
        .with_context(|| format!("failed to remove the credentials of {server}"))?;
    if removed {
        println!("Removing login credentials for {server}");
    } else {
        // docker's wording; not an error.
        println!("Not logged in to {server}");
    }
    Ok(ExitCode::SUCCESS)
}
