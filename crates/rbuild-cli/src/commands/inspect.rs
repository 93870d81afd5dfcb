//! `rbuild inspect`.

use std::path::Path;
use std::process::ExitCode;

/// Arguments of `rbuild inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image reference or manifest digest.
    reference: String,
}

/// Runs `rbuild inspect`: prints `{"digest", "manifest", "config"}`.
pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::open_store(root)?;
    let img = super::load_image(&store, &args.reference)?;
    let out = serde_json::json!({
        "digest": img.digest.to_string(),
        "manifest": img.manifest,
        "config": img.config,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
