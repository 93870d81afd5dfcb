//! `rbuild rmi`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::RegistryFlags;

/// Arguments of `rbuild rmi`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Image references to untag.
    #[arg(required = true)]
    references: Vec<String>,
    /// Delete the manifests from their registry instead (by digest: every tag pointing at
    /// the same manifest goes too, as the distribution spec's DELETE does).
    #[arg(long)]
    remote: bool,
}

/// Runs `rbuild rmi`: removes the tags; `rbuild prune` frees the space. With `--remote`,
/// deletes the manifests in the registry.
pub(crate) async fn run(
    root: &Path,
    flags: &RegistryFlags,
    args: Args,
) -> anyhow::Result<ExitCode> {
    if args.remote {
        let client = flags.client()?;
        for r in &args.references {
            let reference = super::parse_reference(r)?;
            let digest = client
                .delete_manifest(&reference)
                .await
                .with_context(|| format!("failed to delete {reference}"))?;
            println!("Deleted: {}@{digest}", reference.name());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = super::open_store(root)?;
    let mut code = ExitCode::SUCCESS;
    for r in &args.references {
        let reference: rbuild::Reference = r.parse()?;
        if store.untag(&reference)? {
            println!("Untagged: {reference}");
        } else {
            eprintln!("error: no such image: {reference}");
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}
