//! `rbuild ls`.

use std::process::ExitCode;

use anyhow::Context as _;

use super::RegistryFlags;

/// Arguments of `rbuild ls`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The repository, e.g. `127.0.0.1:5000/app` (a tag or digest in it is ignored).
    repository: String,
}

/// Runs `rbuild ls`: the repository's tags, one per line, sorted (registry 2.8 answers them
/// unsorted; the client follows `Link` pagination).
pub(crate) async fn run(flags: &RegistryFlags, args: Args) -> anyhow::Result<ExitCode> {
    let repo = super::parse_reference(&args.repository)?;
    let client = flags.client()?;
    let mut tags = client
        .tags(&repo, None)
        .await
        .with_context(|| format!("failed to list the tags of {}", repo.name()))?;
    tags.sort();
    for t in tags {
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}
