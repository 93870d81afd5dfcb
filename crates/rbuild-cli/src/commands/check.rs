//! `rbuild check`: verify the store (blobs, tags, manifests, configs, layer directories, cache
//! entries); exit 1 with a list when something is damaged, `--repair` drops what is broken.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use rbuild::check::{CheckOptions, check};

/// Arguments of `rbuild check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Remove what is damaged (corrupt blobs, incomplete tags, mismatching layer directories,
    /// dangling cache entries) so that the next build or pull recreates it.
    #[arg(long)]
    repair: bool,
}

/// Runs `rbuild check`: exit 0 when the store is clean (or was repaired), 1 when damage remains.
pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::open_store(root)?;
    let report = check(&store, CheckOptions::default().repair(args.repair))
        .with_context(|| format!("failed to check the store at {}", root.display()))?;
    for problem in &report.problems {
        println!("damaged: {problem}");
    }
    for action in &report.repairs {
        println!("repaired: {action}");
    }
    println!(
        "checked {} blobs, {} tags, {} cache entries, {} layer directories ({} unreferenced, not verifiable)",
        report.blobs,
        report.tags,
        report.cache_entries,
        report.layer_dirs_verified,
        report.layer_dirs_unverified
    );
    if report.is_clean() {
        println!("store is clean");
        Ok(ExitCode::SUCCESS)
    } else if args.repair {
        println!(
            "{} problems repaired; the next build or pull recreates what was removed",
            report.problems.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} problems found; run `rbuild check --repair` to remove what is damaged",
            report.problems.len()
        );
        Ok(ExitCode::from(1))
    }
}
