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
    println!(
        "Deleted {} blobs, {} unpacked layers, {} cache entries, {} temporary entries",
        report.blobs, report.layer_dirs, report.cache_entries, report.temps
    );
    println!(
        "Total reclaimed space: {}",
        super::images::human_size(report.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}
