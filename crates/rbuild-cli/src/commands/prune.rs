//! `rbuild prune`.

use std::path::Path;
use std::process::ExitCode;

use rbuild::store::PruneOptions;

/// Arguments of `rbuild prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also remove every step-cache entry.
    #[arg(long)]
    cache: bool,
}

/// Runs `rbuild prune`.
pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::open_store(root)?;
    let report = store.prune(PruneOptions::default().cache(args.cache))?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
