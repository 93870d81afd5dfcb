//! `rbuild tag`.

use std::path::Path;
use std::process::ExitCode;

/// Arguments of `rbuild tag`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The image in the store (reference or manifest digest).
    source: String,
    /// The new name, e.g. `127.0.0.1:5000/app:v2`.
    target: String,
}

/// Runs `rbuild tag`: points TARGET at the manifest SOURCE names, in the store only (as
/// `docker tag`; `rbuild push TARGET` publishes it).
pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let target = super::parse_reference(&args.target)?;
    if target.tag().is_none() {
        anyhow::bail!(
            "cannot tag with a digest-only reference `{}`: give a tag",
            args.target
        );
    }
    let store = super::open_store(root)?;
    let desc = rbuild::image::resolve(&store, &args.source)?;
    store.tag(&target, desc)?;
    Ok(ExitCode::SUCCESS)
}
